"""The agent: assembled from the config in one place, then the main loop.

The loop reads top to bottom, once per frame::

    frame = source.read()            # camera or replay
    if trigger.update(frame):        # new items lie still in the drop zone (one box each)
      for each item box:             # (one tray tilt takes them all: see below)
        region = crop_box(...)       # the item's box + a margin, inside the zone
        classification = classifier.classify(region of frame.image)
        route = router.route(...)    # class → compartment, or the fallback
        asked = self.ask(...)        # unsure: a person may answer (bin_agent.ask)
        chute.wait_for_chute()       # the previous item's sort is over: one at a time
        store.record_event(...)      # outbox + counts: one transaction, committed
        chute.start(route.compartment, done=store.mark_actuated)  # servo in a thread
        store.sync()                 # the commit's one sync, while the servo starts
        mqtt.wake()                  # published while the mechanics move
        trigger.item_taken_away()    # if the sort moves it: the tray tilts in view
        mqtt.publish_state()         # never blocks sorting

Several items in one frame (dropped a moment apart) are several items: each is classified
on its own box, routed, recorded (its own event) and published. Guidance LEDs show
them one after the other (each waits for the chute). A sorter that takes the item
(the tray the camera watches) takes every item on it with one tilt: they go to the
compartment they all agree on, else to the fallback compartment, so that no item
lands in another class's compartment; each event names the compartment it went to
(and ``reason: "shared_tray"`` where they disagreed).

The item is recorded before the mechanics move: one inside the servo when the
power goes is counted and its event is in the outbox. The record is committed
before the servo's command and synced to the card right after it (the servo
waits for no card): a servo takes a new pulse width at its next period (20 ms)
and then needs hundreds of milliseconds to move an item, so a power cut before
the sync ends finds the item where it was, counted or not, never counted in
the wrong place; the event leaves for MQTT only once synced. Its ``time`` is the
moment of the decision. The loop does not wait for the servo's travel and dwell
(it goes on reading frames); only the next item waits for the chute, and a stop
waits for the sort in progress.

Everything the loop uses is built by :func:`build_agent` from the validated
:class:`~bin_agent.config.Config`; tests pass their own frame source or pin
factory through the same function.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import ssl
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, cast

from . import __version__, clock
from .actuators.sorter import GuidanceSorter, Indicators, Sorter, build_sorter, make_pin_factory
from .actuators.worker import SortWorker
from .ask import Asked, Asker
from .classify.classifier import Classification, Classifier, ModelFiles, describe
from .classify.preprocess import PreprocessSpec
from .config import (
    CameraSection,
    Config,
    ConfigError,
    TriggerMode,
    actuation_seconds,
)
from .errors import EX_FAILURE, BinAgentError
from .events import SortedItem, utc_now_iso
from .fill import FillMonitor
from .geometry import NormBox, PixelBox, crop_box, to_normalised
from .learning.capture import Capture, capture_folder
from .learning.pending import PendingCorrections
from .learning.service import LearningService
from .mqtt.commands import Command, CommandGate, CommandRejected
from .mqtt.credentials import broker_password, broker_tls_context
from .mqtt.link import MqttLink, Topics, default_client_id
from .mqtt.ratelimit import LogThrottle
from .notify import Notifier
from .router import Route, Router, confidence_threshold
from .sources import FrameSource, SourceError
from .store import Store, StoreError, StoreLockedError
from .triggers import Trigger, build_trigger, switchable_trigger_modes

log = logging.getLogger(__name__)

DATABASE_NAME = "bin-agent.db"
EX_TEMPFAIL = 75
"""sysexits.h: try again later (a daemon not up yet); the unit restarts on it, unlike 78."""
ACTUATION_MARGIN_SECONDS = 5.0
"""How much longer than configured a sort may take before the watchdog is no
longer fed for it (a servo that hangs must still get the service restarted)."""
LABELS_CHECK_SECONDS = 3.0
"""How often the main loop looks (one ``stat``) at ``labels.jsonl`` for labels another process
appended (``bin-agent label`` in a terminal): the counts and the state follow within this."""
HISTORY_PRUNE_SECONDS = 3600.0
"""How often, after an item, the history is pruned and ``labels.jsonl`` trimmed if due."""
LOOP_COMMANDS = ("classify", "trigger_mode", "reload_model", "learn")
"""Commands that the main loop (or the learning worker) carries out: refused once the agent stops."""


class StartupError(BinAgentError, RuntimeError):
    """A part of the agent cannot start; the message says which and why."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class _Decided:
    """One item classified, routed (and asked about), not yet recorded: its event, the
    region of the frame that was classified (what capture keeps) and the label it is
    counted under."""

    item: SortedItem
    classified: Any
    counted_label: str


