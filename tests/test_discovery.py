"""Home Assistant MQTT discovery: the payloads, end to end through a real mosquitto.

The keys allowed per component are those of Home Assistant's own discovery
schemas (``DISCOVERY_SCHEMA`` of ``homeassistant.components.mqtt.<component>``
in homeassistant 2024.3.3, the last release for Python 3.11). Where that
package is installed (``BIN_AGENT_HA_PYTHON`` names its python), the same
payloads also go through those schemas and HA's template engine
(``scripts/ha_check_discovery.py``).
"""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path
from typing import Any

import jinja2
from PIL import Image

from bin_agent import CLASSES, preflight
from bin_agent.agent import build_agent
from bin_agent.cli import main
from bin_agent.mqtt.discovery import discovery_messages, node_id
from tests.helpers import REPO, base_config, check_with_home_assistant, write_toml

COMMON = {
    "availability",
    "availability_mode",
    "availability_template",
    "availability_topic",
    "device",
    "enabled_by_default",
    "encoding",
    "entity_category",
    "icon",
    "json_attributes_template",
    "json_attributes_topic",
    "name",
    "object_id",
    "origin",
    "payload_available",
    "payload_not_available",
    "qos",
    "unique_id",
}
KNOWN_KEYS = {
    "sensor": COMMON
    | {
        "device_class",
        "expire_after",
        "force_update",
        "last_reset_value_template",
        "state_class",
        "state_topic",
        "suggested_display_precision",
        "unit_of_measurement",
        "value_template",
    },
    "binary_sensor": COMMON
    | {
        "device_class",
        "expire_after",
        "force_update",
        "off_delay",
        "payload_off",
        "payload_on",
        "state_topic",
        "value_template",
    },
    "button": COMMON | {"command_template", "command_topic", "device_class", "payload_press", "retain"},
    "select": COMMON
    | {"command_template", "command_topic", "optimistic", "options", "retain", "state_topic", "value_template"},
}
REQUIRED_KEYS = {
    "sensor": {"state_topic"},
    "binary_sensor": {"state_topic"},
    "button": {"command_topic"},
    "select": {"command_topic", "options"},
}
DEVICE_KEYS = {
    "configuration_url",
    "connections",
    "hw_version",
    "identifiers",
    "manufacturer",
    "model",
    "name",
    "serial_number",
    "suggested_area",
    "sw_version",
    "via_device",
}
TOPIC = re.compile(r"^homeassistant/(sensor|binary_sensor|button|select)/[a-zA-Z0-9_-]+/[a-zA-Z0-9_-]+/config$")
COMPARTMENTS = ["paper", "glass", "packaging", "residual"]
JINJA = jinja2.Environment(undefined=jinja2.StrictUndefined)


def make_config(tmp_path: Path, port: int = 1883, **patch: Any):
    image = tmp_path / "item.png"
    Image.new("RGB", (64, 48), (200, 40, 40)).save(image)
    data = base_config(tmp_path, image, port=port)
    data["trigger"]["mode"] = "manual"
    data["camera"]["replay"].update({"loop": True, "realtime": True, "fps": 20.0})
    # The Reset counts button exists only where cmd/reset_counts is allowed (off by default).
    data["mqtt"]["commands"] = {"allow_reset": True}
    for section, values in patch.items():
        data.setdefault(section, {}).update(values)
    return preflight.load_dict(data, base_dir=tmp_path)


def render(template: str, payload: bytes | str) -> str:
    """Render like HA: ``value`` the raw payload, ``value_json`` the parsed one; a missing key fails."""
    text = payload.decode() if isinstance(payload, bytes) else payload
    return JINJA.from_string(template).render(value=text, value_json=json.loads(text))


