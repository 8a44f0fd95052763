"""Servo, flaps and LEDs on gpiozero's own MockFactory with MockPWMPin."""

from __future__ import annotations

import threading
import time

import pytest
from gpiozero import LED, AngularServo
from gpiozero.pins.mock import MockFactory, MockPWMPin

from bin_agent.actuators.sorter import ActuatorError, ChuteSorter, FlapSorter, GuidanceSorter, make_pin_factory

ANGLES = {"paper": -60.0, "glass": -20.0, "packaging": 20.0, "residual": 60.0}


def duty_for(angle: float) -> float:
    """Duty cycle of a 0.5-2.5 ms servo over -90..90 at 50 Hz."""
    pulse = 0.0005 + (angle + 90) / 180 * 0.002
    return pulse / 0.02


@pytest.fixture
def factory():
    return MockFactory(pin_class=MockPWMPin)


def servo(factory, pin=18):
    return AngularServo(
        pin,
        initial_angle=None,
        min_angle=-90,
        max_angle=90,
        min_pulse_width=0.0005,
        max_pulse_width=0.0025,
        pin_factory=factory,
    )


def nonzero_duties(pin):
    return [round(s.state, 5) for s in pin.states if s.state]


def test_chute_moves_to_the_compartment_returns_home_and_detaches(factory):
    sorter = ChuteSorter(servo(factory), ANGLES, home_angle=0.0, travel_seconds=0, dwell_seconds=0)
    pin = factory.pin(18)
    pin.clear_states()
    for compartment in ("glass", "residual", "paper"):
        sorter.sort(compartment)
        assert sorter.servo.value is None, "servo must be detached after each item"
        assert pin.frequency is None
    duties = nonzero_duties(pin)
    expected = []
    for compartment in ("glass", "residual", "paper"):
        expected += [round(duty_for(ANGLES[compartment]), 5), round(duty_for(0.0), 5)]
    assert duties == expected
    sorter.close()


def test_chute_holds_for_travel_and_dwell(factory):
    slept = []
    sorter = ChuteSorter(
        servo(factory), ANGLES, home_angle=0.0, travel_seconds=0.3, dwell_seconds=1.0, sleep=slept.append
    )
    slept.clear()
    sorter.sort("glass")
    assert slept == [1.3, 0.3]


