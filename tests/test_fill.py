"""Fill levels: the estimate from the store's counts, a measured level from gpiozero's
DistanceSensor on MockFactory, the retained ``full`` alert and ``cmd/emptied`` through a
real mosquitto, and persistence across restarts."""

from __future__ import annotations

import json
import threading
import time

import pytest
from PIL import Image

from bin_agent import preflight
from bin_agent.agent import build_agent
from bin_agent.config import ConfigError, FillSection, FillSensorSection
from bin_agent.fill import FillMonitor, LevelSensor, estimated_percent, measured_percent
from bin_agent.store import Store
from tests.helpers import base_config, wait_for

SPEED_OF_SOUND = 343.26  # m/s, what gpiozero's DistanceSensor assumes


def record(store: Store, label: str, compartment: str, n: int = 1) -> None:
    for _ in range(n):
        store.record_event(
            event_id=f"{time.monotonic_ns()}",
            topic="t",
            payload={"class": label},
            label=label,
            compartment=compartment,
            fallback=False,
        )


def test_estimate_adds_item_volumes_against_capacity():
    litres = {"glass": 0.5, "paper": 0.25}
    assert estimated_percent({"glass": 4, "paper": 4}, litres, 10.0) == 30.0
    assert estimated_percent({}, litres, 10.0) == 0.0
    assert estimated_percent({"glass": 1000}, litres, 10.0) == 100.0


def test_measured_level_between_empty_and_full_distance():
    assert measured_percent(0.6, 0.6, 0.1) == 0.0
    assert measured_percent(0.35, 0.6, 0.1) == 50.0
    assert measured_percent(0.05, 0.6, 0.1) == 100.0
    assert measured_percent(0.9, 0.6, 0.1) == 0.0


def test_fill_per_compartment_persists_and_emptied_resets_one(tmp_path):
    section = FillSection(
        item_litres={"glass": 2.0, "paper": 1.0, "cardboard": 3.0},
        capacity_litres={"paper": 10.0, "glass": 10.0},
        full_threshold=80.0,
    )
    store = Store(tmp_path / "s.db")
    record(store, "glass", "glass", 4)
    record(store, "paper", "paper", 2)
    record(store, "cardboard", "paper", 2)
    monitor = FillMonitor(section, ["paper", "glass"], store)
    state = monitor.state()
    assert state["fill"] == {"paper": 80.0, "glass": 80.0}
    assert state["full"] == ["paper", "glass"]
    store.close()

    store = Store(tmp_path / "s.db")  # a restart
    monitor = FillMonitor(section, ["paper", "glass"], store)
    assert monitor.state()["fill"] == {"paper": 80.0, "glass": 80.0}
    emptied_at = monitor.emptied("glass")
    state = monitor.state()
    assert state["fill"] == {"paper": 80.0, "glass": 0.0} and state["full"] == ["paper"]
    assert state["fill_detail"]["glass"]["emptied"] == emptied_at
    assert store.counts().by_compartment == {"paper": 4, "glass": 4}, "emptying keeps the counts"
    with pytest.raises(KeyError):
        monitor.emptied("kitchen")


def test_full_alert_only_when_the_set_changes(tmp_path):
    store = Store(tmp_path / "s.db")
    monitor = FillMonitor(FillSection(), ["paper"], store)
    assert monitor.full_alert([]) == {"full": [], "threshold_percent": 90.0}
    assert monitor.full_alert([]) is None
    assert monitor.full_alert(["paper"])["full"] == ["paper"]
    monitor.forget_published()
    assert monitor.full_alert(["paper"]) is not None


@pytest.mark.filterwarnings("ignore::gpiozero.PWMSoftwareFallback")
def test_ultrasonic_sensor_measures_the_level(tmp_path):
    from gpiozero.pins.mock import MockFactory, MockTriggerPin

    factory = MockFactory()
    echo = factory.pin(24)
    # The echo's delay is the round trip: 1.2 m away → 50 % between 2.0 m (empty) and 0.4 m (full).
    # (A big bin: the mock's echo runs late by a sleep's overshoot, a few cm on a loaded machine.)
    sonar = factory.pin(23, pin_class=MockTriggerPin, echo_pin=echo, echo_time=2 * 1.2 / SPEED_OF_SOUND)
    settings = FillSensorSection(trigger_pin=23, echo_pin=24, empty_distance=2.0, full_distance=0.4)
    store = Store(tmp_path / "s.db")
    record(store, "glass", "paper", 1)
    monitor = FillMonitor(
        FillSection(sensor_interval_seconds=1),
        ["paper", "glass"],
        store,
        sensors={"paper": LevelSensor(settings, factory, interval_seconds=1)},
    )
    try:
        assert wait_for(lambda: abs(monitor.levels()["paper"].percent - 50.0) < 5.0)
        paper = monitor.levels()["paper"]
        assert paper.estimated == 1.0  # one 0.6 l glass in 60 l; the measurement wins
        assert monitor.levels()["glass"].measured is None
        sonar.echo_time = 2 * 0.2 / SPEED_OF_SOUND  # waste right under the sensor
        assert wait_for(lambda: monitor.levels()["paper"].full)
    finally:
        monitor.close()


