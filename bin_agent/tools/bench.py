"""``bin-agent bench``: how long the agent's own work takes on this machine.

Everything is measured in one run, on the machine it runs on, through the
agent's own parts (:func:`bin_agent.agent.build_agent`: the configured model,
trigger, router, store and MQTT link; gpiozero's ``MockFactory`` for the pins,
a replay source for the frames, a real mosquitto on loopback for the broker):

* **the item path**: from the settled frame to the servo command
  (``path_ms``: trigger (its ``update()`` on the frame an item fires on: an item dropped
  into a textured, noisy bin, :func:`drop_frames`), crop (the region of the item's box the
  trigger found), preprocess, ``invoke()`` x views, route, the
  record's commit, then ``servo``: from the record to the command in the sort's
  thread) and to the event handed to MQTT (``event_ms``; ``publish``: from the
  record to the hand-over to paho, after ``sync``, the record's sync, which runs
  while the servo takes its command), split by stage, against the bare ``invoke()`` of
  the same interpreter in the same run: ``path_ratio = path_ms / (views x bare invoke)``;
* **the trigger**: ``update()`` per 320x240 frame of an empty bin, as configured (a quiet
  bin is looked at every ``idle_look_seconds``: ``trigger_us_per_frame``, whose mean is the
  cost per frame) and with every frame looked at (``trigger_us_per_look``: one look each);
* **idle**: the CPU the running agent takes at 10 fps with nothing happening,
  and its resident memory; beside it, what merely waking at 10 fps costs this machine
  (:func:`bench_idle_floor`: a bare loop, and one summing a frame each time);
* **start-up**: from ``bin-agent run`` to ``READY=1`` on a notify socket;
* **the outbox**: N events recorded during an outage, flushed once the broker
  is back, against bare paho publishing the same N payloads (encoded before its
  clock starts) at QoS 1 with the same in-flight window: the median ratio of
  three (bare, agent) pairs run alternately (``flush_ratio``).

Figures are medians (and min/max) over the items; ratios come from the same
run, so a busy machine slows both sides. ``--quick`` (seconds: what CI runs)
uses few items, no servo travel or dwell, and 200 events.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..geometry import NormBox

QUICK = {"items": 3, "trigger_frames": 50, "idle_seconds": 2.0, "events": 200, "startup": True}
"""``--quick``: a few seconds, what CI runs so the bench never rots."""
FULL = {"items": 20, "trigger_frames": 500, "idle_seconds": 10.0, "events": 10_000, "startup": True}
SETTLE_TIMEOUT_SECONDS = 30.0


@dataclass
class Figures:
    """Samples of one quantity, in milliseconds (or the unit its name says)."""

    samples: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.samples.append(value)

    def summary(self) -> dict[str, float] | None:
        if not self.samples:
            return None
        return {
            "min": round(min(self.samples), 3),
            "median": round(statistics.median(self.samples), 3),
            "mean": round(statistics.fmean(self.samples), 3),
            "max": round(max(self.samples), 3),
            "n": len(self.samples),
        }

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


# ---------------------------------------------------------------------- a broker of our own


@contextlib.contextmanager
def loopback_broker(workdir: Path) -> Iterator[int | None]:
    """A mosquitto on 127.0.0.1 (a free port), or ``None`` where there is none."""
    binary = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if binary is None:
        yield None
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\npersistence false\n")
    process = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ---------------------------------------------------------------------- the config


def bench_config_data(config_path: Path | None, workdir: Path, port: int | None, quick: bool) -> dict[str, Any]:
    """The config to bench: the given one (else the defaults) with a replay source of a
    synthetic empty bin, mock pins, the loopback broker and a scratch state directory."""
    import tomllib

    from PIL import Image

    data: dict[str, Any] = {}
    if config_path is not None:
        with open(config_path, "rb") as file:
            data = tomllib.load(file)
        if "model" in data and "path" in data["model"]:
            data["model"]["path"] = str((config_path.parent / data["model"]["path"]).resolve())
    photos = workdir / "photos"
    photos.mkdir()
    Image.new("RGB", (640, 480), (90, 96, 88)).save(photos / "item.png")
    data.setdefault("agent", {}).update(bin_id="bench", state_dir=str(workdir / "state"), print_events=False)
    camera = data.setdefault("camera", {})
    camera["source"] = "replay"
    # The idle run: an empty bin at 10 fps for as long as it lasts.
    camera.setdefault("replay", {}).update(
        path=str(photos), mode="items", realtime=True, fps=10.0, empty_seconds=600.0, loop=True, empty_frame=""
    )
    data.setdefault("trigger", {})["mode"] = "motion"
    actuator = data.setdefault("actuator", {})
    actuator.update(pin_factory="mock", servo_drive="gpiozero")
    actuator.pop("gpiochip", None)  # the mock factory has no chip
    if quick:  # seconds, not the servo's real cycle
        actuator["dwell_seconds"] = 0.0
        actuator.setdefault("servo", {})["travel_seconds"] = 0.0
    data.setdefault("fill", {})["sensors"] = {}
    data.setdefault("capture", {})["enabled"] = False
    mqtt = data.setdefault("mqtt", {})
    mqtt.update(enabled=port is not None, host="127.0.0.1", port=port or 1883, username="", password_file="")
    mqtt.update(password_env="", tls={"enabled": False})
    return data


def toml_text(data: dict[str, Any]) -> str:
    """``data`` as TOML (the types a config holds: tables, strings, numbers, booleans, lists)."""

    def value(item: Any) -> str:
        if isinstance(item, bool):
            return "true" if item else "false"
        if isinstance(item, (int, float)):
            return repr(item)
        if isinstance(item, str):
            return json.dumps(item)
        if isinstance(item, (list, tuple)):
            return "[" + ", ".join(value(v) for v in item) + "]"
        if isinstance(item, dict):
            return "{ " + ", ".join(f"{json.dumps(k)} = {value(v)}" for k, v in item.items()) + " }"
        return json.dumps(str(item))

    lines: list[str] = []

    def table(name: str, section: dict[str, Any]) -> None:
        plain = {k: v for k, v in section.items() if not isinstance(v, dict) or not v}
        nested = {k: v for k, v in section.items() if k not in plain}
        if name:
            lines.append(f"\n[{name}]")
        lines.extend(f"{json.dumps(k)} = {value(v)}" for k, v in plain.items())
        for key, sub in nested.items():
            table(f"{name}.{json.dumps(key)}" if name else json.dumps(key), sub)

    table("", data)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- the parts


class BareInvoke:
    """The model's ``invoke()`` and nothing else: its own interpreter (the classifier's
    takes its views as one batch), the same model file and thread count, one image."""

    def __init__(self, model: Path, num_threads: int | None, tensor: Any) -> None:
        from ..classify.runtime import load_interpreter

        self.interpreter = load_interpreter(model, num_threads)
        self.interpreter.allocate_tensors()
        self.index = self.interpreter.get_input_details()[0]["index"]
        self.tensor = tensor

    def times_ms(self, repeat: int) -> list[float]:
        times = []
        for _ in range(repeat):
            self.interpreter.set_tensor(self.index, self.tensor)
            started = time.perf_counter()
            self.interpreter.invoke()
            times.append((time.perf_counter() - started) * 1000.0)
        return times


def trigger_frames(count: int, size: tuple[int, int] = (320, 240), seed: int = 0) -> list[Any]:
    """Noisy frames of an empty floor (what the trigger sees most of the time)."""
    import numpy as np

    width, height = size
    rng = np.random.default_rng(seed)
    floor = (
        np.linspace(60, 160, width, dtype=np.float32)[None, :] + np.linspace(0, 30, height, dtype=np.float32)[:, None]
    )
    return noisy_frames([floor] * count, rng, 5.0)


def noisy_frames(scenes: list[Any], rng: Any, noise: float) -> list[Any]:
    """A 10 fps :class:`~bin_agent.sources.base.Frame` of each scene (a float lores view),
    with the camera's noise (``noise`` grey levels) drawn anew for each."""
    import numpy as np

    from ..sources.base import Frame

    image = np.zeros((4, 4, 3), np.uint8)  # the trigger reads the lores view only
    return [
        Frame(
            image=image,
            lores=np.clip(view + rng.normal(0, noise, view.shape), 0, 255).astype(np.uint8),
            timestamp=k / 10,
            index=k,
        )
        for k, view in enumerate(scenes)
    ]


