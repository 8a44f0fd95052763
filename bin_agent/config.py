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
import ipaddress
import json
import math
import os
import re
import tomllib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from . import CLASSES
from .preprocess import DEFAULT_MAX_PIXELS

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


Check = Callable[[Any], "str | None"]
"""A rule for one value: returns what is wrong with it (without the key), or None."""


def _opt(default: Any, help: str, *, min: float | None = None, max: float | None = None,
         check: Check | None = None) -> Any:
    """A config field with documentation, an optional inclusive range and an optional rule."""
    meta = {"help": help, "min": min, "max": max, "check": check}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def _sub(cls: type, help: str) -> Any:
    return field(default_factory=cls, metadata={"help": help, "min": None, "max": None})


# --------------------------------------------------------------------------- value rules

MQTT_MAX_STRING_BYTES = 65535
"""MQTT encodes topics, client ids, user names and passwords with a 16-bit length."""

MQTT_MAX_CLIENT_ID_BYTES = 128
"""Our bound for client ids. MQTT 3.1.1 only obliges brokers to take 1-23
alphanumerics (strict brokers refuse more); mosquitto, EMQX and HiveMQ take up
to 65535 bytes, AWS IoT Core 128."""

_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def _hostname(value: str) -> str | None:
    """RFC 1123 host name (letters, digits, '-', dot-separated labels of 1-63) or an IP address."""
    try:
        ipaddress.ip_address(value)
        return None
    except ValueError:
        pass
    name = value.removesuffix(".")
    if not name or len(name) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in name.split(".")):
        return (f"{_show(value)} is not a host name (RFC 1123: dot-separated labels of 1-63 letters, "
                "digits or '-', 253 characters at most) nor an IP address")
    return None


def _client_id(value: str) -> str | None:
    if len(value.encode()) > MQTT_MAX_CLIENT_ID_BYTES:
        return (f"{len(value.encode())} bytes is longer than {MQTT_MAX_CLIENT_ID_BYTES} "
                "(strict MQTT 3.1.1 brokers accept only 23 letters and digits)")
    if any(c in value for c in "+#/"):
        return f"{_show(value)} must not contain '/', '+' or '#'"
    return None


def _mqtt_string(value: str) -> str | None:
    if len(value.encode()) > MQTT_MAX_STRING_BYTES:
        return f"longer than MQTT's {MQTT_MAX_STRING_BYTES} bytes"
    return None


def _control_characters(value: str) -> str | None:
    """Every string option is text on one line: no NUL, newline or other control character."""
    bad = sorted({c for c in value if not c.isprintable()})
    if bad:
        shown = ", ".join(json.dumps(c) for c in bad[:3])
        return f"contains a control or non-printable character ({shown})"
    return None


