"""The transport interface every role talks to; MQTT (paho) and the in-memory bus implement it.

Handlers run on the transport's network thread: they must be quick (validate, then put the work
into the role's own bounded queue). A handler exception is caught, logged and counted; it never
stops delivery.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retained: bool


Handler = Callable[[Received], None]


@runtime_checkable
class Transport(Protocol):
    @property
    def connected(self) -> bool: ...

    def start(self) -> None:
        """Connect; TransportError if the broker is unreachable within the timeout."""

    def stop(self) -> None:
        """Disconnect cleanly: the last will is NOT sent."""

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Queue a message; thread-safe, callable from any thread including handlers."""

    def subscribe(self, topic_filter: str, handler: Handler, qos: int = 1) -> None: ...

    def unsubscribe(self, topic_filter: str) -> None: ...

    def set_will(self, topic: str, payload: bytes, retain: bool = True) -> None:
        """The message the broker publishes if this client dies; call before start()."""

    def on_connect(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after every (re)connect, e.g. to re-publish an online status."""


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT filter matching with ``+`` (one level) and ``#`` (the rest, including none)."""
    f_parts = topic_filter.split("/")
    t_parts = topic.split("/")
    if topic.startswith("$") and f_parts[0] in ("+", "#"):
        return False  # wildcards at the first level never match $SYS-style topics
    for i, part in enumerate(f_parts):
        if part == "#":
            return True
        if i >= len(t_parts) or (part != "+" and part != t_parts[i]):
            return False
    return len(f_parts) == len(t_parts)


def check_filter(topic_filter: str) -> None:
    """Raise ValueError for filters MQTT forbids (misplaced ``#`` or ``+``)."""
    parts = topic_filter.split("/")
    for i, part in enumerate(parts):
        if "#" in part and (part != "#" or i != len(parts) - 1):
            raise ValueError(f"invalid topic filter {topic_filter!r}: '#' must be last")
        if "+" in part and part != "+":
            raise ValueError(f"invalid topic filter {topic_filter!r}: '+' must fill a level")


class Subscriptions:
    """Filter -> handler table with dispatch that contains handler failures (thread-safe)."""

    def __init__(self, owner: str) -> None:
        self._owner = owner
        self._lock = threading.Lock()
        self._handlers: dict[str, tuple[Handler, int]] = {}
        self.handler_errors = 0

    def add(self, topic_filter: str, handler: Handler, qos: int) -> None:
        check_filter(topic_filter)
        with self._lock:
            self._handlers[topic_filter] = (handler, qos)

    def remove(self, topic_filter: str) -> bool:
        with self._lock:
            return self._handlers.pop(topic_filter, None) is not None

    def filters(self) -> list[tuple[str, int]]:
        with self._lock:
            return [(f, qos) for f, (_, qos) in self._handlers.items()]

    def dispatch(self, message: Received) -> int:
        """Run every matching handler; returns how many matched."""
        with self._lock:
            matching = [
                h for f, (h, _) in self._handlers.items() if topic_matches(f, message.topic)
            ]
        return self._run(matching, message)

    def dispatch_to(self, topic_filter: str, message: Received) -> int:
        """Run only ``topic_filter``'s handler (retained messages answer one subscribe)."""
        with self._lock:
            entry = self._handlers.get(topic_filter)
        return self._run([entry[0]] if entry else [], message)

    def _run(self, matching: list[Handler], message: Received) -> int:
        for handler in matching:
            try:
                handler(message)
            except Exception:
                self.handler_errors += 1
                log.exception("%s: handler for %s failed", self._owner, message.topic)
        return len(matching)


def run_connect_callbacks(owner: str, callbacks: list[Callable[[], None]]) -> None:
    """Run every on-connect callback; a failing one is logged and does not stop the others."""
    for callback in list(callbacks):
        try:
            callback()
        except Exception:
            log.exception("%s: on_connect callback failed", owner)