def test_one_device_with_every_entity_and_only_known_keys(tmp_path):
    messages = discovery_messages(make_config(tmp_path), list(CLASSES))
    object_ids = set()
    for topic, payload in messages.items():
        assert TOPIC.match(topic), topic
        component = topic.split("/")[1]
        assert set(payload) <= KNOWN_KEYS[component], (topic, set(payload) - KNOWN_KEYS[component])
        assert REQUIRED_KEYS[component] <= set(payload), topic
        assert set(payload["device"]) <= DEVICE_KEYS
        assert payload["availability_topic"] == "smartbin/test-bin/status"
        assert (payload["payload_available"], payload["payload_not_available"]) == ("online", "offline")
        object_ids.add(topic.split("/")[3])
        for key in ("value_template", "json_attributes_template", "command_template"):
            if key in payload:
                JINJA.parse(payload[key])  # valid Jinja
    # ONE device: the same block everywhere, identified by the bin id.
    devices = {json.dumps(p["device"], sort_keys=True) for p in messages.values()}
    assert len(devices) == 1
    device = json.loads(devices.pop())
    assert device["identifiers"] == ["bin-agent_test-bin"] and device["name"] == "Smart bin test-bin"
    assert {"model", "sw_version", "manufacturer"} <= set(device)
    unique_ids = [p["unique_id"] for p in messages.values()]
    assert len(set(unique_ids)) == len(unique_ids)
    assert all(u == f"test-bin_{t.split('/')[3]}" for t, u in zip(messages, unique_ids))
    expected = (
        {f"count_{c}" for c in CLASSES}
        | {f"compartment_{c}_count" for c in COMPARTMENTS}
        | {f"fill_{c}" for c in COMPARTMENTS}
        | {f"full_{c}" for c in COMPARTMENTS}
        | {f"emptied_{c}" for c in COMPARTMENTS}
        | {
            "total",
            "last_item",
            "last_item_time",
            "fallback_share",
            "inference_latency",
            "outbox_pending",
            "possible_items",
            "problem",
            "clock_synced",
            "classify",
            "reset_counts",
            "trigger_mode",
        }
    )
    assert object_ids == expected
    counters = [p for t, p in messages.items() if "count" in t.split("/")[3] or t.split("/")[3] == "total"]
    # Counts that cmd/correct can lower: "total" (a drop is a change), reset through last_reset.
    assert counters and all(
        p["state_class"] == "total" and p["last_reset_value_template"] == "{{ value_json.counts.since }}"
        for p in counters
        if "state_topic" in p
    )
    select = messages["homeassistant/select/test-bin/trigger_mode/config"]
    assert select["options"] == ["motion", "manual"]
    problem = messages["homeassistant/binary_sensor/test-bin/problem/config"]
    for status, storage, model_problem, shown in (
        ("running", "ok", None, "OFF"),
        ("stopped", "ok", None, "OFF"),
        ("camera_error", "ok", None, "ON"),
        ("actuator_error", "ok", None, "ON"),
        ("running", "full", None, "ON"),
        ("running", "ok", "the deployed model cannot run: ...", "ON"),
        ("running", "ok", "absent", "OFF"),  # an agent from before model_problem
    ):
        state = {"status": status, "sort_error": None, "storage": {"status": storage}, "model_problem": model_problem}
        if model_problem == "absent":
            del state["model_problem"]
        assert render(problem["value_template"], json.dumps(state)) == shown, (status, storage, model_problem)
    # A capture folder that cannot be used: the bin sorts without capture and learning.
    ok_state = {"status": "running", "sort_error": None, "storage": {"status": "ok"}, "model_problem": None}
    for capture_problem, shown in (("capture.folder: ... is not a folder; ...", "ON"), (None, "OFF")):
        state = ok_state | {"capture_problem": capture_problem}
        assert render(problem["value_template"], json.dumps(state)) == shown, capture_problem
    state = {"status": "running", "sort_error": None, "storage": {"status": "full"}, "model_problem": "x"}
    attributes = json.loads(render(problem["json_attributes_template"], json.dumps(state)))
    assert attributes == {
        "status": "running",
        "sort_error": None,
        "storage": "full",
        "model_problem": "x",
        "capture_problem": None,
    }
    missed = messages["homeassistant/sensor/test-bin/possible_items/config"]
    assert missed["value_template"] == "{{ value_json.possible_items_not_classified | default(0) }}"
    # Stable: the same config gives the same payloads.
    assert discovery_messages(make_config(tmp_path), list(CLASSES)) == messages


