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

from . import CLASSES, DEFAULT_MODEL
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


def _opt(
    default: Any, help: str, *, min: float | None = None, max: float | None = None, check: Check | None = None
) -> Any:
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
        return (
            f"{_show(value)} is not a host name (RFC 1123: dot-separated labels of 1-63 letters, "
            "digits or '-', 253 characters at most) nor an IP address"
        )
    return None


def _client_id(value: str) -> str | None:
    if len(value.encode()) > MQTT_MAX_CLIENT_ID_BYTES:
        return (
            f"{len(value.encode())} bytes is longer than {MQTT_MAX_CLIENT_ID_BYTES} "
            "(strict MQTT 3.1.1 brokers accept only 23 letters and digits)"
        )
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
    exit_when_source_ends: bool = _opt(True, "Stop (exit 0) when a finite replay has no more frames.")
    drain_seconds: float = _opt(
        5.0, "On shutdown, how long to wait for the outbox to reach the broker.", min=0, max=120
    )


@dataclass
class ReplaySection:
    path: Path = _opt(Path("."), "An image file or a folder of images (searched recursively).")
    mode: Literal["items", "sequence"] = _opt(
        "items",
        "items: each photo is an item dropped into an empty bin (empty frames, the photo, "
        "empty frames); sequence: each file is one frame, played as it is (a recording "
        "made with 'bin-agent record').",
    )
    loop: bool = _opt(False, "Start again after the last image.")
    fps: float = _opt(10.0, "Frames per second delivered.", min=0.1, max=120)
    realtime: bool = _opt(
        True,
        "Pace frames at fps on the wall clock; false plays as fast as possible "
        "with timestamps on a virtual clock from 0 at fps: the same events on every run.",
    )
    item_seconds: float = _opt(2.0, "items: how long each photo stays in view.", min=0.1, max=600)
    empty_seconds: float = _opt(1.5, "items: empty-bin frames before each photo.", min=0, max=600)
    empty_frame: str = _opt(
        "", "items: photo of the empty bin; empty: a plain background of the first photo's border colour."
    )
    shuffle: bool = _opt(False, "items: play the images in a seeded random order.")
    seed: int = _opt(0, "Seed for shuffle.")
    limit: int = _opt(0, "Play at most this many images (0: all).", min=0)
    max_pixels: int = _opt(
        DEFAULT_MAX_PIXELS,
        "Largest photo decoded (width x height); a larger JPEG is decoded at 1/2, 1/4 or 1/8 "
        "scale, any other larger image is skipped with a warning (bounded memory).",
        min=10_000,
        max=100_000_000,
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
    warmup_seconds: float = _opt(
        2.0,
        "Frames of this long after start are not handed on: exposure, white balance and "
        "focus settle before the motion trigger learns the empty bin.",
        min=0,
        max=60,
    )
    af_mode: Literal["manual", "auto", "continuous"] = _opt(
        "auto",
        "Autofocus (cameras that have it, e.g. Camera Module 3): manual holds the lens at "
        "lens_position; auto focuses once during the warm-up, then holds; continuous keeps "
        "refocusing.",
    )
    lens_position: float = _opt(
        5.0,
        "af_mode = manual: focus distance in dioptres, 1 / distance in metres (5.0: 20 cm; 0: infinity).",
        min=0,
        max=32,
    )
    exposure: Literal["auto", "locked"] = _opt(
        "auto",
        "auto: auto-exposure throughout; locked: fixed at what it settled on during "
        "the warm-up (a bin with its own steady light).",
    )
    white_balance: Literal["auto", "locked"] = _opt(
        "auto",
        "auto: auto white balance throughout; locked: fixed at what it settled on during the warm-up.",
    )
    drop_zone: list[float] = _opt(
        [0.0, 0.0, 1.0, 1.0],
        "[x0, y0, x1, y1] of the drop zone as fractions of the frame (0, 0 top left): "
        "the motion trigger watches only it, and what is classified never leaves it.",
    )
    crop_margin: float = _opt(
        0.15,
        "The item's box is grown by this share of its size on each side before it is classified.",
        min=0,
        max=2,
    )
    replay: ReplaySection = _sub(ReplaySection, "Settings of the replay source.")

    @property
    def zone(self) -> tuple[float, float, float, float]:
        """:attr:`drop_zone` as a ``geometry.NormBox`` (validated at load)."""
        x0, y0, x1, y1 = self.drop_zone
        return (x0, y0, x1, y1)


@dataclass
class MotionSection:
    pixel_threshold: float = _opt(
        20.0,
        "Grey levels by which a pixel must differ from the empty bin to count as changed.",
        min=1,
        max=254,
    )
    min_area: float = _opt(0.02, "Share of the view that must change to see an item.", min=0.0001, max=1)
    max_motion: float = _opt(
        0.01,
        "Share of the view that may still move while the item counts as lying still (must be below min_area).",
        min=0,
        max=1,
    )
    rearm_seconds: float = _opt(
        0.5, "How long the view must look empty again before the next item can fire.", min=0, max=60
    )
    background_seconds: float = _opt(
        30.0,
        "Time constant of the empty-bin background's adaptation to light changes.",
        min=0.1,
        max=86400,
    )
    absorb_seconds: float = _opt(
        300.0,
        "An item that never leaves is absorbed into the background after this long (0: never).",
        min=0,
    )


@dataclass
class GpioTriggerSection:
    kind: Literal["button", "beam", "pir", "distance"] = _opt(
        "beam", "Sensor: button, IR break-beam (beam), PIR motion (pir), ultrasonic (distance)."
    )
    pin: int = _opt(17, "BCM pin of the sensor (trigger pin for distance).", min=0, max=27)
    echo_pin: int = _opt(27, "Echo pin (distance sensor only), through a 5 V -> 3.3 V divider.", min=0, max=27)
    pull_up: bool = _opt(True, "beam, button: use the internal pull-up (else the pull-down).")
    active_state: Literal["low", "high"] = _opt(
        "low", "beam, button: the pin's level while the beam is broken or the button pressed."
    )
    bounce_seconds: float = _opt(
        0.0,
        "beam, button: debounce time; 0: none (lgpio drops any pulse shorter than it, "
        "and a falling item breaks a beam for only some tens of milliseconds).",
        min=0,
        max=5,
    )
    cooldown_seconds: float = _opt(
        0.5,
        "After an item fired, sensor reports for this long are the same item (chatter, bounces).",
        min=0,
        max=30,
    )
    threshold_distance: float = _opt(0.2, "distance: an item closer than this (metres) fires.", min=0.01, max=4)
    max_distance: float = _opt(
        1.0,
        "distance: the farthest the sensor measures (metres); above threshold_distance.",
        min=0.02,
        max=4,
    )
    queue_len: int = _opt(
        3,
        "distance: readings whose median is compared with the threshold (gpiozero's 9 smooths a falling item away).",
        min=1,
        max=30,
    )
    sample_wait_seconds: float = _opt(0.02, "distance: pause between readings (gpiozero's is 0.06).", min=0.005, max=1)


TriggerMode = Literal["motion", "gpio", "manual"]


@dataclass
class TriggerSection:
    mode: TriggerMode = _opt("motion", "motion: camera change; gpio: a sensor; manual: only cmd/classify.")
    settle_seconds: float = _opt(
        0.6,
        "Time the item must lie still (or, gpio: wait after the sensor) before capture.",
        min=0,
        max=30,
    )
    motion: MotionSection = _sub(MotionSection, "Motion trigger tuning.")
    gpio: GpioTriggerSection = _sub(GpioTriggerSection, "GPIO sensor trigger.")


@dataclass
class ModelSection:
    path: Path = _opt(
        DEFAULT_MODEL,
        "The .tflite model; its labels (.labels.txt) and metadata (.json) lie beside it. "
        "Default: the model shipped inside the package.",
    )
    num_threads: int = _opt(2, "Interpreter threads (Pi 4/5: 2-4).", min=1, max=16)
    views: Literal[0, 1, 2, 4] = _opt(
        0,
        "Views of each item the classifier averages: 1 the frame, 2 also its mirror image, "
        "4 also both turned half around; 0 takes the number the model was measured with "
        "(its metadata's 'views').",
    )


@dataclass
class RouterSection:
    confidence_threshold: float = _opt(
        0.8,
        "Below this confidence the item goes to the fallback compartment (0.8: the shipped "
        "model's calibrated confidence at which 97 % of sorted items were right on validation).",
        min=0,
        max=1,
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
    pin: int = _opt(
        18,
        "BCM pin of the servo signal (servo_drive gpiozero or kernel_pwm; kernel_pwm: "
        "12, 13, 18 or 19, as the overlay routes them).",
        min=0,
        max=27,
    )
    channel: int = _opt(0, "servo_drive = pca9685: the board output (0-15) the servo is on.", min=0, max=15)
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
    pin: int = _opt(0, "BCM pin of this flap's servo (servo_drive gpiozero or kernel_pwm).", min=0, max=27)
    channel: int = _opt(0, "servo_drive = pca9685: the board output (0-15) of this flap's servo.", min=0, max=15)
    open_angle: float = _opt(90.0, "Angle with the flap open.", min=-360, max=360)
    closed_angle: float = _opt(0.0, "Angle with the flap closed.", min=-360, max=360)


@dataclass
class KernelPwmSection:
    chip: int = _opt(
        0,
        "The /sys/class/pwm/pwmchipN of dtoverlay=pwm-2chan (0 on current kernels; a Pi 5 before kernel 6.12: 2).",
        min=0,
        max=63,
    )


@dataclass
class Pca9685Section:
    i2c_bus: int = _opt(1, "I2C bus of the board (/dev/i2c-N; GPIO2/3 are bus 1).", min=0, max=31)
    address: int = _opt(64, "7-bit I2C address of the board (64 = 0x40, the default).", min=3, max=119)
    oscillator_hz: float = _opt(
        25_000_000.0,
        "The board's clock; set it from a measured pulse if angles are off.",
        min=20_000_000,
        max=30_000_000,
    )


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
    servo_drive: Literal["gpiozero", "kernel_pwm", "pca9685"] = _opt(
        "gpiozero",
        "What times the servo pulses: gpiozero (the pin factory: pigpio is hardware-timed, "
        "lgpio software-timed and jittery), kernel_pwm (the SoC's PWM, dtoverlay=pwm-2chan), "
        "pca9685 (a PCA9685 board on I2C).",
    )
    kernel_pwm: KernelPwmSection = _sub(KernelPwmSection, "servo_drive = kernel_pwm.")
    pca9685: Pca9685Section = _sub(Pca9685Section, "servo_drive = pca9685.")
    dwell_seconds: float = _opt(1.0, "How long the chute/flap/LED holds before going home.", min=0, max=60)
    servo: ServoSection = _sub(ServoSection, "Single-servo chute or tray.")
    flaps: dict[str, FlapSection] = _opt({}, "Compartment → flap servo (kind = 'flaps').")
    leds: dict[str, int] = _opt({}, "Compartment → LED pin (kind = 'leds').")
    status_led_pin: int = _opt(-1, "Status LED (on: ready, blink: busy, fast: error); -1: none.", min=-1, max=27)
    buzzer_pin: int = _opt(-1, "Buzzer that beeps once per sorted item; -1: none.", min=-1, max=27)


@dataclass
class MqttTlsSection:
    enabled: bool = _opt(False, "Connect with TLS (the broker's TLS listener, usually port 8883).")
    ca_file: str = _opt(
        "", "CA certificate(s) (PEM) that signed the broker's certificate; empty: the system's CA store."
    )
    cert_file: str = _opt("", "Client certificate (PEM), when the broker asks for one; needs key_file.")
    key_file: str = _opt("", "Private key (PEM, unencrypted) of cert_file; readable only by the agent.")
    insecure: bool = _opt(
        False,
        "LABS ONLY: do not check that the broker's certificate names mqtt.host (it must "
        "still be signed by ca_file). Logged as a warning at every start.",
    )


@dataclass
class MqttCommandsSection:
    allow_reset: bool = _opt(True, "Accept cmd/reset_counts (zeroes the counts); false rejects it.")
    max_bytes: int = _opt(
        4096,
        "Largest command payload. The broker is told (MQTT 5 Maximum Packet Size) never to "
        "send this client a bigger packet, so a huge command is never received at all.",
        min=64,
        max=65536,
    )
    rate_per_minute: float = _opt(
        60.0,
        "Commands accepted per minute on average; more are dropped (no reply) and counted "
        "in state's commands_rejected.",
        min=1,
        max=60000,
    )
    burst: int = _opt(10, "Commands accepted in a row before the rate limit applies.", min=1, max=1000)


@dataclass
class MqttSection:
    enabled: bool = _opt(True, "Publish events and state, accept commands.")
    host: str = _opt("localhost", "Broker host name or address.", check=_hostname)
    port: int = _opt(1883, "Broker port.", min=1, max=65535)
    client_id: str = _opt(
        "",
        f"MQTT client id, at most {MQTT_MAX_CLIENT_ID_BYTES} bytes; empty: bin-agent-<bin_id>.",
        check=_client_id,
    )
    topic_prefix: str = _opt("smartbin", "Topics are <topic_prefix>/<bin_id>/…")
    keepalive: int = _opt(30, "Seconds between keepalive pings; a dead link is noticed in 1.5x.", min=5, max=3600)
    username: str = _opt("", "Broker user name (empty: anonymous).", check=_mqtt_string)
    password_file: str = _opt("", "File holding the broker password (never the password itself).")
    password_env: str = _opt(
        "", "Name of an environment variable holding the broker password (instead of password_file)."
    )
    max_inflight: int = _opt(20, "QoS 1 messages awaiting PUBACK at once.", min=1, max=1000)
    reconnect_min_seconds: float = _opt(1.0, "First reconnect delay.", min=0.1, max=60)
    reconnect_max_seconds: float = _opt(30.0, "Longest reconnect delay (exponential backoff).", min=1, max=3600)
    tls: MqttTlsSection = _sub(MqttTlsSection, "TLS: broker certificate check, client certificate.")
    commands: MqttCommandsSection = _sub(MqttCommandsSection, "What commands the bin accepts, and how often.")


@dataclass
class FillSensorSection:
    trigger_pin: int = _opt(0, "BCM pin of the ultrasonic sensor's trigger.", min=0, max=27)
    echo_pin: int = _opt(0, "BCM pin of the ultrasonic sensor's echo.", min=0, max=27)
    empty_distance: float = _opt(0.6, "Metres from the sensor to the floor of the empty compartment.", min=0.02, max=4)
    full_distance: float = _opt(
        0.1, "Metres from the sensor to the waste when the compartment counts as full.", min=0.02, max=4
    )


@dataclass
class FillSection:
    enabled: bool = _opt(True, "Estimate (and, with sensors, measure) how full each compartment is.")
    full_threshold: float = _opt(
        90.0, "Percent at which a compartment counts as full (retained 'full' alert).", min=1, max=100
    )
    item_litres: dict[str, float] = _opt(
        {"cardboard": 1.5, "glass": 0.6, "metal": 0.4, "paper": 0.3, "plastic": 0.5, "trash": 0.8},
        "Class → litres one item takes up in its compartment (the estimate).",
    )
    capacity_litres: dict[str, float] = _opt(
        {"paper": 60.0, "glass": 40.0, "packaging": 60.0, "residual": 60.0},
        "Compartment → litres it holds.",
    )
    sensor_interval_seconds: float = _opt(
        30.0,
        "With sensors: how often the measured levels are republished when they change.",
        min=1,
        max=3600,
    )
    sensors: dict[str, FillSensorSection] = _opt(
        {}, "Compartment → ultrasonic sensor (gpiozero DistanceSensor) measuring its level."
    )


@dataclass
class HistorySection:
    retention_days: int = _opt(
        365, "How many days of sorted items the store keeps for 'bin-agent report'.", min=1, max=3650
    )


@dataclass
class HomeAssistantSection:
    enabled: bool = _opt(True, "Publish retained Home Assistant MQTT discovery configs on connect.")
    discovery_prefix: str = _opt("homeassistant", "Home Assistant's discovery prefix.")


@dataclass
class StoreSection:
    max_outbox_events: int = _opt(
        50_000,
        "Most undelivered events kept (about 0.6 KB each on disk); beyond it the oldest "
        "are dropped and counted in state.outbox_dropped.",
        min=100,
        max=10_000_000,
    )
    max_outbox_age_days: float = _opt(
        0.0,
        "Undelivered events older than this many days are dropped (0: no age limit).",
        min=0,
        max=3650,
    )
    max_memory_events: int = _opt(
        1000,
        "While the disk is full, most events held in memory (and published from there).",
        min=10,
        max=100_000,
    )


@dataclass
class CaptureSection:
    enabled: bool = _opt(False, "Save the photo of sorted items with what the bin decided (to relabel and retrain).")
    mode: Literal["all", "unsure", "sample"] = _opt(
        "all", "all: every item; unsure: items sent to the fallback compartment; sample: one item in sample_every."
    )
    sample_every: int = _opt(10, "mode = 'sample': keep one item in this many.", min=1, max=100000)
    folder: str = _opt("capture", "Folder of the photos, relative to agent.state_dir (or absolute).")
    max_mb: float = _opt(500.0, "Size cap of the folder in MB; the oldest photos are deleted first.", min=0.01)
    queue_size: int = _opt(
        8,
        "Photos that may wait for the writer; beyond, an item is not captured (counted as capture_dropped in state).",
        min=1,
        max=1000,
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
    fill: FillSection = _sub(FillSection, "Fill level per compartment.")
    history: HistorySection = _sub(HistorySection, "History of sorted items (reports).")
    homeassistant: HomeAssistantSection = _sub(HomeAssistantSection, "Home Assistant MQTT discovery.")
    store: StoreSection = _sub(StoreSection, "The event outbox's bounds.")
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
        if key_path in _REFUSED_KEYS:
            problems.append(f"{key_path}: {_REFUSED_KEYS[key_path]}")
            continue
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

_REFUSED_KEYS = {
    "mqtt.password": "a password never goes in the config file (it is copied, backed up and "
    "shown in check-config output); put it in a file readable only by the agent and set "
    "password_file, or set password_env to the name of an environment variable holding it",
}
"""Keys that are refused with their own explanation instead of 'unknown key'."""


def _convert(hint: Any, value: Any, where: str, problems: list[str], base_dir: Path) -> Any:
    origin = typing.get_origin(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, value, where, problems, base_dir)
    if origin is Literal:
        choices = typing.get_args(hint)
        # Compared with their type: true == 1 in Python, but `views = true` is a mistake.
        if not any(type(value) is type(choice) and value == choice for choice in choices):
            shown = (
                _show(value)
                if isinstance(value, str)
                else (repr(value) if type(value) in (int, float) else _kind(value))
            )
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
    names = {
        bool: "a boolean",
        int: "a whole number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }
    return f"{names.get(type(value), type(value).__name__)} ({value!r})"[:80]


# --------------------------------------------------------------------------- cross-checks


def _cross_check(config: Config, problems: list[str], check_model: bool) -> None:
    _check_sizes(config, problems)
    _check_trigger(config, problems)
    _check_replay(config, problems)
    _check_bin_id(config, problems)
    labels = _check_model(config, problems) if check_model else list(CLASSES)
    _check_router(config, labels, problems)
    _check_actuator(config, problems)
    _check_pins(config, problems)
    _check_mqtt(config, problems)
    _check_fill(config, labels, problems)
    _check_homeassistant(config, problems)
    _check_state_dir(config, problems)
    if not config.capture.folder.strip():
        problems.append('capture.folder: must name a folder (default "capture", under agent.state_dir)')
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
        problems.append(f"camera.replay.path: {replay.path} does not exist; point it at an image or a folder of images")
    elif replay.path.is_file() and replay.path.suffix.lower() not in IMAGE_SUFFIXES:
        problems.append(f"camera.replay.path: {replay.path} is not an image ({', '.join(sorted(IMAGE_SUFFIXES))})")
    elif replay.path.is_dir():
        try:
            images = find_images(replay.path)
        except OSError as exc:
            problems.append(f"camera.replay.path: cannot list {replay.path} ({exc})")
        else:
            if not images:
                problems.append(f"camera.replay.path: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {replay.path}")
    if replay.empty_frame:
        # Decoded now (it is small and used for every item): a bad one fails here, not mid-run.
        try:
            load_image(config.resolve(replay.empty_frame), replay.max_pixels)
        except ImageError as exc:
            problems.append(f"camera.replay.empty_frame: {exc}")


def _check_replay(config: Config, problems: list[str]) -> None:
    replay = config.camera.replay
    if config.trigger.mode == "gpio" and config.camera.source == "replay" and not replay.realtime:
        problems.append(
            "camera.replay.realtime: a gpio trigger's sensor runs on the wall clock, the "
            "virtual replay clock does not; set realtime = true"
        )
    if replay.mode == "sequence" and replay.shuffle:
        problems.append(
            'camera.replay.shuffle: a recorded sequence plays in order; shuffle applies to mode = "items" only'
        )


def _check_trigger(config: Config, problems: list[str]) -> None:
    motion = config.trigger.motion
    if motion.max_motion >= motion.min_area:
        problems.append(f"trigger.motion.max_motion: {motion.max_motion} must be below min_area ({motion.min_area})")
    gpio = config.trigger.gpio
    if gpio.threshold_distance >= gpio.max_distance:
        problems.append(
            f"trigger.gpio.threshold_distance: {gpio.threshold_distance} must be below "
            f"max_distance ({gpio.max_distance})"
        )


def _check_sizes(config: Config, problems: list[str]) -> None:
    from .geometry import box_problem

    problem = box_problem(config.camera.drop_zone)
    if problem is not None:
        problems.append(f"camera.drop_zone: {problem}")
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
        problems.append(f"agent.bin_id: {bin_id!r} must be 1-64 printable characters without '/', '+' or '#'")
    prefix = config.mqtt.topic_prefix
    if not prefix or any(c in prefix for c in "+#") or prefix.startswith(("/", "$")) or prefix.endswith("/"):
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
            problems.append(f"router.compartments: class '{label}' has no compartment; add {label} = \"<compartment>\"")
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


MAX_ACTUATION_SECONDS = 15.0
"""Longest one sort may take (move, dwell, return): systemd's TimeoutStopSec=20s
must still cover a sort in progress at SIGTERM."""


def actuation_seconds(actuator: ActuatorSection) -> float:
    """How long one sort blocks the loop: travel out, dwell, travel home."""
    if actuator.kind in ("servo", "flaps"):
        return 2 * actuator.servo.travel_seconds + actuator.dwell_seconds
    if actuator.kind == "leds":
        return actuator.dwell_seconds
    return 0.0


def _check_actuator(config: Config, problems: list[str]) -> None:
    actuator = config.actuator
    needed = config.compartments
    cycle = actuation_seconds(actuator)
    if cycle > MAX_ACTUATION_SECONDS:
        travel = "2 x servo.travel_seconds + " if actuator.kind in ("servo", "flaps") else ""
        problems.append(
            f"actuator.dwell_seconds: one sort ({travel}dwell_seconds) takes {cycle:g} s, more than "
            f"{MAX_ACTUATION_SECONDS:g} s (systemd stops the agent within 20 s); shorten the dwell or travel time"
        )
    if actuator.kind == "servo":
        servo = actuator.servo
        if servo.min_angle >= servo.max_angle:
            problems.append("actuator.servo.min_angle: must be below max_angle")
        if servo.min_pulse_width_ms >= servo.max_pulse_width_ms:
            problems.append("actuator.servo.min_pulse_width_ms: must be below max_pulse_width_ms")
        angles = {"home_angle": servo.home_angle, **{f"angles.{k}": v for k, v in servo.angles.items()}}
        for key, angle in angles.items():
            if not servo.min_angle <= angle <= servo.max_angle:
                problems.append(f"actuator.servo.{key}: {angle} is outside [{servo.min_angle}, {servo.max_angle}]")
        _need_each(needed, servo.angles, "actuator.servo.angles", "<angle>", problems)
    elif actuator.kind == "flaps":
        _need_each(needed, actuator.flaps, "actuator.flaps", "{ pin = <BCM pin> }", problems)
    if actuator.kind in ("servo", "flaps"):
        _check_servo_drive(actuator, problems)
    elif actuator.kind == "leds":
        _need_each(needed, actuator.leds, "actuator.leds", "<BCM pin>", problems)
        for compartment, pin in actuator.leds.items():
            if not 0 <= pin <= 27:
                problems.append(f"actuator.leds.{compartment}: pin {pin} is not a BCM GPIO (0-27)")


KERNEL_PWM_PINS = (12, 13, 18, 19)


def _check_servo_drive(actuator: ActuatorSection, problems: list[str]) -> None:
    servos: dict[str, ServoSection | FlapSection]
    if actuator.kind == "servo":
        servos = {"actuator.servo": actuator.servo}
    else:
        servos = {f"actuator.flaps.{name}": flap for name, flap in actuator.flaps.items()}
    if actuator.servo_drive == "kernel_pwm":
        for key, servo in servos.items():
            if servo.pin not in KERNEL_PWM_PINS:
                problems.append(
                    f"{key}.pin: GPIO{servo.pin} has no hardware PWM; with servo_drive = "
                    '"kernel_pwm" use 18 or 19 (dtoverlay=pwm-2chan), or 12 or 13'
                )
    elif actuator.servo_drive == "pca9685":
        seen: dict[int, str] = {}
        for key, servo in servos.items():
            if servo.channel in seen:
                problems.append(
                    f"{key}.channel: PCA9685 output {servo.channel} is already used by "
                    f"{seen[servo.channel]}.channel; give each servo its own output"
                )
            seen.setdefault(servo.channel, key)


def _need_each(needed: list[str], table: dict[str, Any], key: str, example: str, problems: list[str]) -> None:
    for compartment in needed:
        if compartment and compartment not in table:  # an empty name is the router's problem
            problems.append(f"{key}: compartment '{compartment}' has none; add {compartment} = {example}")
    for compartment in table:
        if compartment not in needed:
            problems.append(
                f"{key}.{compartment}: no class is routed to '{compartment}' (compartments: {', '.join(needed)})"
            )


def pins_in_use(config: Config) -> dict[str, int]:
    """Every GPIO pin the config uses, keyed by the option that names it."""
    pins: dict[str, int] = {}
    actuator = config.actuator
    servos = actuator.kind in ("servo", "flaps")
    if servos and actuator.servo_drive == "pca9685":
        pins.update({"actuator.pca9685 (I2C SDA)": 2, "actuator.pca9685 (I2C SCL)": 3})
    elif actuator.kind == "servo":
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
    if config.fill.enabled:
        for compartment, sensor in config.fill.sensors.items():
            pins[f"fill.sensors.{compartment}.trigger_pin"] = sensor.trigger_pin
            pins[f"fill.sensors.{compartment}.echo_pin"] = sensor.echo_pin
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
    if not mqtt.client_id and len(f"bin-agent-{config.agent.bin_id}".encode()) > MQTT_MAX_CLIENT_ID_BYTES:
        problems.append(
            f"mqtt.client_id: the default bin-agent-<bin_id> is longer than {MQTT_MAX_CLIENT_ID_BYTES} "
            "bytes; set a shorter client_id or bin_id"
        )
    if (mqtt.password_file or mqtt.password_env) and not mqtt.username:
        key = "password_file" if mqtt.password_file else "password_env"
        problems.append(f"mqtt.username: required when mqtt.{key} is set")
    try:
        broker_password(config)
    except ConfigError as exc:
        problems.extend(exc.problems)
    try:
        broker_tls_context(config)
    except ConfigError as exc:
        problems.extend(exc.problems)


def broker_password(config: Config) -> str | None:
    """The broker password from ``mqtt.password_file`` or ``mqtt.password_env`` (None: neither).

    :raises ConfigError: naming the key, when the file or variable is missing or unusable.
    """
    mqtt = config.mqtt
    if mqtt.password_file and mqtt.password_env:
        raise ConfigError(["mqtt.password_env: set either password_file or password_env, not both"])
    if mqtt.password_env:
        name = mqtt.password_env
        if not name.replace("_", "a").isalnum() or not name.isascii() or name[0].isdigit():
            raise ConfigError(
                [
                    f"mqtt.password_env: {name!r} is not an environment variable name "
                    "(letters, digits and '_', e.g. BIN_AGENT_MQTT_PASSWORD)"
                ]
            )
        value = os.environ.get(name, "")
        if not value:
            raise ConfigError([f"mqtt.password_env: the environment variable {name} is not set or empty"])
        return value
    if not mqtt.password_file:
        return None
    path = config.resolve(mqtt.password_file)
    try:
        with path.open("rb") as file:
            head = file.read(MQTT_MAX_STRING_BYTES + 2)  # the first line is all that counts
        lines = [line.decode("utf-8") for line in head.splitlines()[:1]]
    except FileNotFoundError:
        raise ConfigError([f"mqtt.password_file: {path} not found"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"mqtt.password_file: {path} is not UTF-8 text (a binary file?)"]) from None
    except OSError as exc:
        raise ConfigError([f"mqtt.password_file: cannot read {path} ({exc.strerror or exc})"]) from None
    if not lines or not lines[0]:
        raise ConfigError([f"mqtt.password_file: {path} is empty; its first line is the password"])
    if not lines[0].isprintable():
        raise ConfigError([f"mqtt.password_file: the first line of {path} has control characters"])
    if len(lines[0].encode()) > MQTT_MAX_STRING_BYTES:
        raise ConfigError(
            [
                f"mqtt.password_file: the first line of {path} is longer than "
                f"{MQTT_MAX_STRING_BYTES} bytes (MQTT's limit for a password)"
            ]
        )
    return lines[0]


def broker_tls_context(config: Config) -> Any:
    """The ``ssl.SSLContext`` of ``[mqtt.tls]`` (None: TLS off), with the certificates loaded.

    :raises ConfigError: naming the key of a missing, unreadable or mismatched file.
    """
    from .mqtt import TlsSetupError, tls_context

    tls = config.mqtt.tls
    files = {key: getattr(tls, key) for key in ("ca_file", "cert_file", "key_file")}
    if not tls.enabled:
        stray = [key for key, value in files.items() if value] + (["insecure"] if tls.insecure else [])
        if stray:
            raise ConfigError(
                [
                    f"mqtt.tls.{key}: set while mqtt.tls.enabled is false; set enabled = true to use TLS, or remove it"
                    for key in stray
                ]
            )
        return None
    if bool(tls.cert_file) != bool(tls.key_file):
        missing, given = ("key_file", "cert_file") if tls.cert_file else ("cert_file", "key_file")
        raise ConfigError(
            [f"mqtt.tls.{missing}: required when mqtt.tls.{given} is set (a client certificate needs its private key)"]
        )
    paths = {key: config.resolve(value) if value else None for key, value in files.items()}
    try:
        return tls_context(paths["ca_file"], paths["cert_file"], paths["key_file"], insecure=tls.insecure)
    except TlsSetupError as exc:
        raise ConfigError([f"mqtt.tls.{exc.key}: {exc}"]) from None


def _check_fill(config: Config, labels: list[str], problems: list[str]) -> None:
    fill = config.fill
    if not fill.enabled:
        return
    for label in labels:
        if label not in fill.item_litres:
            problems.append(f"fill.item_litres: class '{label}' has none; add {label} = <litres>")
    for label, litres in fill.item_litres.items():
        if label not in labels:
            problems.append(f"fill.item_litres.{label}: the model has no class '{label}'")
        elif litres < 0:
            problems.append(f"fill.item_litres.{label}: {litres} must not be negative")
    _need_each(config.compartments, fill.capacity_litres, "fill.capacity_litres", "<litres>", problems)
    for compartment, litres in fill.capacity_litres.items():
        if litres <= 0:
            problems.append(f"fill.capacity_litres.{compartment}: {litres} must be above 0")
    for compartment, sensor in fill.sensors.items():
        if compartment not in config.compartments:
            problems.append(
                f"fill.sensors.{compartment}: no class is routed to '{compartment}' "
                f"(compartments: {', '.join(config.compartments)})"
            )
        if sensor.full_distance >= sensor.empty_distance:
            problems.append(
                f"fill.sensors.{compartment}.full_distance: {sensor.full_distance} must be "
                f"below empty_distance ({sensor.empty_distance})"
            )


def _check_homeassistant(config: Config, problems: list[str]) -> None:
    prefix = config.homeassistant.discovery_prefix
    if not prefix or any(c in prefix for c in "+#") or prefix.startswith("/") or prefix.endswith("/"):
        problems.append(
            f"homeassistant.discovery_prefix: {prefix!r} must be non-empty, without '+' or '#', "
            "and not start or end with '/'"
        )


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
