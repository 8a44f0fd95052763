"""Corrections held until their item's photo is written (bin_agent.learning.pending), with real
threads: what the agent's answer to a too-early cmd/correct rests on (tests/test_ask.py has the
whole bin)."""

from __future__ import annotations

import threading
import time
from typing import Any

from bin_agent.learning.pending import LATE, STOPPED, PendingCorrections


class Answers:
    """The held corrections' calls: (event id, why not, thread name, when)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None, str, float]] = []
        self._lock = threading.Lock()

    def apply(self, event_id: str) -> Any:
        def apply(why_not: str | None) -> None:
            with self._lock:
                self.calls.append((event_id, why_not, threading.current_thread().name, time.monotonic()))

        return apply

    def wait(self, n: int, timeout: float = 10.0) -> list[tuple[str, str | None, str, float]]:
        deadline = time.monotonic() + timeout
        while len(self.calls) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return list(self.calls)


def test_a_correction_is_held_only_while_its_items_photo_is_due_and_runs_once_it_is_done():
    pending, answers = PendingCorrections(60.0), Answers()
    assert not pending.hold("never-expected", answers.apply("never-expected")), "no photo due: correct now"
    pending.expect("e1")
    assert pending.hold("e1", answers.apply("e1")) and pending.hold("e1", answers.apply("e1"))
    time.sleep(0.2)
    assert answers.calls == [], "held until the photo is done"
    pending.photo_done("e1")
    assert [(e, why) for e, why, *_ in answers.wait(2)] == [("e1", None), ("e1", None)]
    assert not pending.hold("e1", answers.apply("e1")), "done: corrected the usual way"
    pending.close()


def test_a_held_correction_whose_photo_is_never_told_gets_late_at_its_deadline_and_no_sooner():
    pending, answers = PendingCorrections(0.5, write_seconds=0.3), Answers()
    pending.expect("e1")
    held_at = time.monotonic()
    assert pending.hold("e1", answers.apply("e1"))
    calls = answers.wait(1, timeout=5.0)
    assert [(e, why) for e, why, *_ in calls] == [("e1", LATE)]
    assert 0.75 <= calls[0][3] - held_at < 3.0, "at the deadline (item + write seconds), not at the next item"
    assert not pending.hold("e1", answers.apply("e1")), "past its deadline: corrected the usual way"
    pending.close()


def test_stopping_answers_every_held_correction_and_holds_no_more():
    pending, answers = PendingCorrections(60.0), Answers()
    for event_id in ("e1", "e2"):
        pending.expect(event_id)
        assert pending.hold(event_id, answers.apply(event_id))
    pending.close()
    assert sorted((e, why) for e, why, *_ in answers.calls) == [("e1", STOPPED), ("e2", STOPPED)], (
        "answered before close returns"
    )
    pending.expect("e3")
    assert not pending.hold("e3", answers.apply("e3"))


def test_one_worker_runs_every_held_correction_one_after_another_whatever_their_number():
    pending, answers = PendingCorrections(60.0), Answers()
    before = threading.active_count()
    ids = [f"e{i}" for i in range(50)]
    for event_id in ids:
        pending.expect(event_id)
        assert pending.hold(event_id, answers.apply(event_id))
    assert threading.active_count() <= before + 1, "no thread per correction"
    for event_id in ids:
        pending.photo_done(event_id)
    calls = answers.wait(50)
    assert [e for e, *_ in calls] == ids, "in the order their photos were done"
    assert len({thread for _, _, thread, _ in calls}) == 1
    pending.close()
