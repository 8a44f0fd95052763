"""The one configuration schema, loaded from TOML and validated at start-up.

Every option of the agent is a field of a dataclass below, with its type, its
default and (where it has one) its allowed range. :func:`load_config` reads a
TOML file, rejects unknown keys, wrong types and out-of-range values, then
checks the relations between sections (pin clashes, a compartment for every
class, a servo angle for every compartment, a readable model). All problems
are collected and reported together in one :class:`ConfigError`, each naming
its key and the fix; the CLI prints it and exits with ``EX_CONFIG`` (78).

Relative paths are resolved against the directory of the config file, so a
config and the files it names can be moved together.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from . import CLASSES

EX_CONFIG = 78
"""Exit status for configuration errors (sysexits.h); systemd does not restart on it."""


class ConfigError(Exception):
    """One or more configuration problems, each a line naming the key and the fix."""

    def __init__(self, problems: list[str], source: Path | str | None = None) -> None:
        self.problems = problems
        self.source = source
        super().__init__(self.describe())

    def describe(self) -> str:
        where = f"{self.source}: " if self.source else ""
        if len(self.problems) == 1:
            return f"config error: {where}{self.problems[0]}"
        lines = [f"config error: {where}{len(self.problems)} problems"]
        lines += [f"  - {problem}" for problem in self.problems]
        return "\n".join(lines)


def _opt(default: Any, help: str, *, min: float | None = None, max: float | None = None) -> Any:
    """A config field with documentation and an optional inclusive range."""
    meta = {"help": help, "min": min, "max": max}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def _sub(cls: type, help: str) -> Any:
    return field(default_factory=cls, metadata={"help": help, "min": None, "max": None})


# --------------------------------------------------------------------------- sections


@dataclass
class AgentSection:
    bin_id: str = _opt("bin-01", "Name of this bin: MQTT topics, events and logs use it.")
    state_dir: Path = _opt(Path("/var/lib/bin-agent"), "Where the event outbox and counts persist.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = _opt("INFO", "Log verbosity.")
    print_events: bool = _opt(False, "Print one line per sorted item on standard output.")
    exit_when_source_ends: bool = _opt(
        True, "Stop (exit 0) when a finite replay has no more frames."
    )
    drain_seconds: float = _opt(
        5.0, "On shutdown, how long to wait for the outbox to reach the broker.", min=0, max=120
    )


@dataclass
class ReplaySection:
    path: Path = _opt(Path("."), "An image file or a folder of images (searched recursively).")
    loop: bool = _opt(False, "Start again after the last image.")
    fps: float = _opt(10.0, "Frames per second delivered.", min=0.1, max=120)
    realtime: bool = _opt(
        True,
        "Pace frames at fps on the wall clock; false plays as fast as possible "
        "with timestamps on a virtual clock at fps (tests, benchmarks).",
    )
    item_seconds: float = _opt(2.0, "How long each photo stays in view.", min=0.1, max=600)
    empty_seconds: float = _opt(1.5, "Empty-bin frames before each photo.", min=0, max=600)
    empty_frame: str = _opt(
        "", "Photo of the empty bin; empty: a plain background of the first photo's border colour."
    )
    shuffle: bool = _opt(False, "Play the images in a seeded random order.")
    seed: int = _opt(0, "Seed for shuffle.")
    limit: int = _opt(0, "Play at most this many images (0: all).", min=0)


@dataclass
class CameraSection:
    source: Literal["picamera2", "replay"] = _opt("picamera2", "Where frames come from.")
    main_size: list[int] = _opt([640, 480], "Main stream [width, height]: what is classified.")
    lores_size: list[int] = _opt([320, 240], "Low-res stream [width, height]: what the trigger watches.")
    fps: float = _opt(10.0, "Camera frame rate.", min=1, max=60)
    hflip: bool = _opt(False, "Mirror the picture horizontally (camera mounted mirrored).")
    vflip: bool = _opt(False, "Flip the picture vertically (with hflip: camera mounted upside down).")
    frame_timeout_seconds: float = _opt(
        5.0, "A camera that delivers no frame for this long is an error.", min=0.5, max=120
    )
    replay: ReplaySection = _sub(ReplaySection, "Settings of the replay source.")


@dataclass
class MotionSection:
    pixel_threshold: float = _opt(
        20.0, "Grey levels by which a pixel must differ from the empty bin to count as changed.",
        min=1, max=254,
    )
    min_area: float = _opt(0.02, "Share of the view that must change to see an item.", min=0.0001, max=1)
    max_motion: float = _opt(
        0.01, "Share of the view that may still move while the item counts as lying still "
        "(must be below min_area).", min=0, max=1,
    )
    rearm_seconds: float = _opt(
        0.5, "How long the view must look empty again before the next item can fire.", min=0, max=60
    )
    background_seconds: float = _opt(
        30.0, "Time constant of the empty-bin background's adaptation to light changes.",
        min=0.1, max=86400,
    )
    absorb_seconds: float = _opt(
        300.0, "An item that never leaves is absorbed into the background after this long "
        "(0: never).", min=0,
    )


@dataclass
class GpioTriggerSection:
    kind: Literal["button", "beam", "pir", "distance"] = _opt(
        "beam", "Sensor: button, IR break-beam (beam), PIR motion (pir), ultrasonic (distance)."
    )
    pin: int = _opt(17, "BCM pin of the sensor (trigger pin for distance).", min=0, max=27)
    echo_pin: int = _opt(27, "Echo pin (distance sensor only).", min=0, max=27)
    pull_up: bool = _opt(True, "Use the internal pull-up (sensor pulls the pin low when active).")
    bounce_seconds: float = _opt(0.05, "Debounce time.", min=0, max=5)
    threshold_distance: float = _opt(
        0.2, "Distance sensor: an item closer than this (metres) fires.", min=0.01, max=4
    )


@dataclass
class TriggerSection:
    mode: Literal["motion", "gpio", "manual"] = _opt(
        "motion", "motion: camera change; gpio: a sensor; manual: only cmd/classify."
    )
    settle_seconds: float = _opt(
        0.6, "Time the item must lie still (or, gpio: wait after the sensor) before capture.",
        min=0, max=30,
    )
    motion: MotionSection = _sub(MotionSection, "Motion trigger tuning.")
    gpio: GpioTriggerSection = _sub(GpioTriggerSection, "GPIO sensor trigger.")


@dataclass
class ModelSection:
    path: Path = _opt(
        Path("../models/trashnet_mobilenetv2_int8.tflite"),
        "The .tflite model; its labels (.labels.txt) and metadata (.json) lie beside it.",
    )
    num_threads: int = _opt(2, "Interpreter threads (Pi 4/5: 2-4).", min=1, max=16)
    views: Literal[0, 1, 2, 4] = _opt(
        0, "Views of each item the classifier averages: 1 the frame, 2 also its mirror image, "
        "4 also both turned half around; 0 takes the number the model was measured with "
        "(its metadata's 'views').",
    )


@dataclass
class RouterSection:
    confidence_threshold: float = _opt(
        0.6, "Below this confidence the item goes to the fallback compartment.", min=0, max=1
    )
    fallback: str = _opt("residual", "Compartment for unsure items.")
    compartments: dict[str, str] = _opt(
        {
            "cardboard": "paper",
            "paper": "paper",
            "glass": "glass",
            "metal": "packaging",
            "plastic": "packaging",
            "trash": "residual",
        },
        "Class → compartment. Every class of the model needs one.",
    )


@dataclass
class ServoSection:
    pin: int = _opt(18, "BCM pin of the servo signal (18 has hardware PWM).", min=0, max=27)
    min_angle: float = _opt(-90.0, "Angle at min_pulse_width.", min=-360, max=360)
    max_angle: float = _opt(90.0, "Angle at max_pulse_width.", min=-360, max=360)
    min_pulse_width_ms: float = _opt(0.5, "Pulse width at min_angle (ms).", min=0.1, max=3)
    max_pulse_width_ms: float = _opt(2.5, "Pulse width at max_angle (ms).", min=0.1, max=3)
    home_angle: float = _opt(0.0, "Rest position.", min=-360, max=360)
    travel_seconds: float = _opt(0.4, "Time the servo needs to reach a position.", min=0, max=5)
    angles: dict[str, float] = _opt(
        {"paper": -60.0, "glass": -20.0, "packaging": 20.0, "residual": 60.0},
        "Compartment → chute/tray angle.",
    )


@dataclass
class FlapSection:
    pin: int = _opt(0, "BCM pin of this flap's servo.", min=0, max=27)
    open_angle: float = _opt(90.0, "Angle with the flap open.", min=-360, max=360)
    closed_angle: float = _opt(0.0, "Angle with the flap closed.", min=-360, max=360)


@dataclass
class ActuatorSection:
    kind: Literal["servo", "flaps", "leds", "none"] = _opt(
        "servo",
        "servo: one rotating chute/tilting tray; flaps: one servo per flap; "
        "leds: guidance only (one LED per compartment); none: sort nothing.",
    )
    pin_factory: Literal["default", "lgpio", "pigpio", "rpigpio", "native", "mock"] = _opt(
        "default",
        "gpiozero pin factory: lgpio (Pi 5), pigpio (hardware-timed PWM, needs pigpiod), "
        "mock (no hardware), default (gpiozero's choice).",
    )
    dwell_seconds: float = _opt(1.0, "How long the chute/flap/LED holds before going home.", min=0, max=60)
    servo: ServoSection = _sub(ServoSection, "Single-servo chute or tray.")
    flaps: dict[str, FlapSection] = _opt({}, "Compartment → flap servo (kind = 'flaps').")
    leds: dict[str, int] = _opt({}, "Compartment → LED pin (kind = 'leds').")
    status_led_pin: int = _opt(-1, "Status LED (on: ready, blink: busy, fast: error); -1: none.", min=-1, max=27)
    buzzer_pin: int = _opt(-1, "Buzzer that beeps once per sorted item; -1: none.", min=-1, max=27)


@dataclass
class MqttSection:
    enabled: bool = _opt(True, "Publish events and state, accept commands.")
    host: str = _opt("localhost", "Broker host name or address.")
    port: int = _opt(1883, "Broker port.", min=1, max=65535)
    client_id: str = _opt("", "MQTT client id; empty: bin-agent-<bin_id>.")
    topic_prefix: str = _opt("smartbin", "Topics are <topic_prefix>/<bin_id>/…")
    keepalive: int = _opt(30, "Seconds between keepalive pings; a dead link is noticed in 1.5x.", min=5, max=3600)
    username: str = _opt("", "Broker user name (empty: anonymous).")
    password_file: str = _opt("", "File holding the broker password (never the password itself).")
    max_inflight: int = _opt(20, "QoS 1 messages awaiting PUBACK at once.", min=1, max=1000)
    reconnect_min_seconds: float = _opt(1.0, "First reconnect delay.", min=0.1, max=60)
    reconnect_max_seconds: float = _opt(30.0, "Longest reconnect delay (exponential backoff).", min=1, max=3600)


@dataclass
class CaptureSection:
    enabled: bool = _opt(False, "Save the photo of sorted items with what the bin decided (to relabel and retrain).")
    mode: Literal["all", "unsure", "sample"] = _opt(
        "all", "all: every item; unsure: items sent to the fallback compartment; "
        "sample: one item in sample_every."
    )
    sample_every: int = _opt(10, "mode = 'sample': keep one item in this many.", min=1, max=100000)
    folder: str = _opt("capture", "Folder of the photos, relative to agent.state_dir (or absolute).")
    max_mb: float = _opt(
        500.0, "Size cap of the folder in MB; the oldest photos are deleted first.", min=0.01
    )
    queue_size: int = _opt(
        8, "Photos that may wait for the writer; beyond, an item is not captured "
        "(counted as capture_dropped in state).", min=1, max=1000,
    )
    jpeg_quality: int = _opt(90, "JPEG quality of the saved photos.", min=50, max=100)


@dataclass
class Config:
    """The whole configuration: one section per concern."""

    agent: AgentSection = _sub(AgentSection, "Identity and state.")
    camera: CameraSection = _sub(CameraSection, "Frame source.")
    trigger: TriggerSection = _sub(TriggerSection, "When an item is there.")
    model: ModelSection = _sub(ModelSection, "The classifier.")
    router: RouterSection = _sub(RouterSection, "Class → compartment.")
    actuator: ActuatorSection = _sub(ActuatorSection, "Servos, LEDs, buzzer.")
    mqtt: MqttSection = _sub(MqttSection, "Broker and topics.")
    capture: CaptureSection = _sub(CaptureSection, "Photos of sorted items for retraining.")

    source_path: Path | None = field(default=None, metadata={"internal": True})

    def resolve(self, value: str) -> Path:
        """A path from a string option, relative to the config file's directory."""
        path = Path(value).expanduser()
        if path.is_absolute() or self.source_path is None:
            return path
        return self.source_path.parent / path

    @property
    def compartments(self) -> list[str]:
        """Every compartment named by the router, fallback included, in first-seen order."""
        names = list(dict.fromkeys(self.router.compartments.values()))
        if self.router.fallback not in names:
            names.append(self.router.fallback)
        return names