def _show(value: str, limit: int = 60) -> str:
    """A value quoted for a one-line message, shortened when long."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


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
    max_pixels: int = _opt(
        DEFAULT_MAX_PIXELS,
        "Largest photo decoded (width x height); a larger JPEG is decoded at 1/2, 1/4 or 1/8 "
        "scale, any other larger image is skipped with a warning (bounded memory).",
        min=10_000, max=100_000_000,
    )


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
    host: str = _opt("localhost", "Broker host name or address.", check=_hostname)
    port: int = _opt(1883, "Broker port.", min=1, max=65535)
    client_id: str = _opt(
        "", f"MQTT client id, at most {MQTT_MAX_CLIENT_ID_BYTES} bytes; empty: bin-agent-<bin_id>.",
        check=_client_id,
    )
    topic_prefix: str = _opt("smartbin", "Topics are <topic_prefix>/<bin_id>/…")
    keepalive: int = _opt(30, "Seconds between keepalive pings; a dead link is noticed in 1.5x.", min=5, max=3600)
    username: str = _opt("", "Broker user name (empty: anonymous).", check=_mqtt_string)
    password_file: str = _opt("", "File holding the broker password (never the password itself).")
    max_inflight: int = _opt(20, "QoS 1 messages awaiting PUBACK at once.", min=1, max=1000)
    reconnect_min_seconds: float = _opt(1.0, "First reconnect delay.", min=0.1, max=60)
    reconnect_max_seconds: float = _opt(30.0, "Longest reconnect delay (exponential backoff).", min=1, max=3600)


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
        raise ConfigError(["no such file; create one from config/bin-agent.toml"], path) from None
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
        key_path = _key_path(where, key)
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(fields)}"
            problems.append(f"{key_path}: unknown key{hint}")
            continue
        converted = _convert(hints[key], value, key_path, problems, base_dir)
        if converted is not _INVALID and _check_value(fields[key], converted, key_path, problems):
            values[key] = converted
    return cls(**values)


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _key_path(where: str, key: str) -> str:
    """``where.key``, the key quoted as TOML would (one line) unless it is a bare key."""
    shown = key if _BARE_KEY.fullmatch(key) else json.dumps(key)
    return f"{where}.{shown}" if where else shown


_INVALID = object()


def _convert(hint: Any, value: Any, where: str, problems: list[str], base_dir: Path) -> Any:
    origin = typing.get_origin(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, value, where, problems, base_dir)
    if origin is Literal:
        choices = typing.get_args(hint)
        # Compared with their type: true == 1 in Python, but `views = true` is a mistake.
        if not any(type(value) is type(choice) and value == choice for choice in choices):
            shown = _show(value) if isinstance(value, str) else (
                repr(value) if type(value) in (int, float) else _kind(value))
            problems.append(f"{where}: {shown} is not one of {', '.join(repr(c) for c in choices)}")
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
        if not math.isfinite(value):
            problems.append(f"{where}: expected a finite number, got {value}")
            return _INVALID
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            problems.append(f"{where}: expected a string, got {_kind(value)}")
            return _INVALID
        return _text(value, where, problems)
    if hint is Path:
        if not isinstance(value, str) or not value:
            problems.append(f"{where}: expected a path string, got {_kind(value)}")
            return _INVALID
        if _text(value, where, problems) is _INVALID:
            return _INVALID
        path = Path(value).expanduser()
        # normpath, not resolve(): tidy "config/../x" for messages, keep symlinks as given.
        return Path(os.path.normpath(path if path.is_absolute() else base_dir / path))
    if origin is list:
        (item_hint,) = typing.get_args(hint)
        if not isinstance(value, list):
            problems.append(f"{where}: expected a list, got {_kind(value)}")
            return _INVALID
        elements = [_convert(item_hint, v, f"{where}[{i}]", problems, base_dir) for i, v in enumerate(value)]
        return _INVALID if any(e is _INVALID for e in elements) else elements
    if origin is dict:
        _, item_hint = typing.get_args(hint)
        if not isinstance(value, dict):
            problems.append(f"{where}: expected a table, got {_kind(value)}")
            return _INVALID
        entries = {}
        for name, item in value.items():
            name_path = _key_path(where, name)
            entries[name] = _convert(item_hint, item, name_path, problems, base_dir)
            if _text(name, name_path, problems) is _INVALID:
                entries[name] = _INVALID
        return _INVALID if any(v is _INVALID for v in entries.values()) else entries
    if origin in (types.UnionType, typing.Union):  # pragma: no cover - not used by the schema yet
        raise TypeError(f"unsupported union in schema at {where}")
    raise TypeError(f"unsupported type {hint!r} in schema at {where}")


def _text(value: str, where: str, problems: list[str]) -> Any:
    problem = _control_characters(value)
    if problem:
        problems.append(f"{where}: {problem}")
        return _INVALID
    return value


def _check_value(spec: dataclasses.Field, value: Any, where: str, problems: list[str]) -> bool:
    """The field's range and rule; False (and a problem named ``where``) if one fails."""
    low, high = spec.metadata.get("min"), spec.metadata.get("max")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if low is not None and value < low:
            problems.append(f"{where}: {value} is below the minimum {low}")
            return False
        if high is not None and value > high:
            problems.append(f"{where}: {value} is above the maximum {high}")
            return False
    check: Check | None = spec.metadata.get("check")
    problem = check(value) if check is not None else None
    if problem:
        problems.append(f"{where}: {problem}")
        return False
    return True


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
    _check_state_dir(config, problems)
    if config.camera.source == "replay":
        _check_replay_files(config, problems)


