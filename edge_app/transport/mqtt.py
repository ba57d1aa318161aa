"""The MQTT transport: the only module in edge-app that imports paho.

paho-mqtt 2.x with VERSION2 callbacks and an explicit protocol (3.1.1 by default, 5 optional).
A clean session is used, so after every reconnect each subscription is made again, then the
on-connect callbacks run (roles re-publish their online status there). paho's own queue of
outgoing QoS>0 messages keeps what is published while the broker is away, bounded by
``max_queued``; reconnects back off exponentially from ``MIN_BACKOFF_S`` to ``MAX_BACKOFF_S``.
Every paho error is mapped to :class:`~edge_app.errors.TransportError` at this boundary.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from edge_app.config import BrokerConfig
from edge_app.errors import TransportError
from edge_app.transport.base import Handler, Received, Subscriptions, run_connect_callbacks

log = logging.getLogger(__name__)

MIN_BACKOFF_S = 0.25
MAX_BACKOFF_S = 5.0
CONNECT_TIMEOUT_S = 5.0
MAX_QUEUED = 1000  # messages (paho bounds by count): 1000 x 1 MB activations = 1 GB at most
MAX_INFLIGHT = 200


class MqttTransport:
    """A Transport over a real MQTT broker."""

    def __init__(
        self,
        config: BrokerConfig,
        client_id: str,
        *,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        max_queued: int = MAX_QUEUED,
    ) -> None:
        self.config = config
        self.client_id = client_id
        self._timeout = connect_timeout
        self._max_queued = max_queued
        self._subs = Subscriptions(client_id)
        self._callbacks: list[Callable[[], None]] = []
        self._connected = threading.Event()
        self._first = threading.Event()
        self._failure: str | None = None
        self._last_info: paho.MQTTMessageInfo | None = None
        self._subacks = threading.Condition()
        self._acked: deque[int] = deque(maxlen=1024)
        self._initial_mid: int | None = None
        self._ready = threading.Event()
        self._loop_thread: int | None = None
        self._started = False
        self._stopping = False
        self.reconnects = 0
        self.dropped = 0
        self._client = self._make_client(max_queued)

    # --- setup -------------------------------------------------------------------------------

    def _make_client(self, max_queued: int) -> paho.Client:
        v5 = self.config.protocol == "5"
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
            clean_session=None if v5 else True,
        )
        user, password = self.config.credentials
        if user is not None:
            client.username_pw_set(user, password)
        if self.config.tls:
            try:
                client.tls_set(
                    ca_certs=self.config.ca_file,
                    certfile=self.config.cert_file,
                    keyfile=self.config.key_file,
                    tls_version=ssl.PROTOCOL_TLS_CLIENT,
                )
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise TransportError(f"TLS setup failed: {exc}") from None
        client.reconnect_delay_set(MIN_BACKOFF_S, MAX_BACKOFF_S)  # type: ignore[arg-type]
        client.max_queued_messages_set(max_queued)
        client.max_inflight_messages_set(MAX_INFLIGHT)
        client.connect_timeout = self._timeout
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def handler_errors(self) -> int:
        return self._subs.handler_errors

    def set_will(self, topic: str, payload: bytes, retain: bool = True) -> None:
        if self._started:
            raise TransportError("set_will() must be called before start()")
        try:
            self._client.will_set(topic, payload, qos=1, retain=retain)
        except ValueError as exc:
            raise TransportError(f"invalid will: {exc}") from None

    def on_connect(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Connect, or raise TransportError within ``connect_timeout`` seconds."""
        if self._started:
            return
        where = self.config.display_url
        try:
            self._client.connect_async(
                self.config.host, self.config.port, keepalive=self.config.keepalive
            )
        except (OSError, ValueError) as exc:
            raise TransportError(f"cannot connect to {where}: {exc}") from None
        self._started = True
        self._client.loop_start()
        # Ready = connected AND the subscriptions of that connection acknowledged. A broker
        # that drops us right after CONNACK (amqtt does under concurrent subscribes) is
        # retried by paho's loop within the same timeout.
        deadline = time.monotonic() + self._timeout
        while not self._ready.wait(0.05):
            if self._failure is not None or time.monotonic() > deadline:
                break
        else:
            return
        reason = self._failure or (
            "connected, but our subscriptions were not acknowledged"
            if self._first.is_set()
            else f"no answer within {self._timeout:g} s"
        )
        self._shutdown()
        raise TransportError(f"cannot connect to MQTT broker at {where}: {reason}")

    def stop(self, flush_timeout: float = 2.0) -> None:
        """Wait briefly for the last QoS>0 publish, then disconnect cleanly (no will)."""
        if not self._started:
            return
        info = self._last_info
        if info is not None and self.connected:
            # RuntimeError/ValueError: it could not be sent; nothing more to do on the way out
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(flush_timeout)
        self._shutdown()

    def _shutdown(self) -> None:
        self._stopping = True
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()
        self._started = False

    # --- messages ----------------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        try:
            info = self._client.publish(topic, payload, qos=qos, retain=retain)
        except (ValueError, TypeError) as exc:
            raise TransportError(f"cannot publish to {topic!r}: {exc}") from None
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            self.dropped += 1
            full = f"outgoing queue full ({self._max_queued})"
            raise TransportError(f"{full}: message to {topic} lost")
        if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and qos == 0:
            self.dropped += 1
            log.debug("%s: not connected, QoS 0 message on %s dropped", self.client_id, topic)
        if qos > 0:
            self._last_info = info

    def subscribe(self, topic_filter: str, handler: Handler, qos: int = 1) -> None:
        try:
            self._subs.add(topic_filter, handler, qos)
        except ValueError as exc:
            raise TransportError(str(exc)) from None
        if not self.connected:
            return  # made on connect
        rc, mid = self._client.subscribe(topic_filter, qos=qos)
        on_loop = threading.get_ident() == self._loop_thread
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and mid is not None and not on_loop:
            self._wait_suback(mid, self._timeout)  # then messages on it are delivered to us

    def _wait_suback(self, mid: int, timeout: float) -> bool:
        with self._subacks:
            return self._subacks.wait_for(lambda: mid in self._acked, max(0.0, timeout))

    def unsubscribe(self, topic_filter: str) -> None:
        if self._subs.remove(topic_filter) and self.connected:
            self._client.unsubscribe(topic_filter)

    # --- paho callbacks (network thread) -----------------------------------------------------

    def _on_connect(
        self, client: paho.Client, _: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        self._loop_thread = threading.get_ident()
        if reason.is_failure:
            self._failure = f"broker refused the connection: {reason}"
            log.warning("%s: %s", self.client_id, self._failure)
            return
        if self._first.is_set():
            self.reconnects += 1
            log.info("%s: reconnected to %s", self.client_id, self.config.display_url)
        self._failure = None
        _no_delay(client)
        self._connected.set()
        filters = self._subs.filters()
        if filters:
            self._initial_mid = client.subscribe(filters)[1]
        else:
            self._ready.set()
        run_connect_callbacks(self.client_id, self._callbacks)
        self._first.set()

    def _on_subscribe(
        self, client: paho.Client, _: Any, mid: int, reasons: list[ReasonCode], props: Any
    ) -> None:
        refused = [str(r) for r in reasons if r.is_failure]
        if refused:
            log.error("%s: broker refused a subscription: %s", self.client_id, refused)
        with self._subacks:
            self._acked.append(mid)
            self._subacks.notify_all()
        if mid == self._initial_mid:
            self._ready.set()

    def _on_connect_fail(self, client: paho.Client, _: Any) -> None:
        if not self._first.is_set():
            log.debug("%s: connection attempt failed", self.client_id)

    def _on_disconnect(
        self, client: paho.Client, _: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        if was and not self._stopping:
            log.warning("%s: disconnected from broker (%s); reconnecting", self.client_id, reason)

    def _on_message(self, client: paho.Client, _: Any, message: paho.MQTTMessage) -> None:
        try:
            received = Received(message.topic, bytes(message.payload), bool(message.retain))
        except UnicodeDecodeError:
            self._subs.handler_errors += 1
            log.warning("%s: dropped a message with a non-UTF-8 topic", self.client_id)
            return
        self._subs.dispatch(received)


def _no_delay(client: paho.Client) -> None:
    """Turn Nagle's algorithm off: our messages are small control messages and activations that
    must leave at once; with Nagle (paho's default) each hop can wait up to 40 ms for an ACK."""
    sock = client.socket()
    if not isinstance(sock, socket.socket):  # ssl.SSLSocket is one too
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError) as exc:  # not a TCP socket (a unix socket, a proxy)
        log.debug("TCP_NODELAY not set: %s", exc)
