"""Home Assistant MQTT discovery: retained entity configs for cameras and devices.

Per camera: a ``sensor`` (last action; confidence and time as attributes) and an ``image`` (the
sensor's retained JPEG thumbnail). Per device: a ``binary_sensor`` of class connectivity plus
``sensor`` entities for load and service time. Topics follow Home Assistant's discovery matcher
``<prefix>/<component>/<node_id>/<object_id>/config`` where node and object ids may only hold
``[a-zA-Z0-9_-]`` (our ids may also hold dots, so they are mapped by :func:`ha_id`).

A config is removed by publishing an empty retained payload on its topic. A device counts as
deleted from the fleet when its retained ``status/<device>`` is cleared (an empty retained payload,
e.g. ``mosquitto_pub -r -n -t edge/home/status/<device>``): its entities go at once, and at start
the dashboard also removes configs it finds for devices that no longer have a retained status.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from edge_app import __version__
from edge_app.messages.topics import DiscoveryTopics, Topics

log = logging.getLogger(__name__)

Json = dict[str, Any]
Publish = Callable[[str, bytes, bool], None]  # topic, payload, retain

HA_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
ORIGIN = {"name": "edge-app", "sw_version": __version__}
STATE_TEMPLATE = "{{ value_json.state }}"
LOAD_TEMPLATE = "{{ (value_json.load * 100) | round(1) }}"
SERVICE_TEMPLATE = (
    "{% set t = value_json.stages | map(attribute='service_time_s') | list %}"
    "{{ ((t | max) if t else 0) | round(4) }}"
)
HEARTBEAT_EXPIRE_S = 60
MAX_OBJECT_ID = 64  # DiscoveryTopics.config accepts ids of 1-64 characters
MAX_HA_STATE = 255  # Home Assistant refuses longer entity states
MAX_SEEN_CONFIGS = 8192  # retained configs of ours remembered for the sweep (network-fed)


def ha_id(value: str) -> str:
    """A Home-Assistant-safe id for ``value``; ids that needed changes get a short hash suffix."""
    safe = re.sub(r"[^a-zA-Z0-9_-]", "_", value)
    if safe == value:
        return value
    return f"{safe}_{hashlib.sha256(value.encode()).hexdigest()[:6]}"


@dataclass(frozen=True)
class EntityConfig:
    topic: str
    payload: Json

    def encoded(self) -> bytes:
        return json.dumps(self.payload, separators=(",", ":"), sort_keys=True).encode()


class DiscoveryBuilder:
    """Pure: turns fleet ids into the discovery configs Home Assistant understands."""

    def __init__(self, topics: Topics, discovery: DiscoveryTopics, dashboard_id: str) -> None:
        self.topics, self.discovery = topics, discovery
        self.node = ha_id(topics.root.replace("/", "_"))
        self.dashboard_id = dashboard_id

    def _availability(self, status_topic: str) -> list[Json]:
        return [
            {
                "topic": status_topic,
                "value_template": STATE_TEMPLATE,
                "payload_available": "online",
                "payload_not_available": "offline",
            }
        ]

    def _device_block(self, object_id: str, name: str, model: str) -> Json:
        """The ``device`` block that groups entities under one Home Assistant device."""
        return {
            "identifiers": [f"{self.node}_{object_id}"],
            "name": name,
            "manufacturer": "edge-app",
            "model": model,
            "sw_version": __version__,
        }

    def _config(self, component: str, object_id: str, payload: Json) -> EntityConfig:
        oid = f"{self.node}_{object_id}"
        if len(oid) > MAX_OBJECT_ID:  # long ids: keep a readable head, make it unique by hash
            digest = hashlib.sha256(oid.encode()).hexdigest()[:10]
            oid = f"{oid[: MAX_OBJECT_ID - 11]}_{digest}"
        topic = self.discovery.config(component, self.node, oid)
        return EntityConfig(topic, {**payload, "unique_id": oid, "origin": ORIGIN, "qos": 1})

    def camera(self, sensor: str) -> list[EntityConfig]:
        sid = ha_id(sensor)
        device = self._device_block(f"camera_{sid}", f"Camera {sensor}", "camera")
        available = self._availability(self.topics.status(self.dashboard_id))
        state = self.topics.camera(sensor)
        action = {
            "name": "Action",
            "icon": "mdi:motion-sensor",
            "state_topic": state,
            "value_template": "{{ value_json.action }}",
            "json_attributes_topic": state,
            "availability": available,
            "device": device,
        }
        image = {
            "name": "Thumbnail",
            "image_topic": self.topics.thumb(sensor),
            "content_type": "image/jpeg",
            "availability": available,
            "device": device,
        }
        return [
            self._config("sensor", f"camera_{sid}_action", action),
            self._config("image", f"camera_{sid}_thumbnail", image),
        ]

    def device(self, device: str, role: str) -> list[EntityConfig]:
        did = ha_id(device)
        status = self.topics.status(device)
        block = self._device_block(f"device_{did}", device, f"edge-app {role}")
        connectivity = {
            "name": "Connectivity",
            "device_class": "connectivity",
            "state_topic": status,
            "value_template": STATE_TEMPLATE,
            "payload_on": "online",
            "payload_off": "offline",
            "device": block,
        }
        common = {
            "state_topic": self.topics.heartbeat(device),
            "state_class": "measurement",
            "expire_after": HEARTBEAT_EXPIRE_S,
            "availability": self._availability(status),
            "device": block,
        }
        load = {
            **common,
            "name": "Load",
            "icon": "mdi:gauge",
            "unit_of_measurement": "%",
            "value_template": LOAD_TEMPLATE,
        }
        service = {
            **common,
            "name": "Service time",
            "device_class": "duration",
            "unit_of_measurement": "s",
            "suggested_display_precision": 3,
            "value_template": SERVICE_TEMPLATE,
        }
        return [
            self._config("binary_sensor", f"device_{did}_connectivity", connectivity),
            self._config("sensor", f"device_{did}_load", load),
            self._config("sensor", f"device_{did}_service_time", service),
        ]

    def owns(self, topic: str) -> bool:
        """True for a config topic this fleet's dashboard would publish."""
        parts = topic.split("/")
        return (
            topic.startswith(self.discovery.prefix + "/")
            and len(parts) == len(self.discovery.prefix.split("/")) + 4
            and parts[-3] == self.node
            and parts[-1] == "config"
        )


