"""Relations between sections: checks that need more than one value and open no file.

Pin clashes, a compartment for every class, a servo angle for every compartment, sizes that
fit, topics that fit MQTT's limits. Every problem names its key and the fix.
"""

from __future__ import annotations

from typing import Any

from .. import CLASSES
from .schema import (
    MQTT_MAX_CLIENT_ID_BYTES,
    MQTT_MAX_STRING_BYTES,
    ActuatorSection,
    Config,
    FlapSection,
    ServoSection,
    quoted,
)


def check_relations(config: Config, problems: list[str], labels: list[str] | None = None) -> None:
    """Add every relation problem of ``config`` to ``problems``.

    :param labels: the model's classes (preflight reads them from the labels file); None: the
        product's six classes.
    """
    labels = list(CLASSES) if labels is None else labels
    _check_sizes(config, problems)
    _check_trigger(config, problems)
    _check_replay(config, problems)
    _check_bin_id(config, problems)
    _check_router(config, labels, problems)
    _check_actuator(config, problems)
    _check_pins(config, problems)
    _check_mqtt(config, problems)
    _check_fill(config, labels, problems)
    _check_homeassistant(config, problems)
    _check_ask(config, problems)
    if not config.capture.folder.strip():
        problems.append('capture.folder: must name a folder (default "capture", under agent.state_dir)')


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
    if motion.min_pixel_threshold > motion.pixel_threshold:
        problems.append(
            f"trigger.motion.min_pixel_threshold: {motion.min_pixel_threshold} must not exceed "
            f"pixel_threshold ({motion.pixel_threshold})"
        )
    gpio = config.trigger.gpio
    if gpio.threshold_distance >= gpio.max_distance:
        problems.append(
            f"trigger.gpio.threshold_distance: {gpio.threshold_distance} must be below "
            f"max_distance ({gpio.max_distance})"
        )


def _check_sizes(config: Config, problems: list[str]) -> None:
    from ..geometry import box_problem

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
            f"mqtt.topic_prefix: {quoted(prefix)} must be non-empty, without '+' or '#', "
            "and not start with '/' or '$' (broker topics) or end with '/'"
        )
    longest_topic = f"{prefix}/{bin_id}/cmd/result"
    if len(longest_topic.encode()) > MQTT_MAX_STRING_BYTES:
        problems.append(
            f"mqtt.topic_prefix: topics such as <topic_prefix>/<bin_id>/cmd/result would be longer "
            f"than MQTT's {MQTT_MAX_STRING_BYTES} bytes"
        )


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
    if actuator.gpiochip is not None and actuator.pin_factory != "lgpio":
        problems.append(
            f'actuator.gpiochip: {actuator.gpiochip} applies to pin_factory = "lgpio" only '
            f'(this config: "{actuator.pin_factory}"); set pin_factory = "lgpio" or leave gpiochip out'
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
    if actuator.status_led_pin is not None:
        pins["actuator.status_led_pin"] = actuator.status_led_pin
    if actuator.buzzer_pin is not None:
        pins["actuator.buzzer_pin"] = actuator.buzzer_pin
    if config.trigger.mode == "gpio":
        pins["trigger.gpio.pin"] = config.trigger.gpio.pin
        if config.trigger.gpio.kind == "distance":
            pins["trigger.gpio.echo_pin"] = config.trigger.gpio.echo_pin
    if config.fill.enabled:
        for compartment, sensor in config.fill.sensors.items():
            pins[f"fill.sensors.{compartment}.trigger_pin"] = sensor.trigger_pin
            pins[f"fill.sensors.{compartment}.echo_pin"] = sensor.echo_pin
    ask = config.ask
    if ask.enabled:
        if ask.mode == "buttons":
            pins.update({f"ask.buttons.{k}": v for k, v in ask.buttons.items()})
        elif ask.mode == "yes_next":
            # An unset one is reported by _check_ask, not as a pin.
            if ask.yes_pin is not None:
                pins["ask.yes_pin"] = ask.yes_pin
            if ask.next_pin is not None:
                pins["ask.next_pin"] = ask.next_pin
        pins.update({f"ask.leds.{k}": v for k, v in ask.leds.items()})
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
    if not mqtt.client_id and len((mqtt.username or f"bin-agent-{config.agent.bin_id}").encode()) > (
        MQTT_MAX_CLIENT_ID_BYTES
    ):
        default = "mqtt.username" if mqtt.username else "bin-agent-<bin_id>"
        problems.append(
            f"mqtt.client_id: the default ({default}) is longer than {MQTT_MAX_CLIENT_ID_BYTES} "
            "bytes; set a shorter client_id"
        )
    if (mqtt.password_file or mqtt.password_env) and not mqtt.username:
        key = "password_file" if mqtt.password_file else "password_env"
        problems.append(f"mqtt.username: required when mqtt.{key} is set")


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


def _check_ask(config: Config, problems: list[str]) -> None:
    ask = config.ask
    if not ask.enabled:
        return
    needed = config.compartments
    if ask.mode == "buttons":
        _need_each(needed, ask.buttons, "ask.buttons", "<BCM pin>", problems)
    elif ask.mode == "yes_next":
        for key in ("yes_pin", "next_pin"):
            if getattr(ask, key) is None:
                problems.append(f'ask.{key}: mode = "yes_next" needs the BCM pin of its button')
    elif not (ask.remote and config.mqtt.enabled):
        problems.append('ask.mode: "remote" needs ask.remote = true and mqtt.enabled = true (nothing could answer)')
    for compartment in ask.leds:
        if compartment not in needed:
            problems.append(
                f"ask.leds.{compartment}: no class is routed to '{compartment}' (compartments: {', '.join(needed)})"
            )
    for key, table in (("ask.buttons", ask.buttons), ("ask.leds", ask.leds)):
        for compartment, pin in table.items():
            if not 0 <= pin <= 27:
                problems.append(f"{key}.{compartment}: pin {pin} is not a BCM GPIO (0-27)")