def test_only_one_actuation_at_a_time(factory):
    active = []
    overlap = []

    def slow_sleep(seconds):
        active.append(1)
        if len(active) > 1:
            overlap.append(True)
        time.sleep(0.02)
        active.pop()

    sorter = ChuteSorter(
        servo(factory), ANGLES, home_angle=0.0, travel_seconds=0.01, dwell_seconds=0.01, sleep=slow_sleep
    )
    threads = [threading.Thread(target=sorter.sort, args=(c,)) for c in ("glass", "paper", "residual")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not overlap


def test_flaps_open_only_the_right_flap(factory):
    flaps = {name: (servo(factory, pin), 90.0, 0.0) for name, pin in (("paper", 12), ("glass", 13))}
    sorter = FlapSorter(flaps, travel_seconds=0, dwell_seconds=0)
    factory.pin(12).clear_states()
    factory.pin(13).clear_states()
    sorter.sort("glass")
    assert nonzero_duties(factory.pin(13)) == [round(duty_for(90.0), 5), round(duty_for(0.0), 5)]
    assert nonzero_duties(factory.pin(12)) == []
    assert flaps["glass"][0].value is None
    sorter.close()


def test_guidance_lights_the_compartment_led_for_the_dwell(factory):
    leds = {"paper": LED(5, pin_factory=factory), "glass": LED(6, pin_factory=factory)}
    seen = {}
    sorter = GuidanceSorter(
        leds, dwell_seconds=0.5, sleep=lambda s: seen.update({n: led.is_lit for n, led in leds.items()})
    )
    sorter.sort("glass")
    assert seen == {"paper": False, "glass": True}
    assert not leds["glass"].is_lit


def test_unloadable_pin_factory_says_how_to_fix_it():
    with pytest.raises(ActuatorError) as info:
        make_pin_factory("pigpio")  # no pigpiod daemon on a laptop
    assert "pigpio" in str(info.value) and "Fix:" in str(info.value)


def test_mock_factory_is_pwm_capable():
    factory = make_pin_factory("mock")
    s = servo(factory)
    s.angle = 10
    assert factory.pin(18).frequency == 50


class FlakyPWMPin(MockPWMPin):
    """A PWM pin whose next ``failures`` writes raise, as a PCA9685 answers
    ``Remote I/O error`` over a loose I²C wire (or lgpio a chip that went away)."""

    failures = 0

    def _set_state(self, value):
        if FlakyPWMPin.failures > 0:
            FlakyPWMPin.failures -= 1
            raise OSError(121, "Remote I/O error")
        super()._set_state(value)


def test_a_sort_that_fails_is_reported_and_no_item_is_lost(
    tmp_path, trashnet_dir, mosquitto, subscriber_factory, caplog
):
    """The first two of four items' sorts fail at the servo. Every item is still counted and
    published, the state says ``actuator_error`` with the reason while the sorts fail, and
    no error once one works. Before: the failure was raised in the main loop at
    the next item, which was dropped uncounted, and the agent exited with a traceback."""
    import json
    import logging

    from bin_agent import preflight
    from bin_agent.agent import build_agent
    from tests.helpers import TINY_MODELS, base_config

    caplog.set_level(logging.INFO, logger="bin_agent.actuators.worker")

    photos = tmp_path / "photos"
    photos.mkdir()
    for n, photo in enumerate(sorted((trashnet_dir / "glass").iterdir())[:4]):
        (photos / f"{n}_{photo.name}").symlink_to(photo)
    sub = subscriber_factory(mosquitto.port, "smartbin/test-bin/#")
    data = base_config(tmp_path, photos, port=mosquitto.port, model=TINY_MODELS / "tiny_uint8.tflite")
    agent = build_agent(preflight.load_dict(data, base_dir=tmp_path), pin_factory=MockFactory(pin_class=FlakyPWMPin))
    assert agent.mqtt is not None and agent.mqtt.wait_connected(10)
    FlakyPWMPin.failures = 2  # after the start-up homing: the first two sorts fail at their first write
    try:
        assert agent.run() == 0
    finally:
        FlakyPWMPin.failures = 0
    assert agent.items_sorted == 4
    assert sub.wait_for(lambda: len(sub.on("/event")) == 4, 10), "every item published"
    assert agent.store.counts().total == 4, "every item counted"
    states = [json.loads(m.payload) for m in sub.on("/state")]
    failing = [s for s in states if s["status"] == "actuator_error"]
    assert failing and all("Remote I/O error" in s["sort_error"] for s in failing)
    # The state is published coalesced (the latest when the link sends it): the last one says it.
    assert states[-1]["status"] == "stopped" and states[-1]["sort_error"] is None, "sorting worked again"
    assert "sorting works again after 2 failed sort(s)" in caplog.text


def test_the_status_led_is_lit_while_ready_and_the_buzzer_beeps_once_per_sorted_item(tmp_path, trashnet_dir):
    """The indicators a person at the bin sees and hears (``actuator.status_led_pin``,
    ``actuator.buzzer_pin``), on gpiozero's MockFactory through a real agent sorting three
    photos: one beep per sorted item, the LED lit once ready, and both off after the stop."""
    from bin_agent import preflight
    from bin_agent.agent import build_agent
    from tests.helpers import TINY_MODELS, base_config

    photos = tmp_path / "photos"
    photos.mkdir()
    for n, photo in enumerate(sorted((trashnet_dir / "glass").iterdir())[:3]):
        (photos / f"{n}_{photo.name}").symlink_to(photo)
    data = base_config(tmp_path, photos, mqtt=False, model=TINY_MODELS / "tiny_uint8.tflite")
    data["actuator"].update({"status_led_pin": 5, "buzzer_pin": 6, "dwell_seconds": 0.2})  # beeps 0.08 s apart
    factory = MockFactory(pin_class=MockPWMPin)
    agent = build_agent(preflight.load_dict(data, base_dir=tmp_path), pin_factory=factory)
    assert agent.run() == 0
    assert agent.items_sorted == 3

    def rises(pin: int) -> int:
        states = [s.state for s in factory.pin(pin).states]
        return sum(1 for before, after in zip(states, states[1:]) if after and not before)

    assert rises(6) == 3, "one beep per sorted item"
    assert rises(5) >= 1, "the status LED was lit"
    assert not factory.pin(5).state and not factory.pin(6).state, "both off after the stop"