@dataclass
class Agent:
    """All the parts of a running bin, wired together."""

    config: Config
    source: FrameSource
    trigger: Trigger
    classifier: Classifier
    router: Router
    sorter: Sorter
    indicators: Indicators
    store: Store
    mqtt: MqttLink | None
    notifier: Notifier
    pin_factory: Any = None
    fill: FillMonitor | None = None
    out: TextIO | None = None
    commands: CommandGate = field(default_factory=CommandGate)
    capture: Capture | None = None
    asker: Asker | None = None
    learning: LearningService | None = None
    chute: SortWorker | None = None  # built from ``sorter`` when not given
    stop_event: threading.Event = field(default_factory=threading.Event)
    items_sorted: int = 0
    frames_seen: int = 0
    status: str = "starting"
    started_at: float = field(default_factory=time.monotonic)
    trigger_mode: TriggerMode = "motion"
    _pending_trigger_mode: TriggerMode | None = None
    # The clock of the loop's housekeeping (history prune, labels trim and check); tests pass their own.
    monotonic: Callable[[], float] = time.monotonic
    _next_history_prune: float = 0.0
    # labels.jsonl's size after its last trim: trimmed again once twice that (learning.labels).
    _labels_kept_bytes: int = 0
    # labels.jsonl's LabelStore.change_stamp() when its labels last reached the counts.
    _labels_stamp: tuple[int, int, int] | None = None
    _next_labels_check: float = 0.0
    storage_degraded: bool = False
    sort_error: str | None = None  # the last sort's error as last seen by the loop: state "actuator_error"
    # A classifier built by reload_model, taken by the loop between two items.
    staged_classifier: Classifier | None = None
    reload_lock: threading.Lock = field(default_factory=threading.Lock)
    # Why the agent sorts with a fallback instead of the deployed model (build_agent); None: it does not.
    model_problem: str | None = None
    # Why the agent sorts without [capture] (and [learning]) although they are on (build_agent), or
    # why capture fails while running (Capture.problem, set by its writer); None: neither.
    capture_problem: str | None = None
    # With capture: a correction of an item whose photo is not written yet waits there for it.
    pending: PendingCorrections | None = None
    # One correction at a time (MQTT's thread, the held ones' worker): each reads the label before it.
    _correct_lock: threading.Lock = field(default_factory=threading.Lock)
    # Commands the agent refuses (not the gate): logged at most once a minute per command name.
    _command_log: LogThrottle = field(default_factory=lambda: LogThrottle(log))

    def __post_init__(self) -> None:
        if self.chute is None:
            self.chute = SortWorker(self.sorter)

    @property
    def _chute(self) -> SortWorker:
        assert self.chute is not None
        return self.chute

    @property
    def sort_limit_seconds(self) -> float:
        """How long a sort may take before the watchdog is no longer fed for it."""
        return actuation_seconds(self.config.actuator) + ACTUATION_MARGIN_SECONDS

    # ------------------------------------------------------------------ the loop

    def run(self) -> int:
        """Run until :meth:`stop` or the end of a finite source. Returns the exit code."""
        exit_code = 0
        try:
            self.source.start()
        except SourceError as exc:
            log.error("%s", exc)
            self.status = "camera_error"
            self._publish_state()
            self.close()
            return exc.exit_code
        self.status = "running"
        self.indicators.ready()
        self._publish_state()
        self.notifier.ready(self._status_line())
        try:
            while not self.stop_event.is_set():
                self._switch_trigger_if_asked()
                self._reconcile_labels_if_changed()
                if self.fill is not None and self.fill.sensors_changed():
                    self._publish_state()
                try:
                    frame = self.source.read()
                except SourceError as exc:
                    log.error("%s", exc)
                    self.status = "camera_error"
                    self.indicators.error()
                    # Said now, not after closing: a camera whose driver is stuck can
                    # freeze the whole process in its stop() (sources/picamera.py), and
                    # the dashboard would keep "running" until the broker's will says offline.
                    self._publish_state()
                    exit_code = 1
                    break
                if frame is None:
                    if self.config.agent.exit_when_source_ends:
                        log.info("frame source ended after %d frames", self.frames_seen)
                        break
                    self.stop_event.wait(0.5)
                    continue
                self.frames_seen += 1
                if self.staged_classifier is not None:
                    self._switch_model()
                # The watchdog is fed only here, i.e. only while frames flow and
                # no sort hangs: a stalled camera or servo lets systemd restart the service.
                if self._chute.busy_seconds() <= self.sort_limit_seconds:
                    self.notifier.watchdog_if_due()
                self.store.retry_if_due()  # while the disk is full: is there room again?
                self._watch_storage()
                self._watch_sorting()
                started = time.perf_counter()
                if self.trigger.update(frame):
                    trigger_ms = (time.perf_counter() - started) * 1000.0
                    regions = self.regions_to_classify(frame.image)
                    self.handle_items(frame.image, frame.name, trigger_ms, regions)
        finally:
            self.close()
        return exit_code

    def regions_to_classify(self, image: Any) -> list[PixelBox]:
        """The regions of ``image`` to classify, one per item the trigger saw (largest
        first); the drop zone alone when it cannot see them."""
        boxes: tuple[NormBox | None, ...] = self.trigger.item_boxes or (None,)
        return [region_to_classify(self.config.camera, self.classifier.spec, image.shape, box) for box in boxes]

    def handle_items(
        self, image: Any, source_name: str, trigger_ms: float, regions: list[PixelBox]
    ) -> list[SortedItem]:
        """The items of one frame, one per region (:meth:`regions_to_classify`). Each is
        sorted on its own (:meth:`handle_item`; guidance LEDs show one after the other),
        but one tilt of a sorter that takes the item takes every item on the tray: they are
        classified first and sorted together (:meth:`share_the_tray`).

        Several items: an unsure one is asked about remotely only (``at_the_bin=False``):
        nothing at the bin says which item the lamps would mean, so a button answer could
        be the other item's, and would become this one's label."""
        at_the_bin = len(regions) <= 1
        if at_the_bin or not self.sorter.takes_the_item:
            return [self.handle_item(image, source_name, trigger_ms, region, at_the_bin) for region in regions]
        decided = [self._decide(image, source_name, trigger_ms, region, at_the_bin) for region in regions]
        return self._sort(self.share_the_tray(decided))

    def share_the_tray(self, decided: list[_Decided]) -> list[_Decided]:
        """Items that one tilt takes together: where their routes name different
        compartments, all go to the fallback compartment (an item must never land in
        another class's compartment because it shared the tray), each event saying so
        (``reason: "shared_tray"``, ``fallback: true``); where they agree, as routed."""
        if len({one.item.route.compartment for one in decided}) <= 1:
            return decided
        shared = Route(self.router.fallback, fallback=True)
        log.info(
            "%d items on the tray of different compartments (%s): the tray goes to the fallback %s",
            len(decided),
            ", ".join(one.item.route.compartment for one in decided),
            shared.compartment,
        )
        return [
            dataclasses.replace(one, item=dataclasses.replace(one.item, route=shared, reason="shared_tray"))
            for one in decided
        ]

    def handle_item(
        self,
        image: Any,
        source_name: str = "",
        trigger_ms: float = 0.0,
        region: PixelBox | None = None,
        at_the_bin: bool = True,
    ) -> SortedItem:
        """Classify the ``region`` of ``image`` (default: all of it), route, record,
        start the sort and publish one item. Returns once the sort has started.
        ``at_the_bin``: see :meth:`_decide`."""
        return self._sort([self._decide(image, source_name, trigger_ms, region, at_the_bin)])[0]

    def _decide(
        self, image: Any, source_name: str, trigger_ms: float, region: PixelBox | None, at_the_bin: bool = True
    ) -> _Decided:
        """Classify the ``region`` of ``image`` (default: all of it), route it, ask about
        it if unsure: the item's event, not yet recorded. ``at_the_bin``: it may be asked
        by lamps and buttons (False: one of several items in view, asked remotely only)."""
        started = time.perf_counter()
        self.indicators.busy()
        height, width = image.shape[:2]
        left, top, right, bottom = region if region is not None else (0, 0, width, height)
        classified = image[top:bottom, left:right]  # what the model sees, and what capture keeps
        classification = self.classifier.classify(classified)
        t_route = time.perf_counter()
        route = self.router.route(classification.label, classification.confidence)
        t_ask = time.perf_counter()
        event_id = str(uuid.uuid4())
        if self.pending is not None:  # before the id is public (the question, the event)
            self.pending.expect(event_id)
        asked = self.ask(classified, classification, route, event_id, at_the_bin=at_the_bin)
        if asked is not None:
            route = asked.route
        decided = time.perf_counter()
        latency = {
            "trigger": trigger_ms,
            "preprocess": classification.preprocess_ms,
            "inference": classification.inference_ms,
            "route": (t_ask - t_route) * 1000.0,
            **({"ask": (decided - t_ask) * 1000.0} if asked is not None else {}),
            "total": trigger_ms + (decided - started) * 1000.0,
        }
        item = SortedItem(  # its time: now, the decision
            bin_id=self.config.agent.bin_id,
            classification=classification,
            route=route,
            model_version=self.classifier.version,
            latency_ms=latency,
            source=source_name if source_name != "empty" else "",
            box=to_normalised((left, top, right, bottom), (width, height)),
            clock_synced=clock.synchronised(),
            **(asked.event_fields() if asked is not None else {"event_id": event_id}),
        )
        counted = asked.counted_label(classification.label) if asked is not None else classification.label
        return _Decided(item, classified, counted)

    def _sort(self, decided: list[_Decided]) -> list[SortedItem]:
        """Record the items ``decided`` (routed to one compartment), start the sort that
        takes them all and publish them. Returns once the sort has started."""
        compartment = decided[0].item.route.compartment
        # The previous item must be through the chute before these are counted.
        with self.notifier.keepalive(self.sort_limit_seconds - self._chute.busy_seconds()):
            self._chute.wait_for_chute()
        # Recorded (one transaction each) before anything moves: an item in the servo when
        # the power goes is counted and its event is in the outbox. Committed now, synced
        # once the servo has its command (below): the command does not wait for the card.
        seqs = []
        numbers = []
        for one in decided:
            item, route = one.item, one.item.route
            seqs.append(
                self.store.record_event(
                    event_id=item.event_id,
                    topic=self._topics().event,
                    payload=item.payload(),
                    label=one.counted_label,
                    compartment=route.compartment,
                    fallback=route.fallback,
                    durable=False,
                )
            )
            self.items_sorted += 1
            numbers.append(self.items_sorted)
            # With print_events the line below already says it: keep the log quiet.
            log.log(
                logging.DEBUG if self.out is not None else logging.INFO,
                "item %d: %s %.2f -> %s%s",
                self.items_sorted,
                item.classification.label,
                item.classification.confidence,
                route.compartment,
                f" ({item.reason or 'fallback'})" if route.fallback else "",
            )
            if self.out is not None:
                print(item.line(self.items_sorted), file=self.out, flush=True)
        which = ", ".join(str(number) for number in numbers)

        def sorted_(seconds: float) -> None:  # in the sort's thread
            for seq in seqs:
                self.store.mark_actuated(seq)
            self.indicators.sorted_item()
            self.indicators.ready()
            log.debug("item %s: sorted into %s in %.0f ms", which, compartment, seconds * 1000.0)

        try:
            self._chute.start(compartment, sorted_)
        finally:  # recorded: synced and published whether or not the sort could start
            self.store.sync()  # the records' one sync, while the servo takes its command
        if self.mqtt is not None:
            self.mqtt.wake()  # the events go out while the mechanics move
        if self.sorter.takes_the_item:  # the tray the camera watches tilts: the trigger must know
            self.trigger.item_taken_away()
        self._watch_storage()
        if self.capture is not None:  # queued for the writer thread: never waits
            for one in decided:
                self.capture.offer(one.classified, one.item, backbone=self.classifier.backbone_sha256)
        self._publish_state()
        self._prune_history_if_due()  # after the item, outside its latency
        return [one.item for one in decided]

    def ask(
        self, image: Any, classification: Classification, route: Route, event_id: str, *, at_the_bin: bool = True
    ) -> Asked | None:
        """Ask a person about an unsure item (``[ask]``), the item of ``event_id``; None when not
        asked. Blocks up to :attr:`Asker.longest_wait_seconds` (the watchdog is fed meanwhile).
        ``at_the_bin=False``: remotely only (see :meth:`Asker.ask`)."""
        reason = self.asker.reason_to_ask(route) if self.asker is not None else None
        if self.asker is None or reason is None:
            return None
        with self.notifier.keepalive(self.asker.longest_wait_seconds + ACTUATION_MARGIN_SECONDS):
            return self.asker.ask(
                image,
                classification,
                route,
                reason,
                self.classifier.labels,
                self.stop_event,
                event_id=event_id,
                at_the_bin=at_the_bin,
            )

    def publish_unsure(self, question: dict[str, Any], image: bytes | None) -> None:
        """The retained ``unsure`` question (and its crop on ``unsure/image``); skipped offline, sent
        again by :meth:`Asker.republish` on the next connect."""
        if self.mqtt is None or not self.mqtt.connected:
            return
        topics = self._topics()
        if image is not None:  # first: a dashboard that reacts to the question finds the image
            self.mqtt.publish_retained(topics.unsure_image, image)
        self.mqtt.publish_retained(topics.unsure, question)

    def stop(self) -> None:
        """Ask the loop to finish (signal handlers call this)."""
        self.stop_event.set()

    def _finish_sort(self) -> None:
        """A stop lets the item in the servo land (within systemd's TimeoutStopSec)."""
        with self.notifier.keepalive(self.sort_limit_seconds - self._chute.busy_seconds()):
            self._chute.close()

    def close(self) -> None:
        """Home and detach the mechanics, flush the outbox, say ``offline``."""
        self.stop_event.set()  # also when the source ended
        self.notifier.stopping(f"stopping after {self.items_sorted} item(s)")
        if self.status == "running":
            self.status = "stopping"
        closers = [
            ("sort in progress", self._finish_sort),
            ("sorter", self.sorter.close),
            ("indicators", self.indicators.close),
            ("trigger", self.trigger.close),
            ("source", self.source.close),
        ]
        if self.fill is not None:
            closers.append(("fill sensors", self.fill.close))
        if self.capture is not None:
            closers.append(("capture", self.capture.close))
        if self.pending is not None:  # after capture: the photos it still wrote have their corrections
            closers.append(("held corrections", self.pending.close))
        if self.asker is not None:
            closers.append(("ask buttons", self.asker.close))
        if self.learning is not None:
            closers.append(("learning", self.learning.close))
        for name, closer in closers:
            try:
                closer()
            except Exception:
                log.exception("closing the %s failed", name)
        if self.mqtt is not None:
            if self.mqtt.connected and not self.mqtt.drain(self.config.agent.drain_seconds):
                log.warning("%d event(s) stay in the outbox for the next start", self.store.pending_count())
            if self.status == "stopping":
                self.status = "stopped"
            # The retained state is published once more, after the drain: a
            # dashboard then shows "stopped" and what really stays in the outbox.
            self.mqtt.stop()
        self.store.close()
        self.notifier.close()

    # ------------------------------------------------------------------ commands

    def handle_command(self, name: str, payload: bytes, retained: bool = False) -> dict[str, Any] | None:
        """Check and run an MQTT command (``retained``: published with the retain flag, never
        run); the reply goes to ``cmd/result`` (None: no reply)."""
        reply: dict[str, Any] = {"command": name[:64], "ok": False}
        try:
            command = self.commands.check(name, payload, retained)
        except CommandRejected as exc:
            if not exc.reply:
                return None
            reply["reason"] = exc.reason
            if exc.request_id is not None:
                reply["id"] = exc.request_id
            return reply
        if command.request_id is not None:
            reply["id"] = command.request_id
        result = self._run_command(command, reply)
        if result is not None and not result["ok"]:
            # Refused by the agent rather than by the gate (which logs its own): one line, no traceback.
            self._command_log.log(
                logging.WARNING, command.name, "MQTT command %s not run: %s", command.name, result.get("reason")
            )
        return result

    def _run_command(self, command: Command, reply: dict[str, Any]) -> dict[str, Any] | None:
        if command.name in LOOP_COMMANDS and self.status not in ("starting", "running"):
            # Stopping (a sort in progress lands, the outbox drains): the loop that would carry
            # it out is over, so an "ok" would be a promise nobody keeps.
            why = "stopping" if self.status in ("stopping", "stopped") else f"stopping ({self.status})"
            return reply | {"reason": f"the agent is {why}: send {command.name} again once it runs"}
        if command.name == "classify":
            self.trigger.request()
        elif command.name == "reset_counts":
            with self._correct_lock:  # not between a correction's (or the loop's reconcile's) reading and moving
                self.store.reset_counts()
            self._publish_state()
        elif command.name == "ping":
            reply["pong"] = utc_now_iso()
            reply["status"] = self.reported_status()
        elif command.name == "emptied":
            return self._command_emptied(command.args, reply)
        elif command.name == "trigger_mode":
            return self._command_trigger_mode(command.args, reply)
        elif command.name == "reload_model":
            return reply | self.reload_model()
        elif command.name == "correct":
            result = self.correct(command.args, reply)
            return None if result is None else reply | result
        elif command.name == "learn":
            if self.learning is None:
                if self.capture_problem is not None:
                    return reply | {"reason": f"cannot learn: {self.capture_problem}"}
                return reply | {"reason": "learning needs [capture] enabled"}
            return reply | self.learning.request(command.request_id)
        reply["ok"] = True
        return reply

    def _command_emptied(self, args: dict[str, Any], reply: dict[str, Any]) -> dict[str, Any]:
        compartment = args.get("compartment")
        if self.fill is None:
            reply["reason"] = "fill levels are off (fill.enabled = false)"
        elif not isinstance(compartment, str) or compartment not in self.fill.compartments:
            reply["reason"] = f"'compartment' must be one of {', '.join(self.fill.compartments)}"
        else:
            try:
                reply["emptied"] = self.fill.emptied(compartment)
            except StoreError as exc:  # a full or failing disk: the emptying cannot be kept
                reply["reason"] = f"not recorded: {exc}"
                return reply
            reply["ok"] = True
            self._publish_state()
        return reply

    def _command_trigger_mode(self, args: dict[str, Any], reply: dict[str, Any]) -> dict[str, Any]:
        modes = switchable_trigger_modes(self.config.trigger)
        mode = args.get("mode")
        if mode not in modes:
            reply["reason"] = f"'mode' must be one of {', '.join(modes)}"
            return reply
        # The main loop swaps the trigger between two frames: update() runs in its thread only.
        self._pending_trigger_mode = cast(TriggerMode, mode)
        reply["ok"] = True
        return reply

    def _trigger_in_mode(self, mode: TriggerMode) -> Trigger:
        section = dataclasses.replace(self.config.trigger, mode=mode)
        return build_trigger(section, drop_zone=self.config.camera.zone, pin_factory=self.pin_factory)

    def _switch_trigger_if_asked(self) -> None:
        mode, self._pending_trigger_mode = self._pending_trigger_mode, None
        if mode is None or mode == self.trigger_mode:
            return
        self.trigger.close()  # frees a GPIO sensor's pins before the new trigger claims them
        try:
            self.trigger = self._trigger_in_mode(mode)
        except Exception as exc:
            log.error(
                "cannot switch the trigger to %s (%s: %s); back to %s", mode, type(exc).__name__, exc, self.trigger_mode
            )
            self.trigger = self._trigger_in_mode(self.trigger_mode)
        else:
            log.info("trigger mode %s -> %s (until the next start)", self.trigger_mode, mode)
            self.trigger_mode = mode
        self._publish_state()

    def _prune_history_if_due(self) -> None:
        now = self.monotonic()
        if now < self._next_history_prune:
            return
        self._next_history_prune = now + HISTORY_PRUNE_SECONDS
        removed = self.store.prune_history(time.time() - self.config.history.retention_days * 86400.0)
        if removed:
            log.info("history: dropped %d item(s) older than %d days", removed, self.config.history.retention_days)
        self.trim_labels_if_due()

    def trim_labels_if_due(self) -> None:
        """Trim ``labels.jsonl`` (:meth:`~bin_agent.learning.labels.LabelStore.trim`) once it is
        twice what its last trim kept and at least ``TRIM_MIN_BYTES``: bounded while the agent runs
        for years, and rewritten only after as much again was appended."""
        if self.capture is None:
            return
        from .learning.labels import LABELS_FILE, TRIM_MIN_BYTES, trim_labels

        folder = capture_folder(self.config.agent.state_dir, self.config.capture.folder)
        try:
            size = (folder / LABELS_FILE).stat().st_size
        except OSError:
            return
        if size >= max(TRIM_MIN_BYTES, 2 * self._labels_kept_bytes):
            self._labels_kept_bytes = trim_labels(folder, self.store) or size

    def _reconcile_labels_if_changed(self) -> None:
        """Every :data:`LABELS_CHECK_SECONDS`, one ``stat`` of ``labels.jsonl``: when it changed
        (a label from ``bin-agent label`` in a terminal, which cannot write the database the agent
        holds; or the agent's own, which moved their counts already), the counts are brought in
        line with the labels as at the start (:func:`~bin_agent.learning.labels.reconcile_counts`)
        and the state is published when any moved."""
        if self.capture is None:
            return
        now = self.monotonic()
        if now < self._next_labels_check:
            return
        self._next_labels_check = now + LABELS_CHECK_SECONDS
        from .learning.labels import LabelError, LabelStore, reconcile_counts

        # Looked at before the file is read: a label appended meanwhile is read now or seen next time.
        stamp = LabelStore(self.capture.folder).change_stamp()
        if stamp == self._labels_stamp:
            return
        self._labels_stamp = stamp
        try:
            with self._correct_lock:  # a cmd/correct must not move the same item meanwhile
                moved = reconcile_counts(self.capture.folder, self.store, self.config.router.compartments, running=True)
        except (LabelError, OSError) as exc:  # said once per change of the file, as at the start
            log.error("counts: cannot bring them in line with the labels in %s (%s)", self.capture.folder, exc)
            return
        if moved:
            self._publish_state()

    def correct(self, args: dict[str, Any], reply: dict[str, Any]) -> dict[str, Any] | None:
        """``cmd/correct {"event_id", "label"}``: label a captured item (bin_agent.labels)
        and move it in the counts.

        An item whose photo is not written yet (the answer came just as the ask's timeout
        fired, or right after the item's event) is corrected once the photo is there: None
        is returned, and ``reply`` with the result goes to ``cmd/result`` then."""
        event_id, label = args.get("event_id"), args.get("label")
        if self.asker is not None and isinstance(event_id, str) and isinstance(label, str):
            answer = self.asker.answer_remote(event_id, label)
            if answer is not None:  # the item still waits at the bin: the answer routes it
                answered: dict[str, Any] = {"ok": answer.label == label, "event_id": event_id, "label": answer.label}
                if answer.label != label:
                    answered["reason"] = f"already answered at the bin ({answer.source})"
                return answered | {"waiting": True}
        if (
            self.pending is not None
            and isinstance(event_id, str)
            and label in self.classifier.labels
            and self.pending.hold(event_id, functools.partial(self._answer_held, args, reply))
        ):
            return None
        return self._correct_captured(args)

    def _correct_captured(self, args: dict[str, Any]) -> dict[str, Any]:
        from .learning.labels import LabelError, correct_event

        try:
            with self._correct_lock:
                result = correct_event(
                    args,
                    folder=capture_folder(self.config.agent.state_dir, self.config.capture.folder),
                    store=self.store,
                    compartments=self.config.router.compartments,
                    classes=list(self.classifier.labels),
                )
        except LabelError as exc:
            return {"ok": False, "reason": str(exc)}
        if self.learning is not None and not result["repeated"]:
            self.learning.labelled()
        if result["counts_changed"]:
            self._publish_state()
        return result

    def _answer_held(self, args: dict[str, Any], reply: dict[str, Any], why_not: str | None) -> None:
        """A held correction's turn (:class:`PendingCorrections`' worker): its item's photo is
        written or will not be (None), or ``why_not``; the answer goes to ``cmd/result``."""
        result: dict[str, Any] = {"ok": False, "reason": why_not}
        if why_not is None:
            try:
                result = self._correct_captured(args)
            except Exception as exc:  # e.g. a failing disk: said on cmd/result, as in MQTT's thread
                log.exception("correcting %s failed", args["event_id"])
                result = {"ok": False, "reason": f"internal error: {type(exc).__name__}"}
        if not result["ok"]:
            self._command_log.log(logging.WARNING, "correct", "MQTT command correct not run: %s", result["reason"])
        if self.mqtt is not None:
            self.mqtt.publish_result(reply | result)

    # ------------------------------------------------------------------ model reload

    def reload_model(self) -> dict[str, Any]:
        """Build the classifier of the deployed model (``bin-agent deploy``) beside the
        running one; the loop switches to it before the next item. On failure the
        running model stays. Called from the MQTT thread or a SIGHUP thread."""
        from .classify.classifier import ModelFilesError
        from .learning.deploy import DeployError, check_classes

        with self.reload_lock:
            try:
                candidate = build_classifier(self.config)
                check_classes(candidate, self.config)
            except (ModelFilesError, DeployError) as exc:
                log.error("model reload refused, keeping %s: %s", self.classifier.version, exc)
                return {"ok": False, "reason": f"keeping model {self.classifier.version}: {exc}"[:300]}
            self.staged_classifier = candidate
        log.info("model %s loaded; switching from %s before the next item", candidate.version, self.classifier.version)
        return {"ok": True, "model": candidate.files.model.name, "model_version": candidate.version}

    def request_reload(self) -> None:
        """SIGHUP: reload in a thread (a signal handler must not load a model); the
        outcome goes to ``cmd/result`` like the MQTT command's."""

        def work() -> None:
            reply = {"command": "reload_model", "trigger": "SIGHUP"} | self.reload_model()
            if self.mqtt is not None:
                self.mqtt.publish_result(reply)

        threading.Thread(target=work, name="model-reload", daemon=True).start()

    def _switch_model(self) -> None:
        with self.reload_lock:
            staged, self.staged_classifier = self.staged_classifier, None
        if staged is None:
            return
        previous, self.classifier = self.classifier, staged
        self.model_problem = None  # a reload builds the deployed model itself, never a fallback
        # The new model (or a head refitted by `bin-agent learn`) brings its own threshold
        # unless the config pins one.
        threshold, source = router_threshold(self.config, staged)
        self.router.confidence_threshold = threshold
        log.info(
            "switched model %s -> %s (confidence threshold %g: %s)", previous.version, staged.version, threshold, source
        )
        self.notifier.status(f"sorting; model {staged.version}")
        self._publish_state()

    # ------------------------------------------------------------------ state

    def state(self) -> dict[str, Any]:
        """The retained ``state`` payload."""
        last = self.store.last_item()
        sort_error = self.sort_error  # read once: the loop may clear it meanwhile
        return {
            "bin_id": self.config.agent.bin_id,
            "status": self._status_with(sort_error),
            "counts": self.store.counts().as_dict(),
            "last_item": last,
            "outbox_pending": self.store.pending_count(),
            "commands_rejected": self.commands.rejected,
            "outbox_dropped": self.store.outbox_dropped,
            "storage": self.store.health(),
            "capture_dropped": self.capture.dropped if self.capture is not None else 0,
            "sort_error": sort_error,
            **({"ask": self.asker.state()} if self.asker is not None else {}),
            "model": describe(self.classifier),
            "model_problem": self.model_problem,
            "capture_problem": self.capture_problem,
            **({"learning": self.learning.state()} if self.learning is not None else {}),
            "trigger": self.trigger.state,
            # Settled changes the motion trigger judged smaller than an item (docs/trigger.md).
            "possible_items_not_classified": getattr(self.trigger, "possible_items", 0),
            "agent_version": __version__,
            "uptime_seconds": round(time.monotonic() - self.started_at, 1),
            "updated": utc_now_iso(),
            # False: ``updated``, ``counts.since`` and the events' times may be far behind (no RTC).
            "clock_synced": clock.synchronised(),
            **self._dashboard_state(last),
        }

    def reported_status(self) -> str:
        """The status the state says: ``actuator_error`` while running with failing sorts."""
        return self._status_with(self.sort_error)

    def _status_with(self, sort_error: str | None) -> str:
        return "actuator_error" if self.status == "running" and sort_error is not None else self.status

    def _dashboard_state(self, last: dict[str, Any] | None) -> dict[str, Any]:
        """The keys dashboards read (Home Assistant's value templates, ``bin-agent monitor``)."""
        counts = self.store.counts()
        extra: dict[str, Any] = {
            "trigger_mode": self.trigger_mode,
            "fallback_share": round(100.0 * counts.fallback / counts.total, 1) if counts.total else None,
            "inference_ms": (last or {}).get("latency_ms", {}).get("inference"),
        }
        if self.fill is not None:
            extra.update(self.fill.state())
        return extra

    def _status_line(self) -> str:
        """The one line ``systemctl status`` shows."""
        line = f"sorting; model {self.classifier.version}"
        if self.model_problem is not None:
            line += "; THE DEPLOYED MODEL CANNOT RUN: sorting with a fallback, see the log"
        if self.capture_problem is not None and self.capture is None:
            line += "; THE CAPTURE FOLDER CANNOT BE USED: sorting without capture and learning, see the log"
        elif self.capture_problem is not None:
            line += "; CAPTURE FAILS: photos are not kept, see the log"
        if self.sort_error is not None:
            line += f"; THE SORT FAILS ({self.sort_error}): items are counted, see the log"
        if self.store.degraded:
            line += "; STORAGE FULL OR FAILING: events held in memory, see the log"
        elif self.store.incident is not None:
            line += f"; state database {self.store.incident['kind']} at start, see the log"
        return line

    def _watch_sorting(self) -> None:
        """Say it when the mechanics start failing (or work again): the bin goes on
        classifying and counting; each item's sort tries them again (actuators/worker.py).
        One field: the state's status and ``sort_error`` both come from it (:meth:`reported_status`)."""
        failure = self._chute.failure
        if (failure is None) == (self.sort_error is None):
            return
        self.sort_error = failure
        if failure is not None:
            self.indicators.error()
        self.notifier.status(self._status_line())
        self._publish_state()

    def capture_problem_changed(self, problem: str | None) -> None:
        """The capture writer's thread: the folder started failing while running (or writes work
        again). Said where a folder unusable at start is: ``state.capture_problem`` (Home
        Assistant's Problem sensor, ``bin-agent monitor``) and the systemd status line."""
        self.capture_problem = problem
        self.notifier.status(self._status_line())
        if self.mqtt is not None:  # the state alone: the fill alert is the main loop's
            self.mqtt.publish_state()

    def _watch_storage(self) -> None:
        """Say it when the database stops (or starts again) taking writes."""
        if self.store.degraded != self.storage_degraded:
            self.storage_degraded = self.store.degraded
            self.notifier.status(self._status_line())
            self._publish_state()

    def _publish_state(self) -> None:
        if self.mqtt is not None:
            self.mqtt.publish_state()
            self._publish_full_alert()

    def _publish_full_alert(self) -> None:
        """The retained ``full`` topic, whenever the set of full compartments changes."""
        if self.fill is None or self.mqtt is None or not self.mqtt.connected:
            return
        alert = self.fill.full_alert(self.fill.state()["full"])
        if alert is not None:
            alert["time"] = utc_now_iso()
            self.mqtt.publish_retained(f"{self._topics().base}/full", alert)

    def on_mqtt_connected(self) -> None:
        """Called by the MQTT link on every (re)connect, before the state goes out."""
        if self.config.homeassistant.enabled and self.mqtt is not None:
            from .mqtt.discovery import discovery_messages

            for topic, payload in discovery_messages(self.config, self.classifier.labels).items():
                self.mqtt.publish_retained(topic, payload)
        if self.fill is not None:
            self.fill.forget_published()
            self._publish_full_alert()
        if self.asker is not None:
            self.asker.republish()

    def _topics(self) -> Topics:
        return Topics.for_bin(self.config.mqtt.topic_prefix, self.config.agent.bin_id)

    def publish_result(self, reply: dict[str, Any]) -> None:
        """A result that no command waits for (a learn, a rollback) on ``cmd/result``, then the state."""
        if self.mqtt is not None:
            self.mqtt.publish_result(reply)
        self._publish_state()