def camera_state(summary: Json) -> bytes:
    """The retained ``camera/<sensor>`` payload: the action with confidence and time.

    Home Assistant shows every key as an attribute of the camera's Action sensor; ``time`` is
    ISO 8601 (UTC) for people and templates, ``timestamp`` the same instant in Unix seconds.
    """
    ts = summary.get("ts")
    when = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds") if ts else None
    return json.dumps(
        {
            "action": str(summary.get("label") or "")[:MAX_HA_STATE],
            "confidence": summary.get("score"),
            "time": when,
            "timestamp": ts,
            "seq": summary.get("seq"),
            "latency_s": summary.get("latency"),
        },
        separators=(",", ":"),
    ).encode()


class DiscoveryPublisher:
    """Keeps the retained configs on the broker in step with the fleet (loop thread only)."""

    def __init__(self, builder: DiscoveryBuilder, publish: Publish) -> None:
        self.builder = builder
        self._publish = publish
        self.owned: dict[str, list[EntityConfig]] = {}  # "camera:x" / "device:y" -> configs
        self.seen_on_broker: set[str] = set()  # retained config topics found at start

    def _send(self, configs: Iterable[EntityConfig]) -> None:
        for config in configs:
            self._publish(config.topic, config.encoded(), True)

    def ensure_camera(self, sensor: str) -> None:
        key = f"camera:{sensor}"
        if key not in self.owned:
            self.owned[key] = self.builder.camera(sensor)
            self._send(self.owned[key])

    def ensure_device(self, device: str, role: str) -> None:
        if role == "dashboard":
            return  # dashboards are the availability of camera entities, not entities
        key = f"device:{device}"
        configs = self.builder.device(device, role)
        if self.owned.get(key) != configs:
            self.owned[key] = configs
            self._send(configs)

    def remove_device(self, device: str) -> None:
        for config in self.owned.pop(f"device:{device}", []):
            self._publish(config.topic, b"", True)
            self.seen_on_broker.discard(config.topic)

    def republish(self) -> None:
        """Home Assistant (re)started: send every config again."""
        for configs in self.owned.values():
            self._send(configs)

    def note_retained(self, topic: str, payload: bytes) -> None:
        if self.builder.owns(topic):
            if payload:
                if len(self.seen_on_broker) < MAX_SEEN_CONFIGS:
                    self.seen_on_broker.add(topic)
            else:
                self.seen_on_broker.discard(topic)

    def sweep(self) -> int:
        """Remove retained configs of ours for devices no longer in the fleet."""
        current = {c.topic for configs in self.owned.values() for c in configs}
        stale = sorted(self.seen_on_broker - current)
        for topic in stale:
            log.info("home assistant discovery: removing stale %s", topic)
            self._publish(topic, b"", True)
        self.seen_on_broker -= set(stale)
        return len(stale)
