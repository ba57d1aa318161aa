"""Run the real dashboard (run_dashboard: HTTP + MQTT) in a background thread for a test."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from edge_app.config import BrokerConfig, FleetConfig
from edge_app.dashboard.app import DashboardOptions, run_dashboard
from edge_app.transport.base import Received
from edge_app.transport.mqtt import MqttTransport


@contextmanager
def running_dashboard(fleet: FleetConfig, options: DashboardOptions) -> Iterator[str]:
    """Yields the base URL; stops the dashboard (cleanly) on exit."""
    ready: list[str] = []
    failure: list[BaseException] = []
    holder: dict[str, Any] = {}

    def main() -> None:
        async def go() -> None:
            holder["loop"] = asyncio.get_running_loop()
            holder["stop"] = asyncio.Event()
            await run_dashboard(fleet, options, holder["stop"], on_ready=ready.append)

        try:
            asyncio.run(go())
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=main, name="dashboard", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not ready and not failure and time.monotonic() < deadline:
        time.sleep(0.02)
    if failure:
        raise failure[0]
    assert ready, "the dashboard did not start"
    try:
        yield ready[0].rstrip("/")
    finally:
        holder["loop"].call_soon_threadsafe(holder["stop"].set)
        thread.join(10)
        assert not thread.is_alive()


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def wait_for(check: Callable[[], Any], timeout: float = 5.0, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout} s (last: {last!r})")


def retained_snapshot(
    broker: BrokerConfig, topic_filter: str, settle: float = 0.7
) -> dict[str, bytes]:
    """What a fresh subscriber (e.g. Home Assistant starting) receives as retained messages."""
    got: dict[str, bytes] = {}

    def handler(msg: Received) -> None:
        if msg.retained:
            got[msg.topic] = msg.payload

    client = MqttTransport(broker, client_id=f"probe-{time.monotonic_ns()}")
    client.start()
    try:
        client.subscribe(topic_filter, handler)
        time.sleep(settle)
    finally:
        client.stop()
    return got