def region_to_classify(
    camera: CameraSection, spec: PreprocessSpec, image_shape: tuple[int, ...], item_box: NormBox | None
) -> PixelBox:
    """The item's box (if the trigger knows it) grown by ``camera.crop_margin``,
    brought to the shape the model's preprocessing expects (the input's, or
    within ``spec.item_stretch`` of it) and kept inside ``camera.drop_zone``;
    the drop zone if the box is unknown. Pixels of a frame of ``image_shape``
    (``(height, width, ...)``)."""
    height, width = image_shape[0], image_shape[1]
    input_h, input_w = spec.input_size
    return crop_box(
        (width, height), item_box, camera.crop_margin, camera.zone, aspect=input_w / input_h, stretch=spec.item_stretch
    )


# ---------------------------------------------------------------------- assembly


def router_threshold(config: Config, classifier: Classifier) -> tuple[float, str]:
    """The confidence threshold in force with ``classifier`` and where it comes from
    (:func:`~bin_agent.router.confidence_threshold`)."""
    return confidence_threshold(
        config.router.confidence_threshold, classifier.recommended_threshold, classifier.threshold
    )


def build_classifier(config: Config, num_threads: int | None = None, model_file: Path | None = None) -> Classifier:
    """The classifier of the model the agent runs (the deployed one, else ``model.path``;
    ``model_file`` instead when given; ``num_threads`` overrides the config's);
    raises :class:`~bin_agent.classifier.ModelFilesError`. With ``[capture]`` on it
    reads each item's embedding, which capture keeps for ``bin-agent learn``."""
    from .learning.deploy import active_model_path

    model = config.model
    return Classifier(
        ModelFiles.beside(model_file if model_file is not None else active_model_path(config)),
        num_threads=num_threads or model.num_threads,
        views=model.views or None,  # 0: the model metadata's
        embeddings=config.capture.enabled,
        embeddings_if_readable=True,
    )


