"""Home Assistant MQTT discovery: each bin appears as one device, with no YAML.

On every connect the agent publishes one retained config per entity under
``<discovery_prefix>/<component>/<node_id>/<object_id>/config`` (``node_id``
is the bin id made safe for a topic level). Every config carries the same
``device`` block, so Home Assistant groups the entities into one device, and
points at the bin's own topics: the retained ``state`` (sensors read it with
``value_template``), ``status`` for availability (``online``, and ``offline``
from a clean stop or the Last Will) and ``cmd/<name>`` for buttons and the
select. ``unique_id`` is ``<node_id>_<object_id>``: stable across restarts,
config edits and Home Assistant restarts.

``bin-agent ha-remove --config FILE`` publishes empty retained configs, which
Home Assistant takes as "remove this entity"; with the last entity the device
goes too.

With ``[ask]`` on (and ``ask.remote``), the item the bin asks about appears
too: an ``image`` of its crop (``unsure/image``), a ``select`` of the classes
and a "guess is right" ``button``. Both send ``cmd/correct`` for the event id
they read from their attributes (the retained ``unsure`` topic), through Home
Assistant's ``this`` variable of MQTT command templates.

The payloads use full key names (no abbreviations) and only keys documented
for the MQTT ``sensor``, ``binary_sensor``, ``button``, ``select`` and ``image``
integrations; ``tests/test_discovery.py`` checks them against those keys and,
where Home Assistant is installed, against its own discovery schemas.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from .. import __version__
from ..config import Config
from .link import Topics

COMPONENTS = ("sensor", "binary_sensor", "button", "select", "image")
MODEL = "bin-agent camera sorting bin"

PROBLEM_STATUSES = ("camera_error", "actuator_error")
"""The state's statuses in which a bin needs a person (its camera gone, its mechanics
failing); with a full or failing disk, what the "Problem" sensor and ``bin-agent monitor`` show."""


def node_id(bin_id: str) -> str:
    """The bin id as a discovery topic level (``[a-zA-Z0-9_-]+``).

    Other characters become ``_``; then a short hash of the real id keeps
    ``bin.1`` and ``bin_1`` apart.
    """
    safe = re.sub(r"[^a-zA-Z0-9_-]", "_", bin_id)
    if safe != bin_id:
        safe += "_" + hashlib.sha1(bin_id.encode()).hexdigest()[:6]
    return safe


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9_]", "_", name.lower())


def _key(name: str) -> str:
    """A dict key inside a Jinja template (quoted: any class or compartment name works)."""
    return json.dumps(name)


def _title(name: str) -> str:
    return name.replace("_", " ").capitalize()


def device_block(bin_id: str) -> dict[str, Any]:
    return {
        "identifiers": [f"bin-agent_{node_id(bin_id)}"],
        "name": f"Smart bin {bin_id}",
        "manufacturer": "bin-agent",
        "model": MODEL,
        "sw_version": __version__,
    }


def discovery_messages(config: Config, labels: list[str]) -> dict[str, dict[str, Any]]:
    """Discovery topic → retained config payload, for every entity of this bin."""
    bin_id = config.agent.bin_id
    node = node_id(bin_id)
    topics = Topics.for_bin(config.mqtt.topic_prefix, bin_id)
    prefix = config.homeassistant.discovery_prefix
    common = {
        "device": device_block(bin_id),
        "origin": {"name": "bin-agent", "sw_version": __version__},
        "availability_topic": topics.status,
        "payload_available": "online",
        "payload_not_available": "offline",
        "qos": 1,
    }
    messages: dict[str, dict[str, Any]] = {}

    def add(component: str, object_id: str, **payload: Any) -> None:
        messages[f"{prefix}/{component}/{node}/{object_id}/config"] = {
            "unique_id": f"{node}_{object_id}",
            **payload,
            **common,
        }

    def sensor(object_id: str, name: str, template: str, **extra: Any) -> None:
        add("sensor", object_id, name=name, state_topic=topics.state, value_template=template, **extra)

    # "total", not "total_increasing": cmd/correct moves an item between classes and lowers one
    # count, which total_increasing would read as a meter reset (a drop of over 10 %) and so
    # corrupt the long-term statistics. With "total" a drop is a change, and cmd/reset_counts
    # starts a new cycle through last_reset (the counts' "since").
    counter = {
        "state_class": "total",
        "last_reset_value_template": "{{ value_json.counts.since }}",
        "unit_of_measurement": "items",
        "icon": "mdi:counter",
    }
    for label in labels:
        sensor(
            f"count_{_slug(label)}",
            f"{_title(label)} items",
            f"{{{{ value_json.counts.classes.get({_key(label)}, 0) }}}}",
            **counter,
        )
    for compartment in config.compartments:
        sensor(
            f"compartment_{_slug(compartment)}_count",
            f"{_title(compartment)} compartment items",
            f"{{{{ value_json.counts.compartments.get({_key(compartment)}, 0) }}}}",
            **counter,
        )
    sensor("total", "Items sorted", "{{ value_json.counts.total }}", **counter)
    # The last item's class is the state; its whole event (confidence, time, top-3,
    # compartment, latencies) the attributes.
    sensor(
        "last_item",
        "Last item",
        "{{ value_json.last_item['class'] if value_json.last_item else 'none' }}",
        json_attributes_topic=topics.state,
        json_attributes_template="{{ (value_json.last_item or {}) | tojson }}",
        icon="mdi:recycle",
    )
    # "None" is Home Assistant's word for "no value yet" (state unknown).
    sensor(
        "last_item_time",
        "Last item time",
        "{{ value_json.last_item.time if value_json.last_item else None }}",
        device_class="timestamp",
    )
    sensor(
        "fallback_share",
        "Unsure items share",
        "{{ value_json.fallback_share }}",
        unit_of_measurement="%",
        state_class="measurement",
        icon="mdi:help-circle-outline",
    )
    sensor(
        "inference_latency",
        "Inference latency",
        "{{ value_json.inference_ms }}",
        unit_of_measurement="ms",
        device_class="duration",
        state_class="measurement",
        entity_category="diagnostic",
    )
    # Changes the motion trigger saw settle but judged too small to be an item: a dashboard
    # sees misses instead of nothing. The agent counts from its start, so a restart is a
    # meter reset: total_increasing is the state class that means exactly that.
    sensor(
        "possible_items",
        "Possible items not classified",
        "{{ value_json.possible_items_not_classified | default(0) }}",
        unit_of_measurement="items",
        state_class="total_increasing",
        icon="mdi:eye-off-outline",
        entity_category="diagnostic",
    )
    # One entity an automation can watch for "the bin needs a person": the camera gone, the
    # mechanics failing, the disk full or failing, the deployed model unable to run (a fallback
    # sorts), the capture folder unusable (sorting without capture and learning); the state's
    # words in the attributes.
    add(
        "binary_sensor",
        "problem",
        name="Problem",
        state_topic=topics.state,
        value_template=(
            f"{{{{ 'ON' if value_json.status in {list(PROBLEM_STATUSES)} "
            "or value_json.storage.status != 'ok' or value_json.model_problem | default(none) "
            "or value_json.capture_problem | default(none) else 'OFF' }}"
        ),
        device_class="problem",
        entity_category="diagnostic",
        json_attributes_topic=topics.state,
        json_attributes_template=(
            "{{ {'status': value_json.status, 'sort_error': value_json.sort_error, "
            "'storage': value_json.storage.status, 'model_problem': value_json.model_problem | default(none), "
            "'capture_problem': value_json.capture_problem | default(none)} "
            "| tojson }}"
        ),
    )
    # Whether the times the bin shows (events, "counts since", "last item time") can be believed:
    # a Pi without a battery-backed clock runs behind from boot until NTP answers (bin_agent.clock).
    # Unknown ("None") where the agent cannot tell (not Linux), or from an agent before clock_synced.
    synced = "value_json.clock_synced | default(none)"
    add(
        "binary_sensor",
        "clock_synced",
        name="Clock synchronised",
        state_topic=topics.state,
        value_template=f"{{{{ None if {synced} is none else ('ON' if {synced} else 'OFF') }}}}",
        entity_category="diagnostic",
        icon="mdi:clock-check-outline",
    )
    sensor(
        "outbox_pending",
        "Outbox backlog",
        "{{ value_json.outbox_pending }}",
        unit_of_measurement="events",
        state_class="measurement",
        icon="mdi:tray-full",
        entity_category="diagnostic",
    )
    if config.fill.enabled:
        for compartment in config.compartments:
            slug = _slug(compartment)
            sensor(
                f"fill_{slug}",
                f"{_title(compartment)} fill level",
                f"{{{{ value_json.fill[{_key(compartment)}] }}}}",
                unit_of_measurement="%",
                state_class="measurement",
                icon="mdi:delete-variant",
                json_attributes_topic=topics.state,
                json_attributes_template=f"{{{{ value_json.fill_detail[{_key(compartment)}] | tojson }}}}",
            )
            add(
                "binary_sensor",
                f"full_{slug}",
                name=f"{_title(compartment)} full",
                state_topic=topics.state,
                value_template=f"{{{{ 'ON' if {_key(compartment)} in value_json.full else 'OFF' }}}}",
                device_class="problem",
            )
            add(
                "button",
                f"emptied_{slug}",
                name=f"{_title(compartment)} emptied",
                command_topic=f"{topics.base}/cmd/emptied",
                payload_press=json.dumps({"compartment": compartment}),
                icon="mdi:delete-empty",
            )
    add(
        "button",
        "classify",
        name="Classify now",
        command_topic=f"{topics.base}/cmd/classify",
        payload_press="{}",
        icon="mdi:camera",
    )
    if config.mqtt.commands.allow_reset:  # no button that only ever gets "disabled" back
        add(
            "button",
            "reset_counts",
            name="Reset counts",
            command_topic=f"{topics.base}/cmd/reset_counts",
            payload_press="{}",
            entity_category="config",
            icon="mdi:counter",
        )
    if config.ask.enabled and config.ask.remote:
        _unsure_entities(add, topics, labels)
    if config.capture.enabled:  # learning needs the captured photos and their labels
        learning = "value_json.learning"
        sensor(
            "model_version",
            "Model version",
            "{{ value_json.model.version }}",
            icon="mdi:brain",
            entity_category="diagnostic",
        )
        sensor(
            "last_learn",
            "Last learn",
            f"{{{{ {learning}.last_learn if {learning} is defined and {learning}.last_learn else None }}}}",
            device_class="timestamp",
            json_attributes_topic=topics.state,
            json_attributes_template=f"{{{{ ({learning} if {learning} is defined else {{}}) | tojson }}}}",
        )
        sensor(
            "learn_labels",
            "Labels learnt from",
            f"{{{{ {learning}.labels if {learning} is defined and {learning}.labels is not none else None }}}}",
            unit_of_measurement="labels",
            state_class="measurement",
            icon="mdi:tag-check",
        )
        sensor(
            "held_out_accuracy",
            "Held-out accuracy",
            f"{{{{ (100 * {learning}.held_out_accuracy) | round(1) if {learning} is defined "
            f"and {learning}.held_out_accuracy is not none else None }}}}",
            unit_of_measurement="%",
            state_class="measurement",
            icon="mdi:bullseye-arrow",
        )
        add(
            "button",
            "learn",
            name="Learn now",
            command_topic=f"{topics.base}/cmd/learn",
            payload_press="{}",
            icon="mdi:school",
        )
    from ..triggers import switchable_trigger_modes

    add(
        "select",
        "trigger_mode",
        name="Trigger mode",
        command_topic=f"{topics.base}/cmd/trigger_mode",
        command_template='{"mode": "{{ value }}"}',
        state_topic=topics.state,
        value_template="{{ value_json.trigger_mode }}",
        options=switchable_trigger_modes(config.trigger),
        entity_category="config",
        icon="mdi:gesture-tap",
    )
    return messages


def _unsure_entities(add: Any, topics: Topics, labels: list[str]) -> None:
    """The item the bin asks about (``[ask]``): its photo, a select to name it, a button to confirm it."""
    add(
        "image",
        "unsure_image",
        name="Unsure item",
        image_topic=topics.unsure_image,
        content_type="image/jpeg",
        icon="mdi:image-search",
    )
    # The question (event id, the bin's guess, top-3, waiting or not) as attributes;
    # the command templates read the event id from them.
    attributes = {"json_attributes_topic": topics.unsure, "json_attributes_template": "{{ value_json | tojson }}"}
    correct = f"{topics.base}/cmd/correct"
    add(
        "select",
        "unsure_label",
        name="Unsure item is",
        command_topic=correct,
        command_template='{"event_id": "{{ this.attributes.event_id }}", "label": "{{ value }}"}',
        state_topic=topics.unsure,
        # The answer once given, else the bin's guess: choosing another class corrects it.
        value_template="{{ value_json.answer.label if value_json.answer and value_json.answer.label "
        "else value_json['class'] }}",
        options=list(labels),
        icon="mdi:tag-search",
        **attributes,
    )
    add(
        "button",
        "unsure_confirm",
        name="Unsure item guess is right",
        command_topic=correct,
        payload_press="",
        command_template='{"event_id": "{{ this.attributes.event_id }}", "label": "{{ this.attributes[\'class\'] }}"}',
        icon="mdi:check-decagram",
        **attributes,
    )


# ---------------------------------------------------------------------- ha-remove


def remove_from_home_assistant(config: Config, labels: list[str], timeout: float = 10.0) -> list[str]:
    """Clear every retained discovery config of this bin; returns the topics cleared.

    Clears the configs this config would publish and any other retained config
    under this bin's node id (entities of an older config), found by
    subscribing to ``<prefix>/+/<node_id>/+/config``.
    """
    from .client import CliClient

    prefix = config.homeassistant.discovery_prefix
    node = node_id(config.agent.bin_id)
    with CliClient.from_config(config, "ha-remove") as client:
        retained = client.collect_retained([f"{prefix}/+/{node}/+/config"], timeout)
        topics = sorted(set(discovery_messages(config, labels)) | {m.topic for m in retained if m.payload})
        for topic in topics:
            client.publish(topic, b"", retain=True)
        client.flush(timeout)
    return topics
