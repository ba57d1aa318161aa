"""Home Assistant's MQTT discovery rules, restated from homeassistant/components/mqtt
(discovery.py TOPIC_MATCHER, schemas.py device/availability schemas, the sensor, binary_sensor
and image platform schemas) so tests can check our configs and read them back as HA would."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import jinja2

TOPIC_MATCHER = re.compile(
    r"(?P<component>\w+)/(?:(?P<node_id>[a-zA-Z0-9_-]+)/)?(?P<object_id>[a-zA-Z0-9_-]+)/config"
)
SUPPORTED = {"sensor", "binary_sensor", "image"}
STATE_CLASSES = {"measurement", "total", "total_increasing", "measurement_angle"}
DURATION_UNITS = {"d", "h", "min", "s", "ms", "µs"}
COMMON_KEYS = {
    "name",
    "unique_id",
    "device",
    "origin",
    "availability",
    "availability_mode",
    "availability_topic",
    "availability_template",
    "payload_available",
    "payload_not_available",
    "json_attributes_topic",
    "json_attributes_template",
    "icon",
    "qos",
    "entity_category",
    "enabled_by_default",
    "encoding",
    "object_id",
    "default_entity_id",
}
PLATFORM_KEYS = {
    "sensor": {
        "state_topic",
        "value_template",
        "unit_of_measurement",
        "device_class",
        "state_class",
        "expire_after",
        "force_update",
        "suggested_display_precision",
        "last_reset_value_template",
    },
    "binary_sensor": {
        "state_topic",
        "value_template",
        "payload_on",
        "payload_off",
        "device_class",
        "expire_after",
        "force_update",
        "off_delay",
    },
    "image": {"image_topic", "url_topic", "content_type", "image_encoding", "url_template"},
}
DEVICE_KEYS = {
    "identifiers",
    "connections",
    "manufacturer",
    "model",
    "name",
    "hw_version",
    "serial_number",
    "sw_version",
    "via_device",
    "suggested_area",
    "configuration_url",
}


def valid_subscribe_topic(topic: Any) -> bool:
    if not isinstance(topic, str) or not topic or "\0" in topic or len(topic.encode()) > 65535:
        return False
    levels = topic.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return False
        if "+" in level and level != "+":
            return False
    return True


def valid_publish_topic(topic: Any) -> bool:
    return valid_subscribe_topic(topic) and "+" not in topic and "#" not in topic


def problems(topic: str, payload: dict[str, Any], prefix: str = "homeassistant") -> list[str]:
    """Everything Home Assistant would reject (or silently ignore) in one discovery config."""
    out: list[str] = []
    if not topic.startswith(prefix + "/"):
        return [f"{topic}: not under {prefix}/"]
    match = TOPIC_MATCHER.fullmatch(topic[len(prefix) + 1 :])
    if not match:
        return [f"{topic}: does not match HA's discovery topic matcher"]
    component = match["component"]
    if component not in SUPPORTED:
        return [f"{topic}: component {component} not expected"]
    unknown = set(payload) - COMMON_KEYS - PLATFORM_KEYS[component]
    if unknown:
        out.append(f"{topic}: unknown keys {sorted(unknown)}")
    if component in ("sensor", "binary_sensor") and not valid_subscribe_topic(
        payload.get("state_topic")
    ):
        out.append(f"{topic}: state_topic required")
    if component == "image":
        has = [k for k in ("image_topic", "url_topic") if k in payload]
        if len(has) != 1 or not valid_subscribe_topic(payload[has[0]]):
            out.append(f"{topic}: exactly one of image_topic/url_topic required")
        if "content_type" in payload and "url_topic" in payload:
            out.append(f"{topic}: content_type with url_topic")
    if component == "sensor":
        if payload.get("state_class", "measurement") not in STATE_CLASSES:
            out.append(f"{topic}: bad state_class")
        if payload.get("device_class") == "duration" and (
            payload.get("unit_of_measurement") not in DURATION_UNITS
        ):
            out.append(f"{topic}: duration needs a time unit")
    if component == "binary_sensor" and payload.get("device_class") not in (None, "connectivity"):
        out.append(f"{topic}: unexpected binary_sensor device_class")
    if "json_attributes_topic" in payload and not valid_subscribe_topic(
        payload["json_attributes_topic"]
    ):
        out.append(f"{topic}: bad json_attributes_topic")
    out += _device_problems(topic, payload)
    out += _availability_problems(topic, payload)
    return out


def _device_problems(topic: str, payload: dict[str, Any]) -> list[str]:
    device = payload.get("device")
    if device is None:
        return []
    out = []
    if not payload.get("unique_id"):
        out.append(f"{topic}: a device block needs unique_id")
    if not isinstance(device, dict) or set(device) - DEVICE_KEYS:
        return [*out, f"{topic}: bad device block"]
    ids = device.get("identifiers")
    if isinstance(ids, str):
        ids = [ids]
    if not ids and not device.get("connections"):
        out.append(f"{topic}: device needs identifiers or connections")
    if ids and not all(isinstance(i, str) and i for i in ids):
        out.append(f"{topic}: identifiers must be strings")
    return out


def _availability_problems(topic: str, payload: dict[str, Any]) -> list[str]:
    if "availability" not in payload:
        return []
    if "availability_topic" in payload:
        return [f"{topic}: availability and availability_topic are exclusive"]
    items = payload["availability"]
    if not isinstance(items, list) or not items:
        return [f"{topic}: availability must be a non-empty list"]
    out = []
    for item in items:
        if not isinstance(item, dict) or not valid_subscribe_topic(item.get("topic")):
            out.append(f"{topic}: availability entry needs a topic")
        elif set(item) - {"topic", "payload_available", "payload_not_available", "value_template"}:
            out.append(f"{topic}: unknown availability keys")
    return out


# --- reading the retained configs back ---------------------------------------------------------

_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined)


def render(template: str | None, payload: bytes) -> str:
    """A value template rendered the way HA does for MQTT (``value`` and ``value_json``)."""
    text = payload.decode()
    if template is None:
        return text
    try:
        value_json = json.loads(text)
    except ValueError:
        value_json = None
    return _ENV.from_string(template).render(value=text, value_json=value_json).strip()


@dataclass
class Entity:
    component: str
    unique_id: str
    name: str
    config: dict[str, Any]


@dataclass
class HaDevice:
    identifiers: tuple[str, ...]
    name: str
    entities: dict[str, Entity] = field(default_factory=dict)  # by entity name


def entities_from_retained(
    retained: dict[str, bytes], prefix: str = "homeassistant"
) -> dict[str, HaDevice]:
    """Build devices and their entities from retained messages alone, as HA does at start."""
    devices: dict[str, HaDevice] = {}
    for topic, raw in sorted(retained.items()):
        if not topic.startswith(prefix + "/") or not topic.endswith("/config") or not raw:
            continue
        match = TOPIC_MATCHER.fullmatch(topic[len(prefix) + 1 :])
        assert match, topic
        config = json.loads(raw)
        assert not problems(topic, config, prefix), problems(topic, config, prefix)
        block = config["device"]
        ids = tuple(block["identifiers"])
        dev = devices.setdefault(ids[0], HaDevice(ids, block.get("name", "")))
        entity = Entity(match["component"], config["unique_id"], config["name"], config)
        assert entity.name not in dev.entities, f"duplicate entity {entity.name} on {ids}"
        dev.entities[entity.name] = entity
    return devices


def available(entity: Entity, retained: dict[str, bytes]) -> bool:
    for item in entity.config.get("availability", []):
        raw = retained.get(item["topic"])
        if raw is None:
            return False
        if render(item.get("value_template"), raw) != item.get("payload_available", "online"):
            return False
    return True