def start_classifier(config: Config) -> tuple[Classifier, str | None]:
    """The classifier the agent starts with, and why it is a fallback (None: it is not).

    A deployed model that cannot run (a folder lost or cut short by a power cut, a damaged
    head file, classes that are not those of ``[router]`` any more) must not keep an
    unattended bin from sorting: the agent falls back on the previous model, then on
    ``model.path``, says so (``build_agent`` logs it; ``state.model_problem``, the systemd
    status line, Home Assistant's Problem sensor) and sorts. A reload after a rollback or a new deploy takes the
    deployed model again. Only when ``model.path`` cannot run either does it raise
    :class:`~bin_agent.classifier.ModelFilesError` (the deployed model's problem first).
    """
    from .classify.classifier import ModelFilesError
    from .learning import deploy

    try:
        classifier = build_classifier(config)
        if deploy.is_deployed(config):  # model.path's classes are checked with the config
            try:
                deploy.check_classes(classifier, config)
            except deploy.DeployError as exc:
                raise deploy.DeployError(f"{classifier.files.model}: {exc}") from None
        return classifier, None
    except (ModelFilesError, deploy.DeployError) as exc:
        if not deploy.is_deployed(config):
            raise
        problem = f"the deployed model cannot run: {exc}"
    for name, path in deploy.fallback_models(config):
        try:
            classifier = build_classifier(config, model_file=path)
            deploy.check_classes(classifier, config)
        except (ModelFilesError, deploy.DeployError) as exc:
            log.error("%s; %s cannot run either: %s", problem, name, exc)
            continue
        problem += (
            f"; sorting with {name}, version {classifier.version}, instead "
            "(bin-agent deploy --rollback, or deploy a model, then reload)"
        )
        return classifier, problem[:500]
    raise ModelFilesError(problem)


