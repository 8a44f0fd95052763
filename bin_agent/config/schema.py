"""The one configuration schema: a dataclass per section, each option with its type, its
default, its help and (where it has one) its allowed range or rule.

:mod:`.load` turns TOML into these classes; :mod:`.relations` checks the relations between
sections; :mod:`bin_agent.preflight` opens the files they name. Each part of the agent is built
from its own section (``Part.from_config(section)``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .. import DEFAULT_MODEL
from ..classify.limits import DEFAULT_MAX_PIXELS

Check = Callable[[Any], "str | None"]
"""A rule for one value: returns what is wrong with it (without the key), or None."""


def _opt(
    default: Any,
    help: str,
    *,
    min: float | None = None,
    max: float | None = None,
    check: Check | None = None,
    required: bool = False,
    was_none: int | None = None,
    old_default: tuple[Any, str] | None = None,
) -> Any:
    """A config field with documentation, an optional inclusive range and an optional rule.
    ``required``: a table that is given must name it (the default only fills the dataclass).
    ``was_none``: the value that meant "none" before the option became ``X | None``; an
    installed config that still says it is read as unset, with a warning naming the key.
    ``old_default``: the value the config template of earlier releases wrote, and why the
    default changed; an installed config that still says it keeps it (a value someone may
    have chosen is never overridden), with a warning naming the key."""
    meta = {
        "help": help,
        "min": min,
        "max": max,
        "check": check,
        "required": required,
        "was_none": was_none,
        "old_default": old_default,
    }
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

_PWM_CHIP = re.compile(r"auto|pwmchip[0-9]{1,3}|[0-9a-f]+\.pwm")


def _pwm_chip(value: str) -> str | None:
    """auto, pwmchipN, or a platform device name such as 1f00098000.pwm."""
    if _PWM_CHIP.fullmatch(value):
        return None
    return f"{value!r} is not auto, pwmchipN or a PWM device name such as 1f00098000.pwm"


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
            f"{quoted(value)} is not a host name (RFC 1123: dot-separated labels of 1-63 letters, "
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
        return f"{quoted(value)} must not contain '/', '+' or '#'"
    return None


def _mqtt_string(value: str) -> str | None:
    if len(value.encode()) > MQTT_MAX_STRING_BYTES:
        return f"longer than MQTT's {MQTT_MAX_STRING_BYTES} bytes"
    return None


def control_character_problem(value: str) -> str | None:
    """Every string option is text on one line: no NUL, newline or other control character."""
    bad = sorted({c for c in value if not c.isprintable()})
    if bad:
        shown = ", ".join(json.dumps(c) for c in bad[:3])
        return f"contains a control or non-printable character ({shown})"
    return None


def quoted(value: str, limit: int = 60) -> str:
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
    main_size: list[int] = _opt(
        [1280, 960],
        "Main stream [width, height]: what is classified (only the frames an item fires on are "
        "copied out of the camera). Items under about 150 px are classified worse (docs/learning.md, "
        "'How many pixels an item needs'): 1280x960 gives an item twice the pixels across of 640x480.",
    )
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
    flicker: Literal["off", "50hz", "60hz"] = _opt(
        "off",
        "The mains frequency of lamps that light the bin (room lights through the lid, an LED on a "
        "cheap mains driver): auto-exposure then keeps to whole periods of their flicker (libcamera's "
        "AeFlickerMode), so no dark bands roll through the frames; off: the bin's own steady light.",
    )
    drop_zone: list[float] = _opt(
        [0.0, 0.0, 1.0, 1.0],
        "[x0, y0, x1, y1] of the drop zone as fractions of the frame (0, 0 top left): "
        "the motion trigger watches only it, and what is classified never leaves it.",
    )
    crop_margin: float = _opt(
        0.0,
        "The item's box is grown by this share of its size on each side before it is classified "
        "(0: the box itself, which classified best; see docs/learning.md).",
        min=0,
        max=2,
        old_default=(
            0.15,
            "the config template's value before 2026-12-06; the item's own box (0) is classified "
            "10 points better in a synthetic bin (docs/learning.md, 'The region classified'): "
            "delete this line unless 0.15 was chosen for this bin",
        ),
    )
    replay: ReplaySection = _sub(ReplaySection, "Settings of the replay source.")

    @property
    def zone(self) -> tuple[float, float, float, float]:
        """:attr:`drop_zone` as a ``geometry.NormBox`` (validated at load)."""
        x0, y0, x1, y1 = self.drop_zone
        return (x0, y0, x1, y1)


@dataclass
class MotionSection:
    noise_factor: float = _opt(
        6.0,
        "A block of the view counts as changed when it differs from the empty bin by this many times "
        "its noise, learned while the bin is empty (mean absolute deviation, about 0.8 sigma).",
        min=1,
        max=50,
    )
    min_pixel_threshold: float = _opt(
        3.0,
        "The fewest grey levels that count as changed, however quiet the picture (at most pixel_threshold).",
        min=0.5,
        max=254,
    )
    pixel_threshold: float = _opt(
        20.0,
        "The most grey levels a block must differ by to count as changed, however noisy it is.",
        min=1,
        max=254,
    )
    min_area: float = _opt(
        0.0015,
        "Share of the view that must change to see an item (0.0015: 8 blocks of 4x4 px in 320x240, a 12x12 px "
        "item, a bottle cap seen in part; a clear one, half its blocks changed by a frame's full threshold, "
        "needs two thirds of it); raised while noise alone changes parts of the empty bin.",
        min=0.0001,
        max=1,
    )
    max_motion: float = _opt(
        0.001,
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
    idle_look_seconds: float = _opt(
        0.2,
        "While the empty bin stays quiet (no block changed at the last look), look at a frame only this often: "
        "an item's first look comes up to this much later, for less idle CPU (0: every frame).",
        min=0,
        max=5,
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
    confidence_threshold: float | None = _opt(
        None,
        "Below this confidence the item goes to the fallback compartment. Unset: the model's "
        "own (its metadata's recommended_confidence_threshold, measured with the model; the "
        "shipped model's is 0.8), so a deployed model brings its threshold; set: this one, "
        "whatever the model.",
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
    chip: str = _opt(
        "auto",
        "The PWM block of dtoverlay=pwm-2chan, by its device: auto (1f00098000.pwm on a Pi 5, "
        "fe20c000.pwm on a Pi 4, 3f20c000.pwm on a Pi 3), a device name, or pwmchipN (by number: "
        "numbers change between kernels, and a Pi 5's fan PWM has 4 channels too).",
        check=_pwm_chip,
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
    gpiochip: int | None = _opt(
        None,
        "pin_factory = lgpio: the /dev/gpiochipN of the 40-pin header; unset: found by its controller "
        "(1f000d0000.gpio on a Pi 5, fe200000.gpio on a Pi 4), where gpiozero guesses 0 or 4 and recent "
        "Pi 5 kernels number the chips from 10.",
        min=0,
        max=63,
        was_none=-1,
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
    status_led_pin: int | None = _opt(
        None, "Status LED (on: ready, blink: busy, fast: error); unset: none.", min=0, max=27, was_none=-1
    )
    buzzer_pin: int | None = _opt(
        None, "Buzzer that beeps once per sorted item; unset: none.", min=0, max=27, was_none=-1
    )


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
    allow_reset: bool = _opt(
        False,
        "Accept cmd/reset_counts (zeroes the counts; also shows the Home Assistant button); "
        "false rejects it with a reason.",
    )
    max_bytes: int = _opt(
        4096,
        "Largest command payload. The broker is told (MQTT 5 Maximum Packet Size) never to "
        "send this client a bigger packet, so a huge command is never received at all.",
        min=64,
        max=65536,
    )
    rate_per_minute: float = _opt(
        60.0,
        "Commands of one name accepted per minute on average (each command, and all unknown "
        "names together, have their own bucket); more are dropped (no reply) and counted in "
        "state's commands_rejected.",
        min=1,
        max=60000,
    )
    burst: int = _opt(10, "Commands of one name accepted in a row before the rate limit applies.", min=1, max=1000)


@dataclass
class MqttSection:
    enabled: bool = _opt(True, "Publish events and state, accept commands.")
    host: str = _opt("localhost", "Broker host name or address.", check=_hostname)
    port: int = _opt(1883, "Broker port.", min=1, max=65535)
    client_id: str = _opt(
        "",
        f"MQTT client id, at most {MQTT_MAX_CLIENT_ID_BYTES} bytes; empty: the user name (the "
        "shipped broker config makes them one thing), or bin-agent-<bin_id> without one.",
        check=_client_id,
    )
    topic_prefix: str = _opt("smartbin", "Topics are <topic_prefix>/<bin_id>/…")
    keepalive: int = _opt(
        30,
        "Seconds of silence before a keepalive ping. A broker that stops answering is noticed "
        "after 1x to 2x this (paho pings after keepalive s and gives up keepalive s later); "
        "the broker drops a silent bin after 1.5x and publishes its offline status.",
        min=5,
        max=3600,
    )
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
    # Required: a default would be GPIO0, the HAT ID pin.
    trigger_pin: int = _opt(0, "BCM pin of the ultrasonic sensor's trigger (required).", min=0, max=27, required=True)
    echo_pin: int = _opt(0, "BCM pin of the ultrasonic sensor's echo (required).", min=0, max=27, required=True)
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
class AskSection:
    enabled: bool = _opt(
        False,
        "Ask a person about unsure items (below router.confidence_threshold) instead of "
        "dropping them into the fallback at once; see docs/asking.md.",
    )
    mode: Literal["buttons", "yes_next", "remote"] = _opt(
        "buttons",
        "buttons: one button per compartment (buttons); yes_next: a yes and a next button "
        "(yes_pin, next_pin); remote: no buttons, only Home Assistant / MQTT answers.",
    )
    buttons: dict[str, int] = _opt({}, "mode = 'buttons': compartment -> BCM pin of its button.")
    yes_pin: int | None = _opt(
        None,
        "mode = 'yes_next': BCM pin of the yes button (the shown compartment).",
        min=0,
        max=27,
        was_none=-1,
    )
    next_pin: int | None = _opt(
        None,
        "mode = 'yes_next': BCM pin of the next button (show the next candidate).",
        min=0,
        max=27,
        was_none=-1,
    )
    leds: dict[str, int] = _opt(
        {},
        "Compartment -> BCM pin of an LED that shows the candidates (e.g. the lamp of an "
        "illuminated button); empty: actuator.leds when actuator.kind = 'leds', else none.",
    )
    pull_up: bool = _opt(True, "Buttons wired to ground with the internal pull-up (else to 3.3 V, pull-down).")
    bounce_seconds: float = _opt(
        0.02,
        "A button's level must hold this long to count (lgpio: the kernel's glitch filter "
        "via gpiozero's bounce_time); edges closer than this to the last one are also dropped.",
        min=0,
        max=0.3,
    )
    timeout_seconds: float = _opt(
        10.0, "How long the item waits for an answer; then it goes where it would have gone.", min=1, max=120
    )
    confirm_share: float = _opt(
        0.05,
        "Share of confident items also asked about (their compartment is shown; no answer: "
        "sorted as predicted), so the bin learns where it is confidently wrong.",
        min=0,
        max=1,
    )
    remote: bool = _opt(
        True,
        "Publish the item being asked about (retained <topic_prefix>/<bin_id>/unsure and its "
        "crop on .../unsure/image) so Home Assistant or cmd/correct can answer it.",
    )
    image_max_bytes: int = _opt(20000, "Largest JPEG of the crop published on .../unsure/image.", min=2000, max=200000)


@dataclass
class LearningSection:
    after_labels: int = _opt(
        50,
        "The agent learns (bin-agent learn) after this many new labels; 0: only on cmd/learn or the schedule.",
        min=0,
    )
    every_hours: float = _opt(0.0, "Also learn every this many hours when there are new labels; 0: no schedule.", min=0)
    min_labels: int = _opt(20, "Labelled captures needed before a learn refits anything.", min=4)
    verdict_blocks: int = _opt(
        5,
        "The verdict's folds: each class's labels, in time order, cut into this many stretches; each fold "
        "(stretch k of every class) is judged by a head refitted without it.",
        min=2,
        max=20,
    )
    max_p: float = _opt(
        0.05,
        "Deploy only when the refitted heads are right on more of the bin's labels (each judged without "
        "its fold) than the current head and a one-sided sign test on the labels where they differ gives "
        "p at most this.",
        min=0.0001,
        max=0.5,
    )
    bin_weight: float = _opt(
        10.0, "Weight of one of the bin's labels against one photo of the training memory.", min=0.1, max=100
    )
    l2: float = _opt(0.01, "L2 pull of the refitted head towards the model's own dense layer.", min=0, max=10)
    steps: int = _opt(100, "Optimiser steps of a refit.", min=10, max=10000)
    target_accuracy: float = _opt(
        0.9,
        "The threshold is refitted to the lowest at which the sorted items are right as often as the current "
        "head's are now, or this share if lower (none qualifies: router.confidence_threshold stays).",
        min=0.5,
        max=1.0,
    )
    watch_labels: int = _opt(
        20,
        "After a deploy, labels of items the new head sorted before it can be rolled back for being worse "
        "than the previous head (one-sided sign test, p < watch_max_p).",
        min=4,
    )
    watch_max_p: float = _opt(0.05, "p below which the watch rolls a deployed head back.", min=0.0001, max=0.5)
    memory: str = _opt("", "The training memory (.memory.npz); empty: the one beside model.path.")
    keep_models: int = _opt(
        5,
        "Deployed model versions kept in <state_dir>/models (bin-agent learn or deploy), the most recently "
        "deployed first; current and previous are always kept.",
        min=2,
    )


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
    ask: AskSection = _sub(AskSection, "Ask a person about unsure items (buttons, Home Assistant).")
    learning: LearningSection = _sub(LearningSection, "Learning on the bin (bin-agent learn).")

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
