"""The dashboard's settings, apart from the server so that the CLI can offer them without
importing aiohttp (every ``edge-app`` command builds the whole parser at start)."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_BIND = "127.0.0.1:8080"
DEFAULT_DB = "~/.local/share/edge-app/dashboard.sqlite3"


@dataclass(frozen=True)
class DashboardOptions:
    bind: str = DEFAULT_BIND
    db: str = DEFAULT_DB
    token: str | None = None
    discovery_prefix: str | None = "homeassistant"  # None: no Home Assistant discovery
    device_id: str = ""
    max_age_days: float = 7.0
