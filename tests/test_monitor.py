"""``bin-agent monitor`` against a real mosquitto: 100 simulated bins with retained state,
a real agent's state, and the live view redrawing in place."""

from __future__ import annotations

import io
import json
import threading

import paho.mqtt.client as paho
from PIL import Image

from bin_agent import preflight
from bin_agent.agent import build_agent
from bin_agent.cli import main
from bin_agent.mqtt.client import CliClient
from bin_agent.tools.monitor import CLEAR, Fleet, live
from tests.helpers import base_config, wait_for

N_BINS = 100


def bin_state(n: int) -> dict:
    """A state shaped like the agent's (see Agent.state); bin 7's sorts fail, bin 8's disk is full."""
    return {
        "bin_id": f"bin-{n:03d}",
        "status": "actuator_error" if n == 7 else "running",
        "sort_error": "OSError: [Errno 121] Remote I/O error" if n == 7 else None,
        "storage": {"status": "full" if n == 8 else "ok"},
        "counts": {
            "classes": {"glass": n, "paper": 2 * n},
            "compartments": {"glass": n, "paper": 2 * n},
            "total": 3 * n,
            "fallback": n % 4,
            "since": "2026-11-24T00:00:00Z",
        },
        "fill": {"paper": float(n % 101), "glass": 5.0},
        "full": ["paper"] if n % 101 >= 90 else [],
        "last_item": {"class": "glass", "confidence": 0.93, "time": "2026-11-24T10:00:00.000Z"} if n else None,
        "outbox_pending": n % 3,
        "fallback_share": round(100 * (n % 4) / (3 * n), 1) if n else None,
    }


def publish_fleet(port: int, offline: set[int]) -> paho.Client:
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="fleet-simulator")
    client.connect("127.0.0.1", port, 30)
    client.loop_start()
    infos = []
    for n in range(N_BINS):
        base = f"smartbin/bin-{n:03d}"
        infos.append(client.publish(f"{base}/state", json.dumps(bin_state(n)), qos=1, retain=True))
        infos.append(client.publish(f"{base}/status", "offline" if n in offline else "online", qos=1, retain=True))
    for info in infos:
        info.wait_for_publish(20)
    return client


def test_hundred_bins_as_json_and_table(mosquitto, capsys):
    offline = {3, 50, 99}
    simulator = publish_fleet(mosquitto.port, offline)
    try:
        assert main(["monitor", "--host", "127.0.0.1", "--port", str(mosquitto.port), "--json"]) == 0
        seen = json.loads(capsys.readouterr().out)
        assert len(seen["bins"]) == N_BINS
        for n in range(N_BINS):
            view = seen["bins"][f"bin-{n:03d}"]
            assert view["status"] == ("offline" if n in offline else "online")
            assert view["state"] == bin_state(n)
        assert seen["summary"]["online"] == N_BINS - len(offline) and seen["summary"]["offline"] == len(offline)
        assert seen["summary"]["items"] == sum(3 * n for n in range(N_BINS))
        assert "bin-090/paper" in seen["summary"]["full"]
        assert seen["summary"]["problems"] == {"bin-007": "actuator_error", "bin-008": "storage full"}

        # Only the bins asked for.
        assert (
            main(["monitor", "bin-007", "bin-050", "--host", "127.0.0.1", "--port", str(mosquitto.port), "--json"]) == 0
        )
        assert sorted(json.loads(capsys.readouterr().out)["bins"]) == ["bin-007", "bin-050"]

        assert main(["monitor", "--host", "127.0.0.1", "--port", str(mosquitto.port), "--once"]) == 0
        table = capsys.readouterr().out.splitlines()
        assert table[0].startswith("100 bins: 97 online, 3 offline;")
        rows = [line for line in table if line.startswith("bin-")]
        assert len(rows) == N_BINS
        assert rows[90].split()[:3] == ["bin-090", "online", "270"] and "pap 90!" in rows[90]
        assert rows[50].split()[1] == "offline"
        assert rows[7].split()[1:3] == ["online:", "actuator_error"] and rows[8].split()[1:4] == [
            "online:",
            "storage",
            "full",
        ]
        assert "problems: bin-007 (actuator_error), bin-008 (storage full)" in table[0]
    finally:
        simulator.disconnect()
        simulator.loop_stop()


def test_live_view_redraws_in_place_on_news(mosquitto):
    simulator = publish_fleet(mosquitto.port, set())
    fleet = Fleet("smartbin", ["bin-007"])
    out = io.StringIO()
    stop = threading.Event()
    try:
        with CliClient("127.0.0.1", mosquitto.port, purpose="test") as client:
            client.subscribe(fleet.filters, fleet.handle)
            assert client.sync()
            viewer = threading.Thread(target=live, args=(fleet, out, stop, 30.0))
            viewer.start()
            try:
                news = dict(bin_state(7), counts={"classes": {"glass": 99}, "compartments": {}, "total": 99})
                simulator.publish("smartbin/bin-007/state", json.dumps(news), qos=1, retain=True).wait_for_publish(10)
                simulator.publish("smartbin/bin-007/status", "offline", qos=1, retain=True).wait_for_publish(10)
                deadline_ok = wait_for(
                    lambda: "offline" in out.getvalue().split(CLEAR)[-1] and " 99 " in out.getvalue().split(CLEAR)[-1],
                    15,
                )
                assert deadline_ok, out.getvalue()[-500:]
            finally:
                stop.set()
                fleet.changed.set()  # the viewer waits for news up to 30 s: woken, it sees the stop at once
                viewer.join(10)
            assert not viewer.is_alive()
        frames = out.getvalue().split(CLEAR)
        # Each redraw starts with cursor-home + clear: the table is redrawn in place, not appended.
        assert len(frames) >= 3 and frames[0] == ""
        assert all(frame.count("\nbin-007") == 1 for frame in frames[1:])
    finally:
        simulator.disconnect()
        simulator.loop_stop()