def build_source(config: Config) -> FrameSource:
    camera = config.camera
    if camera.source == "replay":
        from .sources.replay import ReplaySource

        replay = camera.replay
        empty = config.resolve(replay.empty_frame) if replay.empty_frame else None
        return ReplaySource(
            replay.path,
            mode=replay.mode,
            fps=replay.fps,
            realtime=replay.realtime,
            item_seconds=replay.item_seconds,
            empty_seconds=replay.empty_seconds,
            empty_frame=empty,
            lores_size=(camera.lores_size[0], camera.lores_size[1]),
            loop=replay.loop,
            shuffle=replay.shuffle,
            seed=replay.seed,
            limit=replay.limit,
            hflip=camera.hflip,
            vflip=camera.vflip,
            max_pixels=replay.max_pixels,
        )
    from .sources.picamera import PiCameraSource, import_picamera2

    try:
        import_picamera2()  # fail before READY, with the fix, not at every restart
    except SourceError as exc:
        raise StartupError(f"camera.source: {exc}", exc.exit_code) from None
    return PiCameraSource(
        main_size=(camera.main_size[0], camera.main_size[1]),
        lores_size=(camera.lores_size[0], camera.lores_size[1]),
        fps=camera.fps,
        hflip=camera.hflip,
        vflip=camera.vflip,
        timeout_seconds=camera.frame_timeout_seconds,
        af_mode=camera.af_mode,
        lens_position=camera.lens_position,
        exposure=camera.exposure,
        white_balance=camera.white_balance,
        flicker=camera.flicker,
        warmup_seconds=camera.warmup_seconds,
    )


