"""An in-memory MQTT twin for unit tests and the simulator.

``MemoryBus`` behaves like a broker with QoS 1 and clean sessions: ``+``/``#`` wildcards,
retained messages (an empty retained payload clears the topic), the last will published when a
client is killed (``bus.kill(client_id)`` or ``transport.kill()``) and not on a clean ``stop()``,
and ``bus.restart()`` to simulate a broker restart (every client disconnects, reconnects,
re-subscribes and runs its on-connect callbacks; retained messages survive, as with
persistence).

Delivery is synchronous by default: ``publish`` returns after every subscriber's handler ran.
A handler that publishes does not recurse; its messages are queued and delivered in order once
the current delivery returns (per thread). With ``synchronous=False`` one dispatcher thread
delivers from a bounded queue, which is closer to a real broker's timing.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from edge_app.errors import TransportError
from edge_app.transport.base import (
    Handler,
    Received,
    Subscriptions,
    run_connect_callbacks,
    topic_matches,
)

log = logging.getLogger(__name__)

MAX_PENDING = 100_000


@dataclass(frozen=True)
class _Message:
    topic: str
    payload: bytes
    retain: bool


class MemoryBus:
    """A process-local broker."""

    def __init__(self, *, synchronous: bool = True, max_pending: int = MAX_PENDING) -> None:
        self._lock = threading.RLock()
        self._clients: dict[str, MemoryTransport] = {}
        self._retained: dict[str, bytes] = {}
        self._synchronous = synchronous
        self._local = threading.local()
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue(max_pending)
        self._thread: threading.Thread | None = None
        self.published = 0
        self.delivered = 0
        if not synchronous:
            self._thread = threading.Thread(target=self._dispatch_loop, daemon=True)
            self._thread.start()

    def connect(self, client_id: str) -> MemoryTransport:
        """A new, not yet started transport for ``client_id``."""
        return MemoryTransport(self, client_id)

    # --- broker operations, called by MemoryTransport -------------------------------------

    def _attach(self, client: MemoryTransport) -> None:
        with self._lock:
            old = self._clients.get(client.client_id)
            if old is not None and old is not client:
                old._drop()  # session take-over, like a real broker
            self._clients[client.client_id] = client

    def _detach(self, client: MemoryTransport, *, send_will: bool) -> None:
        with self._lock:
            if self._clients.get(client.client_id) is not client:
                return
            del self._clients[client.client_id]
            will = client._will
        if send_will and will is not None:
            self._publish(will)

    def _retained_for(self, topic_filter: str) -> list[Received]:
        with self._lock:
            return [
                Received(topic, payload, True)
                for topic, payload in self._retained.items()
                if topic_matches(topic_filter, topic)
            ]

    def _publish(self, message: _Message) -> None:
        with self._lock:
            self.published += 1
            if message.retain:
                if message.payload:
                    self._retained[message.topic] = message.payload
                else:
                    self._retained.pop(message.topic, None)
            targets = [c for c in self._clients.values() if c._wants(message.topic)]
        received = Received(message.topic, message.payload, False)
        for client in targets:
            self._enqueue(partial(client._receive, None, received))

    def _send_retained(self, client: MemoryTransport, topic_filter: str) -> None:
        for message in self._retained_for(topic_filter):
            self._enqueue(partial(client._receive, topic_filter, message))

    def _enqueue(self, delivery: Callable[[], None]) -> None:
        if not self._synchronous:
            self._queue.put(delivery)
            return
        pending: deque[Callable[[], None]] | None = getattr(self._local, "pending", None)
        if pending is not None:  # already delivering on this thread: no recursion
            pending.append(delivery)
            return
        pending = self._local.pending = deque([delivery])
        try:
            while pending:
                pending.popleft()()
        finally:
            self._local.pending = None

    def _dispatch_loop(self) -> None:
        while (delivery := self._queue.get()) is not None:
            delivery()

    # --- test controls ---------------------------------------------------------------------

    def kill(self, client_id: str) -> None:
        """Drop a client as if its process died: the broker publishes its last will."""
        with self._lock:
            client = self._clients.get(client_id)
        if client is None:
            raise KeyError(f"no connected client {client_id!r}")
        client.kill()

    def restart(self) -> None:
        """Simulate a broker restart: everyone disconnects and reconnects (wills not sent)."""
        with self._lock:
            clients = list(self._clients.values())
        for client in clients:
            client._connected = False
        for client in clients:
            client._connected = True
            client.reconnects += 1
            client._run_connect_callbacks()

    @property
    def retained(self) -> dict[str, bytes]:
        with self._lock:
            return dict(self._retained)

    def client_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._clients)

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until the dispatcher queue is empty (no-op when synchronous)."""
        if self._synchronous:
            return
        done = threading.Event()
        self._queue.put(done.set)
        if not done.wait(timeout):
            raise TransportError("memory bus did not drain in time")

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=5)
            self._thread = None


class MemoryTransport:
    """One client of a MemoryBus; implements the Transport protocol."""

    def __init__(self, bus: MemoryBus, client_id: str) -> None:
        self._bus = bus
        self.client_id = client_id
        self._subs = Subscriptions(client_id)
        self._will: _Message | None = None
        self._callbacks: list[Callable[[], None]] = []
        self._connected = False
        self.reconnects = 0

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def handler_errors(self) -> int:
        return self._subs.handler_errors

    def start(self) -> None:
        self._bus._attach(self)
        self._connected = True
        self._run_connect_callbacks()

    def stop(self) -> None:
        self._connected = False
        self._bus._detach(self, send_will=False)

    def kill(self) -> None:
        """Die without a clean disconnect: the bus publishes the last will."""
        self._connected = False
        self._bus._detach(self, send_will=True)

    def _drop(self) -> None:
        self._connected = False

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        if "+" in topic or "#" in topic or not topic:
            raise TransportError(f"cannot publish to {topic!r}")
        if not self._connected:
            log.debug("%s: not connected, dropped a message on %s", self.client_id, topic)
            return
        self._bus._publish(_Message(topic, bytes(payload), retain))

    def subscribe(self, topic_filter: str, handler: Handler, qos: int = 1) -> None:
        try:
            self._subs.add(topic_filter, handler, qos)
        except ValueError as exc:
            raise TransportError(str(exc)) from None
        if self._connected:
            self._bus._send_retained(self, topic_filter)

    def unsubscribe(self, topic_filter: str) -> None:
        self._subs.remove(topic_filter)

    def set_will(self, topic: str, payload: bytes, retain: bool = True) -> None:
        self._will = _Message(topic, bytes(payload), retain)

    def on_connect(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    def _wants(self, topic: str) -> bool:
        return any(topic_matches(f, topic) for f, _ in self._subs.filters())

    def _receive(self, topic_filter: str | None, message: Received) -> None:
        """Deliver to every matching handler, or only to ``topic_filter``'s (retained)."""
        if not self._connected:
            return
        self._bus.delivered += 1
        if topic_filter is None:
            self._subs.dispatch(message)
        else:
            self._subs.dispatch_to(topic_filter, message)

    def _run_connect_callbacks(self) -> None:
        for topic_filter, _ in self._subs.filters():  # the client re-subscribes
            self._bus._send_retained(self, topic_filter)
        run_connect_callbacks(self.client_id, self._callbacks)