def test_home_assistant_reads_whether_the_bins_clock_is_synchronised_from_its_real_state(tmp_path, monkeypatch):
    """A diagnostic binary sensor on the bin's device: on while NTP has set the clock, off while the
    times the bin shows may be far behind (a Pi without a battery-backed clock), unknown where the
    agent cannot tell; its value_template renders a real agent's state payload."""
    from bin_agent import clock

    messages = discovery_messages(make_config(tmp_path), list(CLASSES))
    sensor = messages["homeassistant/binary_sensor/test-bin/clock_synced/config"]
    assert sensor["unique_id"] == "test-bin_clock_synced" and sensor["name"] == "Clock synchronised"
    assert sensor["state_topic"] == "smartbin/test-bin/state" and sensor["entity_category"] == "diagnostic"
    assert sensor["device"]["identifiers"] == ["bin-agent_test-bin"]
    agent = build_agent(make_config(tmp_path, mqtt={"enabled": False}))
    try:
        for synced, shown in ((True, "ON"), (False, "OFF"), (None, "None")):  # None: HA's unknown
            monkeypatch.setattr(clock, "synchronised", lambda synced=synced: synced)
            state = json.dumps(agent.state())
            assert json.loads(state)["clock_synced"] is synced
            assert render(sensor["value_template"], state) == shown, synced
    finally:
        agent.close()
    # An agent from before clock_synced: unknown, not off.
    assert render(sensor["value_template"], json.dumps({"status": "running"})) == "None"


def test_disabled_fill_has_no_fill_entities_and_the_prefix_is_configurable(tmp_path):
    config = make_config(tmp_path, fill={"enabled": False}, homeassistant={"discovery_prefix": "ha/disc"})
    topics = list(discovery_messages(config, list(CLASSES)))
    assert all(t.startswith("ha/disc/") for t in topics)
    assert not [t for t in topics if "/fill_" in t or "/full_" in t or "/emptied_" in t]


def test_node_id_is_a_safe_topic_level_and_keeps_ids_apart():
    assert node_id("bin-01") == "bin-01"
    assert re.fullmatch(r"[a-zA-Z0-9_-]+", node_id("Hall 2.bin"))
    assert node_id("bin.1") != node_id("bin_1")


# ---------------------------------------------------------------------- end to end