def build_agent(
    config: Config,
    *,
    source: FrameSource | None = None,
    pin_factory: Any = None,
    out: TextIO | None = None,
    notifier: Notifier | None = None,
) -> Agent:
    """Assemble every part from the config.

    :param source: use this frame source instead of the configured one.
    :param pin_factory: use this gpiozero pin factory instead of the configured one.
    :param out: where to print one line per item (``agent.print_events``).
    :raises StartupError: a part cannot start (exit code 78 for configuration
        problems: model files, pin factory, pins).
    """
    from .actuators.sorter import ActuatorError, PinDaemonUnreachable
    from .classify.classifier import ModelFilesError

    # Read before anything is set up: a missing secret leaves nothing to undo.
    password, tls = mqtt_credentials(config) if config.mqtt.enabled else (None, None)
    # The database first: its lock keeps a second agent from touching the pins,
    # the camera or the broker session of the first.
    try:
        store = Store.from_config(config.store, Path(config.agent.state_dir) / DATABASE_NAME)
    except StoreLockedError as exc:
        raise StartupError(str(exc), EX_FAILURE) from None  # systemd retries: the other one may stop
    except StoreError as exc:
        raise StartupError(str(exc), os.EX_CANTCREAT) from None
    # Whatever was set up is released again if a later part cannot start.
    with contextlib.ExitStack() as undo:
        undo.callback(store.close)
        if pin_factory is None:
            try:
                pin_factory = make_pin_factory(config.actuator.pin_factory, config.actuator.gpiochip)
            except PinDaemonUnreachable as exc:
                raise StartupError(f"actuator.pin_factory: {exc}", EX_TEMPFAIL) from None  # restarted
            except ActuatorError as exc:
                raise StartupError(f"actuator.pin_factory: {exc}", os.EX_CONFIG) from None
        try:
            sorter = build_sorter(config.actuator, pin_factory)
            undo.callback(sorter.close)
            indicators = Indicators.from_config(config.actuator, pin_factory)
            undo.callback(indicators.close)
        except ActuatorError as exc:
            raise StartupError(str(exc), os.EX_CONFIG) from None
        except Exception as exc:
            raise StartupError(
                f"actuator: cannot set up the pins ({type(exc).__name__}: {exc})", os.EX_CONFIG
            ) from None
        try:
            trigger = build_trigger(config.trigger, drop_zone=config.camera.zone, pin_factory=pin_factory)
        except Exception as exc:
            raise StartupError(f"trigger: cannot set up ({type(exc).__name__}: {exc})", os.EX_CONFIG) from None
        undo.callback(trigger.close)
        frame_source = source if source is not None else build_source(config)
        from .learning.deploy import remove_interrupted

        remove_interrupted(config)  # what a power cut during a deploy left in models/
        try:
            classifier, model_problem = start_classifier(config)
        except ModelFilesError as exc:
            raise StartupError(f"model.path: {exc}", os.EX_CONFIG) from None
        if model_problem is not None:
            log.error("%s", model_problem)
        fill = None
        if config.fill.enabled:
            try:
                fill = FillMonitor.from_config(config.fill, config.compartments, store, pin_factory)
            except Exception as exc:
                raise StartupError(f"fill.sensors: cannot set up ({type(exc).__name__}: {exc})", os.EX_CONFIG) from None
        capture, capture_problem = make_capture(config)
        labels_bytes = 0
        labels_stamp = None
        if capture is not None:
            undo.callback(capture.close)
            from .learning.labels import LabelStore, labels_at_start

            # Before the reconcile reads it: a label appended meanwhile reaches the counts in the loop.
            labels_stamp = LabelStore(capture.folder).change_stamp()
            # Before the first item: the counts follow the labels (a correction a kill cut short).
            labels_bytes = labels_at_start(capture.folder, store, config.router.compartments)
        asker = make_asker(config, pin_factory, sorter, labels=capture is not None)
        if asker is not None:
            undo.callback(asker.close)
        undo.pop_all()
    agent = Agent(
        config=config,
        source=frame_source,
        trigger=trigger,
        classifier=classifier,
        router=Router(config.router.compartments, config.router.fallback, router_threshold(config, classifier)[0]),
        sorter=sorter,
        indicators=indicators,
        store=store,
        mqtt=None,
        notifier=notifier if notifier is not None else Notifier(),
        pin_factory=pin_factory,
        commands=CommandGate.from_config(config.mqtt.commands),
        fill=fill,
        capture=capture,
        asker=asker,
        out=out if out is not None else (sys.stdout if config.agent.print_events else None),
        trigger_mode=config.trigger.mode,
        model_problem=model_problem,
        capture_problem=capture_problem,
        _labels_kept_bytes=labels_bytes,
        _labels_stamp=labels_stamp,
    )
    if asker is not None and config.ask.remote and config.mqtt.enabled:
        asker.publish = agent.publish_unsure
    if capture is not None:
        capture.on_problem = agent.capture_problem_changed
        longest_ask = asker.longest_wait_seconds if asker is not None else 0.0
        agent.pending = PendingCorrections(longest_ask + agent.sort_limit_seconds)
        capture.on_photo_done = agent.pending.photo_done
        agent.learning = LearningService.from_config(config, agent.reload_model, agent.publish_result)
        agent.learning.start()
    if config.mqtt.enabled:
        agent.mqtt = make_mqtt(config, store, agent.handle_command, agent.state, password=password, tls=tls)
        agent.mqtt.connect_hooks.append(agent.on_mqtt_connected)
        agent.mqtt.start()
    return agent