@pytest.mark.parametrize(
    "patch, expected",
    [
        (
            {"capacity_litres": {"paper": 60.0, "glass": 40.0, "packaging": 60.0}},
            "fill.capacity_litres: compartment 'residual' has none",
        ),
        ({"item_litres": {"glass": 1.0}}, "fill.item_litres: class 'paper' has none"),
        ({"sensors": {"kitchen": {"trigger_pin": 5, "echo_pin": 6}}}, "fill.sensors.kitchen: no class is routed"),
        (
            {"sensors": {"paper": {"trigger_pin": 5, "echo_pin": 6, "empty_distance": 0.1, "full_distance": 0.3}}},
            "fill.sensors.paper.full_distance: 0.3 must be below empty_distance",
        ),
        (
            {"sensors": {"paper": {"trigger_pin": 18, "echo_pin": 6}}},
            "fill.sensors.paper.trigger_pin: GPIO18 is already used by actuator.servo.pin",
        ),
        ({"full_threshold": 120}, "fill.full_threshold: 120.0 is above the maximum 100"),
    ],
)
def test_fill_config_mistakes_are_named(tmp_path, patch, expected):
    data = base_config(tmp_path)
    data["fill"] = patch
    with pytest.raises(ConfigError) as info:
        preflight.load_dict(data, base_dir=tmp_path)
    assert any(expected in p for p in info.value.problems), info.value.problems


def test_full_alert_and_emptied_over_mqtt_survive_a_restart(tmp_path, mosquitto, subscriber_factory):
    image = tmp_path / "item.png"
    Image.new("RGB", (64, 48), (120, 120, 30)).save(image)
    data = base_config(tmp_path, image, port=mosquitto.port)
    data["trigger"]["mode"] = "manual"
    data["camera"]["replay"].update({"loop": True, "realtime": True, "fps": 20.0})
    # One item of any class fills any compartment.
    data["fill"] = {
        "item_litres": {c: 10.0 for c in ("cardboard", "glass", "metal", "paper", "plastic", "trash")},
        "capacity_litres": {c: 10.0 for c in ("paper", "glass", "packaging", "residual")},
    }
    config = preflight.load_dict(data, base_dir=tmp_path)
    sub = subscriber_factory(mosquitto.port, "smartbin/test-bin/#")

    def run_agent():
        agent = build_agent(config)
        runner = threading.Thread(target=agent.run)
        runner.start()
        assert agent.mqtt.wait_connected(15)
        return agent, runner

    def command(name: str, payload: dict) -> dict:
        before = len(sub.json_on("/cmd/result"))
        sub.publish(f"smartbin/test-bin/cmd/{name}", json.dumps(payload))
        assert sub.wait_for(lambda: len(sub.json_on("/cmd/result")) > before, 10)
        return sub.json_on("/cmd/result")[-1]

    agent, runner = run_agent()
    try:
        assert sub.wait_for(lambda: sub.json_on("/full") and sub.json_on("/full")[-1]["full"] == [], 10)
        assert command("classify", {})["ok"]
        assert sub.wait_for(lambda: sub.on("/event"), 15)
        compartment = sub.json_on("/event")[0]["compartment"]
        assert sub.wait_for(lambda: sub.json_on("/full")[-1]["full"] == [compartment], 10)
        assert sub.json_on("test-bin/state")[-1]["fill"][compartment] == 100.0
    finally:
        agent.stop()
        runner.join(30)

    late = subscriber_factory(mosquitto.port, "smartbin/test-bin/full")
    assert late.wait_for(lambda: late.on("/full"), 5) and late.on("/full")[-1].retain

    agent, runner = run_agent()  # the level survived the restart
    try:
        assert sub.wait_for(lambda: sub.json_on("test-bin/state")[-1]["status"] == "running", 10)
        assert sub.json_on("test-bin/state")[-1]["fill"][compartment] == 100.0
        bad = command("emptied", {"compartment": "kitchen"})
        assert not bad["ok"] and "'compartment' must be one of" in bad["reason"]
        assert command("emptied", {"compartment": compartment})["ok"]
        assert sub.wait_for(lambda: sub.json_on("/full")[-1]["full"] == [], 10)
        assert sub.json_on("test-bin/state")[-1]["fill"][compartment] == 0.0
    finally:
        agent.stop()
        runner.join(30)


