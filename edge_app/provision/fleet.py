"""The fleet file: which devices exist, what role each plays, and how the broker is reached.

TOML (``.toml``) or JSON (any other extension); both map onto :class:`FleetFile`::

    fleet = "home"
    [broker]
    hosts = ["broker.local", "192.168.1.10"]
    [[devices]]
    id = "pi-1"
    role = "worker"
"""

from __future__ import annotations

import datetime as dt
import json
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from edge_app.errors import ConfigError
from edge_app.messages.topics import ID_PATTERN, DiscoveryTopics, Topics

MAX_FLEET_FILE_BYTES = 1024 * 1024
Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
HostName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,253}$")]
AbsPath = Annotated[str, StringConstraints(pattern=r"^/[^\s]*$", max_length=4096)]
BrokerRole = Literal[
    "sensor", "inject", "worker", "scheduler", "dashboard", "monitor", "homeassistant"
]
MIB = 1024 * 1024


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Device(_Strict):
    id: Id
    role: BrokerRole


class BrokerSection(_Strict):
    """How the broker host serves the fleet; paths are on the broker host."""

    hosts: Annotated[list[HostName], Field(min_length=1, max_length=32)] = [
        "localhost",
        "127.0.0.1",
    ]
    tls_port: Annotated[int, Field(ge=1, le=65535)] = 8883
    plain_port: Annotated[int, Field(ge=1, le=65535)] = 1883
    config_dir: AbsPath = "/etc/mosquitto/edge-app"
    persistence_dir: AbsPath = "/var/lib/mosquitto"
    # The largest payload the broker accepts: the largest activation of the deployed models
    # plus the envelope header (see ``limits.message_limit_for_models``).
    message_size_limit: Annotated[int, Field(ge=64 * 1024, le=256 * MIB)] = 16 * MIB
    # Deployed .tflite files (on the generating machine, relative to the fleet file): when
    # given and no explicit message_size_limit is set, the limit fits their largest activation.
    models: Annotated[list[str], Field(max_length=64)] = []
    max_queued_messages: Annotated[int, Field(ge=10, le=1_000_000)] = 1000
    max_queued_bytes: Annotated[int, Field(ge=0, le=4096 * MIB)] = 256 * MIB
    log_dest: Literal["stderr", "syslog", "stdout"] = "stderr"


class TlsSection(_Strict):
    # Fixed so the certificates are reproducible; devices without a real-time clock must not
    # boot with a clock before this date.
    not_before: dt.date = dt.date(2025, 1, 1)
    days: Annotated[int, Field(ge=1, le=36500)] = 3650
    require_client_cert: bool = False


class FleetFile(_Strict):
    fleet: Id = "home"
    prefix: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] = "edge"
    discovery_prefix: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] = (
        "homeassistant"
    )
    # Where each device keeps its ``devices/<id>/`` credentials (the Ansible roles copy them).
    credentials_dir: AbsPath = "/etc/edge-app/credentials"
    broker: BrokerSection = BrokerSection()
    tls: TlsSection = TlsSection()
    devices: Annotated[list[Device], Field(min_length=1, max_length=4096)]

    @model_validator(mode="after")
    def _unique_ids(self) -> FleetFile:
        seen: set[str] = set()
        for device in self.devices:
            if device.id in seen:
                raise ValueError(f"device id {device.id!r} appears twice")
            seen.add(device.id)
        return self

    @property
    def topics(self) -> Topics:
        return Topics.for_fleet(self.fleet, self.prefix)

    @property
    def discovery(self) -> DiscoveryTopics:
        return DiscoveryTopics.for_prefix(self.discovery_prefix)


def load_fleet(path: Path) -> FleetFile:
    """Read and validate a fleet file; every problem becomes a ConfigError naming the file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read fleet file {path}: {exc.strerror or exc}") from exc
    if len(raw) > MAX_FLEET_FILE_BYTES:
        raise ConfigError(f"fleet file {path} is larger than {MAX_FLEET_FILE_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"fleet file {path} is not valid {path.suffix or 'JSON'}: {exc}") from exc
    try:
        fleet = FleetFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"fleet file {path}: {_first_errors(exc)}") from exc
    if not fleet.broker.models:
        return fleet
    # Model paths are relative to the fleet file, like an include.
    models = [str(path.parent / m) for m in fleet.broker.models]
    return fleet.model_copy(update={"broker": fleet.broker.model_copy(update={"models": models})})


def _first_errors(exc: ValidationError, limit: int = 3) -> str:
    parts = []
    for err in exc.errors()[:limit]:
        where = ".".join(str(p) for p in err["loc"]) or "(top)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