TRIGGER_WARM_UP_FRAMES = 20
"""Frames fed to the trigger before it is timed: its first background (5 frames) and the
first calls of each numpy path cost milliseconds, which a mean must not average in."""


def bench_trigger(config: Any, count: int, every_frame: bool = False) -> Figures:
    """Microseconds per motion-trigger ``update()`` on an empty bin, with the config's
    idle looks (a quiet bin is looked at every ``idle_look_seconds``: the frames between
    cost next to nothing, so the mean is the figure per frame, not the median), or with
    ``every_frame`` looked at (each figure is then one look)."""
    from dataclasses import replace

    from ..triggers import build_trigger

    section = config.trigger
    if every_frame:
        section = replace(section, motion=replace(section.motion, idle_look_seconds=0.0))
    trigger = build_trigger(section, drop_zone=config.camera.zone, pin_factory=None)
    figures = Figures()
    try:
        for index, frame in enumerate(trigger_frames(TRIGGER_WARM_UP_FRAMES + count)):
            started = time.perf_counter()
            trigger.update(frame)
            if index >= TRIGGER_WARM_UP_FRAMES:
                figures.add((time.perf_counter() - started) * 1e6)
    finally:
        trigger.close()
    return figures


DROP_ITEM_SIZE = (0.5, 0.55)
"""The dropped item's width and height as shares of the view: 0.28 of its area, between the
median item boxes of the validation bins of ``scripts/measure_learning.py`` (0.25 and 0.36
of the view for TrashNet and ``wcnn`` items, 2026-12-07)."""


