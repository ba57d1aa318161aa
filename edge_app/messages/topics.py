"""Every MQTT topic edge-app uses, built in this one module.

Layout under the root ``<prefix>/<fleet>`` (default ``edge/home``):

======================  ========  ========  ===============================================
topic                   payload   retained  meaning
======================  ========  ========  ===============================================
status/<device>         JSON      yes       DeviceStatus, ``offline`` is the last will
heartbeat/<device>      JSON      no        Heartbeat: hardware, load, queue, service times
plan                    JSON      yes       Plan: the scheduler's seating, newest epoch wins
task/<device>           msgpack   no        data envelope for one device (stage input/partial)
fanout/<stage>          msgpack   no        activation read by every shard holder of a stage
ack/<device>            msgpack   no        custody acknowledgements sent to ``device``
result/<sensor>         JSON      no        JobOutcome: a result or a drop with its reason
thumb/<sensor>          JPEG      yes       a small thumbnail of what the sensor sees
error/<device>          JSON      no        ErrorReport: a rejected message and why
metrics/<device>        JSON      no        Metrics: accounting counters
camera/<sensor>         JSON      yes       the dashboard's latest action of a camera (for HA)
======================  ========  ========  ===============================================

Ids (device, sensor) are restricted to ``[A-Za-z0-9_.-]{1,64}`` so they can never inject MQTT
wildcards or extra levels into a topic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from edge_app.errors import ConfigError, WireError

ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
_ID_RE = re.compile(ID_PATTERN)

Kind = Literal[
    "status",
    "heartbeat",
    "plan",
    "task",
    "fanout",
    "ack",
    "result",
    "thumb",
    "error",
    "metrics",
    "camera",
]
_PER_ID: tuple[Kind, ...] = (
    "status",
    "heartbeat",
    "task",
    "fanout",
    "ack",
    "result",
    "thumb",
    "error",
    "metrics",
    "camera",
)


def check_id(value: str, what: str = "id") -> str:
    """Return ``value`` if it is a valid device/sensor id, else raise ConfigError."""
    if not _ID_RE.match(value):
        raise ConfigError(f"invalid {what} {value!r}: use 1-64 of A-Z a-z 0-9 _ . -")
    return value


@dataclass(frozen=True)
class ParsedTopic:
    kind: Kind
    ident: str | None  # device, sensor or stage number; None for ``plan``


@dataclass(frozen=True)
class Topics:
    """Topic builder for one fleet."""

    root: str = "edge/home"

    @classmethod
    def for_fleet(cls, fleet: str = "home", prefix: str = "edge") -> Topics:
        check_id(fleet, "fleet name")
        if not prefix or any(c in prefix for c in "+#") or prefix.endswith("/"):
            raise ConfigError(f"invalid topic prefix {prefix!r}")
        return cls(f"{prefix}/{fleet}")

    # --- one topic -------------------------------------------------------------------------
    def status(self, device: str) -> str:
        return f"{self.root}/status/{check_id(device, 'device id')}"

    def heartbeat(self, device: str) -> str:
        return f"{self.root}/heartbeat/{check_id(device, 'device id')}"

    @property
    def plan(self) -> str:
        return f"{self.root}/plan"

    def task(self, device: str) -> str:
        return f"{self.root}/task/{check_id(device, 'device id')}"

    def fanout(self, stage: int) -> str:
        if stage < 0:
            raise ConfigError(f"invalid stage {stage}")
        return f"{self.root}/fanout/{stage}"

    def ack(self, device: str) -> str:
        return f"{self.root}/ack/{check_id(device, 'device id')}"

    def result(self, sensor: str) -> str:
        return f"{self.root}/result/{check_id(sensor, 'sensor id')}"

    def thumb(self, sensor: str) -> str:
        return f"{self.root}/thumb/{check_id(sensor, 'sensor id')}"

    def error(self, device: str) -> str:
        return f"{self.root}/error/{check_id(device, 'device id')}"

    def metrics(self, device: str) -> str:
        return f"{self.root}/metrics/{check_id(device, 'device id')}"

    def camera(self, sensor: str) -> str:
        """Retained latest action of a camera, published by the dashboard for Home Assistant."""
        return f"{self.root}/camera/{check_id(sensor, 'sensor id')}"

    # --- subscriptions ---------------------------------------------------------------------
    def all(self, kind: Kind) -> str:
        """The subscription filter for every topic of ``kind`` (e.g. ``edge/home/status/+``)."""
        if kind == "plan":
            return self.plan
        return f"{self.root}/{kind}/+"

    @property
    def everything(self) -> str:
        return f"{self.root}/#"

    # --- parsing ---------------------------------------------------------------------------
    def parse(self, topic: str) -> ParsedTopic:
        """Split a received topic into its kind and id; WireError if it is not one of ours."""
        if not topic.startswith(self.root + "/"):
            raise WireError(f"topic {topic!r} is outside {self.root!r}")
        rest = topic[len(self.root) + 1 :].split("/")
        if rest == ["plan"]:
            return ParsedTopic("plan", None)
        if len(rest) != 2 or rest[0] not in _PER_ID or not _ID_RE.match(rest[1]):
            raise WireError(f"unknown topic {topic!r}")
        kind: Kind = rest[0]  # type: ignore[assignment]
        if kind == "fanout" and not rest[1].isdigit():
            raise WireError(f"bad stage in topic {topic!r}")
        return ParsedTopic(kind, rest[1])


@dataclass(frozen=True)
class DiscoveryTopics:
    """Home Assistant MQTT discovery: ``<prefix>/<component>/<node_id>/<object_id>/config``."""

    prefix: str = "homeassistant"

    @classmethod
    def for_prefix(cls, prefix: str) -> DiscoveryTopics:
        """Checked: a prefix with a wildcard or a leading/trailing ``/`` is a ConfigError."""
        if not prefix or any(c in prefix for c in "+#") or prefix.strip("/") != prefix:
            raise ConfigError(f"invalid discovery prefix {prefix!r}")
        return cls(prefix)

    def config(self, component: str, node_id: str, object_id: str) -> str:
        for value, what in (
            (component, "component"),
            (node_id, "node id"),
            (object_id, "object id"),
        ):
            check_id(value, what)
        return f"{self.prefix}/{component}/{node_id}/{object_id}/config"

    @property
    def birth(self) -> str:
        """Home Assistant publishes ``online`` here when it (re)starts: re-send the configs."""
        return f"{self.prefix}/status"

    @property
    def all_configs(self) -> str:
        return f"{self.prefix}/+/+/+/config"

    @property
    def everything(self) -> str:
        """Every discovery topic (configs and the birth message), e.g. for broker ACLs."""
        return f"{self.prefix}/#"