# --------------------------------------------------------------------------- loading


def load_config(path: str | Path, *, check_model: bool = True) -> Config:
    """Read, type-check and cross-check a TOML config file.

    :param check_model: also load the model files (the labels are needed to
        check that every class has a compartment).
    :raises ConfigError: with every problem found.
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"no such file; create one from config/bin-agent.toml"], path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"cannot read the file ({exc})"], path) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"not valid TOML: {exc}"], path) from None
    return config_from_dict(raw, base_dir=path.parent, source=path, check_model=check_model)


def config_from_dict(
    raw: dict[str, Any],
    *,
    base_dir: Path = Path("."),
    source: Path | str | None = None,
    check_model: bool = True,
) -> Config:
    """Build a :class:`Config` from parsed TOML (see :func:`load_config`)."""
    problems: list[str] = []
    config = _build(Config, raw, "", problems, base_dir)
    if problems:
        raise ConfigError(problems, source)
    config.source_path = Path(source) if source else None
    _cross_check(config, problems, check_model)
    if problems:
        raise ConfigError(problems, source)
    return config


def _build(cls: type, raw: Any, where: str, problems: list[str], base_dir: Path) -> Any:
    if not isinstance(raw, dict):
        problems.append(f"{where or 'top level'}: expected a table, got {_kind(raw)}")
        return cls()
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        key_path = f"{where}.{key}" if where else key
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(fields)}"
            problems.append(f"{key_path}: unknown key{hint}")
            continue
        converted = _convert(hints[key], value, key_path, problems, base_dir)
        if converted is not _INVALID:
            _check_range(fields[key], converted, key_path, problems)
            values[key] = converted
    return cls(**values)


_INVALID = object()


def _convert(hint: Any, value: Any, where: str, problems: list[str], base_dir: Path) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where, problems, base_dir)
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            problems.append(
                f"{where}: {value!r} is not one of {', '.join(repr(c) for c in choices)}"
            )
            return _INVALID
        return value
    if hint is bool:
        if not isinstance(value, bool):
            problems.append(f"{where}: expected true or false, got {_kind(value)}")
            return _INVALID
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{where}: expected a whole number, got {_kind(value)}")
            return _INVALID
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"{where}: expected a number, got {_kind(value)}")
            return _INVALID
        if value != value or value in (float("inf"), float("-inf")):
            problems.append(f"{where}: expected a finite number, got {value}")
            return _INVALID
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            problems.append(f"{where}: expected a string, got {_kind(value)}")
            return _INVALID
        return value
    if hint is Path:
        if not isinstance(value, str) or not value:
            problems.append(f"{where}: expected a path string, got {_kind(value)}")
            return _INVALID
        path = Path(value).expanduser()
        # normpath, not resolve(): tidy "config/../x" for messages, keep symlinks as given.
        return Path(os.path.normpath(path if path.is_absolute() else base_dir / path))
    if origin is list:
        (item_hint,) = typing.get_args(hint)
        if not isinstance(value, list):
            problems.append(f"{where}: expected a list, got {_kind(value)}")
            return _INVALID
        items = [_convert(item_hint, v, f"{where}[{i}]", problems, base_dir) for i, v in enumerate(value)]
        return _INVALID if any(i is _INVALID for i in items) else items
    if origin is dict:
        _, item_hint = typing.get_args(hint)
        if not isinstance(value, dict):
            problems.append(f"{where}: expected a table, got {_kind(value)}")
            return _INVALID
        items = {k: _convert(item_hint, v, f"{where}.{k}", problems, base_dir) for k, v in value.items()}
        return _INVALID if any(v is _INVALID for v in items.values()) else items
    if origin in (types.UnionType, typing.Union):  # pragma: no cover - not used by the schema yet
        raise TypeError(f"unsupported union in schema at {where}")
    raise TypeError(f"unsupported type {hint!r} in schema at {where}")


def _check_range(spec: dataclasses.Field, value: Any, where: str, problems: list[str]) -> None:
    low, high = spec.metadata.get("min"), spec.metadata.get("max")
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    if low is not None and value < low:
        problems.append(f"{where}: {value} is below the minimum {low}")
    elif high is not None and value > high:
        problems.append(f"{where}: {value} is above the maximum {high}")


def _kind(value: Any) -> str:
    names = {bool: "a boolean", int: "a whole number", float: "a number", str: "a string",
             list: "a list", dict: "a table"}
    return f"{names.get(type(value), type(value).__name__)} ({value!r})"[:80]


# --------------------------------------------------------------------------- cross-checks


def _cross_check(config: Config, problems: list[str], check_model: bool) -> None:
    _check_sizes(config, problems)
    _check_trigger(config, problems)
    _check_bin_id(config, problems)
    labels = _check_model(config, problems) if check_model else list(CLASSES)
    _check_router(config, labels, problems)
    _check_actuator(config, problems)
    _check_pins(config, problems)
    _check_mqtt(config, problems)
    if not config.capture.folder.strip():
        problems.append('capture.folder: must name a folder (default "capture", under agent.state_dir)')
    if config.camera.source == "replay" and not config.camera.replay.path.exists():
        problems.append(
            f"camera.replay.path: {config.camera.replay.path} does not exist; "
            "point it at an image or a folder of images"
        )


def _check_trigger(config: Config, problems: list[str]) -> None:
    motion = config.trigger.motion
    if motion.max_motion >= motion.min_area:
        problems.append(
            f"trigger.motion.max_motion: {motion.max_motion} must be below min_area ({motion.min_area})"
        )


def _check_sizes(config: Config, problems: list[str]) -> None:
    for key in ("main_size", "lores_size"):
        size = getattr(config.camera, key)
        if len(size) != 2 or not all(16 <= v <= 4056 for v in size):
            problems.append(f"camera.{key}: expected [width, height] between 16 and 4056, got {size}")
    main, lores = config.camera.main_size, config.camera.lores_size
    if len(main) == 2 and len(lores) == 2 and (lores[0] > main[0] or lores[1] > main[1]):
        problems.append(f"camera.lores_size: {lores} must not be larger than main_size {main}")


def _check_bin_id(config: Config, problems: list[str]) -> None:
    bin_id = config.agent.bin_id
    if not bin_id or any(c in bin_id for c in "/+#") or not bin_id.isprintable() or len(bin_id) > 64:
        problems.append(
            f"agent.bin_id: {bin_id!r} must be 1-64 printable characters without '/', '+' or '#'"
        )
    prefix = config.mqtt.topic_prefix
    if not prefix or any(c in prefix for c in "+#") or prefix.startswith("/") or prefix.endswith("/"):
        problems.append(
            f"mqtt.topic_prefix: {prefix!r} must be non-empty, without '+' or '#', "
            "and not start or end with '/'"
        )


def _check_model(config: Config, problems: list[str]) -> list[str]:
    from .classifier import ModelFiles, ModelFilesError, read_labels, read_metadata

    files = ModelFiles.beside(config.model.path)
    for name, path in (("model", files.model), ("labels", files.labels), ("metadata", files.metadata)):
        if not path.is_file():
            problems.append(f"model.path: {name} file {path} not found")
    if problems:
        return list(CLASSES)
    try:
        labels = read_labels(files.labels)
        read_metadata(files.metadata)
    except ModelFilesError as exc:
        problems.append(f"model.path: {exc}")
        return list(CLASSES)
    return labels


def _check_router(config: Config, labels: list[str], problems: list[str]) -> None:
    mapping = config.router.compartments
    for label in labels:
        if label not in mapping:
            problems.append(
                f"router.compartments: class '{label}' has no compartment; add {label} = \"<compartment>\""
            )
    for label in mapping:
        if label not in labels:
            problems.append(
                f"router.compartments.{label}: the model has no class '{label}' (classes: {', '.join(labels)})"
            )
    for label, compartment in mapping.items():
        if not compartment:
            problems.append(f"router.compartments.{label}: compartment name is empty")


def _check_actuator(config: Config, problems: list[str]) -> None:
    actuator = config.actuator
    needed = config.compartments
    if actuator.kind == "servo":
        servo = actuator.servo
        if servo.min_angle >= servo.max_angle:
            problems.append("actuator.servo.min_angle: must be below max_angle")
        if servo.min_pulse_width_ms >= servo.max_pulse_width_ms:
            problems.append("actuator.servo.min_pulse_width_ms: must be below max_pulse_width_ms")
        angles = {"home_angle": servo.home_angle, **{f"angles.{k}": v for k, v in servo.angles.items()}}
        for key, angle in angles.items():
            if not servo.min_angle <= angle <= servo.max_angle:
                problems.append(
                    f"actuator.servo.{key}: {angle} is outside [{servo.min_angle}, {servo.max_angle}]"
                )
        _need_each(needed, servo.angles, "actuator.servo.angles", "<angle>", problems)
    elif actuator.kind == "flaps":
        _need_each(needed, actuator.flaps, "actuator.flaps", "{ pin = <BCM pin> }", problems)
    elif actuator.kind == "leds":
        _need_each(needed, actuator.leds, "actuator.leds", "<BCM pin>", problems)
        for compartment, pin in actuator.leds.items():
            if not 0 <= pin <= 27:
                problems.append(f"actuator.leds.{compartment}: pin {pin} is not a BCM GPIO (0-27)")


def _need_each(needed: list[str], table: dict[str, Any], key: str, example: str,
               problems: list[str]) -> None:
    for compartment in needed:
        if compartment not in table:
            problems.append(f"{key}: compartment '{compartment}' has none; add {compartment} = {example}")
    for compartment in table:
        if compartment not in needed:
            problems.append(
                f"{key}.{compartment}: no class is routed to '{compartment}' "
                f"(compartments: {', '.join(needed)})"
            )


def pins_in_use(config: Config) -> dict[str, int]:
    """Every GPIO pin the config uses, keyed by the option that names it."""
    pins: dict[str, int] = {}
    actuator = config.actuator
    if actuator.kind == "servo":
        pins["actuator.servo.pin"] = actuator.servo.pin
    elif actuator.kind == "flaps":
        pins.update({f"actuator.flaps.{k}.pin": v.pin for k, v in actuator.flaps.items()})
    elif actuator.kind == "leds":
        pins.update({f"actuator.leds.{k}": v for k, v in actuator.leds.items()})
    if actuator.status_led_pin >= 0:
        pins["actuator.status_led_pin"] = actuator.status_led_pin
    if actuator.buzzer_pin >= 0:
        pins["actuator.buzzer_pin"] = actuator.buzzer_pin
    if config.trigger.mode == "gpio":
        pins["trigger.gpio.pin"] = config.trigger.gpio.pin
        if config.trigger.gpio.kind == "distance":
            pins["trigger.gpio.echo_pin"] = config.trigger.gpio.echo_pin
    return pins


def _check_pins(config: Config, problems: list[str]) -> None:
    seen: dict[int, str] = {}
    for key, pin in pins_in_use(config).items():
        if pin in seen:
            problems.append(f"{key}: GPIO{pin} is already used by {seen[pin]}; give each device its own pin")
        else:
            seen[pin] = key


def _check_mqtt(config: Config, problems: list[str]) -> None:
    mqtt = config.mqtt
    if mqtt.reconnect_min_seconds > mqtt.reconnect_max_seconds:
        problems.append("mqtt.reconnect_min_seconds: must not exceed reconnect_max_seconds")
    if mqtt.password_file:
        path = config.resolve(mqtt.password_file)
        if not path.is_file():
            problems.append(f"mqtt.password_file: {path} not found")
    if mqtt.password_file and not mqtt.username:
        problems.append("mqtt.username: required when mqtt.password_file is set")


# --------------------------------------------------------------------------- documentation


def describe_options() -> list[tuple[str, Any, str]]:
    """Every option as ``(key, default, help)``, for documentation and tests."""
    rows: list[tuple[str, Any, str]] = []

    def walk(cls: type, prefix: str) -> None:
        instance = cls()
        for spec in dataclasses.fields(cls):
            if spec.metadata.get("internal"):
                continue
            key = f"{prefix}{spec.name}"
            value = getattr(instance, spec.name)
            if dataclasses.is_dataclass(value):
                walk(type(value), key + ".")
            else:
                rows.append((key, value, spec.metadata.get("help", "")))

    walk(Config, "")
    return rows
