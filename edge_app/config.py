"""Broker and fleet configuration: pydantic models, environment variables and CLI flags.

Precedence: command-line flag > environment variable > credentials in the URL > default.
Environment: ``EDGE_BROKER_URL``, ``EDGE_BROKER_USERNAME``, ``EDGE_BROKER_PASSWORD``,
``EDGE_BROKER_CA``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edge_app.errors import ConfigError
from edge_app.messages.topics import Topics, check_id

DEFAULT_URL = "mqtt://127.0.0.1:1883"
_PORTS = {"mqtt": 1883, "mqtts": 8883}


class BrokerConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = DEFAULT_URL
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    keepalive: int = Field(default=15, ge=2, le=3600)

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in _PORTS:
            raise ValueError(f"broker URL {url!r}: scheme must be mqtt:// or mqtts://")
        if not parts.hostname:
            raise ValueError(f"broker URL {url!r} has no host")
        try:
            _ = parts.port
        except ValueError as exc:
            raise ValueError(f"broker URL {url!r}: {exc}") from None
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"broker URL {url!r}: no path, query or fragment allowed")
        return url

    @property
    def host(self) -> str:
        host = urlsplit(self.url).hostname
        assert host is not None  # checked by the validator
        return host

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or _PORTS[parts.scheme]

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts" or self.ca_file is not None

    @property
    def credentials(self) -> tuple[str | None, str | None]:
        """(username, password): explicit fields win over those in the URL."""
        parts = urlsplit(self.url)
        user = self.username if self.username is not None else _unq(parts.username)
        password = self.password if self.password is not None else _unq(parts.password)
        return user, password

    @property
    def display_url(self) -> str:
        """The URL without the password, for logs and banners."""
        parts = urlsplit(self.url)
        user = self.credentials[0]
        return f"{parts.scheme}://{user + '@' if user else ''}{self.host}:{self.port}"

    def with_url(self, url: str) -> BrokerConfig:
        return make_broker_config(**{**self.model_dump(), "url": url})


def _unq(value: str | None) -> str | None:
    return unquote(value) if value is not None else None


def make_broker_config(**fields: object) -> BrokerConfig:
    """Build a BrokerConfig, turning validation errors into ConfigError."""
    try:
        return BrokerConfig.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(f"broker config: {first.get('msg', 'invalid')}") from None


def broker_from_env(env: Mapping[str, str] | None = None, **overrides: object) -> BrokerConfig:
    """A BrokerConfig from ``EDGE_BROKER_*`` variables; non-None ``overrides`` win."""
    env = os.environ if env is None else env
    fields: dict[str, object] = {}
    for key, var in (
        ("url", "EDGE_BROKER_URL"),
        ("username", "EDGE_BROKER_USERNAME"),
        ("password", "EDGE_BROKER_PASSWORD"),
        ("ca_file", "EDGE_BROKER_CA"),
    ):
        if env.get(var):
            fields[key] = env[var]
    fields.update({k: v for k, v in overrides.items() if v is not None})
    for key in ("ca_file", "cert_file", "key_file"):
        path = fields.get(key)
        if path is not None and not Path(str(path)).is_file():
            raise ConfigError(f"{key.replace('_', ' ')} {path} does not exist")
    return make_broker_config(**fields)


class FleetConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    fleet: str = "home"
    prefix: str = "edge"
    broker: BrokerConfig = BrokerConfig()
    heartbeat_s: float = Field(default=1.0, gt=0, le=3600)
    deadline_s: float = Field(default=5.0, gt=0, le=86400)

    @field_validator("fleet")
    @classmethod
    def _check_fleet(cls, fleet: str) -> str:
        try:
            return check_id(fleet, "fleet name")
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @property
    def topics(self) -> Topics:
        return Topics.for_fleet(self.fleet, self.prefix)


def add_fleet_args(parser: argparse.ArgumentParser) -> None:
    """Add --broker/--fleet/--username/--password/--ca to a subcommand's parser."""
    group = parser.add_argument_group("fleet")
    group.add_argument(
        "--broker",
        metavar="URL",
        default=None,
        help=f"mqtt://[user:pass@]host[:port] or mqtts://... (env EDGE_BROKER_URL;"
        f" default {DEFAULT_URL})",
    )
    group.add_argument("--fleet", default="home", help="fleet name (topic root edge/<fleet>)")
    group.add_argument("--username", default=None, help="broker user (env EDGE_BROKER_USERNAME)")
    group.add_argument(
        "--password", default=None, help="broker password (env EDGE_BROKER_PASSWORD)"
    )
    group.add_argument(
        "--ca", default=None, metavar="FILE", help="CA file for TLS (EDGE_BROKER_CA)"
    )


def fleet_config_from_args(args: argparse.Namespace) -> FleetConfig:
    broker = broker_from_env(
        url=getattr(args, "broker", None),
        username=getattr(args, "username", None),
        password=getattr(args, "password", None),
        ca_file=getattr(args, "ca", None),
    )
    fields: dict[str, object] = {"broker": broker, "fleet": getattr(args, "fleet", "home")}
    for name in ("prefix", "heartbeat_s", "deadline_s"):
        if getattr(args, name, None) is not None:
            fields[name] = getattr(args, name)
    try:
        return FleetConfig.model_validate(fields)
    except ValidationError as exc:
        raise ConfigError(f"fleet config: {exc.errors()[0].get('msg', 'invalid')}") from None
