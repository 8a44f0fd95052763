"""[ask]: the bin asks a person about unsure items, at the bin (gpiozero MockFactory buttons
pressed like a hand does: some 100 ms, with contact bounce) and remotely (a real mosquitto,
the Home Assistant select's own command template)."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import threading
import time
from pathlib import Path
from typing import Any

import jinja2
import pytest
from PIL import Image

from bin_agent import CLASSES, preflight
from bin_agent.agent import build_agent
from bin_agent.ask import CONFIRM, UNSURE, Asker
from bin_agent.config import ConfigError
from bin_agent.learning.capture import captured_items
from bin_agent.learning.labels import LabelStore, find_captured
from bin_agent.mqtt.discovery import discovery_messages
from bin_agent.router import Route
from tests.helpers import base_config

COMPARTMENT_PINS = {"paper": 5, "glass": 6, "packaging": 13, "residual": 19}
LAMP_PINS = {"paper": 12, "glass": 16, "packaging": 20, "residual": 21}
JINJA = jinja2.Environment(undefined=jinja2.StrictUndefined)


def photos(tmp_path: Path, n: int) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir(exist_ok=True)
    for i in range(n):
        # An item on the bin's floor: the border (the empty bin) is the same in every photo.
        photo = Image.new("RGB", (160, 120), (90, 90, 90))
        photo.paste((40 + 60 * i, 160, 220 - 50 * i), (50, 30, 110, 90))
        photo.save(folder / f"{i:02d}.png")
    return folder


def ask_config(
    tmp_path: Path, n_items: int = 1, *, port: int = 1883, mqtt: bool = False, threshold: float = 1.0, **ask: Any
):
    """A bin with a mock pin factory, capture on and [ask] with ``ask``; with ``mqtt`` it stays
    up after the replay (for the commands)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = base_config(tmp_path, photos(tmp_path, n_items), port=port, mqtt=mqtt)
    # 1.0: every item of the tiny model is unsure (its top probability is far below 1).
    data["router"] = {"confidence_threshold": threshold}
    data["agent"]["exit_when_source_ends"] = not mqtt
    data["capture"] = {"enabled": True, "mode": "all"}
    data["ask"] = {"enabled": True, "timeout_seconds": 5.0, "confirm_share": 0.0, **ask}
    return preflight.load_dict(data, base_dir=tmp_path)