def mqtt_credentials(config: Config) -> tuple[str | None, ssl.SSLContext | None]:
    """The broker password and TLS context of ``config.mqtt``, read now.

    :raises StartupError: (78) a password or TLS file became unusable since the
        config was checked.
    """
    try:
        password, tls = broker_password(config), broker_tls_context(config)
    except ConfigError as exc:
        raise StartupError("; ".join(exc.problems), os.EX_CONFIG) from None
    secrets = {"mqtt.password_file": config.mqtt.password_file, "mqtt.tls.key_file": config.mqtt.tls.key_file}
    for key, value in secrets.items():
        if value and config.resolve(value).stat().st_mode & 0o004:
            log.warning("%s: %s is readable by every user on this machine; chmod 600 it", key, config.resolve(value))
    return password, tls


def make_mqtt(
    config: Config,
    store: Store,
    on_command: Callable[[str, bytes, bool], dict[str, Any] | None],
    state: Callable[[], dict[str, Any]],
    *,
    password: str | None = None,
    tls: ssl.SSLContext | None = None,
) -> MqttLink:
    settings = config.mqtt
    return MqttLink(
        settings,
        Topics.for_bin(settings.topic_prefix, config.agent.bin_id),
        store,
        on_command=on_command,
        state=state,
        client_id=default_client_id(settings, config.agent.bin_id),
        password=password,
        tls=tls,
    )


