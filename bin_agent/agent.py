"""The agent: assembled from the config in one place, then the main loop.

The loop reads top to bottom, once per frame::

    frame = source.read()            # camera or replay
    if trigger.update(frame):        # a new item lies still in the drop zone
        classification = classifier.classify(frame.image)
        route = router.route(...)    # class → compartment, or the fallback
        sorter.sort(route.compartment)   # servo/flaps/LEDs; blocks: one item at a time
        store.record_event(...)      # durable outbox + counts, one transaction
        mqtt.wake(); mqtt.publish_state()   # never blocks sorting

Everything the loop uses is built by :func:`build_agent` from the validated
:class:`~bin_agent.config.Config`; tests pass their own frame source or pin
factory through the same function.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TextIO

from . import __version__
from .actuators import Indicators, Sorter, build_sorter, make_pin_factory
from .capture import Capture
from .classifier import Classifier, ModelFiles, describe
from .config import Config
from .events import SortedItem, utc_now_iso
from .mqtt import MqttLink, Topics, read_password
from .notify import Notifier
from .router import Router
from .sources import FrameSource, SourceError
from .store import Store
from .trigger import Trigger, build_trigger

log = logging.getLogger(__name__)

COMMANDS = ("classify", "reset_counts", "ping", "reload_model", "correct")
MAX_COMMAND_BYTES = 4096


class StartupError(RuntimeError):
    """A part of the agent cannot start; the message says which and why."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


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
    out: TextIO | None = None
    capture: Capture | None = None
    stop_event: threading.Event = field(default_factory=threading.Event)
    items_sorted: int = 0
    frames_seen: int = 0
    status: str = "starting"
    started_at: float = field(default_factory=time.monotonic)
    # A classifier built by reload_model, taken by the loop between two items.
    staged_classifier: Classifier | None = None
    reload_lock: threading.Lock = field(default_factory=threading.Lock)

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
            return 1
        self.status = "running"
        self.indicators.ready()
        self._publish_state()
        self.notifier.ready(f"sorting; model {self.classifier.version}")
        try:
            while not self.stop_event.is_set():
                try:
                    frame = self.source.read()
                except SourceError as exc:
                    log.error("%s", exc)
                    self.status = "camera_error"
                    self.indicators.error()
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
                # The watchdog is fed only here, i.e. only while frames flow: a
                # stalled camera lets systemd restart the service.
                self.notifier.watchdog_if_due()
                started = time.perf_counter()
                if self.trigger.update(frame):
                    trigger_ms = (time.perf_counter() - started) * 1000.0
                    self.handle_item(frame.image, frame.name, trigger_ms)
        finally:
            self.close()
        return exit_code

    def handle_item(self, image: Any, source_name: str = "", trigger_ms: float = 0.0) -> SortedItem:
        """Classify, route, actuate, record and publish one item."""
        started = time.perf_counter()
        self.indicators.busy()
        classification = self.classifier.classify(image)
        t_route = time.perf_counter()
        route = self.router.route(classification.label, classification.confidence)
        t_actuate = time.perf_counter()
        self.sorter.sort(route.compartment)
        t_record = time.perf_counter()
        latency = {
            "trigger": trigger_ms,
            "preprocess": classification.preprocess_ms,
            "inference": classification.inference_ms,
            "route": (t_actuate - t_route) * 1000.0,
            "actuate": (t_record - t_actuate) * 1000.0,
        }
        item = SortedItem(
            bin_id=self.config.agent.bin_id,
            classification=classification,
            route=route,
            model_version=self.classifier.version,
            latency_ms=latency,
            source=source_name if source_name != "empty" else "",
        )
        topics = self._topics()
        payload = item.payload()
        self.store.record_event(
            event_id=item.event_id,
            topic=topics.event,
            payload=payload,
            label=classification.label,
            compartment=route.compartment,
            fallback=route.fallback,
        )
        latency["record"] = (time.perf_counter() - t_record) * 1000.0
        latency["total"] = trigger_ms + (time.perf_counter() - started) * 1000.0
        self.items_sorted += 1
        if self.capture is not None:  # queued for the writer thread: never waits
            self.capture.offer(image, item)
        if self.mqtt is not None:
            self.mqtt.wake()
        self._publish_state()
        self.indicators.sorted_item()
        self.indicators.ready()
        # With print_events the line below already says it: keep the log quiet.
        log.log(logging.DEBUG if self.out is not None else logging.INFO, "item %d: %s %.2f -> %s%s", self.items_sorted, classification.label,
                 classification.confidence, route.compartment, " (fallback)" if route.fallback else "")
        if self.out is not None:
            print(item.line(self.items_sorted), file=self.out, flush=True)
        return item

    def stop(self) -> None:
        """Ask the loop to finish (signal handlers call this)."""
        self.stop_event.set()

    def close(self) -> None:
        """Home and detach the mechanics, flush the outbox, say ``offline``."""
        self.notifier.stopping(f"stopping after {self.items_sorted} item(s)")
        if self.status == "running":
            self.status = "stopping"
        closers = [("sorter", self.sorter.close), ("indicators", self.indicators.close),
                   ("trigger", self.trigger.close), ("source", self.source.close)]
        if self.capture is not None:
            closers.append(("capture", self.capture.close))
        for name, closer in closers:
            try:
                closer()
            except Exception:
                log.exception("closing the %s failed", name)
        if self.mqtt is not None:
            if self.mqtt.connected and not self.mqtt.drain(self.config.agent.drain_seconds):
                log.warning("%d event(s) stay in the outbox for the next start", self.store.pending_count())
            self.mqtt.stop()
        self.store.close()
        self.notifier.close()

    # ------------------------------------------------------------------ commands

    def handle_command(self, name: str, payload: bytes) -> dict[str, Any]:
        """Validate and run an MQTT command; the reply goes to ``cmd/result``."""
        reply: dict[str, Any] = {"command": name[:64], "ok": False}
        if name not in COMMANDS:
            reply["reason"] = f"unknown command; known: {', '.join(COMMANDS)}"
            return reply
        if len(payload) > MAX_COMMAND_BYTES:
            reply["reason"] = f"payload larger than {MAX_COMMAND_BYTES} bytes"
            return reply
        args: dict[str, Any] = {}
        if payload.strip():
            try:
                args = json.loads(payload)
            except (UnicodeDecodeError, json.JSONDecodeError):
                reply["reason"] = "payload must be empty or a JSON object"
                return reply
            if not isinstance(args, dict):
                reply["reason"] = "payload must be empty or a JSON object"
                return reply
        request_id = args.get("id")
        if isinstance(request_id, (str, int)) and not isinstance(request_id, bool):
            reply["id"] = str(request_id)[:64]
        if name == "classify":
            self.trigger.request()
        elif name == "reset_counts":
            self.store.reset_counts()
            self._publish_state()
        elif name == "ping":
            reply["pong"] = utc_now_iso()
            reply["status"] = self.status
        elif name == "reload_model":
            return reply | self.reload_model()
        elif name == "correct":
            return reply | self.correct(args)
        reply["ok"] = True
        return reply

    def correct(self, args: dict[str, Any]) -> dict[str, Any]:
        """``cmd/correct {"event_id", "label"}``: label a captured item (bin_agent.labels)
        and move it in the counts."""
        from .capture import capture_folder
        from .labels import LabelError, correct_event

        try:
            result = correct_event(
                args, folder=capture_folder(self.config.agent.state_dir, self.config.capture.folder),
                store=self.store, compartments=self.config.router.compartments,
                classes=list(self.classifier.labels))
        except LabelError as exc:
            return {"ok": False, "reason": str(exc)}
        if result["counts_changed"]:
            self._publish_state()
        return result

    # ------------------------------------------------------------------ model reload

    def reload_model(self) -> dict[str, Any]:
        """Build the classifier of the deployed model (``bin-agent deploy``) beside the
        running one; the loop switches to it before the next item. On failure the
        running model stays. Called from the MQTT thread or a SIGHUP thread."""
        from .classifier import ModelFilesError
        from .deploy import DeployError, check_classes

        with self.reload_lock:
            try:
                candidate = build_classifier(self.config)
                check_classes(candidate, self.config)
            except (ModelFilesError, DeployError) as exc:
                log.error("model reload refused, keeping %s: %s", self.classifier.version, exc)
                return {"ok": False, "reason": f"keeping model {self.classifier.version}: {exc}"[:300]}
            self.staged_classifier = candidate
        log.info("model %s loaded; switching from %s before the next item", candidate.version,
                 self.classifier.version)
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
        log.info("switched model %s -> %s", previous.version, staged.version)
        self.notifier.status(f"sorting; model {staged.version}")
        self._publish_state()

    # ------------------------------------------------------------------ state

    def state(self) -> dict[str, Any]:
        """The retained ``state`` payload."""
        last = self.store.last_item()
        return {
            "bin_id": self.config.agent.bin_id,
            "status": self.status,
            "counts": self.store.counts().as_dict(),
            "last_item": last,
            "outbox_pending": self.store.pending_count(),
            "capture_dropped": self.capture.dropped if self.capture is not None else 0,
            "model": describe(self.classifier),
            "trigger": self.trigger.state,
            "agent_version": __version__,
            "uptime_seconds": round(time.monotonic() - self.started_at, 1),
            "updated": utc_now_iso(),
        }

    def _publish_state(self) -> None:
        if self.mqtt is not None:
            self.mqtt.publish_state()

    def _topics(self) -> Topics:
        return Topics.for_bin(self.config.mqtt.topic_prefix, self.config.agent.bin_id)