def _check_state_dir(config: Config, problems: list[str]) -> None:
    state_dir = config.agent.state_dir
    existing = next((p for p in (state_dir, *state_dir.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        problems.append(f"agent.state_dir: {existing} is not a directory")


def _check_replay_files(config: Config, problems: list[str]) -> None:
    from .preprocess import ImageError, load_image
    from .sources.replay import IMAGE_SUFFIXES, find_images

    replay = config.camera.replay
    if not replay.path.exists():
        problems.append(
            f"camera.replay.path: {replay.path} does not exist; point it at an image or a folder of images"
        )
    elif replay.path.is_file() and replay.path.suffix.lower() not in IMAGE_SUFFIXES:
        problems.append(
            f"camera.replay.path: {replay.path} is not an image ({', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    elif replay.path.is_dir():
        try:
            images = find_images(replay.path)
        except OSError as exc:
            problems.append(f"camera.replay.path: cannot list {replay.path} ({exc})")
        else:
            if not images:
                problems.append(
                    f"camera.replay.path: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {replay.path}"
                )
    if replay.empty_frame:
        # Decoded now (it is small and used for every item): a bad one fails here, not mid-run.
        try:
            load_image(config.resolve(replay.empty_frame), replay.max_pixels)
        except ImageError as exc:
            problems.append(f"camera.replay.empty_frame: {exc}")


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
    if (not prefix or any(c in prefix for c in "+#") or prefix.startswith(("/", "$"))
            or prefix.endswith("/")):
        problems.append(
            f"mqtt.topic_prefix: {_show(prefix)} must be non-empty, without '+' or '#', "
            "and not start with '/' or '$' (broker topics) or end with '/'"
        )
    longest_topic = f"{prefix}/{bin_id}/cmd/result"
    if len(longest_topic.encode()) > MQTT_MAX_STRING_BYTES:
        problems.append(
            f"mqtt.topic_prefix: topics such as <topic_prefix>/<bin_id>/cmd/result would be longer "
            f"than MQTT's {MQTT_MAX_STRING_BYTES} bytes"
        )


def _check_model(config: Config, problems: list[str]) -> list[str]:
    from .classifier import ModelFiles, ModelFilesError, read_labels, read_metadata

    files = ModelFiles.beside(config.model.path)
    for name, path in (("model", files.model), ("labels", files.labels), ("metadata", files.metadata)):
        if not path.is_file():
            problems.append(f"model.path: {name} file {path} not found")
            return list(CLASSES)  # the first missing file says it: no list of its siblings
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
    if not config.router.fallback:
        problems.append("router.fallback: compartment name is empty")


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
        if compartment and compartment not in table:  # an empty name is the router's problem
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
        problem = _password_file_problem(config.resolve(mqtt.password_file))
        if problem:
            problems.append(f"mqtt.password_file: {problem}")
    if not mqtt.client_id and len(f"bin-agent-{config.agent.bin_id}".encode()) > MQTT_MAX_CLIENT_ID_BYTES:
        problems.append(
            f"mqtt.client_id: the default bin-agent-<bin_id> is longer than {MQTT_MAX_CLIENT_ID_BYTES} "
            "bytes; set a shorter client_id or bin_id"
        )
    if mqtt.password_file and not mqtt.username:
        problems.append("mqtt.username: required when mqtt.password_file is set")


def _password_file_problem(path: Path) -> str | None:
    """What makes ``path`` unusable as the password file (its first line, UTF-8), or None."""
    try:
        with path.open("rb") as file:
            data = file.read(MQTT_MAX_STRING_BYTES + 2)
    except FileNotFoundError:
        return f"{path} not found"
    except OSError as exc:
        return f"cannot read {path} ({exc.strerror or exc})"
    try:
        first_line = data.decode("utf-8").splitlines()[0] if data else ""
    except UnicodeDecodeError:
        return f"{path} is not UTF-8 text (a binary file?)"
    if len(first_line.encode()) > MQTT_MAX_STRING_BYTES:
        return f"the first line of {path} is longer than MQTT's {MQTT_MAX_STRING_BYTES} bytes"
    if not first_line.isprintable():
        return f"the first line of {path} has control characters (a binary file?)"
    return None


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
