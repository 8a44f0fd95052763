"""Learning inside the running agent (``[learning]``): one worker thread.

The agent hands it three things and never waits for it:

* :meth:`LearningService.labelled` after each label (``cmd/correct``): after
  ``after_labels`` new labels a learn starts; every label also wakes the
  never-worse watch (:func:`~.learn.watch`) while a deployed head is watched;
* :meth:`LearningService.request` for ``cmd/learn``;
* the schedule (``every_hours``, when there are new labels).

Learns and watches run in the worker thread, with a one-thread interpreter,
so sorting goes on meanwhile. When a learn deploys (or the watch rolls back)
the service calls ``reload`` (the agent's :meth:`~bin_agent.agent.Agent.reload_model`:
the main loop switches between two items) and ``publish`` (the result on
``cmd/result`` and a new ``state``). :meth:`state` is the ``learning`` key of
the ``state`` message (Home Assistant's learning sensors read it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ..config import Config
from ..errors import BinAgentError

log = logging.getLogger(__name__)


class LearningService:
    """The ``[learning]`` worker of a running agent.

    :param config: the agent's config (its ``[learning]``, ``[capture]`` and state dir).
    :param reload: switch the agent to the deployed model; returns the reply of ``cmd/reload_model``.
    :param publish: send a result dict (``cmd/result``) and the new state.
    """

    def __init__(
        self,
        config: Config,
        reload: Callable[[], dict[str, Any]],
        publish: Callable[[dict[str, Any]], None],
    ) -> None:
        self.config = config
        self.section = config.learning
        self._reload = reload
        self._publish = publish
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._learn_asked = False
        # The id of the cmd/learn that asked for the next learn (None: none, or none given): its result carries it.
        self._request_id: str | None = None
        self._watch_asked = False
        self.new_labels = 0
        self.running = False
        self.last: dict[str, Any] | None = None
        self.last_watch: dict[str, Any] | None = None
        self._next_scheduled = self._schedule_from(time.monotonic())
        self._thread: threading.Thread | None = None

    @classmethod
    def from_config(
        cls, config: Config, reload: Callable[[], dict[str, Any]], publish: Callable[[dict[str, Any]], None]
    ) -> LearningService:
        return cls(config, reload, publish)

    def _schedule_from(self, now: float) -> float | None:
        hours = self.section.every_hours
        return now + hours * 3600.0 if hours > 0 else None

    # ------------------------------------------------------------------ the agent's side (never blocks)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="learning", daemon=True)
        self._thread.start()
        self._watch_asked = True  # a watch left over from before a restart
        self._wake.set()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker (a learn in progress finishes in the background: daemon thread)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def labelled(self) -> None:
        """A label was added: count it, wake the watch, start a learn after ``after_labels``."""
        with self._lock:
            self.new_labels += 1
            self._watch_asked = True
            if self.section.after_labels and self.new_labels >= self.section.after_labels:
                self._learn_asked = True
        self._wake.set()

    def request(self, request_id: str | None = None) -> dict[str, Any]:
        """``cmd/learn``: start a learn now; the result follows on ``cmd/result``, with the
        command's ``request_id`` (its ``id``), so the client that asked can tell it apart."""
        with self._lock:
            if self.running or self._learn_asked:
                return {"ok": False, "reason": "a learn is already running; its result follows on cmd/result"}
            self._learn_asked = True
            self._request_id = request_id
        self._wake.set()
        return {"ok": True, "started": True}

    def state(self) -> dict[str, Any]:
        """The ``learning`` key of ``state``."""
        last = self.last or {}
        return {
            "running": self.running,
            "new_labels": self.new_labels,
            "last_learn": last.get("time"),
            "labels": last.get("labels"),
            "held_out": last.get("held_out"),
            # The head in use after the learn, judged on labels it was not fitted on.
            "held_out_accuracy": last.get("accuracy_after")
            if last.get("deployed") and not last.get("threshold_only")
            else last.get("accuracy_before"),
            "deployed": last.get("deployed"),
            "reason": last.get("reason"),
            "watch": self.last_watch,
        }

    # ------------------------------------------------------------------ the worker

    def _loop(self) -> None:
        while not self._stop.is_set():
            timeout = None
            if self._next_scheduled is not None:
                timeout = max(0.0, self._next_scheduled - time.monotonic())
            self._wake.wait(timeout)
            self._wake.clear()
            if self._stop.is_set():
                return
            now = time.monotonic()
            with self._lock:
                due = self._next_scheduled is not None and now >= self._next_scheduled and self.new_labels > 0
                if self._next_scheduled is not None and now >= self._next_scheduled:
                    self._next_scheduled = self._schedule_from(now)
                learn_now, self._learn_asked = self._learn_asked or due, False
                request = {"id": self._request_id} if learn_now and self._request_id is not None else {}
                self._request_id = None
                watch_now, self._watch_asked = self._watch_asked, False
            what = "the watch of the deployed head"
            try:
                if watch_now:
                    self._run_watch()
                what = "learning"
                if learn_now:
                    self._run_learn(request)
            except Exception as exc:  # a learning failure must never stop the bin
                if isinstance(exc, (BinAgentError, OSError)):
                    # Expected on an unattended bin (the deployed model cannot be read while the
                    # agent sorts with a fallback, a full card): what failed and why, one line.
                    log.error("%s failed: %s", what, exc)
                else:  # a bug: its traceback
                    log.exception("%s failed", what)
                self.running = False
                reason = f"{type(exc).__name__}: {exc}"[:300]
                self._publish({"command": "learn", "ok": False, "reason": reason} | (request if learn_now else {}))

    def _run_learn(self, request: dict[str, Any]) -> None:
        """One learn; ``request``: the ``id`` of the cmd/learn that asked for it (empty: none)."""
        from .learn import learn

        with self._lock:
            self.running, self.new_labels = True, 0
        try:
            result = learn(self.config).as_dict()
        finally:
            self.running = False
        self.last = result
        if result["deployed"]:
            self.last_watch = None
        log.info(
            "learn: %s labels, held-out accuracy %s -> %s, %s",
            result["labels"],
            result["accuracy_before"],
            result["accuracy_after"],
            result["reason"],
        )
        reply: dict[str, Any] = {"command": "learn", "ok": True} | result | request
        if result["deployed"]:
            reply["reload"] = self._reload()
        self._publish(reply)

    def _run_watch(self) -> None:
        from .learn import watch

        report = watch(self.config)
        if report.get("watching") or report.get("rolled_back"):
            self.last_watch = report
        elif self.last_watch is not None and not self.last_watch.get("rolled_back"):
            self.last_watch = None  # a rollback stays on the state until the next learn
        if report.get("rolled_back"):
            reply: dict[str, Any] = {"command": "rollback", "ok": True, "trigger": "watch"} | report
            reply["reload"] = self._reload()
            self._publish(reply)
