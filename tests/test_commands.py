"""Command checks (schema, depth, size, rate limit, disabled reset, retained) and the log
throttle; what a running agent does with commands a dashboard or an automation gets wrong
(a real mosquitto)."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from bin_agent import preflight
from bin_agent.agent import build_agent
from bin_agent.learning.labels import LabelStore
from bin_agent.mqtt.commands import RETAINED_REASON, CommandGate, CommandRejected, nesting_depth
from bin_agent.mqtt.ratelimit import LogThrottle, TokenBucket
from tests.helpers import base_config, sigkill_when_it_says, wait_for
from tests.test_ask import photos


def reason(gate: CommandGate, name: str, payload: bytes) -> str:
    with pytest.raises(CommandRejected) as info:
        gate.check(name, payload)
    return info.value.reason


def test_valid_commands_pass_with_their_id():
    gate = CommandGate(allow_reset=True)
    assert gate.check("ping", b"").args == {}
    assert gate.check("classify", b' {"id": "c1"} ').request_id == "c1"
    assert gate.check("reset_counts", b'{"id": 42}').request_id == "42"
    assert gate.rejected == 0


@pytest.mark.parametrize(
    "name, payload, expected",
    [
        (
            "format_disk",
            b"{}",
            "unknown command; known: classify, reset_counts, ping, emptied, trigger_mode, reload_model, correct, learn",
        ),
        ("ping", b'{"id": 1, "force": true}', "unknown key 'force' for ping; allowed: id"),
        ("ping", b'{"id": true}', "id must be a string or a whole number"),
        ("ping", b'{"id": 1.5}', "id must be a string or a whole number"),
        ("ping", b'{"id": {"a": 1}}', "id must be a string or a whole number"),
        ("ping", b'{"id": "' + b"x" * 65 + b'"}', "id longer than 64 characters"),
        ("ping", b"[1, 2]", "payload must be empty or a JSON object"),
        ("ping", b'{"id": NaN}', "payload must be empty or a JSON object"),
        ("ping", b"\xff\xfe", "payload must be empty or a JSON object (UTF-8)"),
        ("ping", b"[" * 5, "JSON nested deeper than 4 levels"),
        ("ping", b"x" * 5000, "payload larger than 4096 bytes"),
    ],
)
def test_invalid_commands_are_rejected_with_a_reason(name, payload, expected):
    gate = CommandGate()
    assert reason(gate, name, payload) == expected
    assert gate.rejected == 1


def test_2000_deep_json_gives_a_reason_not_a_recursion_error(caplog):
    gate = CommandGate()
    deep = b"[" * 2000 + b"]" * 2000
    assert len(deep) < gate.max_bytes
    assert reason(gate, "ping", deep) == "JSON nested deeper than 4 levels"
    deep_object = b'{"id": ' * 500 + b"1" + b"}" * 500
    assert reason(gate, "classify", deep_object) == "JSON nested deeper than 4 levels"
    assert all(not r.exc_info for r in caplog.records)


def test_nesting_depth_skips_brackets_inside_strings():
    assert nesting_depth('{"id": "[[[[[[{{{{"}', 4) == 1
    assert nesting_depth('{"id": "a\\"[[[[[["}', 4) == 1
    assert nesting_depth("[[[]]]", 10) == 3
    assert nesting_depth("[" * 100, 4) == 5, "stops counting past the limit"


def test_reset_counts_is_refused_unless_allowed():
    """Off by default: zeroing the counts is not something a secured install hands to
    every client that may write a command topic."""
    gate = CommandGate()
    assert reason(gate, "reset_counts", b"") == (
        "reset_counts is disabled on this bin (mqtt.commands.allow_reset = false)"
    )
    with pytest.raises(CommandRejected) as info:
        gate.check("reset_counts", b'{"id": "r1"}')
    assert info.value.request_id == "r1", "the refusal carries the id back to the client waiting for it"
    assert gate.check("ping", b"").name == "ping"


def test_rate_limit_drops_without_reply_and_counts(caplog):
    gate = CommandGate(rate_per_minute=60, burst=3)
    for _ in range(3):
        gate.check("ping", b"")
    with pytest.raises(CommandRejected) as info:
        gate.check("ping", b"")
    assert not info.value.reply, "a command over the rate limit gets no reply"
    for _ in range(100):
        with pytest.raises(CommandRejected):
            gate.check("ping", b"")
    assert gate.rejected == 101
    warnings = [r for r in caplog.records if r.name == "bin_agent.mqtt.commands"]
    assert len(warnings) == 1, "rejections are logged at most once a minute"
    assert "over the rate limit" in warnings[0].getMessage()


def test_a_flood_of_one_command_does_not_starve_the_others():
    """One bucket per command name (and one for all unknown names): 1,000 classify
    commands and 1,000 garbage names in a row, and a ping still passes."""
    gate = CommandGate(rate_per_minute=60, burst=3)
    for _ in range(1000):
        try:
            gate.check("classify", b"")
        except CommandRejected:
            pass
        try:
            gate.check("x" * 8, b"")
        except CommandRejected:
            pass
    assert gate.check("ping", b"").name == "ping"
    assert gate.rejected == 2 * 1000 - 3, "3 classify passed (the burst); every garbage name was rejected"
    with pytest.raises(CommandRejected) as info:
        gate.check("classify", b"")
    assert not info.value.reply, "classify itself is still over its limit"


def test_token_bucket_refills_at_its_rate():
    now = [0.0]
    bucket = TokenBucket(rate=2.0, burst=2, clock=lambda: now[0])
    assert bucket.take() and bucket.take() and not bucket.take()
    now[0] = 0.5
    assert bucket.take() and not bucket.take()
    now[0] = 100.0
    assert bucket.take() and bucket.take() and not bucket.take(), "never more than the burst"


def test_log_throttle_says_how_many_were_held_back(caplog):
    now = [0.0]
    throttle = LogThrottle(logging.getLogger("test.throttle"), interval=60, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.throttle"):
        assert throttle.log(logging.WARNING, "down", "broker %s down", "b")
        for second in range(1, 60):
            now[0] = second
            assert not throttle.log(logging.WARNING, "down", "broker %s down", "b")
        now[0] = 61
        assert throttle.log(logging.WARNING, "down", "broker %s down", "b")
        throttle.clear("down")
        assert throttle.log(logging.WARNING, "down", "broker %s down", "b")
    assert [r.getMessage() for r in caplog.records] == [
        "broker b down",
        "broker b down (59 more like this in the last 60 s)",
        "broker b down",
    ]


# --------------------------------------------------------------------------- a running agent


class RunningAgent:
    """An agent with capture on, in its own thread, staying up after its one replayed item
    (for the commands), on a real broker."""

    def __init__(self, tmp_path: Path, port: int, **sections: dict[str, Any]) -> None:
        data = base_config(tmp_path, photos(tmp_path, 1), port=port)
        data["agent"]["exit_when_source_ends"] = False
        data["capture"] = {"enabled": True, "mode": "all"}
        for name, values in sections.items():
            data.setdefault(name, {}).update(values)
        self.config = preflight.load_dict(data, base_dir=tmp_path)
        self.agent = build_agent(self.config)
        self.thread = threading.Thread(target=self.agent.run)

    def __enter__(self) -> RunningAgent:
        self.thread.start()
        assert self.agent.mqtt is not None and self.agent.mqtt.wait_connected(15)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.agent.stop()
        self.thread.join(60)
        assert not self.thread.is_alive()

    def captured_item(self) -> Any:
        """The event of the replayed item, once its photo is written."""
        capture = self.agent.capture
        assert capture is not None and wait_for(lambda: capture.saved >= 1, 30)
        return self.agent.store.last_item()

    def reconnect(self, port: int) -> None:
        """Another login with the bin's client id: the broker drops the bin, which connects and
        subscribes again (and gets every retained command again)."""
        import paho.mqtt.client as paho

        link = self.agent.mqtt
        assert link is not None
        dropped, connected = link.disconnects, link.connects
        thief = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=link.client._client_id.decode())
        thief.connect("127.0.0.1", port, 5)
        # Driven by hand, without loop_start: once the bin logs in again and drops it in turn,
        # it does not log in again (they would drop each other in a loop).
        deadline = time.monotonic() + 10
        while link.disconnects == dropped and time.monotonic() < deadline:
            thief.loop(0.05)
        assert link.disconnects > dropped
        thief.disconnect()
        # A new connection, subscribed: the old one's flags may not be cleared yet when its
        # disconnect is counted.
        assert wait_for(lambda: link.connects > connected, 15) and link.wait_connected(15)


def results(sub: Any, request_id: str) -> list[dict[str, Any]]:
    return [r for r in sub.json_on("/cmd/result") if r.get("id") == request_id]


def test_a_retained_command_is_never_run_neither_when_sent_nor_at_each_reconnect(
    tmp_path, mosquitto, subscriber_factory
):
    """A dashboard or automation that publishes a command with retain on: the broker keeps it
    and sends it again on every reconnect of the bin. Run each time, a retained reset_counts
    would zero the counts at every reconnect and a retained correct would add a label (a "new
    label" towards the next learn) each time. Each is answered, and run neither live nor replayed."""
    with RunningAgent(tmp_path, mosquitto.port, mqtt={"commands": {"allow_reset": True}}) as run:
        agent = run.agent
        event = run.captured_item()
        sub = subscriber_factory(mosquitto.port, "smartbin/test-bin/cmd/result")
        other = "glass" if event["class"] != "glass" else "paper"
        base = "smartbin/test-bin/cmd"
        retained = {
            "reset_counts": {"id": "reset"},
            "correct": {"id": "correct", "event_id": event["id"], "label": other},
        }
        for name, body in retained.items():
            sub.client.publish(f"{base}/{name}", json.dumps(body), qos=1, retain=True).wait_for_publish(5)
        assert sub.wait_for(lambda: results(sub, "reset") and results(sub, "correct"), 10)
        run.reconnect(mosquitto.port)
        sub.publish(f"{base}/ping", json.dumps({"id": "settled"}))  # answered after the replays
        assert sub.wait_for(lambda: results(sub, "settled"), 10)
        refused = results(sub, "reset") + results(sub, "correct")
        assert len(results(sub, "reset")) >= 2 and len(results(sub, "correct")) >= 2, "the replays are answered too"
        assert {(r["ok"], r["reason"]) for r in refused} == {(False, RETAINED_REASON)}
        counts = agent.store.counts()
        assert counts.total == 1 and counts.by_class == {event["class"]: 1}, "neither reset nor moved"
        assert LabelStore(tmp_path / "state" / "capture").all() == {}, "no label written"
        assert agent.learning is not None and agent.learning.new_labels == 0
        assert agent.commands.rejected == len(refused)
        # Cleared the MQTT way (an empty retained message): nothing to run, nothing to answer.
        answered = len(sub.messages)
        for name in retained:
            sub.client.publish(f"{base}/{name}", b"", qos=1, retain=True).wait_for_publish(5)
        sub.publish(f"{base}/ping", json.dumps({"id": "after"}))
        assert sub.wait_for(lambda: results(sub, "after"), 10)
        assert len(sub.messages) == answered + 1, "only the ping was answered"
        assert agent.commands.rejected == len(refused)
        # The same correction sent live, without retain, is run once.
        sub.publish(f"{base}/correct", json.dumps({**retained["correct"], "id": "live"}))
        assert sub.wait_for(lambda: results(sub, "live"), 10)
        assert results(sub, "live")[0]["ok"] and results(sub, "live")[0]["counts_changed"]
        run.reconnect(mosquitto.port)
        sub.publish(f"{base}/ping", json.dumps({"id": "last"}))
        assert sub.wait_for(lambda: results(sub, "last"), 10)
        assert agent.store.counts().by_class == {other: 1} and agent.learning.new_labels == 1


def test_the_result_of_a_learn_carries_the_id_of_the_cmd_learn_that_started_it(tmp_path, mosquitto, subscriber_factory):
    """cmd/learn answers at once ("started") and the learn's result follows later on
    cmd/result: a dashboard waiting for the result of its request finds it by its id."""
    with RunningAgent(tmp_path, mosquitto.port):
        sub = subscriber_factory(mosquitto.port, "smartbin/test-bin/cmd/result")
        sub.publish("smartbin/test-bin/cmd/learn", json.dumps({"id": "learn-1"}))
        assert sub.wait_for(lambda: len(results(sub, "learn-1")) == 2, 30)
        started, result = results(sub, "learn-1")
        assert started["ok"] and started["started"]
        assert result["command"] == "learn" and "deployed" in result and "labels" in result
        sub.publish("smartbin/test-bin/cmd/learn", b"")
        assert sub.wait_for(lambda: len(sub.json_on("/cmd/result")) == 4, 30)
        assert all("id" not in r for r in sub.json_on("/cmd/result")[2:]), "a learn nobody named has no id"


def test_commands_the_loop_would_carry_out_are_refused_while_the_agent_stops(
    tmp_path, mosquitto, subscriber_factory, caplog
):
    """A stop waits for the sort in progress to land (here 6 s) and for the outbox to drain,
    with the commands still coming in. classify, trigger_mode, reload_model and learn were
    answered "ok" then, and nothing ever came of them (the loop is over); they are refused
    with the reason, each in one log line. What needs no loop is still answered."""
    sub = subscriber_factory(mosquitto.port, "smartbin/test-bin/cmd/result")
    run = RunningAgent(tmp_path, mosquitto.port, actuator={"dwell_seconds": 6.0})
    with run:
        agent = run.agent
        assert wait_for(lambda: agent.store.counts().total == 1 and agent.chute.busy_seconds() > 0, 30)
        agent.stop()
        assert wait_for(lambda: agent.status == "stopping", 10)
        sent = {
            "classify": {},
            "trigger_mode": {"mode": "manual"},
            "reload_model": {},
            "learn": {},
            "ping": {},
        }
        for name, body in sent.items():
            sub.publish(f"smartbin/test-bin/cmd/{name}", json.dumps({"id": name, **body}))
        assert sub.wait_for(lambda: all(results(sub, name) for name in sent), 10)
        assert agent.status == "stopping", "answered while the sort in progress lands"
    for name in ("classify", "trigger_mode", "reload_model", "learn"):
        assert results(sub, name) == [
            {
                "command": name,
                "id": name,
                "ok": False,
                "reason": f"the agent is stopping: send {name} again once it runs",
            }
        ]
        lines = [r for r in caplog.records if f"MQTT command {name} not run" in r.getMessage()]
        assert len(lines) == 1 and not lines[0].exc_info
    assert results(sub, "ping")[0]["ok"] and results(sub, "ping")[0]["status"] == "stopping"
    assert agent.learning is not None and agent.learning.last is None, "no learn started"
    assert agent.trigger_mode == "motion"


def test_the_same_correction_sent_twice_is_one_label(tmp_path, mosquitto, subscriber_factory):
    """A dashboard's select chosen twice, or a retry after a lost reply: the second identical
    cmd/correct is answered (``repeated``) but writes no second label and does not count
    towards the next learn; a different answer afterwards is a new label."""
    with RunningAgent(tmp_path, mosquitto.port) as run:
        agent = run.agent
        event = run.captured_item()
        sub = subscriber_factory(mosquitto.port, "smartbin/test-bin/cmd/result")
        other = "glass" if event["class"] != "glass" else "paper"
        third = next(c for c in ("metal", "plastic", "trash") if c not in (event["class"], other))
        for request_id, label in (("first", other), ("again", other), ("changed", third)):
            sub.publish(
                "smartbin/test-bin/cmd/correct", json.dumps({"id": request_id, "event_id": event["id"], "label": label})
            )
            assert sub.wait_for(lambda request_id=request_id: results(sub, request_id), 10)
        first, again, changed = (results(sub, i)[0] for i in ("first", "again", "changed"))
        assert first["ok"] and not first["repeated"] and first["counts_changed"]
        assert again["ok"] and again["repeated"] and not again["counts_changed"] and again["was"] == other
        assert changed["ok"] and not changed["repeated"] and changed["was"] == other
        lines = (tmp_path / "state" / "capture" / "labels.jsonl").read_text().splitlines()
        assert [json.loads(line)["label"] for line in lines] == [other, third]
        assert agent.learning is not None and agent.learning.new_labels == 2
        assert agent.store.counts().by_class == {third: 1}


# --------------------------------------------------------------------------- a correction cut by a kill


def other_class(event: dict[str, Any]) -> str:
    """A class that goes to another compartment than the event's (base_config's router)."""
    return "glass" if event["class"] != "glass" else "paper"


def test_a_correction_cut_between_its_label_and_its_counts_is_moved_once_by_the_same_cmd_correct_sent_again(
    tmp_path, mosquitto, subscriber_factory
):
    """A SIGKILL or a power cut after correct_event appended the label and before the counts'
    transaction leaves the label written and the counts unmoved. The dashboard's retry (the
    same cmd/correct) was answered ``repeated`` and moved nothing, for good: it now moves the
    counts from what the store counts the item as, exactly once; the next identical resend
    moves nothing."""
    with RunningAgent(tmp_path, mosquitto.port) as run:
        agent = run.agent
        event = run.captured_item()
        other = other_class(event)
        folder = tmp_path / "state" / "capture"
        # The state a kill right after the label's fsynced append leaves.
        LabelStore(folder).add(event["id"], other, event["class"], "mqtt")
        assert agent.store.counts().by_class == {event["class"]: 1}
        sub = subscriber_factory(mosquitto.port, "smartbin/test-bin/cmd/result")
        for request_id in ("resend", "again"):
            body = {"id": request_id, "event_id": event["id"], "label": other}
            sub.publish("smartbin/test-bin/cmd/correct", json.dumps(body))
            assert sub.wait_for(lambda request_id=request_id: results(sub, request_id), 10)
        resend, again = results(sub, "resend")[0], results(sub, "again")[0]
        assert resend["ok"] and resend["repeated"] and resend["counts_changed"] and resend["was"] == event["class"]
        assert again["ok"] and again["repeated"] and not again["counts_changed"] and again["was"] == other
        counts = agent.store.counts()
        routes = agent.config.router.compartments
        assert counts.by_class == {other: 1} and counts.total == 1
        assert counts.by_compartment == {routes[other]: 1}
        assert agent.store.counted_as(event["id"]) == (other, routes[other])
        assert len((folder / "labels.jsonl").read_text().splitlines()) == 1, "no second label"


KILLED_CORRECTION = """
import sys, time
from pathlib import Path
from bin_agent.learning.labels import correct_event
from bin_agent.store import Store

state, event_id, label = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
store = Store(state / "bin-agent.db")

def killed_here(*args, **kwargs):  # the label is appended and fsynced; the counts' commit is next
    print("label appended", flush=True)
    time.sleep(60)

store.adjust_counts = killed_here
correct_event(
    {"event_id": event_id, "label": label},
    folder=state / "capture",
    store=store,
    compartments={"paper": "paper", "glass": "glass", "metal": "metal", "plastic": "plastic",
                  "cardboard": "paper", "trash": "rest"},
    classes=["cardboard", "glass", "metal", "paper", "plastic", "trash"],
)
"""


def sigkill_correction(state: Path, event_id: str, label: str) -> None:
    """correct_event in its own process, SIGKILLed between the label's append and the counts."""
    sigkill_when_it_says(KILLED_CORRECTION, [str(state), event_id, label], "label appended")


def test_a_correction_a_sigkill_cut_before_its_counts_is_moved_at_the_next_start_without_a_resend(
    tmp_path, mosquitto, caplog
):
    """Nobody sends the correction again: the agent's next start, before it sorts, moves the
    counts of every item counted since the last reset to its latest label (one transaction,
    one log line); a start after that moves nothing."""
    with RunningAgent(tmp_path, mosquitto.port) as run:
        event = run.captured_item()
        routes = run.agent.config.router.compartments
    other = other_class(event)
    sigkill_correction(tmp_path / "state", event["id"], other)
    assert LabelStore(tmp_path / "state" / "capture").all()[event["id"]]["label"] == other
    caplog.set_level(logging.INFO, logger="bin_agent.learning.labels")
    restarted = RunningAgent(tmp_path, mosquitto.port)
    counts = restarted.agent.store.counts()  # built, not yet sorting
    assert counts.by_class == {other: 1} and counts.by_compartment == {routes[other]: 1} and counts.total == 1
    assert [r.getMessage()[:24] for r in caplog.records if "moved to their latest label" in r.getMessage()] == [
        "counts: 1 item(s) moved "
    ]
    with restarted:  # sorts its one photo again: a new item
        assert wait_for(lambda: restarted.agent.store.counts().total == 2, 30)
    caplog.clear()
    again = RunningAgent(tmp_path, mosquitto.port)
    assert again.agent.store.counts().by_class.get(other) == 1, "moved once"
    assert not [r for r in caplog.records if "moved to their latest label" in r.getMessage()]
    with again:
        pass


def test_a_label_of_an_item_counted_before_the_last_reset_moves_no_count(tmp_path, mosquitto, subscriber_factory):
    """reset_counts between the item and the correction (label cut from its counts by a kill):
    neither the resent cmd/correct nor the next start's reconcile moves anything, also for an
    item corrected before the reset (what it was counted as goes with the counts)."""
    with RunningAgent(tmp_path, mosquitto.port, mqtt={"commands": {"allow_reset": True}}) as run:
        agent = run.agent
        event = run.captured_item()
        other = other_class(event)
        sub = subscriber_factory(mosquitto.port, "smartbin/test-bin/cmd/result")
        third = next(c for c in ("metal", "plastic", "trash") if c not in (event["class"], other))
        before = {"id": "before", "event_id": event["id"], "label": third}
        sub.publish("smartbin/test-bin/cmd/correct", json.dumps(before))
        assert sub.wait_for(lambda: results(sub, "before"), 10) and results(sub, "before")[0]["counts_changed"]
        time.sleep(1.1)  # the reset's time (whole seconds) after the item's
        agent.store.reset_counts()
        LabelStore(tmp_path / "state" / "capture").add(event["id"], other, event["class"], "mqtt")
        sub.publish("smartbin/test-bin/cmd/correct", json.dumps({"id": "r", "event_id": event["id"], "label": other}))
        assert sub.wait_for(lambda: results(sub, "r"), 10)
        assert results(sub, "r")[0]["ok"] and not results(sub, "r")[0]["counts_changed"]
        assert agent.store.counts().total == 0 and agent.store.counted_as_rows() == {}
    restarted = RunningAgent(tmp_path, mosquitto.port)
    assert restarted.agent.store.counts().by_class == {} and restarted.agent.store.counts().total == 0
    with restarted:
        pass


def test_labels_of_photos_the_size_cap_deleted_are_dropped_at_start_and_while_running_once_doubled(tmp_path, mosquitto):
    """labels.jsonl no longer grows for as long as the bin runs: at the start, and while the
    agent runs once the file is twice what the last trim kept (and TRIM_MIN_BYTES), only the
    latest label of each photo still captured (or counted as another class) stays."""
    from bin_agent.learning.labels import TRIM_MIN_BYTES

    folder = tmp_path / "state" / "capture"
    with RunningAgent(tmp_path, mosquitto.port) as run:
        event = run.captured_item()
    labels = LabelStore(folder)
    labels.add(event["id"], event["class"], event["class"], "mqtt")
    gone = [f"gone-{n}" for n in range(2000)]  # items the size cap deleted, photos and sidecars
    for event_id in gone:
        labels.add(event_id, "paper", "glass", "mqtt")
    assert labels.path.stat().st_size > TRIM_MIN_BYTES

    restarted = RunningAgent(tmp_path, mosquitto.port)
    assert set(LabelStore(folder).all()) == {event["id"]}
    assert restarted.agent._labels_kept_bytes == labels.path.stat().st_size < 400
    with restarted:
        for event_id in gone:
            labels.add(event_id, "paper", "glass", "mqtt")
        restarted.agent.trim_labels_if_due()
        assert set(LabelStore(folder).all()) == {event["id"]}