class Running:
    """The agent in its own thread, and what it asked (the questions it would publish)."""

    def __init__(self, config: Any) -> None:
        self.agent = build_agent(config)
        self.items: list[Any] = []
        self.questions: list[tuple[dict[str, Any], bytes | None]] = []
        asker = self.agent.asker
        assert asker is not None
        published = asker.publish

        def record(question: dict[str, Any], image: bytes | None) -> None:
            self.questions.append((json.loads(json.dumps(question)), image))
            if published is not None:
                published(question, image)

        asker.publish = record
        handle = self.agent.handle_items  # every item of a fire, one or several

        def handle_and_keep(*args: Any, **kwargs: Any) -> Any:
            items = handle(*args, **kwargs)
            self.items.extend(items)
            return items

        self.agent.handle_items = handle_and_keep  # type: ignore[method-assign]
        self.thread = threading.Thread(target=self.agent.run)

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.agent.stop()
        self.thread.join(60)
        assert not self.thread.is_alive()

    def waiting(self, timeout: float = 30.0) -> dict[str, Any]:
        """The question of the item that waits now."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            event_id = self.agent.asker.waiting_for()
            if event_id is not None and self.questions and self.questions[-1][0]["event_id"] == event_id:
                return self.questions[-1][0]
            time.sleep(0.01)
        raise AssertionError("no item waits for an answer")

    def wait_items(self, n: int, timeout: float = 30.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        while len(self.items) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(self.items) >= n, f"{len(self.items)} item(s) sorted, expected {n}"
        return self.items


def press(agent: Any, pin: int, hold: float = 0.1, bounces: int = 3) -> None:
    """A finger on a button wired to ground (pull-up: pressed is low): the contact
    bounces for a few ms going down and coming up, the press holds ~100 ms."""
    mock = agent.pin_factory.pin(pin)
    for _ in range(bounces):
        mock.drive_low()
        time.sleep(0.001)
        mock.drive_high()
        time.sleep(0.001)
    mock.drive_low()
    time.sleep(hold)
    for _ in range(bounces):
        mock.drive_high()
        time.sleep(0.001)
        mock.drive_low()
        time.sleep(0.001)
    mock.drive_high()


def test_a_bouncing_press_of_a_compartment_button_routes_the_unsure_item_and_labels_its_capture(tmp_path):
    config = ask_config(tmp_path, buttons=COMPARTMENT_PINS, leds=LAMP_PINS)
    with Running(config) as run:
        question = run.waiting()
        assert question["at_the_bin"] is True, "one item in view: the lamps and buttons ask"
        first, second = question["candidates"]
        lamps = run.agent.asker.lights.leds
        time.sleep(0.6)  # the second candidate blinks (0.25 s on, 0.25 s off)
        assert lamps[first].is_lit, "the most probable compartment is lit steady"
        assert len(lamps[second].pin.states) >= 3, "the second candidate blinks"
        assert not any(lamps[c].is_lit for c in lamps if c not in (first, second))
        press(run.agent, COMPARTMENT_PINS[second])
        item = run.wait_items(1)[0]
        assert not any(led.is_lit for led in lamps.values()), "lamps off once answered"
        counts = run.agent.store.counts()
        assert run.agent.state()["ask"] == {"asked": 1, "answered": 1}
    assert item.event_id == question["event_id"]
    assert item.route.compartment == second and not item.route.fallback
    assert item.answer["source"] == "button" and item.answer["compartment"] == second
    assert not item.payload()["needs_label"] and item.payload()["asked"] == UNSURE
    assert item.latency_ms["ask"] > item.latency_ms["route"], "the wait is its own stage, not the router's"
    label = item.answer["label"]
    routes = config.router.compartments
    assert routes[label] == second
    assert item.answer["exact"] == (sum(1 for c in routes.values() if c == second) == 1)
    entry = LabelStore(tmp_path / "state" / "capture").all()[item.event_id]
    assert (entry["label"], entry["source"], entry["predicted"]) == (label, "button", item.classification.label)
    assert entry["time"]
    assert [c.event_id for c in captured_items(tmp_path / "state" / "capture")] == [item.event_id]
    assert counts.by_class.get(label) == 1 and counts.by_compartment.get(second) == 1, "counted as answered"


def test_no_press_sends_the_unsure_item_to_the_fallback_after_the_timeout(tmp_path):
    config = ask_config(tmp_path, buttons=COMPARTMENT_PINS, timeout_seconds=1.0)
    with Running(config) as run:
        run.waiting()
        started = time.monotonic()
        item = run.wait_items(1)[0]
        waited = time.monotonic() - started
    assert waited >= 0.8, "it waited for the timeout"
    assert item.route.compartment == config.router.fallback and item.route.fallback
    assert item.answer is None and item.payload()["needs_label"] and item.payload()["asked"] == UNSURE
    assert run.questions[-1][0]["waiting"] is False and run.questions[-1][0]["needs_label"] is True
    assert LabelStore(tmp_path / "state" / "capture").all() == {}, "no answer, no label"


def test_yes_next_buttons_step_through_the_candidates_and_bounces_do_not_skip_one(tmp_path):
    config = ask_config(tmp_path, mode="yes_next", yes_pin=5, next_pin=6, leds=LAMP_PINS)
    with Running(config) as run:
        question = run.waiting()
        lamps = run.agent.asker.lights.leds
        first, second = question["candidates"]
        assert lamps[first].is_lit and not lamps[second].is_lit, "yes/next shows one candidate"
        press(run.agent, 6)  # next, bouncing: one step, not four
        time.sleep(0.05)
        assert lamps[second].is_lit and not lamps[first].is_lit
        time.sleep(0.3)  # a person reads the lamp, then says yes
        press(run.agent, 5)
        item = run.wait_items(1)[0]
    assert item.route.compartment == second and item.answer["source"] == "button"


def test_the_confirm_share_asks_about_that_share_of_confident_items():
    share, n = 0.05, 4000
    asker = Asker(
        mode="remote",
        compartments={"paper": "paper", "glass": "glass"},
        all_compartments=["paper", "glass"],
        confirm_share=share,
        rng=random.Random(1234),
    )
    asked = sum(asker.reason_to_ask(Route("paper", fallback=False)) == CONFIRM for _ in range(n))
    sigma = math.sqrt(n * share * (1 - share))
    assert abs(asked - n * share) < 4 * sigma, (asked, n * share)
    # Unsure items are always asked, and draw nothing: the confident items' share stays exact.
    assert asker.reason_to_ask(Route("residual", fallback=True)) == UNSURE
    assert (
        Asker(mode="remote", compartments={}, all_compartments=[], confirm_share=0.0).reason_to_ask(
            Route("paper", fallback=False)
        )
        is None
    )


def test_an_unanswered_confirmation_sample_goes_where_the_model_said(tmp_path):
    config = ask_config(tmp_path, buttons=COMPARTMENT_PINS, timeout_seconds=1.0, confirm_share=1.0, threshold=0.0)
    with Running(config) as run:
        item = run.wait_items(1)[0]
    assert item.payload()["asked"] == CONFIRM and item.payload()["needs_label"]
    assert item.route.compartment == config.router.compartments[item.classification.label]


def test_a_remote_answer_over_mqtt_routes_the_waiting_item_and_later_corrects_its_counts(
    tmp_path, mosquitto, subscriber_factory
):
    config = ask_config(tmp_path, port=mosquitto.port, mqtt=True, mode="remote", timeout_seconds=20.0)
    sub = subscriber_factory(mosquitto.port, "#")
    messages = discovery_messages(config, list(CLASSES))
    select = messages["homeassistant/select/test-bin/unsure_label/config"]
    routes = config.router.compartments
    with Running(config) as run:
        assert sub.wait_for(lambda: any(json.loads(m.payload).get("waiting") for m in sub.on("test-bin/unsure")), 30)
        question = json.loads(sub.on("test-bin/unsure")[-1].payload)
        image = sub.on("test-bin/unsure/image")[-1]
        assert image.payload[:2] == b"\xff\xd8" and len(image.payload) <= 20000, "a small JPEG"
        assert {"event_id", "top3", "candidates", "class", "confidence"} <= set(question)
        # Home Assistant's select: its attributes are the question, its command template
        # turns the chosen option into cmd/correct for that event.
        label = next(c for c in CLASSES if routes[c] != config.router.fallback and c != question["class"])
        attributes = json.loads(JINJA.from_string(select["json_attributes_template"]).render(value_json=question))
        body = JINJA.from_string(select["command_template"]).render(value=label, this={"attributes": attributes})
        sub.publish(select["command_topic"], body)
        item = run.wait_items(1)[0]
        assert sub.wait_for(lambda: any(r.get("waiting") for r in sub.json_on("/cmd/result")), 10)
        assert sub.wait_for(lambda: sub.on("test-bin/event"), 10)
        event = json.loads(sub.on("test-bin/event")[-1].payload)
        assert event["id"] == question["event_id"] and event["answer"]["source"] == "mqtt"
        assert event["compartment"] == routes[label] and not event["needs_label"]
        assert sub.wait_for(lambda: not json.loads(sub.on("test-bin/unsure")[-1].payload)["waiting"], 10)
        assert sub.wait_for(lambda: run.agent.capture.saved == 1, 15)
        # Retained: a dashboard that connects later still finds the item and its photo.
        late = subscriber_factory(mosquitto.port, "smartbin/test-bin/unsure/#")
        assert late.wait_for(lambda: len(late.messages) == 2, 10)
        assert all(m.retain for m in late.messages)
        counts = run.agent.store.counts()
        assert counts.by_class.get(label) == 1 and counts.by_compartment.get(routes[label]) == 1
        # Later (the item is in its compartment, captured): another answer goes the usual
        # cmd/correct way and moves the counts.
        other = next(c for c in CLASSES if routes[c] != routes[label])
        sub.publish(select["command_topic"], json.dumps({"id": "later", "event_id": item.event_id, "label": other}))
        assert sub.wait_for(lambda: any(r.get("id") == "later" for r in sub.json_on("/cmd/result")), 10)
        reply = next(r for r in sub.json_on("/cmd/result") if r.get("id") == "later")
        assert reply["ok"] and reply["counts_changed"] and reply["was"] == label
        counts = run.agent.store.counts()
        assert counts.by_class.get(label, 0) == 0 and counts.by_class.get(other) == 1
    labels = LabelStore(tmp_path / "state" / "capture").all()
    assert labels[item.event_id]["label"] == other and labels[item.event_id]["source"] == "mqtt"


def test_an_item_asked_about_while_the_broker_is_down_reaches_the_dashboard_once_it_is_up(
    tmp_path, mosquitto_stopped, subscriber_factory
):
    config = ask_config(tmp_path, port=mosquitto_stopped.port, mqtt=True, mode="remote", timeout_seconds=30.0)
    routes = config.router.compartments
    with Running(config) as run:
        question = run.waiting()  # asked offline: nothing could be published
        assert not run.agent.mqtt.connected
        mosquitto_stopped.start()
        sub = subscriber_factory(mosquitto_stopped.port, "smartbin/test-bin/unsure/#")
        assert sub.wait_for(lambda: sub.on("test-bin/unsure") and sub.on("test-bin/unsure/image"), 20), (
            "the waiting question is sent on the connect"
        )
        sent = json.loads(sub.on("test-bin/unsure")[-1].payload)
        assert sent["event_id"] == question["event_id"] and sent["waiting"]
        assert sub.on("test-bin/unsure/image")[-1].payload[:2] == b"\xff\xd8"
        label = next(c for c in CLASSES if routes[c] != config.router.fallback)
        sub.publish("smartbin/test-bin/cmd/correct", json.dumps({"event_id": question["event_id"], "label": label}))
        item = run.wait_items(1)[0]
    assert item.answer["source"] == "mqtt" and item.route.compartment == routes[label]


def test_an_answer_given_while_the_broker_is_down_no_longer_shows_as_waiting_after_the_reconnect(
    tmp_path, mosquitto, subscriber_factory
):
    config = ask_config(
        tmp_path, port=mosquitto.port, mqtt=True, mode="buttons", buttons=COMPARTMENT_PINS, timeout_seconds=30.0
    )
    with Running(config) as run:
        question = run.waiting()
        sub = subscriber_factory(mosquitto.port, "smartbin/test-bin/unsure")
        assert sub.wait_for(lambda: any(json.loads(m.payload)["waiting"] for m in sub.messages), 20)
        mosquitto.kill()
        assert wait_until(lambda: not run.agent.mqtt.connected, 20)
        press(run.agent, COMPARTMENT_PINS[question["candidates"][0]])  # answered at the bin, offline
        run.wait_items(1)
        mosquitto.start()
        late = subscriber_factory(mosquitto.port, "smartbin/test-bin/unsure")
        assert late.wait_for(lambda: late.messages and not json.loads(late.messages[-1].payload)["waiting"], 20), (
            "the dashboard's retained question is replaced by its answer"
        )
        assert json.loads(late.messages[-1].payload)["answer"]["source"] == "button"


def wait_until(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return bool(condition())


def test_home_assistant_gets_the_unsure_image_a_select_of_the_classes_and_a_confirm_button(tmp_path):
    config = ask_config(tmp_path, mqtt=True, mode="remote")
    messages = discovery_messages(config, list(CLASSES))
    prefix = "homeassistant/{}/test-bin/{}/config"
    image = messages[prefix.format("image", "unsure_image")]
    assert image["image_topic"] == "smartbin/test-bin/unsure/image" and image["content_type"] == "image/jpeg"
    assert set(image) <= {
        *("availability_topic", "payload_available", "payload_not_available", "device", "origin", "qos"),
        *("unique_id", "name", "icon", "image_topic", "content_type"),
    }
    select = messages[prefix.format("select", "unsure_label")]
    assert select["options"] == list(CLASSES) and select["command_topic"] == "smartbin/test-bin/cmd/correct"
    button = messages[prefix.format("button", "unsure_confirm")]
    question = {
        "event_id": "e-1",
        "class": "glass",
        "confidence": 0.4,
        "top3": [],
        "candidates": ["glass", "paper"],
        "waiting": True,
        "needs_label": True,
        "answer": None,
    }
    attributes = json.loads(JINJA.from_string(select["json_attributes_template"]).render(value_json=question))
    assert json.loads(
        JINJA.from_string(select["command_template"]).render(value="metal", this={"attributes": attributes})
    ) == {"event_id": "e-1", "label": "metal"}
    assert json.loads(
        JINJA.from_string(button["command_template"]).render(value="", this={"attributes": attributes})
    ) == {"event_id": "e-1", "label": "glass"}
    assert JINJA.from_string(select["value_template"]).render(value_json=question) == "glass"
    answered = question | {"answer": {"label": "metal", "compartment": "packaging", "source": "mqtt"}}
    assert JINJA.from_string(select["value_template"]).render(value_json=answered) == "metal"
    # Off: no such entity.
    off = ask_config(tmp_path / "off", mqtt=True, buttons=COMPARTMENT_PINS, remote=False)
    assert not [t for t in discovery_messages(off, list(CLASSES)) if "unsure" in t]


@pytest.mark.parametrize(
    ("ask", "problem"),
    [
        (
            {"buttons": {**COMPARTMENT_PINS, "paper": 18}},
            "ask.buttons.paper: GPIO18 is already used by actuator.servo.pin",
        ),
        ({"buttons": {"paper": 5}}, "ask.buttons: compartment 'glass' has none"),
        ({"mode": "yes_next", "yes_pin": 5}, "ask.next_pin:"),
        ({"mode": "remote"}, 'ask.mode: "remote" needs'),
        (
            {"buttons": COMPARTMENT_PINS, "leds": {"paper": 5}},
            "ask.leds.paper: GPIO5 is already used by ask.buttons.paper",
        ),
    ],
)
def test_ask_config_problems_name_their_key(tmp_path, ask, problem):
    data = base_config(tmp_path, mqtt=False)
    data["ask"] = {"enabled": True, **ask}
    with pytest.raises(ConfigError) as caught:
        preflight.load_dict(data, base_dir=tmp_path)
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems


def test_capture_mode_unsure_keeps_every_item_a_person_was_asked_about(tmp_path):
    import dataclasses

    from bin_agent.learning.capture import Capture
    from tests.test_capture import make_item

    capture = Capture(tmp_path / "capture", mode="unsure")
    answered = dataclasses.replace(make_item("glass", 0.5), asked=UNSURE, answer={"label": "glass"})
    sampled = dataclasses.replace(make_item("glass", 0.95), asked=CONFIRM)
    assert capture.wanted(answered) and capture.wanted(sampled), "answered (no longer fallback) and sampled"
    assert not capture.wanted(make_item("glass", 0.95))


def test_a_stop_while_an_item_waits_ends_the_wait_and_the_item_goes_to_the_fallback(tmp_path):
    config = ask_config(tmp_path, buttons=COMPARTMENT_PINS, timeout_seconds=60.0)
    run = Running(config)
    run.thread.start()
    run.waiting()
    run.agent.stop()  # SIGTERM's handler: systemd allows 20 s, the item would wait 60
    run.thread.join(15)
    assert not run.thread.is_alive(), "the wait ended with the stop"
    assert run.items and run.items[0].route.fallback and run.items[0].payload()["needs_label"]


def unsure_capture(tmp_path: Path, mosquitto: Any, subscriber_factory: Any) -> dict[str, Any]:
    """The bin with [ask] on (remote, 1 s), driven the way Home Assistant drives it
    (tests/test_discovery.py): the discovery configs and every message per topic."""
    from tests.test_discovery import run_bin_and_capture

    return run_bin_and_capture(
        tmp_path,
        mosquitto,
        subscriber_factory,
        ask={"enabled": True, "mode": "remote", "timeout_seconds": 1.0},
        capture={"enabled": True},
        router={"confidence_threshold": 1.0},
    )


def test_the_unsure_entities_render_every_question_the_bin_published(tmp_path, mosquitto, subscriber_factory):
    from tests.test_discovery import render

    capture = unsure_capture(tmp_path, mosquitto, subscriber_factory)
    configs, messages = capture["configs"], capture["messages"]
    select = configs["homeassistant/select/test-bin/unsure_label/config"]
    questions = messages["smartbin/test-bin/unsure"]
    assert [json.loads(q)["waiting"] for q in questions] == [True, False], "asked, then no answer in 1 s"
    for text in questions:
        assert render(select["value_template"], text) in select["options"]
        assert json.loads(render(select["json_attributes_template"], text))["event_id"]
    assert messages["smartbin/test-bin/unsure/image"], "the photo went out"


def test_home_assistants_own_code_accepts_the_unsure_entities(tmp_path, mosquitto, subscriber_factory):
    """HA's discovery schemas (image included) and its MQTT command templates, with the
    ``this`` variable they give, on what the bin published (scripts/ha_check_discovery.py)."""
    from tests.helpers import check_with_home_assistant

    check_with_home_assistant(unsure_capture(tmp_path, mosquitto, subscriber_factory), tmp_path)


def test_an_answer_that_comes_just_as_the_wait_times_out_corrects_the_item_once_its_photo_is_written(
    tmp_path, mosquitto, subscriber_factory
):
    """The answer reaches the bin a moment after the timeout fired: the item already goes to
    the fallback, and with slow mechanics (the previous item's sort still holds the chute) it is
    neither counted nor photographed yet. The answer is not lost as "not captured": it is applied
    as a correction once the photo is written. One route, one count, one label."""
    config = ask_config(tmp_path, 2, port=mosquitto.port, mqtt=True, mode="remote", timeout_seconds=1.0)
    config = dataclasses.replace(config, actuator=dataclasses.replace(config.actuator, dwell_seconds=5.0))
    sub = subscriber_factory(mosquitto.port, "smartbin/test-bin/#")
    folder = tmp_path / "state" / "capture"
    with Running(config) as run:
        first = run.waiting()["event_id"]
        assert wait_until(lambda: run.agent.asker.waiting_for() not in (None, first), 30)
        question = run.waiting()
        event_id = question["event_id"]
        assert wait_until(lambda: run.agent.asker.waiting_for() is None, 5)  # the timeout fired
        label = next(c for c in CLASSES if c != question["class"])
        sub.publish("smartbin/test-bin/cmd/correct", json.dumps({"id": "late", "event_id": event_id, "label": label}))
        assert find_captured(folder, event_id) is None and run.agent.store.last_item()["id"] == first, (
            "the answer came before the item was counted and photographed"
        )
        assert sub.wait_for(lambda: [r for r in sub.json_on("/cmd/result") if r.get("id") == "late"], 30)
        replies = [r for r in sub.json_on("/cmd/result") if r.get("id") == "late"]
        assert sub.wait_for(lambda: len(sub.on("test-bin/event")) == 2, 10)
        counts = run.agent.store.counts()
        items = run.wait_items(2)
    assert len(replies) == 1 and replies[0]["ok"], replies
    assert replies[0]["was"] == question["class"] and replies[0]["counts_changed"]
    item = items[1]
    assert item.event_id == event_id and item.answer is None and item.route.fallback, "routed by the timeout"
    assert [json.loads(m.payload)["id"] for m in sub.on("test-bin/event")] == [first, event_id], "one event each"
    first_class = items[0].classification.label
    assert counts.total == 2 and counts.by_class.get(label) == 1 + (first_class == label), counts
    assert counts.by_class.get(question["class"], 0) == (first_class == question["class"]), "moved, not doubled"
    assert LabelStore(folder).all()[event_id]["label"] == label


def test_a_correction_held_for_a_photo_that_capture_does_not_keep_is_answered_as_soon_as_it_is_not_kept(
    tmp_path, mosquitto, subscriber_factory
):
    """As above, but capture keeps one item in two (mode "sample"): the late answer's item is
    not photographed. Its correction is answered "not captured" as soon as capture passes the
    item by, not when its hold's deadline (the longest ask, one sort and 30 s) runs out."""
    config = ask_config(tmp_path, 2, port=mosquitto.port, mqtt=True, mode="remote", timeout_seconds=1.0)
    config = dataclasses.replace(
        config,
        actuator=dataclasses.replace(config.actuator, dwell_seconds=5.0),
        capture=dataclasses.replace(config.capture, mode="sample", sample_every=2),
    )
    sub = subscriber_factory(mosquitto.port, "smartbin/test-bin/#")
    folder = tmp_path / "state" / "capture"
    with Running(config) as run:
        first = run.waiting()["event_id"]
        assert wait_until(lambda: run.agent.asker.waiting_for() not in (None, first), 30)
        question = run.waiting()
        event_id = question["event_id"]
        assert wait_until(lambda: run.agent.asker.waiting_for() is None, 5)  # the timeout fired
        label = next(c for c in CLASSES if c != question["class"])
        sub.publish("smartbin/test-bin/cmd/correct", json.dumps({"id": "late", "event_id": event_id, "label": label}))
        assert run.agent.store.last_item()["id"] == first, "the answer came before the item was counted"
        run.wait_items(2)  # capture has passed the item by
        assert sub.wait_for(lambda: [r for r in sub.json_on("/cmd/result") if r.get("id") == "late"], 3), (
            "the held correction is answered once capture passes its item by, not at the deadline"
        )
        replies = [r for r in sub.json_on("/cmd/result") if r.get("id") == "late"]
        counts = run.agent.store.counts()
    assert len(replies) == 1 and not replies[0]["ok"] and "was not captured" in replies[0]["reason"], replies
    assert find_captured(folder, first) is not None and find_captured(folder, event_id) is None
    assert counts.total == 2 and event_id not in LabelStore(folder).all()
    assert run.agent.pending is not None and run.agent.pending.hold_seconds > 30.0


def two_items_at_once(tmp_path: Path) -> Path:
    """Frames of two items dropped on the tray 0.7 s apart, beside each other, lying still
    together when the trigger fires: one fire, two boxes (as in tests/test_trigger.py)."""
    from tests.test_trigger import two_items_dropped_apart

    return two_items_dropped_apart(tmp_path / "frames", [(200, 40, 40), (40, 60, 210)])


def test_two_unsure_items_of_one_fire_are_asked_remotely_only_and_each_answer_labels_its_own_item(
    tmp_path, mosquitto, subscriber_factory, caplog
):
    """One fire, two unsure items: nothing at the bin says which of them the lamps would ask
    about, so a button answer could be the other item's and become this one's label. Each is
    asked remotely only: no lamp lights, a press (even two) while it waits answers nothing
    (said once at INFO), the question says ``at_the_bin: false``; a ``cmd/correct`` for each
    labels exactly that item."""
    data = base_config(tmp_path, two_items_at_once(tmp_path), port=mosquitto.port, mqtt=True)
    data["camera"]["replay"]["mode"] = "sequence"
    data["trigger"]["settle_seconds"] = 0.6
    data["router"] = {"confidence_threshold": 1.0}  # every item of the tiny model is unsure
    data["agent"]["exit_when_source_ends"] = False
    data["capture"] = {"enabled": True, "mode": "all"}
    data["ask"] = {"enabled": True, "timeout_seconds": 20.0, "buttons": COMPARTMENT_PINS, "leds": LAMP_PINS}
    config = preflight.load_dict(data, base_dir=tmp_path)
    routes = config.router.compartments
    answers = [c for c in CLASSES if routes[c] != config.router.fallback]
    answers = [answers[0], next(c for c in answers if routes[c] != routes[answers[0]])]
    sub = subscriber_factory(mosquitto.port, "smartbin/test-bin/#")
    caplog.set_level("INFO", logger="bin_agent.ask")
    asked = []
    with Running(config) as run:
        lamps = run.agent.asker.lights.leds
        for n, label in enumerate(answers):
            if n:
                assert wait_until(lambda: run.agent.asker.waiting_for() not in (None, asked[0]["event_id"]), 30)
            question = run.waiting()
            asked.append(question)
            assert question["at_the_bin"] is False
            for _ in range(2 - n):  # two presses on the first item, one on the second
                press(run.agent, COMPARTMENT_PINS[question["candidates"][0]])
                time.sleep(0.05)
            time.sleep(0.2)
            assert run.agent.asker.waiting_for() == question["event_id"], "a press answers neither item"
            assert not any(s.state for led in lamps.values() for s in led.pin.states), "no lamp lit, ever"
            sub.publish("smartbin/test-bin/cmd/correct", json.dumps({"event_id": question["event_id"], "label": label}))
        items = run.wait_items(2)
        assert sub.wait_for(lambda: len(sub.on("test-bin/event")) == 2, 10)
        assert wait_until(lambda: run.agent.capture.saved == 2, 15)
        published = [json.loads(m.payload) for m in sub.on("test-bin/unsure")]
        assert run.agent.state()["ask"] == {"asked": 2, "answered": 2}
    ids = [q["event_id"] for q in asked]
    assert len(set(ids)) == 2 and [item.event_id for item in items] == ids, "one fire, two items"
    events = {e["id"]: e for e in (json.loads(m.payload) for m in sub.on("test-bin/event"))}
    for event_id, label in zip(ids, answers, strict=True):
        answer = events[event_id]["answer"]
        assert (answer["label"], answer["source"], answer["exact"]) == (label, "mqtt", True), events[event_id]
    labels = LabelStore(tmp_path / "state" / "capture").all()
    assert {i: (labels[i]["label"], labels[i]["source"]) for i in labels} == {
        ids[0]: (answers[0], "mqtt"),
        ids[1]: (answers[1], "mqtt"),
    }
    assert published and all(q["at_the_bin"] is False for q in published), "the dashboard knows"
    said = [r for r in caplog.records if "several items in view" in r.getMessage()]
    assert [r.levelname for r in said] == ["INFO", "INFO"], "once per item, however many presses"


def test_two_unsure_items_of_one_fire_without_a_remote_side_are_not_waited_for(tmp_path):
    """As above, but no MQTT: nobody could answer either item (the buttons do not count), so
    neither waits out its 20 s; each goes unanswered, marked ``needs_label`` for later."""
    data = base_config(tmp_path, two_items_at_once(tmp_path), mqtt=False)
    data["camera"]["replay"]["mode"] = "sequence"
    data["trigger"]["settle_seconds"] = 0.6
    data["router"] = {"confidence_threshold": 1.0}
    data["ask"] = {"enabled": True, "timeout_seconds": 20.0, "buttons": COMPARTMENT_PINS, "leds": LAMP_PINS}
    config = preflight.load_dict(data, base_dir=tmp_path)
    run = Running(config)
    run.agent.asker.publish = None  # as build_agent leaves it without MQTT (Running records questions)
    with run:
        items = run.wait_items(2, timeout=15.0)
        lamps = run.agent.asker.lights.leds
        assert not any(s.state for led in lamps.values() for s in led.pin.states), "no lamp lit"
    assert [(i.answer, i.payload()["needs_label"], i.payload()["asked"]) for i in items] == [(None, True, UNSURE)] * 2