def run_bin_and_capture(tmp_path: Path, mosquitto, subscriber_factory, **patch: Any) -> dict[str, Any]:
    """Run a bin against mosquitto (its config patched by section with ``patch``), press every
    button and the select the way HA would, and return what a subscriber saw: configs and all
    messages per topic."""
    config = make_config(tmp_path, port=mosquitto.port, **patch)
    sub = subscriber_factory(mosquitto.port, "#")
    agent = build_agent(config)
    runner = threading.Thread(target=agent.run)
    runner.start()
    try:
        assert agent.mqtt is not None and agent.mqtt.wait_connected(15)
        expected = discovery_messages(config, agent.classifier.labels)
        assert sub.wait_for(lambda: {m.topic for m in sub.messages} >= set(expected), 15), "configs missing"
        assert sub.wait_for(lambda: sub.on("test-bin/state"), 10)
        received = {m.topic: json.loads(m.payload) for m in sub.messages if m.topic in expected}
        assert received == expected
        # Retained: Home Assistant starting later (a late subscriber) still finds every config.
        late = subscriber_factory(mosquitto.port, "homeassistant/#")
        assert late.wait_for(lambda: len(late.messages) >= len(expected), 10)
        assert {m.topic for m in late.messages} == set(expected) and all(m.retain for m in late.messages)

        def press(object_id: str, component: str = "button", value: str = "") -> dict:
            payload = expected[f"homeassistant/{component}/test-bin/{object_id}/config"]
            # HA renders a command_template with the chosen option as ``value``.
            body = (
                payload["payload_press"]
                if component == "button"
                else JINJA.from_string(payload["command_template"]).render(value=value)
            )
            before = len(sub.json_on("/cmd/result"))
            sub.publish(payload["command_topic"], body)
            assert sub.wait_for(lambda: len(sub.json_on("/cmd/result")) > before, 10)
            return sub.json_on("/cmd/result")[-1]

        assert press("classify")["ok"]
        assert sub.wait_for(lambda: sub.on("/event"), 15)
        assert sub.wait_for(lambda: sub.json_on("test-bin/state")[-1]["counts"]["total"] == 1, 10)
        assert sub.json_on("test-bin/state")[-1]["fill"][sub.json_on("/event")[0]["compartment"]] > 0
        for compartment in COMPARTMENTS:
            assert press(f"emptied_{compartment}")["ok"]
        assert sub.wait_for(lambda: not any(sub.json_on("test-bin/state")[-1]["fill"].values()), 10)
        assert press("trigger_mode", "select", "motion")["ok"]
        assert sub.wait_for(lambda: sub.json_on("test-bin/state")[-1]["trigger_mode"] == "motion", 10)
        assert press("trigger_mode", "select", "manual")["ok"]
        assert sub.wait_for(lambda: sub.json_on("test-bin/state")[-1]["trigger_mode"] == "manual", 10)
        assert press("reset_counts")["ok"]
        assert sub.wait_for(lambda: sub.json_on("test-bin/state")[-1]["counts"]["total"] == 0, 10)
    finally:
        agent.stop()
        runner.join(30)
    assert sub.wait_for(lambda: sub.on("test-bin/status")[-1].payload == b"offline", 10)
    by_topic: dict[str, list[str]] = {}
    for m in sub.messages:
        # The unsure item's photo (a JPEG) is kept as text too, its bytes replaced: nothing renders it.
        by_topic.setdefault(m.topic, []).append(m.payload.decode("utf-8", "replace"))
    return {"configs": expected, "messages": by_topic}


def test_home_assistant_sees_one_device_and_every_state_it_points_at(tmp_path, mosquitto, subscriber_factory):
    capture = run_bin_and_capture(tmp_path, mosquitto, subscriber_factory)
    if os.environ.get("BIN_AGENT_HA_CAPTURE"):
        Path(os.environ["BIN_AGENT_HA_CAPTURE"]).write_text(json.dumps(capture, indent=1, sort_keys=True))
    states = capture["messages"]["smartbin/test-bin/state"]
    assert any(json.loads(s)["last_item"] is None for s in states)
    assert any(json.loads(s)["last_item"] is not None for s in states)
    for topic, payload in capture["configs"].items():
        for key in ("state_topic", "json_attributes_topic"):
            if key in payload:
                assert payload[key] in capture["messages"], f"{topic}: nothing on its {key}"
        for text in capture["messages"].get(payload.get("state_topic", ""), []):
            value = render(payload["value_template"], text)  # every path exists in the real state
            if payload.get("state_class") and value != "None":
                float(value)
            if topic.split("/")[1] == "binary_sensor":
                # Unknown ("None") only where the agent cannot tell (clock_synced null: not Linux).
                assert value in ("ON", "OFF") or (topic.endswith("/clock_synced/config") and value == "None")
            if topic.split("/")[1] == "select":
                assert value in payload["options"]
            if "json_attributes_template" in payload:
                assert isinstance(json.loads(render(payload["json_attributes_template"], text)), dict)
    last_item_config = capture["configs"]["homeassistant/sensor/test-bin/last_item/config"]
    with_item = [s for s in states if json.loads(s)["last_item"]][-1]
    attributes = json.loads(render(last_item_config["json_attributes_template"], with_item))
    assert {"class", "confidence", "time", "top3"} <= set(attributes) and len(attributes["top3"]) == 3
    assert render(last_item_config["value_template"], with_item) in CLASSES


