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
