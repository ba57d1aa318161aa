"""`edge-app dashboard`: the web page of recognized actions and fleet health."""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any

from edge_app.config import add_fleet_args, fleet_config_from_args
from edge_app.dashboard.options import DEFAULT_BIND, DEFAULT_DB, DashboardOptions
from edge_app.errors import ConfigError

TOKEN_ENV = "EDGE_DASHBOARD_TOKEN"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "dashboard",
        help="serve the dashboard (cards per camera and device, history, Home Assistant discovery)",
        description="Serve a web dashboard of recognized actions and fleet health, keep a SQLite "
        "history, and publish Home Assistant MQTT discovery configs.",
    )
    parser.add_argument(
        "--bind",
        default=DEFAULT_BIND,
        metavar="HOST:PORT",
        help=f"where to listen (default {DEFAULT_BIND}; any other host needs --token)",
    )
    parser.add_argument("--db", default=DEFAULT_DB, metavar="PATH", help="SQLite history file")
    parser.add_argument(
        "--token",
        default=None,
        help=f"access token for the page and API (env {TOKEN_ENV}); open /?token=T once",
    )
    parser.add_argument(
        "--history-days", type=float, default=7.0, metavar="D", help="keep D days of history"
    )
    parser.add_argument("--id", default="", help="this dashboard's device id")
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--discovery-prefix",
        default="homeassistant",
        metavar="P",
        help="Home Assistant discovery prefix (default homeassistant)",
    )
    group.add_argument(
        "--no-discovery",
        action="store_true",
        help="do not publish Home Assistant discovery configs",
    )
    add_fleet_args(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edge_app.dashboard.app import run_dashboard  # aiohttp: only for this command

    if not 0 < args.history_days <= 36500:  # also refuses NaN
        raise ConfigError(f"--history-days {args.history_days}: keep 0 < D <= 36500 days")
    fleet = fleet_config_from_args(args)
    options = DashboardOptions(
        bind=args.bind,
        db=args.db,
        token=args.token or os.environ.get(TOKEN_ENV) or None,
        discovery_prefix=None if args.no_discovery else args.discovery_prefix,
        device_id=args.id,
        max_age_days=args.history_days,
    )

    def ready(url: str) -> None:
        print(f"edge-app dashboard: {url} (fleet {fleet.fleet}, broker {fleet.broker.display_url})")
        print(f"edge-app dashboard: history in {options.db}", flush=True)

    return asyncio.run(run_dashboard(fleet, options, on_ready=ready))