def test_a_real_agent_shows_up_with_its_backlog_gone(tmp_path, mosquitto, subscriber_factory, capsys):
    image = tmp_path / "item.png"
    Image.new("RGB", (64, 48), (30, 90, 160)).save(image)
    data = base_config(tmp_path, image, port=mosquitto.port)
    data["trigger"]["mode"] = "manual"
    data["camera"]["replay"].update({"loop": True, "realtime": True, "fps": 20.0})
    agent = build_agent(preflight.load_dict(data, base_dir=tmp_path))
    runner = threading.Thread(target=agent.run)
    runner.start()
    try:
        assert agent.mqtt.wait_connected(15)
        agent.trigger.request()
        assert wait_for(lambda: agent.items_sorted == 1, 15)
        # The state published with the item still counts it in the outbox; once the broker has
        # it, the bin says so (a dashboard must not show a backlog of 1 after every item).
        sub = subscriber_factory(mosquitto.port, "smartbin/test-bin/state")
        assert sub.wait_for(
            lambda: (
                sub.json_on("/state")
                and sub.json_on("/state")[-1]["outbox_pending"] == 0
                and sub.json_on("/state")[-1]["counts"]["total"] == 1
            ),
            15,
        )
        assert main(["monitor", "test-bin", "--port", str(mosquitto.port), "--host", "127.0.0.1", "--json"]) == 0
        view = json.loads(capsys.readouterr().out)["bins"]["test-bin"]
        assert view["status"] == "online" and view["state"]["counts"]["total"] == 1
        assert view["state"]["outbox_pending"] == 0
        assert main(["monitor", "test-bin", "--port", str(mosquitto.port), "--host", "127.0.0.1", "--once"]) == 0
        row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("test-bin")][0]
        assert row.split()[:3] == ["test-bin", "online", "1"] and row.split()[-2] == "0"
    finally:
        agent.stop()
        runner.join(30)


def test_no_broker_is_one_line(capsys):
    from scripts.mosquitto_process import free_port

    assert main(["monitor", "--host", "127.0.0.1", "--port", str(free_port()), "--json", "--timeout", "2"]) == 69
    assert capsys.readouterr().err.startswith("bin-agent: cannot reach the broker")


def test_a_bin_nothing_is_heard_from_is_no_data_and_exit_66(mosquitto, capsys):
    args = ["monitor", "nosuchbin", "--host", "127.0.0.1", "--port", str(mosquitto.port), "--timeout", "5"]
    assert main([*args, "--once"]) == 66
    out, err = capsys.readouterr()
    row = next(line for line in out.splitlines() if line.startswith("nosuchbin"))
    assert row.split()[1:] == ["?", "-", "-", "-", "-", "-", "-", "-"], "no 'updated 0s' for a bin never heard"
    assert err.startswith("bin-agent: no data from bin nosuchbin under smartbin/") and err.count("\n") == 1
    assert main([*args, "--json"]) == 66


def test_a_bin_sorting_with_a_fallback_model_is_a_problem():
    from bin_agent.tools.monitor import problem

    running = {"status": "running", "storage": {"status": "ok"}}
    assert problem(running) is None
    assert problem(running | {"model_problem": None}) is None
    assert problem(running | {"model_problem": "the deployed model cannot run: ..."}) == "model fallback"


def test_a_bin_sorting_without_its_capture_folder_is_a_problem():
    from bin_agent.tools.monitor import problem

    running = {"status": "running", "storage": {"status": "ok"}, "model_problem": None}
    assert problem(running | {"capture_problem": None}) is None
    assert problem(running | {"capture_problem": "capture.folder: ... is not a folder; ..."}) == "capture off"


def test_a_bin_whose_clock_is_not_synchronised_is_shown_updated_when_its_state_arrived():
    """A Pi without an RTC that booted three months behind stamps ``updated`` three months ago;
    with ``clock_synced: false`` the table's age is from the state's arrival, not 2160h."""
    from bin_agent.tools.monitor import BinView, render_table

    fleet = Fleet("smartbin")
    now = 1_780_000_000.0
    behind = "2026-03-01T00:00:00.000Z"  # ~97 days before now
    for bin_id, synced in (("behind", False), ("synced", True)):
        state = bin_state(1) | {"bin_id": bin_id, "updated": behind, "clock_synced": synced}
        fleet.bins[bin_id] = BinView(bin_id, "online", state, received=now - 5)
    rows = {line.split()[0]: line.split()[-1] for line in render_table(fleet, now).splitlines()[2:]}
    assert rows["behind"] == "5s"
    assert rows["synced"].endswith("h") and int(rows["synced"][:-1]) > 2000, "a synchronised bin's stamp is believed"
