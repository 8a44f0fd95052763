"""The whole pipeline in one process: TrashNet photos replayed with empty-bin
frames in between → motion trigger → model → router → servo on gpiozero's
MockFactory → SQLite outbox → a real mosquitto → a real paho subscriber."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from bin_agent import CLASSES, preflight
from bin_agent.agent import build_agent
from tests.helpers import SHIPPED_MODEL, base_config
from tests.test_actuators import duty_for

PHOTOS_PER_CLASS = 2

MODEL = Path(os.environ.get("E2E_MODEL", SHIPPED_MODEL))


@pytest.fixture
def photo_dir(tmp_path: Path, trashnet_dir: Path) -> Path:
    """Links to a few TrashNet test photos (never copied into the repo)."""
    split = json.loads((SHIPPED_MODEL.parent / "waste_split.json").read_text())
    test_files = split["datasets"]["trashnet"]["test"]
    folder = tmp_path / "photos"
    folder.mkdir()
    n = 0
    for label in CLASSES:
        picked = [f for f in sorted(test_files) if f.startswith(f"{label}/")][:PHOTOS_PER_CLASS]
        for rel in picked:
            # A numbered prefix keeps the replay order class by class.
            (folder / f"{n:02d}_{Path(rel).name}").symlink_to(trashnet_dir / rel)
            n += 1
    return folder


def test_n_photos_give_n_events_right_compartments_and_counts(tmp_path, photo_dir, mosquitto, subscriber_factory):
    n_photos = len(list(photo_dir.iterdir()))
    sub = subscriber_factory(mosquitto.port, "smartbin/#")
    data = base_config(tmp_path, photo_dir, port=mosquitto.port, model=MODEL)
    config = preflight.load_dict(data, base_dir=tmp_path)
    agent = build_agent(config)
    servo_pin = agent.pin_factory.pin(config.actuator.servo.pin)
    servo_pin.clear_states()
    assert agent.mqtt is not None and agent.mqtt.wait_connected(10)

    assert agent.run() == 0

    assert sub.wait_for(lambda: len(sub.on("/event")) >= n_photos, 20)
    events = sub.json_on("/event")
    assert len(events) == n_photos, "one event per photo, no more, no less"
    assert len({e["id"] for e in events}) == n_photos
    router = config.router
    # Unset in the config: the shipped model's recommended threshold (from its metadata).
    recommended = json.loads(Path(MODEL).with_suffix(".json").read_text())["recommended_confidence_threshold"]["value"]
    assert router.confidence_threshold is None and agent.router.confidence_threshold == recommended
    for event in events:
        expected = router.compartments[event["class"]] if not event["fallback"] else router.fallback
        assert event["compartment"] == expected
        assert event["fallback"] == (event["confidence"] < agent.router.confidence_threshold)
        assert event["bin_id"] == "test-bin" and event["time"].endswith("Z")
        assert set(event["latency_ms"]) >= {"trigger", "preprocess", "inference", "route", "total"}
        assert len(event["top3"]) == 3
    truth = [re.match(r"\d+_([a-z]+)\d+\.jpg$", name).group(1) for name in sorted(p.name for p in photo_dir.iterdir())]
    right = sum(e["class"] == t for e, t in zip(events, truth))
    assert right >= n_photos - 2, f"only {right}/{n_photos} photos classified right"

    # The servo went to each item's compartment angle, then home, then detached.
    angles = config.actuator.servo.angles
    duties = [round(s.state, 5) for s in servo_pin.states if s.state]
    expected_duties = []
    for event in events:
        expected_duties += [round(duty_for(angles[event["compartment"]]), 5), round(duty_for(0.0), 5)]
    assert duties[: len(expected_duties)] == expected_duties
    assert servo_pin.frequency is None, "servo left attached"

    # Retained state: counts agree with the events, and a late subscriber gets it too.
    late = subscriber_factory(mosquitto.port, "smartbin/test-bin/state")
    assert late.wait_for(lambda: late.on("/state"), 5)
    state = late.json_on("/state")[-1]
    assert late.on("/state")[-1].retain
    by_class: dict[str, int] = {}
    for event in events:
        by_class[event["class"]] = by_class.get(event["class"], 0) + 1
    assert state["counts"]["classes"] == by_class
    assert state["counts"]["total"] == n_photos
    assert sub.wait_for(lambda: sub.on("/status") and sub.on("/status")[-1].payload == b"offline", 5)


def test_mqtt_commands_classify_reset_counts_and_hostile_payloads(tmp_path, photo_dir, mosquitto, subscriber_factory):
    import threading

    data = base_config(tmp_path, photo_dir, port=mosquitto.port, model=MODEL)
    data["trigger"]["mode"] = "manual"
    data["camera"]["replay"].update({"loop": True, "realtime": True, "fps": 20.0})
    data["mqtt"]["commands"] = {"allow_reset": True}  # off by default
    config = preflight.load_dict(data, base_dir=tmp_path)
    agent = build_agent(config)
    sub = subscriber_factory(mosquitto.port, "smartbin/test-bin/#")
    runner = threading.Thread(target=agent.run)
    runner.start()
    base = "smartbin/test-bin/cmd"
    try:
        assert agent.mqtt.wait_connected(10)
        time.sleep(0.5)
        assert sub.on("/event") == [], "manual mode must not fire by itself"
        sub.publish(f"{base}/classify", b'{"id": "c1"}')
        assert sub.wait_for(lambda: len(sub.on("/event")) == 1, 10)
        assert sub.wait_for(lambda: any(r.get("id") == "c1" and r["ok"] for r in sub.json_on("/cmd/result")), 5)
        assert sub.wait_for(lambda: sub.json_on("/state")[-1]["counts"]["total"] == 1, 5)

        for topic, payload in [
            (f"{base}/classify", b"[1, 2]"),
            (f"{base}/classify", b"\xff\xfe"),
            (f"{base}/classify", b"x" * 5000),
            (f"{base}/format_disk", b"{}"),
        ]:
            sub.publish(topic, payload)
        # The 5,000-byte one is over the agent's MQTT 5 Maximum Packet Size: the broker
        # never delivers it, so only three get a reply.
        assert sub.wait_for(lambda: sum(not r["ok"] for r in sub.json_on("/cmd/result")) == 3, 10)
        time.sleep(0.5)
        assert len(sub.on("/event")) == 1, "an invalid command must not classify"
        assert agent.state()["commands_rejected"] == 3

        sub.publish(f"{base}/reset_counts", b"")
        assert sub.wait_for(lambda: sub.json_on("/state")[-1]["counts"]["total"] == 0, 5)
        sub.publish(f"{base}/ping", b"")
        assert sub.wait_for(lambda: any("pong" in r for r in sub.json_on("/cmd/result")), 5)
    finally:
        agent.stop()
        runner.join(30)
    assert not runner.is_alive()
