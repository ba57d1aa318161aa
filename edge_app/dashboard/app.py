"""Running the dashboard: HTTP server + MQTT transport + background jobs, until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from edge_app.config import FleetConfig
from edge_app.errors import ConfigError
from edge_app.messages.topics import DiscoveryTopics, check_id
from edge_app.transport.mqtt import MqttTransport

from .options import DashboardOptions
from .server import check_exposure, create_app, parse_bind
from .service import Dashboard
from .store import HistoryStore

log = logging.getLogger(__name__)


def default_device_id() -> str:
    host = "".join(c if c.isalnum() or c in "_.-" else "-" for c in socket.gethostname())
    return f"dashboard-{host or 'local'}"[:64]


async def start_http(dash: Dashboard, host: str, port: int, token: str | None) -> web.AppRunner:
    runner = web.AppRunner(create_app(dash, token), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The actual port (useful with ``--bind 127.0.0.1:0``)."""
    for site in runner.sites:
        server = getattr(site, "_server", None)
        if server is not None and server.sockets:
            return int(server.sockets[0].getsockname()[1])
    raise RuntimeError("the dashboard is not listening")


async def run_dashboard(
    fleet: FleetConfig,
    options: DashboardOptions,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> int:
    """Serve until ``stop`` is set (or SIGINT/SIGTERM); returns the exit code."""
    host, port = parse_bind(options.bind)
    check_exposure(host, options.token)
    device_id = check_id(options.device_id or default_device_id(), "dashboard id")
    prefix = options.discovery_prefix
    discovery = None if prefix is None else DiscoveryTopics.for_prefix(prefix)
    store = HistoryStore(Path(options.db).expanduser(), max_age_s=options.max_age_days * 86400.0)
    dash = Dashboard(fleet.topics, store, device_id=device_id, discovery=discovery)
    loop = asyncio.get_running_loop()
    transport = MqttTransport(fleet.broker, client_id=device_id)
    dash.attach(transport, loop)
    stop = stop or asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    runner = await start_http(dash, host, port, options.token)
    try:
        await loop.run_in_executor(None, transport.start)
        dash.start_background()
        url = f"http://{host}:{bound_port(runner)}/"
        log.info("dashboard of fleet %s on %s", fleet.fleet, url)
        if on_ready is not None:
            on_ready(url)
        await stop.wait()
    finally:
        await dash.stop_background()
        dash.say_goodbye()
        await loop.run_in_executor(None, transport.stop)
        await runner.cleanup()
        store.close()
    return 0