def test_home_assistants_own_schemas_accept_the_payloads(tmp_path, mosquitto, subscriber_factory):
    check_with_home_assistant(run_bin_and_capture(tmp_path, mosquitto, subscriber_factory), tmp_path)


def test_ha_remove_clears_every_config_of_the_bin_and_no_other(tmp_path, mosquitto, subscriber_factory, capsys):
    config = make_config(tmp_path, port=mosquitto.port)
    publisher = subscriber_factory(mosquitto.port, "nothing/here")
    messages = discovery_messages(config, list(CLASSES))
    stale = "homeassistant/sensor/test-bin/old_entity/config"
    other = "homeassistant/sensor/other-bin/total/config"
    for topic, payload in {**messages, stale: {"name": "old"}, other: {"name": "x"}}.items():
        publisher.client.publish(topic, json.dumps(payload), qos=1, retain=True).wait_for_publish(5)
    data = base_config(tmp_path, tmp_path / "item.png", port=mosquitto.port)
    data["trigger"]["mode"] = "manual"
    config_file = write_toml(tmp_path / "bin.toml", data)

    assert main(["ha-remove", "--config", str(config_file)]) == 0
    assert f"{len(messages) + 1} discovery config(s) cleared" in capsys.readouterr().out
    late = subscriber_factory(mosquitto.port, "homeassistant/#")
    assert late.wait_for(lambda: late.on(other), 5)
    assert [m.topic for m in late.messages] == [other], "only the other bin's config is left"


def test_ha_remove_without_a_broker_is_one_line(tmp_path, capsys):
    from scripts.mosquitto_process import free_port

    data = base_config(tmp_path, port=free_port())
    config_file = write_toml(tmp_path / "bin.toml", data)
    assert main(["ha-remove", "--config", str(config_file), "--timeout", "2"]) == 69
    err = capsys.readouterr().err
    assert err.startswith("bin-agent: cannot reach the broker") and err.count("\n") == 1


def test_example_dashboard_names_only_entities_the_bin_announces(tmp_path):
    """examples/home-assistant-dashboard.yaml is written for bin_id "bin-01": every entity id in it
    is one Home Assistant derives from the device name and an entity name (lower case, runs of
    other characters as "_")."""
    config = make_config(tmp_path, agent={"bin_id": "bin-01"})
    announced = set()
    for topic, payload in discovery_messages(config, list(CLASSES)).items():
        name = f"{payload['device']['name']} {payload['name']}"
        announced.add(f"{topic.split('/')[1]}.{re.sub(r'[^a-z0-9]+', '_', name.lower()).strip('_')}")
    text = (REPO / "examples" / "home-assistant-dashboard.yaml").read_text()
    used = set(re.findall(r"\b(?:sensor|binary_sensor|button|select)\.[a-z0-9_]+", text)) - {"button.press"}
    assert used and used <= announced, sorted(used - announced)


def test_disabled_discovery_publishes_no_config(tmp_path, mosquitto, subscriber_factory):
    config = make_config(tmp_path, port=mosquitto.port, homeassistant={"enabled": False})
    sub = subscriber_factory(mosquitto.port, "#")
    agent = build_agent(config)
    try:
        assert agent.mqtt.wait_connected(15)
        # Configs would go out before the state, on the same connection: once the state is here, none came.
        assert sub.wait_for(lambda: sub.on("test-bin/state"), 10)
        assert not [m.topic for m in sub.messages if m.topic.startswith("homeassistant/")]
    finally:
        agent.close()
