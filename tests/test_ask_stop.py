"""A correction held for its item's photo when the agent is stopped (systemd's SIGTERM, an
update): the agent closes its parts in an order that still applies it, publishes its result
and keeps the label and the counts in step on disk (tests/test_ask.py has the late answers
while the bin runs; tests/test_pending.py the holding itself)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from bin_agent import CLASSES
from bin_agent.agent import DATABASE_NAME
from bin_agent.learning import capture
from bin_agent.learning.labels import LabelStore, find_captured
from bin_agent.store import Store
from tests.test_commands import RunningAgent, results, wait_for

CARD_STALL_SECONDS = 2.0


def test_a_correction_held_when_the_agent_stops_is_applied_answered_and_counted_before_it_exits(
    tmp_path, mosquitto, subscriber_factory, monkeypatch
):
    """The SD card stalls for 2 s (a long erase: cheap cards do) while the item's photo is
    written, so a ``cmd/correct`` sent as soon as its event arrives is held; the agent is
    stopped at once. Capture closes first and writes the photo, the held correction then runs
    with the store and the broker link still open: one ``cmd/result``, the label, and the item
    counted under the answer, as the store reads after the agent has exited."""
    write_synced = capture.write_synced

    def stalled_card(path: Path, data: bytes) -> None:
        time.sleep(CARD_STALL_SECONDS)
        write_synced(path, data)

    monkeypatch.setattr(capture, "write_synced", stalled_card)
    sub = subscriber_factory(mosquitto.port, "smartbin/test-bin/#")
    folder = tmp_path / "state" / "capture"
    with RunningAgent(tmp_path, mosquitto.port) as run:
        assert sub.wait_for(lambda: sub.on("test-bin/event"), 30)
        event: dict[str, Any] = json.loads(sub.on("test-bin/event")[0].payload)
        label = next(c for c in CLASSES if c != event["class"])
        sub.publish(
            "smartbin/test-bin/cmd/correct", json.dumps({"id": "held", "event_id": event["id"], "label": label})
        )
        time.sleep(0.3)  # the command reaches the agent (a local broker: milliseconds) and is held
        assert find_captured(folder, event["id"]) is None, "the photo is not written yet"
        assert not results(sub, "held"), "held, not answered yet"
        config = run.config
        # The context's exit stops the agent now, with the correction held, and waits for its exit.
    assert wait_for(lambda: results(sub, "held"), 5), "its result was published before the link closed"
    replies = results(sub, "held")
    assert len(replies) == 1 and replies[0]["ok"] and replies[0]["counts_changed"], replies
    assert LabelStore(folder).all()[event["id"]]["label"] == label
    store = Store.from_config(config.store, Path(config.agent.state_dir) / DATABASE_NAME)
    try:
        counts = store.counts()
    finally:
        store.close()
    assert counts.total == 1 and counts.by_class == {label: 1}, counts
