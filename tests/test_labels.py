"""Labels of captured items: MQTT cmd/correct (with the counts), bin-agent label, --export."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from pathlib import Path

from bin_agent import CLASSES, preflight
from bin_agent.agent import LABELS_CHECK_SECONDS, build_agent
from bin_agent.learning.capture import Capture
from bin_agent.learning.labels import LabelStore
from bin_agent.training import dataset as ds
from tests.helpers import SHIPPED_MODEL, base_config, wait_for
from tests.test_capture import make_item, noise


def test_correct_over_mqtt_labels_the_item_and_moves_it_in_the_counts(
    tmp_path, trashnet_dir, mosquitto, subscriber_factory
):
    photos = tmp_path / "photos"
    photos.mkdir()
    for n, label in enumerate(("glass", "paper", "metal")):
        photo = sorted((trashnet_dir / label).glob("*.jpg"))[0]
        (photos / f"{n:02d}_{photo.name}").symlink_to(photo)
    data = base_config(tmp_path, photos, port=mosquitto.port, model=SHIPPED_MODEL)
    data["agent"]["exit_when_source_ends"] = False  # stays up for the commands
    data["capture"] = {"enabled": True}
    config = preflight.load_dict(data, base_dir=tmp_path)
    agent = build_agent(config)
    sub = subscriber_factory(mosquitto.port, "smartbin/test-bin/#")
    runner = threading.Thread(target=agent.run)
    runner.start()
    base = "smartbin/test-bin/cmd"

    def result(request_id: str) -> dict:
        assert sub.wait_for(lambda: any(r.get("id") == request_id for r in sub.json_on("/cmd/result")), 15)
        return [r for r in sub.json_on("/cmd/result") if r.get("id") == request_id][0]

    try:
        assert sub.wait_for(lambda: len(sub.on("/event")) == 3, 60)
        assert sub.wait_for(lambda: agent.capture.saved == 3, 15)
        # The state after the third item (it follows the event): the counts to correct.
        assert sub.wait_for(lambda: sub.json_on("/state")[-1]["counts"]["total"] == 3, 15)
        events = sub.json_on("/event")
        first, second = events[0], events[1]
        routes = config.router.compartments
        # A class that goes to another compartment than the first item's.
        wrong = next(c for c in CLASSES if routes[c] != first["compartment"] and c != first["class"])
        before = sub.json_on("/state")[-1]["counts"]

        sub.publish(f"{base}/correct", json.dumps({"id": "k1", "event_id": first["id"], "label": wrong}))
        reply = result("k1")
        assert reply["ok"] and reply["counts_changed"] and reply["was"] == first["class"]
        assert sub.wait_for(lambda: sub.json_on("/state")[-1]["counts"] != before, 10)
        after = sub.json_on("/state")[-1]["counts"]
        assert after["classes"].get(first["class"], 0) == before["classes"][first["class"]] - 1
        assert after["classes"][wrong] == before["classes"].get(wrong, 0) + 1
        assert after["compartments"].get(first["compartment"], 0) == before["compartments"][first["compartment"]] - 1
        assert after["compartments"][routes[wrong]] == before["compartments"].get(routes[wrong], 0) + 1
        assert after["total"] == before["total"] == 3

        # A second correction moves it from the corrected class, not from the predicted one.
        third = next(c for c in CLASSES if c not in (wrong, first["class"]))
        sub.publish(f"{base}/correct", json.dumps({"id": "k2", "event_id": first["id"], "label": third}))
        assert result("k2")["was"] == wrong
        assert sub.wait_for(
            lambda: sub.json_on("/state")[-1]["counts"]["classes"].get(third, 0) == before["classes"].get(third, 0) + 1,
            10,
        )
        assert sub.json_on("/state")[-1]["counts"]["classes"].get(wrong, 0) == before["classes"].get(wrong, 0)

        # Confirming the second item changes no count.
        sub.publish(f"{base}/correct", json.dumps({"id": "k3", "event_id": second["id"], "label": second["class"]}))
        confirm = result("k3")
        assert confirm["ok"] and confirm["confirmed"] and not confirm["counts_changed"]

        for n, payload in enumerate(
            [
                {"event_id": first["id"], "label": "banana"},
                {"event_id": "no-such-event", "label": "glass"},
                {"event_id": 42, "label": "glass"},
                {"label": "glass"},
            ]
        ):
            sub.publish(f"{base}/correct", json.dumps({"id": f"bad{n}", **payload}))
            bad = result(f"bad{n}")
            assert not bad["ok"] and bad["reason"]
    finally:
        agent.stop()
        runner.join(60)
    labels = LabelStore(tmp_path / "state" / "capture").all()
    assert labels[first["id"]]["label"] == third and labels[first["id"]]["source"] == "mqtt"
    assert labels[second["id"]]["confirmed"]


def test_terminal_labelling_most_unsure_first_list_and_export(tmp_path):
    folder = tmp_path / "capture"
    capture = Capture(folder, queue_size=10)
    capture.start()
    items = [make_item("glass", 0.9), make_item("paper", 0.35, fallback=True), make_item("metal", 0.6)]
    for seed, item in enumerate(items):
        capture.offer(noise(seed), item)
    capture.close()

    # Most unsure first: paper 0.35 -> corrected to cardboard (key 1); metal 0.6 -> confirmed
    # (Enter); glass 0.9 -> skipped; then the input ends.
    run = subprocess.run(
        [sys.executable, "-m", "bin_agent", "label", "--folder", str(folder)],
        input="1\n\ns\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    order = [line for line in run.stdout.splitlines() if "predicted:" in line]
    assert [line.split()[1] for line in order] == ["paper", "metal", "glass"]
    assert "1 cardboard" in run.stdout and "2 label(s) saved" in run.stdout
    labels = LabelStore(folder).all()
    assert labels[items[1].event_id]["label"] == "cardboard" and not labels[items[1].event_id]["confirmed"]
    assert labels[items[2].event_id]["label"] == "metal" and labels[items[2].event_id]["confirmed"]
    assert {labels[i.event_id]["source"] for i in items[1:]} == {"cli"}, "who gave it: the terminal"
    assert items[0].event_id not in labels

    listing = subprocess.run(
        [sys.executable, "-m", "bin_agent", "label", "--folder", str(folder), "--list"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert "-> cardboard (cli)" in listing and "confirmed (cli)" in listing and "3 captured, 2 labelled" in listing

    out = tmp_path / "mybin"
    exported = subprocess.run(
        [sys.executable, "-m", "bin_agent", "label", "--folder", str(folder), "--export", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert exported.returncode == 0, exported.stderr
    assert "exported 2 labelled photo(s)" in exported.stdout
    found = {(CLASSES[i.label], i.path.name) for i in ds.list_dataset(out)}
    assert {c for c, _ in found} == {"cardboard", "metal"}, "unlabelled items are not exported"


def test_a_label_given_in_a_terminal_reaches_a_running_agents_counts_and_state_within_seconds(
    tmp_path, mosquitto, subscriber_factory, caplog
):
    """bin-agent label in a terminal cannot write the database the agent holds: the agent sees
    labels.jsonl change (one stat every LABELS_CHECK_SECONDS) and moves the item in its counts,
    with one log line, and publishes the state; before, only its next start did."""
    data = base_config(tmp_path, port=mosquitto.port)
    data["camera"]["replay"] |= {"loop": True, "realtime": True}  # it runs on while the person labels
    data["trigger"]["mode"] = "manual"  # one item, when the test says
    data["capture"] = {"enabled": True}
    config = preflight.load_dict(data, base_dir=tmp_path)
    agent = build_agent(config)
    sub = subscriber_factory(mosquitto.port, "smartbin/test-bin/#")
    runner = threading.Thread(target=agent.run)
    caplog.set_level(logging.INFO, logger="bin_agent.learning.labels")
    runner.start()

    def counts() -> dict:
        return sub.json_on("/state")[-1]["counts"]

    try:
        agent.trigger.request()
        assert sub.wait_for(lambda: len(sub.on("/event")) == 1, 60)
        assert wait_for(lambda: agent.capture is not None and agent.capture.saved == 1)
        assert sub.wait_for(lambda: counts()["total"] == 1)
        event = sub.json_on("/event")[0]
        routes = config.router.compartments
        wrong = next(c for c in CLASSES if routes[c] != event["compartment"])
        before = counts()
        assert before["classes"] == {event["class"]: 1}

        run = subprocess.run(
            [sys.executable, "-m", "bin_agent", "label", "--folder", str(Path(config.agent.state_dir) / "capture")],
            input=f"{CLASSES.index(wrong) + 1}\n",  # the item's class: the wrong one's key
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0 and "1 label(s) saved" in run.stdout, run.stdout + run.stderr
        labelled = wait_for(lambda: counts()["classes"] == {wrong: 1}, LABELS_CHECK_SECONDS + 10)
        assert labelled, f"the running agent's state still counts {counts()}"
        assert counts()["compartments"] == {routes[wrong]: 1} and counts()["total"] == 1
        assert agent.store.counted_as(event["id"]) == (wrong, routes[wrong])
    finally:
        agent.stop()
        runner.join(60)
    moved = [r.getMessage() for r in caplog.records if r.getMessage().startswith("counts: ")]
    assert len(moved) == 1 and "1 item(s) moved to their latest label" in moved[0], moved