def drop_frames(seed: int, size: tuple[int, int] = (320, 240)) -> list[Any]:
    """Frames of one item dropped into an empty bin: a textured floor under an uneven light
    with sensor noise, :data:`TRIGGER_WARM_UP_FRAMES` empty frames, the item in two frames
    of its fall, then lying still for 3 s (the trigger fires once it has settled). The item
    (a textured box of :data:`DROP_ITEM_SIZE`) lies somewhere else for each ``seed``."""
    import numpy as np
    from PIL import Image

    width, height = size
    rng = np.random.default_rng(1000 + seed)

    def texture(w: int, h: int, cells: tuple[int, int], level: float, spread: float) -> Any:
        coarse = rng.normal(level, spread, (cells[1], cells[0])).clip(0, 255).astype(np.uint8)
        return np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BILINEAR), np.float32)

    light = (
        np.linspace(0.7, 1.1, width, dtype=np.float32)[None, :]
        * np.linspace(0.8, 1.0, height, dtype=np.float32)[:, None]
    )
    floor = texture(width, height, (24, 18), 80.0, 25.0) * light
    item_w, item_h = int(DROP_ITEM_SIZE[0] * width), int(DROP_ITEM_SIZE[1] * height)
    item = texture(item_w, item_h, (6, 8), 170.0, 40.0)
    left = int(rng.integers(0, width - item_w))
    top = int(rng.integers(0, height - item_h))

    def scene(item_top: int | None) -> Any:
        view = floor.copy()
        if item_top is not None:
            rows = slice(max(item_top, 0), item_top + item_h)
            view[rows, left : left + item_w] = item[rows.start - item_top :] * light[rows, left : left + item_w]
        return view

    scenes = [scene(None)] * TRIGGER_WARM_UP_FRAMES + [scene(top - item_h // 2), scene(top - 4)] + [scene(top)] * 30
    return noisy_frames(scenes, rng, 3.0)


@dataclass
class Drop:
    """The trigger on one dropped item: its ``update()`` on the frame it fired on (ms) and
    the item's box (``None``: it did not fire, or saw no box)."""

    fire_ms: float | None
    box: NormBox | None


def bench_drops(config: Any, count: int) -> list[Drop]:
    """The configured motion trigger on ``count`` dropped items (:func:`drop_frames`), a
    fresh trigger for each: the cost of the frame an item fires on, and where it saw it."""
    from ..triggers import build_trigger

    drops = []
    for seed in range(count):
        trigger = build_trigger(config.trigger, drop_zone=config.camera.zone, pin_factory=None)
        fire_ms, box = None, None
        try:
            for frame in drop_frames(seed):
                started = time.perf_counter()
                fired = trigger.update(frame)
                if fired:
                    fire_ms = (time.perf_counter() - started) * 1000.0
                    box = trigger.item_boxes[0] if trigger.item_boxes else None
                    break
        finally:
            trigger.close()
        drops.append(Drop(fire_ms, box))
    return drops


class Stamps:
    """When the agent's parts were called during one item (hooks on the instances)."""

    def __init__(self, agent: Any) -> None:
        self.servo: float | None = None
        self.recording: float | None = None
        self.recorded: float | None = None
        self.syncing: float | None = None
        self.synced: float | None = None
        self.published: float | None = None
        self._event = threading.Event()
        self._servo_event = threading.Event()
        self._restore: list[Callable[[], None]] = []
        event_topic = agent.mqtt.topics.event if agent.mqtt is not None else None

        def servo(*args: Any, **kwargs: Any) -> None:  # called in the agent's sort worker thread
            self._set("servo")
            self._servo_event.set()

        self._hook(agent.sorter, "sort", before=servo)
        self._hook(
            agent.store,
            "record_event",
            before=lambda *a, **k: self._set("recording"),
            after=lambda *a, **k: self._set("recorded"),
        )
        self._hook(
            agent.store, "sync", before=lambda *a, **k: self._set("syncing"), after=lambda *a, **k: self._set("synced")
        )
        if agent.mqtt is not None:

            def published(topic: str, *args: Any, **kwargs: Any) -> None:
                if topic == event_topic:
                    self._set("published")
                    self._event.set()

            self._hook(agent.mqtt.client, "publish", before=published)

    def _set(self, name: str) -> None:
        if getattr(self, name) is None:
            setattr(self, name, time.perf_counter())

    def _hook(self, owner: Any, name: str, *, before: Callable[..., None] | None = None, after: Any = None) -> None:
        original = getattr(owner, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if before is not None:
                before(*args, **kwargs)
            result = original(*args, **kwargs)
            if after is not None:
                after(*args, **kwargs)
            return result

        setattr(owner, name, wrapper)
        self._restore.append(lambda: delattr(owner, name))

    def reset(self) -> None:
        self.servo = self.recording = self.recorded = self.syncing = self.synced = self.published = None
        self._event.clear()
        self._servo_event.clear()

    def wait_published(self, timeout: float) -> bool:
        return self._event.wait(timeout)

    def wait_servo(self, timeout: float) -> bool:
        """The servo command is given in the agent's sort worker, after the item is recorded."""
        return self._servo_event.wait(timeout)

    def close(self) -> None:
        for restore in self._restore:
            with contextlib.suppress(AttributeError):
                restore()


def bench_items(agent: Any, drops: list[Drop], look_us: float) -> dict[str, Any]:
    """The item path for each of ``drops`` (the trigger on a dropped item: the frame it
    fired on, the item's box), against the bare invoke measured between items. A drop the
    trigger did not fire on counts a look (``look_us``) and the whole drop zone."""
    import numpy as np

    from ..agent import region_to_classify
    from ..classify.preprocess import fit_to_input

    classifier = agent.classifier
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    tensor = classifier.view_tensors(fit_to_input(image, classifier.spec))[0]
    bare_invoke = BareInvoke(classifier.files.model, agent.config.model.num_threads, tensor)
    bare_invoke.times_ms(5)  # warm-up: the first invokes allocate
    agent.handle_item(image, "bench-warm-up", 0.0, agent.regions_to_classify(image)[0])
    stamps = Stamps(agent)
    stages = {
        name: Figures()
        for name in ("trigger", "crop", "preprocess", "invoke", "route", "record", "servo", "sync", "publish")
    }
    path, event, bare, area = Figures(), Figures(), Figures(), Figures()
    try:
        for drop in drops:
            trigger_ms = drop.fire_ms if drop.fire_ms is not None else look_us / 1000.0
            if agent.mqtt is not None:
                agent.mqtt.drain(10.0)  # the previous item's event is out
            # Items arrive after the previous one is through the chute (as in a bin, seconds
            # apart): the path measured is the item's own, not a wait for the last sort.
            if agent.chute is not None:
                agent.chute.wait_for_chute(SETTLE_TIMEOUT_SECONDS)
            stamps.reset()
            started = time.perf_counter()
            region = region_to_classify(agent.config.camera, agent.classifier.spec, image.shape, drop.box)
            cropped = time.perf_counter()
            item = agent.handle_item(image, "bench", trigger_ms, region)
            if agent.mqtt is not None and not stamps.wait_published(SETTLE_TIMEOUT_SECONDS):
                raise RuntimeError("the event was not handed to MQTT within 30 s")
            if not stamps.wait_servo(SETTLE_TIMEOUT_SECONDS):
                raise RuntimeError("the servo was not commanded within 30 s")
            latency = item.latency_ms
            stages["trigger"].add(trigger_ms)
            stages["crop"].add((cropped - started) * 1000.0)
            left, top, right, bottom = region
            area.add((right - left) * (bottom - top) / (image.shape[0] * image.shape[1]))
            stages["preprocess"].add(latency["preprocess"])
            stages["invoke"].add(latency["inference"])
            stages["route"].add(latency["route"])
            assert stamps.servo is not None and stamps.recording is not None and stamps.recorded is not None
            stages["record"].add((stamps.recorded - stamps.recording) * 1000.0)
            stages["servo"].add((stamps.servo - stamps.recorded) * 1000.0)
            if stamps.syncing is not None and stamps.synced is not None:
                stages["sync"].add((stamps.synced - stamps.syncing) * 1000.0)
            path.add(trigger_ms + (stamps.servo - started) * 1000.0)
            if stamps.published is not None:
                stages["publish"].add((stamps.published - stamps.recorded) * 1000.0)
                event.add(trigger_ms + (stamps.published - started) * 1000.0)
            for value in bare_invoke.times_ms(classifier.views):
                bare.add(value)
    finally:
        stamps.close()
    views = classifier.views
    result: dict[str, Any] = {
        "views": views,
        "batched_views": classifier.batched,
        "num_threads": agent.config.model.num_threads,
        "bare_invoke_ms": bare.summary(),
        "path_ms": path.summary(),
        "event_ms": event.summary(),
        "stages_ms": {k: v.summary() for k, v in stages.items()},
        "drops_fired": sum(drop.fire_ms is not None for drop in drops),
        "region_share": area.summary(),
        "path_ratio": round(path.median / (views * bare.median), 3),
    }
    return result


def bench_idle(agent: Any, seconds: float) -> dict[str, Any]:
    """Run the agent's loop on an empty bin at 10 fps: CPU share of one core, and RSS."""
    runner = threading.Thread(target=agent.run, name="bench-agent", daemon=True)
    runner.start()
    time.sleep(min(2.0, seconds))  # start-up and the trigger's first background
    cpu0, wall0, frames0 = time.process_time(), time.monotonic(), agent.frames_seen
    time.sleep(seconds)
    cpu, wall, frames = time.process_time() - cpu0, time.monotonic() - wall0, agent.frames_seen - frames0
    rss = resident_mb()
    agent.stop()
    runner.join(30)
    return {
        "idle_cpu_percent": round(100.0 * cpu / wall, 2),
        "idle_fps": round(frames / wall, 1),
        "rss_mb": rss,
    }


def bench_idle_floor(seconds: float, fps: float = 10.0, frame_shape: tuple[int, int] = (240, 320)) -> dict[str, Any]:
    """What waking at ``fps`` costs this machine before the agent does anything: the CPU
    share of a bare loop that sleeps to each frame's time for ``seconds``, and of the same
    loop making one pass over a grey frame (``frame_shape``, one numpy sum) each time it wakes.

    A machine whose caches other work fills between frames (a shared VM, a busy Pi) pays
    for every frame's first touch of code and data, whatever the frame holds; these two
    figures, from the same run as ``idle_cpu_percent``, say how much of it is that tax.
    """
    import numpy as np

    frame = np.random.default_rng(0).integers(0, 256, frame_shape, dtype=np.uint8)

    def share(touch_frame: bool) -> float:
        period = 1.0 / fps
        cpu0, wall0 = time.thread_time(), time.monotonic()
        due = wall0
        while (now := time.monotonic()) - wall0 < seconds:
            due += period
            if due > now:
                time.sleep(due - now)
            if touch_frame:
                frame.sum()
        return round(100.0 * (time.thread_time() - cpu0) / (time.monotonic() - wall0), 3)

    return {"idle_floor_percent": share(False), "idle_floor_frame_percent": share(True)}


def resident_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        pass
    return None


def bench_startup(config_file: Path, timeout: float = 120.0) -> float | None:
    """Seconds from ``bin-agent run`` to ``READY=1`` (a notify socket of our own)."""
    sock_path = config_file.parent / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(sock_path))
        sock.settimeout(timeout)
        env = {**os.environ, "NOTIFY_SOCKET": str(sock_path)}
        started = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-m", "bin_agent", "run", "--config", str(config_file)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        ready = None
        try:
            deadline = started + timeout
            while time.monotonic() < deadline:
                try:
                    message = sock.recv(4096).decode(errors="replace")
                except TimeoutError:
                    break
                if "READY=1" in message.split("\n"):
                    ready = time.monotonic() - started
                    break
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    return None if ready is None else round(ready, 3)


FLUSH_PAIRS = 3
"""(bare paho, agent) flushes run alternately; flush_ratio is the median of the pairs' ratios."""


def bench_flush(config: Any, workdir: Path, events: int, pairs: int = FLUSH_PAIRS) -> dict[str, Any]:
    """N events recorded during an outage, flushed by the agent's MQTT link, against bare
    paho QoS 1 with the same payloads and in-flight window, to the same broker.

    Fair to both sides: the bare payloads are encoded before its clock starts (the outbox
    holds its events encoded), both clocks start once connected, and ``pairs`` pairs run
    alternately (bare, then the agent) so that a load that comes and goes on the machine
    falls on both; the ratio is the median of the pairs' ratios.
    """
    from ..mqtt.link import Topics
    from ..store import Store

    topics = Topics.for_bin(config.mqtt.topic_prefix, "bench-flush")
    payload = json.dumps(
        {
            "bin_id": "bench-flush",
            "class": "plastic",
            "confidence": 0.9375,
            "compartment": "packaging",
            "top3": [{"class": "plastic", "confidence": 0.9375}, {"class": "metal", "confidence": 0.04}],
            "latency_ms": {"trigger": 0.4, "preprocess": 1.2, "inference": 40.1, "route": 0.01, "record": 2.0},
            "model_version": "waste-mnv2-160-int8",
            "time": "2026-01-01T00:00:00.000Z",
        }
    )
    # One outbox of N events, recorded once (N synced commits) and copied for each flush.
    template = workdir / "flush-template.db"
    store = Store(template)
    try:
        for n in range(events):
            store.record_event(
                event_id=f"bench-{n:06d}",
                topic=topics.event,
                payload=json.loads(payload) | {"n": n},
                label="plastic",
                compartment="packaging",
                fallback=False,
            )
    finally:
        store.close()
    # The same texts the outbox holds (record_event's encoding), ready before the clock starts.
    texts = [json.dumps(json.loads(payload) | {"n": n}, separators=(",", ":"), sort_keys=True) for n in range(events)]
    bare_s: list[float] = []
    flush_s: list[float] = []
    for pair in range(pairs):
        bare_s.append(flush_bare_paho(config, topics.event, texts))
        copy = workdir / f"flush-{pair}.db"
        for suffix in ("", ".marker"):
            shutil.copyfile(f"{template}{suffix}", f"{copy}{suffix}")
        flush_s.append(flush_outbox(config, topics, copy))
    ratios = [ours / bare for ours, bare in zip(flush_s, bare_s, strict=True)]
    return {
        "events": events,
        "flush_s": round(statistics.median(flush_s), 3),
        "bare_paho_s": round(statistics.median(bare_s), 3),
        "flush_ratio": round(statistics.median(ratios), 2),
        "flush_pairs": [[round(bare, 3), round(ours, 3)] for bare, ours in zip(bare_s, flush_s, strict=True)],
    }


def flush_outbox(config: Any, topics: Any, path: Path) -> float:
    """Seconds for the agent's MQTT link to empty the outbox at ``path`` (from connected)."""
    from ..mqtt.link import MqttLink
    from ..store import Store

    store = Store(path)
    try:
        link = MqttLink(
            config.mqtt, topics, store, on_command=lambda *_: None, state=lambda: {}, client_id="bench-flush"
        )
        link.start()
        try:
            if not link.wait_connected(15):
                raise RuntimeError("the bench's broker did not answer")
            started = time.monotonic()
            link.wake()
            while store.pending_count() and time.monotonic() - started < 600:
                time.sleep(0.005)
            return time.monotonic() - started
        finally:
            link.stop()
    finally:
        store.close()


def flush_bare_paho(config: Any, topic: str, texts: list[str]) -> float:
    """Seconds for bare paho (MQTT 5, QoS 1, the same in-flight window) to have every text
    acknowledged (from connected)."""
    import paho.mqtt.client as paho

    connected = threading.Event()
    done = threading.Event()
    acked = [0]
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-bare", protocol=paho.MQTTv5)
    client.max_inflight_messages_set(config.mqtt.max_inflight)
    client.max_queued_messages_set(0)

    def on_publish(*_: Any) -> None:
        acked[0] += 1
        if acked[0] >= len(texts):
            done.set()

    client.on_connect = lambda *_: connected.set()
    client.on_publish = on_publish
    client.connect(config.mqtt.host, config.mqtt.port, 30)
    client.loop_start()
    try:
        if not connected.wait(15):
            raise RuntimeError("the bench's broker did not answer")
        started = time.monotonic()
        for text in texts:
            client.publish(topic, text, qos=1)
        done.wait(600)
        return time.monotonic() - started
    finally:
        client.disconnect()
        client.loop_stop()


def thread_candidates() -> list[int]:
    """1, 2 and (with 4 cores or more) 4 interpreter threads."""
    cores = os.cpu_count() or 1
    return [n for n in (1, 2, 4) if n == 1 or n <= cores]


@dataclass
class ItemTimes:
    """Milliseconds per item for each interpreter thread count, and the views an item is."""

    views: int
    by_threads: dict[int, Figures]

    @property
    def best_num_threads(self) -> int:
        return min(self.by_threads, key=lambda threads: self.by_threads[threads].median)


def time_items_by_threads(config: Any, items: int, gap_seconds: float, batch_views: bool = True) -> ItemTimes:
    """Time ``items`` items (``classify()``: preprocess and every view) for each of
    :func:`thread_candidates`, each item after ``gap_seconds`` of idleness, as items come in
    a bin: a thread pool that has gone to sleep has to wake up first.

    The thread counts take turns item by item (1, 2, 1, 2, ...): a burst of other work on a
    shared machine, as long as up to one item per thread count, then adds to at most one of
    each count's items and leaves the medians alone (timed one count after the other, it
    could slow one count's items only). Sustained load still changes the answer, rightly."""
    import numpy as np

    from ..agent import build_classifier

    image = np.random.default_rng(2).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    classifiers = {}
    for threads in thread_candidates():
        classifier = build_classifier(config, num_threads=threads)
        if not batch_views:
            one_by_one(classifier)
        for _ in range(2):
            classifier.classify(image)  # warm-up: the first invokes allocate
        classifiers[threads] = classifier
    times = ItemTimes(views=next(iter(classifiers.values())).views, by_threads={n: Figures() for n in classifiers})
    for _ in range(items):
        for threads in classifiers:
            time.sleep(gap_seconds)
            started = time.perf_counter()
            classifiers[threads].classify(image)
            times.by_threads[threads].add((time.perf_counter() - started) * 1000.0)
    return times


def bench_threads(config: Any, items: int, gap_seconds: float, batch_views: bool = True) -> dict[str, Any]:
    """Milliseconds per item for each thread count (:func:`time_items_by_threads`)."""
    times = time_items_by_threads(config, items, gap_seconds, batch_views)
    return {
        "item_ms_by_threads": {str(n): figures.summary() for n, figures in times.by_threads.items()},
        "best_num_threads": times.best_num_threads,
        "gap_seconds": gap_seconds,
    }


# ---------------------------------------------------------------------- the whole bench


def one_by_one(classifier: Any) -> Any:
    """The classifier running its views one ``invoke()`` each, as before batching: a
    fresh interpreter of the same model and threads, never resized."""
    from ..classify.runtime import load_interpreter

    classifier._interpreter = load_interpreter(classifier.files.model, classifier.num_threads)
    classifier._interpreter.allocate_tensors()
    classifier._batch_size = 1
    classifier.batched = False
    return classifier


def run_bench(
    config_path: Path | None, *, quick: bool, items: int | None = None, batch_views: bool = True
) -> dict[str, Any]:
    """Every figure, as one dict (what ``--json`` prints).

    :param batch_views: ``False``: the classifier runs its views one ``invoke()`` each
        (how it ran before batching), for a before/after comparison in one tree.
    """
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    from .. import preflight
    from ..agent import build_agent

    plan = dict(QUICK if quick else FULL)
    if items is not None:
        plan["items"] = items
    with tempfile.TemporaryDirectory(prefix="bin-agent-bench-") as tmp:
        workdir = Path(tmp)
        with loopback_broker(workdir) as port:
            data = bench_config_data(config_path, workdir, port, quick)
            config_file = workdir / "bench.toml"
            config_file.write_text(toml_text(data))
            config = preflight.load(config_file)
            report: dict[str, Any] = {
                "machine": machine(),
                "mode": "quick" if quick else "full",
                "model": config.model.path.name,
                "broker": f"mosquitto 127.0.0.1:{port}" if port else None,
            }
            trigger = bench_trigger(config, int(plan["trigger_frames"]))
            report["trigger_us_per_frame"] = trigger.summary()
            looks = bench_trigger(config, int(plan["trigger_frames"]), every_frame=True)
            report["trigger_us_per_look"] = looks.summary()
            report["idle_look_seconds"] = config.trigger.motion.idle_look_seconds
            agent = build_agent(config, pin_factory=MockFactory(pin_class=MockPWMPin))
            if not batch_views:
                one_by_one(agent.classifier)
            if agent.mqtt is not None and not agent.mqtt.wait_connected(15):
                raise RuntimeError("the bench's broker did not answer")
            drops = bench_drops(config, int(plan["items"]))
            report.update(bench_items(agent, drops, looks.median))
            report.update(bench_threads(config, int(plan["items"]), 0.05 if quick else 0.5, batch_views))
            report.update(bench_idle(agent, float(plan["idle_seconds"])))
            report.update(bench_idle_floor(float(plan["idle_seconds"]) / 2))
            report["startup_to_ready_s"] = bench_startup(config_file) if plan["startup"] else None
            if port is not None:
                report.update(bench_flush(config, workdir, int(plan["events"])))
            else:
                report.update(flush_ratio=None, flush_s=None, bare_paho_s=None, events=0, flush_pairs=None)
    return report


def machine() -> str:
    """``aarch64, 4 CPU(s), Raspberry Pi 4 Model B Rev 1.5, Python 3.11.2``: where it ran."""
    import platform

    fields: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip().lower(), value.strip())
    # A Pi names its board in "Model"; x86 its CPU in "model name" ("model" is a number there).
    board = fields.get("model", "") if "raspberry" in fields.get("model", "").lower() else ""
    cpu = board or fields.get("model name") or fields.get("hardware") or ""
    return (
        f"{platform.machine()}, {os.cpu_count()} CPU(s){', ' + cpu if cpu else ''}, Python {platform.python_version()}"
    )


def table(report: dict[str, Any]) -> str:
    """The report as a table of lines."""

    def ms(summary: dict[str, float] | None, unit: str = "ms") -> str:
        if not summary:
            return "-"
        return f"{summary['median']:.2f} {unit} (min {summary['min']:.2f}, max {summary['max']:.2f}, n {summary['n']})"

    def per_frame(report: dict[str, Any]) -> str:
        summary = report["trigger_us_per_frame"]
        if not summary:
            return "-"
        looks = report["idle_look_seconds"]
        how = f"a quiet bin looked at every {looks:g} s" if looks else "every frame looked at"
        return f"mean {summary['mean']:.2f} us (n {summary['n']}, {how})"

    def region(report: dict[str, Any]) -> str:
        share = report.get("region_share")
        if not share:
            return "-"
        return (
            f"{share['median']:.2f} of the frame classified (the trigger's box of a dropped item, "
            f"{report['drops_fired']} of {share['n']} drops fired on)"
        )

    views = report["views"]
    rows = [
        ("machine", report["machine"]),
        (
            "model",
            f"{report['model']}, {views} view(s){' in one batch' if report['batched_views'] else ''}, "
            f"num_threads {report['num_threads']}",
        ),
        ("bare invoke", ms(report["bare_invoke_ms"]) + " (one view, its own run)"),
        ("trigger / frame", per_frame(report)),
        ("trigger / look", ms(report["trigger_us_per_look"], "us") + " (every frame looked at)"),
    ]
    rows += [
        (f"  {name}", ms(value) if isinstance(value, dict) else f"{value:.3f} ms")
        for name, value in report["stages_ms"].items()
    ]
    rows += [
        ("settled -> servo", ms(report["path_ms"])),
        ("path_ratio", f"{report['path_ratio']:.3f} (settled -> servo / ({views} x bare invoke))"),
        ("settled -> MQTT", ms(report["event_ms"])),
        ("item region", region(report)),
        (
            "threads",
            ", ".join(f"{n}: {v['median']:.1f} ms/item" for n, v in report["item_ms_by_threads"].items())
            + f" after {report['gap_seconds']} s idle: best num_threads = {report['best_num_threads']}",
        ),
        ("idle CPU @10 fps", f"{report['idle_cpu_percent']:.2f} % of a core ({report['idle_fps']} fps seen)"),
        (
            "waking @10 fps",
            f"{report['idle_floor_percent']:.2f} % of a core for a bare loop, "
            f"{report['idle_floor_frame_percent']:.2f} % summing a 320x240 frame each time (this machine's floor)",
        ),
        ("RSS", f"{report['rss_mb']} MB"),
        ("start-up -> READY", f"{report['startup_to_ready_s']} s"),
    ]
    if report.get("flush_ratio") is not None:
        rows.append(
            (
                "outbox flush",
                f"{report['events']} events {report['flush_s']:.3f} s vs bare paho QoS 1 "
                f"{report['bare_paho_s']:.3f} s: flush_ratio {report['flush_ratio']:.2f}"
                + (f" (medians of {len(pairs)} alternating pairs)" if (pairs := report.get("flush_pairs")) else ""),
            )
        )
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
