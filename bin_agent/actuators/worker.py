"""One sort at a time, in its own thread, so that the main loop does not wait for the mechanics.

The agent records an item before it moves the mechanics (a power cut during the
move still leaves the item counted and its event in the outbox) and hands the
move to a :class:`SortWorker`. The main loop goes on reading frames (and feeding
the watchdog) while the servo travels, dwells and returns; the next item waits
for the chute: :meth:`SortWorker.wait_for_chute` blocks until the previous sort
is over, and :meth:`SortWorker.close` waits for a sort in progress (a SIGTERM
lets the item land, within systemd's ``TimeoutStopSec``).

A sort that fails (a PCA9685 answering ``Remote I/O error`` over a loose I²C
wire, a pin daemon gone) is logged and kept in :attr:`SortWorker.failure`
until a sort succeeds; the agent shows it (state ``actuator_error``) and goes
on: the next item is classified, counted and published as before, and its
sort tries the mechanics again. (It used to be raised again in the main loop
at the next item: that item was dropped uncounted and the agent exited with a
traceback.)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .sorter import Sorter

log = logging.getLogger(__name__)


class SortWorker:
    """Runs :meth:`Sorter.sort` in a thread, one sort at a time.

    :param sorter: the mechanics.

    A sort that raises is logged (with its traceback the first time in a row)
    and counted; :attr:`failure` says what went wrong until a sort succeeds.
    """

    def __init__(self, sorter: Sorter) -> None:
        self.sorter = sorter
        self._idle = threading.Event()
        self._idle.set()
        self._started: float | None = None  # monotonic start of the sort in progress
        self.failure: str | None = None
        """The last sort's error (``"OSError: [Errno 121] Remote I/O error"``); None once one succeeds."""
        self.failed_sorts = 0
        """Sorts that failed since the last one that succeeded."""

    def busy_seconds(self) -> float:
        """How long the sort in progress has been running (0.0: the chute is free)."""
        started = self._started
        return 0.0 if started is None else time.monotonic() - started

    def wait_for_chute(self, timeout: float | None = None) -> bool:
        """Wait until no sort is in progress (at most ``timeout`` seconds);
        returns whether the chute is free."""
        return self._idle.wait(timeout)

    def start(self, compartment: str, done: Callable[[float], None]) -> None:
        """Start sorting into ``compartment`` after the previous sort is over;
        ``done`` is called (in the worker's thread) with the sort's seconds once it
        completed (not when it raised)."""
        self.wait_for_chute()
        self._idle.clear()
        self._started = time.monotonic()
        threading.Thread(target=self._run, args=(compartment, done), name="sort", daemon=True).start()

    def _run(self, compartment: str, done: Callable[[float], None]) -> None:
        started = time.perf_counter()
        try:
            self.sorter.sort(compartment)
        except Exception as exc:
            self.failed_sorts += 1
            self.failure = f"{type(exc).__name__}: {exc}"
            if self.failed_sorts == 1:
                log.exception("the sort into %s failed; the next item tries again", compartment)
            else:
                log.error(
                    "the sort into %s failed again (%d in a row): %s", compartment, self.failed_sorts, self.failure
                )
        else:
            if self.failure is not None:
                log.info("sorting works again after %d failed sort(s)", self.failed_sorts)
            self.failure, self.failed_sorts = None, 0
            try:
                done(time.perf_counter() - started)
            except Exception:
                log.exception("after the sort into %s", compartment)
        finally:
            self._started = None
            self._idle.set()

    def close(self) -> None:
        """Wait for the sort in progress (it must not be cut off mid-move)."""
        self.wait_for_chute()
