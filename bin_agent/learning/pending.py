"""Corrections held until their item's photo is written (``cmd/correct`` a moment too early).

An item's event id is public (its question on ``unsure``, its ``event``) before capture's
writer thread has written its photo: the item may still wait for the chute after the ask's
timeout, and its photo is queued only after it is recorded. A correction that comes then
cannot label a photo that is not there yet, so it is held here: :meth:`expect` notes the id
when it is made, :meth:`hold` keeps the correction, and :meth:`photo_done` (capture tells it
once the photo is written or will not be) lets it run. A held correction also runs when its
deadline passes or the agent stops, so each gets its answer. One worker thread runs them, one
after another, whatever their number; nothing is polled.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

PHOTO_WRITE_SECONDS = 30.0
"""How long, beyond the longest ask and one sort, an item's photo may still be on capture's
queue (a slow card, a backlog): the last resort for a correction held for it (the writer
tells when the photo is written or will not be; this covers an item that never got there)."""
STOPPED = "the agent stopped before the item's photo was written; send it again"
LATE = "the item's photo was not written in time; send it again"

Apply = Callable[[str | None], None]
"""A held correction. Called once, on the worker thread, with None when the item's photo is
written or will not be (the correction is applied now, or answered "not captured"), or with
why it is not applied (:data:`STOPPED`, :data:`LATE`)."""


@dataclass
class _Due:
    """An item whose photo may still come: until when, and the corrections held for it."""

    deadline: float
    held: list[Apply] = field(default_factory=list)


class PendingCorrections:
    """The items whose photo is due, and the corrections held until it is written.

    :param item_seconds: how long an item may take from :meth:`expect` until capture has its
        photo (the longest ask and one sort). Its photo may come :data:`PHOTO_WRITE_SECONDS` later
        still; a correction held longer than both gets :data:`LATE`. ``write_seconds``: that
        allowance (a test's shorter one).
    """

    def __init__(self, item_seconds: float, *, write_seconds: float = PHOTO_WRITE_SECONDS) -> None:
        self.hold_seconds = float(item_seconds) + float(write_seconds)
        self._due: dict[str, _Due] = {}
        self._ready: list[tuple[Apply, str | None]] = []  # to run, in the order they became ready
        self._changed = threading.Condition()
        self._worker: threading.Thread | None = None  # started by the first hold
        self._closed = False

    def expect(self, event_id: str) -> None:
        """The item of ``event_id`` is being decided and capture may keep it: call before the id
        is public (the question, the event), so that no correction can come before."""
        now = time.monotonic()
        with self._changed:
            self._expire(now)  # items that never reached capture (the item's handling failed)
            self._due[event_id] = _Due(now + self.hold_seconds)

    def hold(self, event_id: str, apply: Apply) -> bool:
        """Hold a correction of ``event_id`` until its photo is written: True, ``apply`` will be
        called once (see :data:`Apply`); False when no photo of it is due (it is written, will
        not be, or was never expected, or the agent stops): correct it now."""
        with self._changed:
            due = self._due.get(event_id)
            if self._closed or due is None or due.deadline <= time.monotonic():
                return False
            due.held.append(apply)
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="held-corrections", daemon=True)
                self._worker.start()
            self._changed.notify()  # a deadline to wait for
        return True

    def photo_done(self, event_id: str) -> None:
        """Capture: the photo of ``event_id`` is written (on the card), or will not be (not kept
        by the mode, the queue full, the write failed). Its held corrections run now."""
        with self._changed:
            due = self._due.pop(event_id, None)
            if due is not None and due.held:
                self._ready.extend((apply, None) for apply in due.held)
                self._changed.notify()

    def close(self, timeout: float = 10.0) -> None:
        """The agent stops (after capture's writer wrote what was queued): what is still held
        gets :data:`STOPPED`; waits up to ``timeout`` seconds for the worker to answer all."""
        with self._changed:
            self._closed = True
            for due in self._due.values():
                self._ready.extend((apply, STOPPED) for apply in due.held)
            self._due.clear()
            self._changed.notify()
            worker = self._worker
        if worker is not None:
            worker.join(timeout)
            if worker.is_alive():
                log.warning("held corrections still running after %.0f s; not waiting for them", timeout)

    def _expire(self, now: float) -> None:
        """Drop the items past their deadline; their held corrections get :data:`LATE`. Lock held."""
        for event_id in [e for e, due in self._due.items() if due.deadline <= now]:
            held = self._due.pop(event_id).held
            if held:
                log.warning("no word of the photo of event %s after %.0f s", event_id, self.hold_seconds)
                self._ready.extend((apply, LATE) for apply in held)
                self._changed.notify()

    def _next_deadline(self, now: float) -> float | None:
        """Seconds until the first held correction's deadline; None: nothing is held. Lock held."""
        deadlines = [due.deadline for due in self._due.values() if due.held]
        return max(0.0, min(deadlines) - now) if deadlines else None

    def _work(self) -> None:
        """The worker: sleeps until a photo is done, a deadline passes or the agent stops."""
        with self._changed:
            while True:
                self._expire(time.monotonic())
                if self._ready:
                    ready, self._ready = self._ready, []
                    self._changed.release()  # a correction writes to the card: hold/photo_done go on
                    try:
                        for apply, why_not in ready:
                            self._run(apply, why_not)
                    finally:
                        self._changed.acquire()
                    continue
                if self._closed:
                    return
                self._changed.wait(self._next_deadline(time.monotonic()))

    @staticmethod
    def _run(apply: Apply, why_not: str | None) -> None:
        try:
            apply(why_not)
        except Exception:  # the others must still get their answer
            log.exception("a held correction failed")
