"""Check captured discovery configs with Home Assistant's own code.

Run it with a Python that has the ``homeassistant`` package (2024.3.3 is the
last release for Python 3.11; see docs/dashboards.md):

    /tmp/ha-venv/bin/python scripts/ha_check_discovery.py capture.json

``capture.json`` is what ``tests/test_discovery.py`` writes when
``BIN_AGENT_HA_CAPTURE`` names a file: ``{"configs": {topic: payload},
"messages": {topic: [payloads seen on it]}}``. For every config it

* parses the topic with HA's discovery topic pattern and expands abbreviations,
* validates the payload with the platform's ``DISCOVERY_SCHEMA`` and fails on
  any key the schema would silently drop (``extra=REMOVE_EXTRA``),
* renders ``value_template`` and ``json_attributes_template`` with HA's template
  engine against every payload captured on the entity's ``state_topic``, and
  checks the result the way the entity would use it (a number for numeric
  sensors, a timezone-aware time for timestamps, ON/OFF, an option, a dict);
* renders every ``command_template`` with HA's own ``MqttCommandTemplate`` for
  each option (a select) or the press payload (a button), the entity's state
  set to the attributes it would have from every payload captured on its
  ``json_attributes_topic`` (so ``this.attributes`` is what HA would give), and
  checks it gives a JSON object (with the event id of those attributes, if
  they have one).

Prints one line per problem and exits 1 if there is any.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import tempfile
import warnings
from typing import Any

warnings.simplefilter("ignore")

from homeassistant.components.mqtt import binary_sensor, button, image, select, sensor  # noqa: E402
from homeassistant.components.mqtt.abbreviations import ABBREVIATIONS, DEVICE_ABBREVIATIONS  # noqa: E402
from homeassistant.components.mqtt.discovery import TOPIC_MATCHER  # noqa: E402
from homeassistant.components.mqtt.models import MqttCommandTemplate  # noqa: E402
from homeassistant.const import __version__ as HA_VERSION  # noqa: E402
from homeassistant.core import HomeAssistant  # noqa: E402
from homeassistant.helpers.template import Template  # noqa: E402
from homeassistant.util import dt as dt_util  # noqa: E402

PLATFORMS = {"sensor": sensor, "binary_sensor": binary_sensor, "button": button, "select": select, "image": image}
PAYLOAD_NONE = "None"


HASS: HomeAssistant | None = None


class _TemplateWarnings(logging.Handler):
    """HA renders a missing key as empty and only logs a warning: collect those."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(record.getMessage())


WARNINGS = _TemplateWarnings()
logging.getLogger("homeassistant.helpers.template").addHandler(WARNINGS)


def render(template: str, payload: str) -> str:
    WARNINGS.seen.clear()
    result = str(Template(template, HASS).async_render_with_possible_json_value(payload, "<template error>"))
    if WARNINGS.seen:
        raise ValueError("; ".join(WARNINGS.seen))
    return result


