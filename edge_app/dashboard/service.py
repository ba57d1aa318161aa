"""The dashboard process: MQTT in, SQLite history, live events out, Home Assistant discovery.

Threads: the transport delivers messages on its network thread; :meth:`Dashboard.on_message` only
hands them to the asyncio loop (bounded: past ``inbox_limit`` waiting messages new ones are counted
and dropped). Everything else (state, store, SSE hub, discovery) runs on the loop thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from edge_app.errors import TransportError
from edge_app.messages.schemas import DeviceState, status_payload
from edge_app.messages.topics import DiscoveryTopics, Kind, Topics

from .discovery import DiscoveryBuilder, DiscoveryPublisher, camera_state
from .hub import Hub
from .state import RECENT_PER_CAMERA, Event, FleetState
from .store import HistoryStore

if TYPE_CHECKING:
    from edge_app.transport.base import Received, Transport

log = logging.getLogger(__name__)

SUBSCRIBED: tuple[Kind, ...] = ("result", "status", "heartbeat", "plan", "metrics", "thumb")
INBOX_LIMIT = 20_000
FLUSH_S = 0.5
PRUNE_S = 60.0
SWEEP_AFTER_S = 5.0  # retained messages have arrived by then
CAMERA_STATE_MIN_S = 1.0  # at most one retained camera/<sensor> update per second


class Dashboard:
    def __init__(
        self,
        topics: Topics,
        store: HistoryStore,
        *,
        device_id: str = "dashboard",
        discovery: DiscoveryTopics | None = None,
    ) -> None:
        self.topics, self.store, self.device_id = topics, store, device_id
        self.state = FleetState(topics, started=time.time())
        self.hub = Hub()
        self.transport: Transport | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.discovery: DiscoveryPublisher | None = None
        self._discovery_topics = discovery
        if discovery is not None:
            builder = DiscoveryBuilder(topics, discovery, device_id)
            self.discovery = DiscoveryPublisher(builder, self._publish)
        self._inbox = 0
        self._inbox_lock = threading.Lock()
        self.inbox_limit = INBOX_LIMIT
        self.inbox_dropped = 0
        self.dispatch_errors = 0
        self._camera_sent: dict[str, float] = {}
        self._camera_dirty: dict[str, dict[str, Any]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._warm()

    # --- start-up ----------------------------------------------------------------------------
    def _warm(self) -> None:
        """Refill the camera cards from the history so a restart shows what was there."""
        for sensor, rows in self.store.recent_by_camera(RECENT_PER_CAMERA).items():
            cam = self.state.camera(sensor)
            if cam is None:
                continue
            for row in rows:
                self.state.remember(cam, row)
            if self.discovery is not None:
                self.discovery.ensure_camera(sensor)

    @property
    def connected(self) -> bool:
        return bool(self.transport is not None and self.transport.connected)

    def status_payload(self, state: DeviceState) -> bytes:
        return status_payload(self.device_id, "dashboard", state)

    def attach(self, transport: Transport, loop: asyncio.AbstractEventLoop) -> None:
        """Wire the transport before ``transport.start()``: will, subscriptions, birth."""
        self.transport, self.loop = transport, loop
        transport.set_will(self.topics.status(self.device_id), self.status_payload("offline"))
        for kind in SUBSCRIBED:
            transport.subscribe(self.topics.all(kind), self.on_message)
        if self._discovery_topics is not None:
            transport.subscribe(self._discovery_topics.birth, self.on_message)
            transport.subscribe(self._discovery_topics.all_configs, self.on_message)
        transport.on_connect(self._on_connect)

    def _on_connect(self) -> None:
        if self.transport is None:
            return
        topic = self.topics.status(self.device_id)
        self.transport.publish(topic, self.status_payload("online"), retain=True)
        if self.loop is not None and self.discovery is not None:
            self.loop.call_soon_threadsafe(self.discovery.republish)

    def _publish(self, topic: str, payload: bytes, retain: bool) -> None:
        if self.transport is not None:
            try:
                self.transport.publish(topic, payload, retain=retain)
            except TransportError:  # the transport reconnects by itself; never kill the loop
                log.warning("dashboard: publish on %s failed", topic, exc_info=True)

    # --- messages ----------------------------------------------------------------------------
    def on_message(self, msg: Received) -> None:
        """Transport thread: hand the message to the loop, bounded."""
        loop = self.loop
        if loop is None:
            return
        with self._inbox_lock:
            if self._inbox >= self.inbox_limit:
                self.inbox_dropped += 1
                return
            self._inbox += 1
        loop.call_soon_threadsafe(self._deliver, msg.topic, msg.payload)

    def _deliver(self, topic: str, payload: bytes) -> None:
        with self._inbox_lock:
            self._inbox -= 1
        self.feed(topic, payload)

    def feed(self, topic: str, payload: bytes, now: float | None = None) -> list[Event]:
        """Loop thread: apply one message everywhere. Never raises for bad input."""
        now = time.time() if now is None else now
        if self.discovery is not None and self._discovery_topics is not None:
            if topic == self._discovery_topics.birth:
                if payload.strip() == b"online":
                    self.discovery.republish()
                return []
            if not topic.startswith(self.topics.root + "/"):
                self.discovery.note_retained(topic, payload)
                return []
        events = self.state.ingest(topic, payload, now)
        for event in events:
            try:
                self._dispatch(event, now)
            except Exception:  # a bug must cost one event, never the dashboard
                self.dispatch_errors += 1
                log.exception("dashboard: handling %s from %s failed", event.kind, topic)
        return events

    def _dispatch(self, event: Event, now: float) -> None:
        self.hub.publish(event.kind, event.data)
        data = event.data
        if event.kind == "result":
            self.store.add_result(data)
            if self.discovery is not None:
                self.discovery.ensure_camera(data["sensor"])
                if data["status"] == "ok":
                    self._camera_update(data["sensor"], data, now)
        elif event.kind == "thumb" and self.discovery is not None:
            self.discovery.ensure_camera(data["sensor"])
        elif event.kind == "device":
            if event.history:
                self.store.add_event(now, data["device"], data["change"], data["role"])
            if self.discovery is not None:
                self.discovery.ensure_device(data["device"], data["role"])
        elif event.kind == "device_removed":
            self.store.add_event(now, data["device"], "removed")
            if self.discovery is not None:
                self.discovery.remove_device(data["device"])
        elif event.kind == "plan" and (plan := self.state.plan) is not None:
            detail = f"epoch {plan.epoch}" + (f": {plan.reason}" if plan.reason else "")
            self.store.add_event(now, plan.scheduler, "plan", detail)

    def _camera_update(self, sensor: str, summary: dict[str, Any], now: float) -> None:
        """Publish at once if the last update is a second old, else hold it for :meth:`tick`."""
        if now - self._camera_sent.get(sensor, 0.0) >= CAMERA_STATE_MIN_S:
            self._send_camera(sensor, summary, now)
        else:
            self._camera_dirty[sensor] = summary

    def _send_camera(self, sensor: str, summary: dict[str, Any], now: float) -> None:
        self._camera_sent[sensor] = now
        self._camera_dirty.pop(sensor, None)
        self._publish(self.topics.camera(sensor), camera_state(summary), True)

    def tick(self, now: float | None = None) -> None:
        """Once a second: state events, and the camera updates held since the last tick."""
        now = time.time() if now is None else now
        for event in self.state.tick(now):
            self._dispatch(event, now)
        for sensor, summary in list(self._camera_dirty.items()):
            self._send_camera(sensor, summary, now)

    def snapshot(self) -> dict[str, Any]:
        snap = self.state.snapshot(time.time())
        snap["dashboard"] = {
            "device": self.device_id,
            "connected": self.connected,
            "inbox_dropped": self.inbox_dropped,
            "dispatch_errors": self.dispatch_errors,
            "history_lost": self.store.lost,
            "fleet": self.topics.root,
        }
        return snap

    # --- periodic work -----------------------------------------------------------------------
    async def _every(self, period: float, work: Any) -> None:
        while True:
            await asyncio.sleep(period)
            try:
                work()
            except Exception:  # a bug in one periodic job must not stop the others
                log.exception("dashboard: periodic %s failed", getattr(work, "__name__", work))

    def start_background(self) -> None:
        loop = asyncio.get_running_loop()
        self.loop = self.loop or loop
        jobs: list[tuple[float, Any]] = [
            (1.0, self.tick),
            (FLUSH_S, self.store.flush),
            (PRUNE_S, self.store.prune),
        ]
        self._tasks = [loop.create_task(self._every(p, w)) for p, w in jobs]
        if self.discovery is not None:
            self._tasks.append(loop.create_task(self._sweep_later()))

    async def _sweep_later(self) -> None:
        await asyncio.sleep(SWEEP_AFTER_S)
        if self.discovery is not None:
            removed = self.discovery.sweep()
            if removed:
                log.info("home assistant discovery: removed %d stale configs", removed)

    async def stop_background(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self.hub.close_all()
        self.store.flush()

    def say_goodbye(self) -> None:
        """Publish the clean offline status (transport.stop() does not send the will)."""
        if self.transport is not None and self.transport.connected:
            topic = self.topics.status(self.device_id)
            self._publish(topic, self.status_payload("offline"), True)