@pytest.mark.filterwarnings("ignore::gpiozero.PWMSoftwareFallback")
def test_agent_republishes_a_measured_level_without_items(tmp_path, mosquitto, subscriber_factory):
    from gpiozero.pins.mock import MockFactory, MockPWMPin, MockTriggerPin

    image = tmp_path / "item.png"
    Image.new("RGB", (64, 48), (120, 120, 30)).save(image)
    data = base_config(tmp_path, image, port=mosquitto.port)
    data["trigger"]["mode"] = "manual"
    data["camera"]["replay"].update({"loop": True, "realtime": True, "fps": 20.0})
    data["fill"] = {
        "sensor_interval_seconds": 1.0,
        "sensors": {"glass": {"trigger_pin": 23, "echo_pin": 24, "empty_distance": 2.0, "full_distance": 0.4}},
    }
    config = preflight.load_dict(data, base_dir=tmp_path)

    class SonarPin(MockTriggerPin, MockPWMPin):
        """gpiozero's sonar mock on a factory of PWM mock pins (the servo needs PWM; MockFactory
        refuses to mix PWM and non-PWM pin classes)."""

    factory = MockFactory(pin_class=MockPWMPin)
    sonar = factory.pin(23, pin_class=SonarPin, echo_pin=factory.pin(24), echo_time=2 * 1.9 / SPEED_OF_SOUND)
    sub = subscriber_factory(mosquitto.port, "smartbin/test-bin/#")
    agent = build_agent(config, pin_factory=factory)
    runner = threading.Thread(target=agent.run)
    runner.start()
    try:
        assert agent.mqtt.wait_connected(15)
        sonar.echo_time = 2 * 0.3 / SPEED_OF_SOUND  # someone filled the glass compartment by hand
        assert sub.wait_for(lambda: sub.json_on("/full") and sub.json_on("/full")[-1]["full"] == ["glass"], 20)
        state = sub.json_on("test-bin/state")[-1]
        assert state["fill"]["glass"] == 100.0 and state["fill_detail"]["glass"]["estimated"] == 0.0
        assert state["counts"]["total"] == 0, "no item was sorted"
    finally:
        agent.stop()
        runner.join(30)


@pytest.mark.filterwarnings("ignore::gpiozero.PWMSoftwareFallback")
def test_fill_sensors_ping_rarely_so_a_distance_drop_sensor_is_not_starved():
    """gpiozero's DistanceSensor holds a class-wide lock for each ping (up to 100 ms) and pings
    every 60 ms: fill sensors would keep a distance drop sensor from pinging while an item falls
    (issue 23, item 8). A fill sensor now pings 3 times per sensor_interval_seconds."""
    from gpiozero import DistanceSensor
    from gpiozero.pins.mock import MockFactory, MockTriggerPin

    pings: list[float] = []

    class CountingTrigger(MockTriggerPin):
        def _set_state(self, value):
            if value:
                pings.append(time.monotonic())
            super()._set_state(value)

    factory = MockFactory()
    echo = factory.pin(24)
    factory.pin(23, pin_class=CountingTrigger, echo_pin=echo, echo_time=2 * 0.5 / SPEED_OF_SOUND)
    settings = FillSensorSection(trigger_pin=23, echo_pin=24, empty_distance=2.0, full_distance=0.4)
    sensor = LevelSensor(settings, factory, interval_seconds=30.0)
    try:
        time.sleep(1.5)
        assert sensor.percent() is None, "no level before 3 pings: the estimate stands in (and nothing blocks)"
    finally:
        sensor.close()
    # gpiozero's own pace would be ~15 pings in 1.5 s; now one every 10 s (the first after 60 ms).
    assert len(pings) <= 2, len(pings)
    assert DistanceSensor.ECHO_LOCK.acquire(timeout=1)
    DistanceSensor.ECHO_LOCK.release()


@pytest.mark.filterwarnings("ignore::gpiozero.PWMSoftwareFallback")
def test_a_fill_sensor_without_a_level_yet_is_no_change_and_does_not_stop_the_loop(tmp_path):
    """The agent's loop asks ``sensors_changed()`` every frame; a sensor with no level yet (its
    first 3 pings take ~20 s at the default interval) must read as no change, not raise into
    the loop, and a level that then arrives is a change once, not again while it stays."""
    from gpiozero.pins.mock import MockFactory, MockTriggerPin

    factory = MockFactory()
    echo = factory.pin(24)
    factory.pin(23, pin_class=MockTriggerPin, echo_pin=echo, echo_time=2 * 1.2 / SPEED_OF_SOUND)
    settings = FillSensorSection(trigger_pin=23, echo_pin=24, empty_distance=2.0, full_distance=0.4)
    now = [0.0]
    sensor = LevelSensor(settings, factory, interval_seconds=30.0)
    monitor = FillMonitor(
        FillSection(sensor_interval_seconds=1), ["paper"], Store(tmp_path / "s.db"), {"paper": sensor}, lambda: now[0]
    )
    try:
        now[0] += 2.0
        assert sensor.percent() is None
        assert monitor.sensors_changed() is False
        sensor.percent = lambda: 50.0  # type: ignore[method-assign]  # the level the pings then give
        now[0] += 2.0
        assert monitor.sensors_changed() is True
        now[0] += 2.0
        assert monitor.sensors_changed() is False, "the same level is no change"
    finally:
        monitor.close()