def check(capture: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    messages: dict[str, list[str]] = capture["messages"]
    for topic, raw in sorted(capture["configs"].items()):
        prefix, _, rest = topic.partition("/")
        match = TOPIC_MATCHER.match(rest)
        if not match:
            problems.append(f"{topic}: not a discovery topic Home Assistant accepts")
            continue
        component = match.group("component")
        payload = {ABBREVIATIONS.get(k, k): v for k, v in raw.items()}
        if "device" in payload:
            payload["device"] = {DEVICE_ABBREVIATIONS.get(k, k): v for k, v in payload["device"].items()}
        try:
            validated = PLATFORMS[component].DISCOVERY_SCHEMA(dict(payload))
        except Exception as exc:
            problems.append(f"{topic}: rejected by HA's {component} schema: {exc}")
            continue
        dropped = set(payload) - set(validated)
        if dropped:
            problems.append(f"{topic}: HA ignores the key(s) {sorted(dropped)}")
        if "command_template" in payload:
            problems += check_command(topic, component, payload, messages)
        state_topic = payload.get("state_topic")
        if state_topic is None:
            continue
        seen = messages.get(state_topic, [])
        if not seen:
            problems.append(f"{topic}: nothing was published on its state_topic {state_topic}")
        for text in seen:
            problems += check_value(topic, component, payload, text)
    return problems


def check_value(topic: str, component: str, payload: dict[str, Any], text: str) -> list[str]:
    problems = []
    try:
        value = render(payload["value_template"], text)
    except Exception as exc:
        return [f"{topic}: value_template fails on {text[:80]}…: {exc}"]
    numeric = payload.get("state_class") is not None or payload.get("unit_of_measurement") is not None
    if component == "sensor" and numeric and value != PAYLOAD_NONE:
        try:
            float(value)
        except ValueError:
            problems.append(f"{topic}: numeric sensor renders {value!r}")
    if component == "sensor" and payload.get("device_class") == "timestamp" and value != PAYLOAD_NONE:
        parsed = dt_util.parse_datetime(value)
        if parsed is None or parsed.tzinfo is None:
            problems.append(f"{topic}: timestamp sensor renders {value!r}")
    if component == "binary_sensor" and value not in ("ON", "OFF"):
        problems.append(f"{topic}: binary sensor renders {value!r}")
    if component == "select" and value not in payload["options"]:
        problems.append(f"{topic}: select renders {value!r}, not one of {payload['options']}")
    if "json_attributes_template" in payload:
        try:
            attributes = json.loads(render(payload["json_attributes_template"], text))
        except Exception as exc:
            problems.append(f"{topic}: json_attributes_template fails: {exc}")
        else:
            if not isinstance(attributes, dict):
                problems.append(f"{topic}: json_attributes_template gives {type(attributes).__name__}, not a dict")
    return problems


class _Entity:
    """What ``MqttCommandTemplate`` reads of its entity: the id, the name and hass."""

    def __init__(self, entity_id: str, name: str) -> None:
        self.entity_id = entity_id
        self.name = name
        self.hass = HASS


def check_command(topic: str, component: str, payload: dict[str, Any], messages: dict[str, list[str]]) -> list[str]:
    problems: list[str] = []
    assert HASS is not None
    entity_id = f"{component}.{re.sub(r'[^a-z0-9_]', '_', payload['unique_id'].lower())}"
    values = payload["options"] if component == "select" else [payload.get("payload_press", "PRESS")]
    source = payload.get("json_attributes_topic")
    texts = messages.get(source, []) if source else [""]
    if source and not texts:
        problems.append(f"{topic}: nothing was published on its json_attributes_topic {source}")
    for text in texts:
        attributes = json.loads(render(payload["json_attributes_template"], text)) if source else {}
        HASS.states.async_set(entity_id, "unknown", attributes)
        template = MqttCommandTemplate(Template(payload["command_template"], HASS), entity=_Entity(entity_id, "x"))
        for value in values:
            try:
                body = template.async_render(value)
                parsed = json.loads(str(body))
            except Exception as exc:
                problems.append(f"{topic}: command_template fails for {value!r}: {exc}")
                continue
            if not isinstance(parsed, dict):
                problems.append(f"{topic}: command_template gives {body!r}, not a JSON object")
            elif "event_id" in attributes and parsed.get("event_id") != attributes["event_id"]:
                problems.append(f"{topic}: command_template sends event_id {parsed.get('event_id')!r}, not the item's")
    return problems


async def run(capture: dict[str, Any]) -> list[str]:
    global HASS
    with tempfile.TemporaryDirectory() as config_dir:
        HASS = HomeAssistant(config_dir)
        return check(capture)


def main() -> int:
    capture = json.loads(open(sys.argv[1], encoding="utf-8").read())
    problems = asyncio.run(run(capture))
    for problem in problems:
        print(problem)
    n_states = sum(len(v) for v in capture["messages"].values())
    print(
        f"Home Assistant {HA_VERSION}: {len(capture['configs'])} discovery configs, "
        f"{n_states} messages, {len(problems)} problem(s)"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