def make_capture(config: Config) -> tuple[Capture | None, str | None]:
    """The ``[capture]`` writer, started (None when capture is off), and why capture is on but
    cannot be used (None: it can).

    A capture folder that cannot be used (a file, a dangling link, no permission, a read-only
    card) must not keep an unattended bin from sorting: the agent sorts without capture, and
    without ``[learning]``, which learns from it; it logs this once, and says it in
    ``state.capture_problem`` and the systemd status line.
    """
    if not config.capture.enabled:
        return None, None
    capture = Capture.from_config(config.capture, config.agent.state_dir)
    try:
        capture.start()
    except OSError as exc:
        # folder_problem's words name the folder; an error of the probe write gets it here.
        why = str(exc) if exc.strerror is None else f"cannot use {capture.folder} ({exc.strerror})"
        problem = (
            f"capture.folder: {why}; sorting without capture, and [learning] cannot learn "
            "(fix the folder, then restart the agent)"
        )
        log.error("%s", problem)
        return None, problem[:500]
    return capture, None


def make_asker(config: Config, pin_factory: Any, sorter: Sorter, labels: bool = True) -> Asker | None:
    """The ``[ask]`` buttons and lamps on the agent's pin factory; None when asking is off.
    ``labels``: the answers go to the capture folder's label store (when capture is on and usable).

    :raises StartupError: (78) a button or lamp pin cannot be set up.
    """
    if not config.ask.enabled:
        return None
    folder = (
        capture_folder(config.agent.state_dir, config.capture.folder) if config.capture.enabled and labels else None
    )
    try:
        return Asker.from_config(
            config.ask,
            config.router,
            config.compartments,
            pin_factory,
            guidance_leds=sorter.leds if isinstance(sorter, GuidanceSorter) else None,
            label_folder=folder,
        )
    except Exception as exc:  # gpiozero: PinInvalidPin, GPIOPinInUse, BadPinFactory…
        raise StartupError(f"ask: cannot set up the buttons or lamps ({type(exc).__name__}: {exc})", 78) from None