# ---------------------------------------------------------------------- assembly


def build_classifier(config: Config, num_threads: int | None = None) -> Classifier:
    """The classifier of ``config.model`` (``num_threads`` overrides the config's);
    raises :class:`~bin_agent.classifier.ModelFilesError`."""
    from .deploy import active_model_path

    model = config.model
    return Classifier(ModelFiles.beside(active_model_path(config)), num_threads=num_threads or model.num_threads,
                      views=model.views or None)  # views 0: the model metadata's


def build_source(config: Config) -> FrameSource:
    camera = config.camera
    if camera.source == "replay":
        from .sources.replay import ReplaySource

        replay = camera.replay
        empty = config.resolve(replay.empty_frame) if replay.empty_frame else None
        return ReplaySource(
            replay.path, fps=replay.fps, realtime=replay.realtime, item_seconds=replay.item_seconds,
            empty_seconds=replay.empty_seconds, empty_frame=empty,
            lores_size=(camera.lores_size[0], camera.lores_size[1]), loop=replay.loop,
            shuffle=replay.shuffle, seed=replay.seed, limit=replay.limit,
            hflip=camera.hflip, vflip=camera.vflip,
        )
    import importlib.util

    from .sources.picamera import INSTALL_HINT, PiCameraSource

    if importlib.util.find_spec("picamera2") is None:
        raise StartupError(f"camera.source: {INSTALL_HINT}", 78)
    return PiCameraSource(
        main_size=(camera.main_size[0], camera.main_size[1]),
        lores_size=(camera.lores_size[0], camera.lores_size[1]),
        fps=camera.fps, hflip=camera.hflip, vflip=camera.vflip,
        timeout_seconds=camera.frame_timeout_seconds,
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
    from .actuators import ActuatorError
    from .classifier import ModelFilesError
    from .store import StoreError

    if pin_factory is None:
        try:
            pin_factory = make_pin_factory(config.actuator.pin_factory)
        except ActuatorError as exc:
            raise StartupError(f"actuator.pin_factory: {exc}", 78) from None
    # Whatever was set up is released again if a later part cannot start.
    with contextlib.ExitStack() as undo:
        try:
            sorter = build_sorter(config.actuator, pin_factory)
            undo.callback(sorter.close)
            indicators = Indicators.from_config(config.actuator, pin_factory)
            undo.callback(indicators.close)
        except ActuatorError as exc:
            raise StartupError(str(exc), 78) from None
        except Exception as exc:
            raise StartupError(f"actuator: cannot set up the pins ({type(exc).__name__}: {exc})", 78) from None
        try:
            trigger = make_trigger(config, pin_factory)
        except Exception as exc:
            raise StartupError(f"trigger: cannot set up ({type(exc).__name__}: {exc})", 78) from None
        undo.callback(trigger.close)
        frame_source = source if source is not None else build_source(config)
        try:
            classifier = build_classifier(config)
        except ModelFilesError as exc:
            raise StartupError(f"model: {exc}", 78) from None
        try:
            store = Store(Path(config.agent.state_dir) / "bin-agent.db")
        except StoreError as exc:
            raise StartupError(str(exc), 73) from None
        undo.callback(store.close)
        capture = make_capture(config)
        undo.pop_all()
    agent = Agent(
        config=config,
        source=frame_source,
        trigger=trigger,
        classifier=classifier,
        router=Router(config.router.compartments, config.router.fallback,
                      config.router.confidence_threshold),
        sorter=sorter,
        indicators=indicators,
        store=store,
        mqtt=None,
        notifier=notifier if notifier is not None else Notifier(),
        pin_factory=pin_factory,
        capture=capture,
        out=out if out is not None else (sys.stdout if config.agent.print_events else None),
    )
    if config.mqtt.enabled:
        agent.mqtt = make_mqtt(config, store, agent.handle_command, agent.state)
        agent.mqtt.start()
    return agent


def make_mqtt(config: Config, store: Store, on_command: Callable[[str, bytes], dict[str, Any]],
              state: Callable[[], dict[str, Any]]) -> MqttLink:
    settings = config.mqtt
    password = None
    if settings.password_file:
        password = read_password(config.resolve(settings.password_file))
    return MqttLink(
        settings,
        Topics.for_bin(settings.topic_prefix, config.agent.bin_id),
        store,
        on_command=on_command,
        state=state,
        client_id=settings.client_id or f"bin-agent-{config.agent.bin_id}",
        password=password,
    )


def make_capture(config: Config) -> Capture | None:
    """The ``[capture]`` writer, started; None when capture is off."""
    if not config.capture.enabled:
        return None
    capture = Capture.from_config(config.capture, config.agent.state_dir)
    try:
        capture.start()
    except OSError as exc:
        raise StartupError(f"capture.folder: cannot use {capture.folder} ({exc})", 73) from None
    return capture


def make_trigger(config: Config, pin_factory: Any) -> Trigger:
    """The trigger named by ``trigger.mode``, with its section's settings."""
    trigger = config.trigger
    if trigger.mode == "motion":
        motion = trigger.motion
        return build_trigger(
            "motion",
            pixel_threshold=motion.pixel_threshold,
            min_area=motion.min_area,
            max_motion=motion.max_motion,
            settle_seconds=trigger.settle_seconds,
            rearm_seconds=motion.rearm_seconds,
            background_seconds=motion.background_seconds,
            absorb_seconds=motion.absorb_seconds or None,
        )
    if trigger.mode == "gpio":
        gpio = trigger.gpio
        common = dict(pin_factory=pin_factory, settle_seconds=trigger.settle_seconds,
                      bounce_seconds=gpio.bounce_seconds or None)
        if gpio.kind == "distance":
            return build_trigger("gpio", kind="distance", pin=gpio.echo_pin, trigger_pin=gpio.pin,
                                 threshold_distance=gpio.threshold_distance, **common)
        if gpio.kind == "pir":  # a PIR drives its output: no pull resistor
            return build_trigger("gpio", kind="pir", pin=gpio.pin, **common)
        return build_trigger("gpio", kind=gpio.kind, pin=gpio.pin, pull_up=gpio.pull_up, **common)
    return build_trigger("manual")
