"""The scheduler role: the single writer of the plan.

Threads: the transport's network thread only decodes and queues (bounded); one control thread
owns the registry, runs the planner and publishes. A fleet change (a device joins, leaves, dies
or changes speed materially) is debounced and planned within ``max_delay_s``; measurements are
refreshed every ``refresh_s`` (a new epoch only when the planner finds a material change).

Restart without a gap: on start the scheduler reads the retained plan and does not plan during a
warm-up of about one and a half heartbeat intervals, so it knows every live worker before it
plans; meanwhile the workers go on with the retained plan. Its first own plan (if any change is
needed at all) gets the retained epoch + 1.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from edge_app.config import FleetConfig
from edge_app.errors import DecodeError, EdgeAppError, WireError
from edge_app.messages.schemas import (
    DeviceState,
    DeviceStatus,
    ErrorKind,
    ErrorReport,
    Heartbeat,
    Message,
    Metrics,
    Plan,
    decode,
    encode,
    status_payload,
)
from edge_app.scheduling.planner import PlanPolicy, plan
from edge_app.scheduling.profile import ModelProfile
from edge_app.scheduling.registry import Registry
from edge_app.transport.base import Received, Transport

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SchedulerOptions:
    debounce_s: float = 0.25  # wait this long for more changes ...
    max_delay_s: float = 0.9  # ... but plan within this time of the first one
    refresh_s: float = 5.0
    warmup_s: float | None = None  # default: 1.5 heartbeat intervals
    metrics_s: float = 5.0
    tick_s: float = 0.05
    queue_limit: int = 4096
    max_error_reports_per_s: int = 20
    policy: PlanPolicy = field(default_factory=PlanPolicy)


class Scheduler:
    def __init__(
        self,
        config: FleetConfig,
        profile: ModelProfile,
        device_id: str = "scheduler",
        *,
        transport: Transport | None = None,
        options: SchedulerOptions | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.profile = profile
        self.device = device_id
        self.topics = config.topics
        self.options = options or SchedulerOptions()
        self.policy = dataclasses.replace(self.options.policy, scheduler=device_id)
        self.clock = clock
        if transport is None:
            from edge_app.transport.mqtt import MqttTransport

            transport = MqttTransport(config.broker, client_id=device_id)
        self.transport = transport
        self.registry = Registry()
        self._inbox: queue.Queue[Message] = queue.Queue(maxsize=self.options.queue_limit)
        self._lock = threading.Lock()
        self._plan: Plan | None = None
        self._published = 0
        self._errors = 0
        self._overflow = 0
        self._error_window = (0.0, 0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._connects = 0
        self._started_at = 0.0
        self._dirty_since: float | None = None
        self._last_change = 0.0
        self._next_refresh = 0.0
        self._next_hb = 0.0
        self._next_metrics = 0.0
        self._hb_seq = 0
        self._no_plan_logged = False
        self._deaf = False

    # --- lifecycle --------------------------------------------------------------------------
    @property
    def warmup_s(self) -> float:
        if self.options.warmup_s is not None:
            return self.options.warmup_s
        return 1.5 * self.config.heartbeat_s

    def start(self) -> None:
        t = self.transport
        t.set_will(self.topics.status(self.device), self._status("offline"), retain=True)
        t.on_connect(self._on_connect)
        t.subscribe(self.topics.plan, self._on_plan)
        t.subscribe(self.topics.all("status"), self._on_status)
        t.subscribe(self.topics.all("heartbeat"), self._on_heartbeat)
        now = self.clock()
        self._started_at = self._dirty_since = self._last_change = now
        self._next_refresh = now + self.options.refresh_s
        t.start()
        self._thread = threading.Thread(target=self._loop, name=f"{self.device}-plan", daemon=True)
        self._thread.start()
        log.info("scheduler %s started (warm-up %.1f s)", self.device, self.warmup_s)

    def run(self) -> None:
        """Start and block until :meth:`stop` (e.g. from a signal handler)."""
        self.start()
        while not self._stop.wait(0.5):
            pass

    def stop(self) -> None:
        """Stop planning and go offline cleanly; the retained plan stays for the workers."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._publish_metrics()
        self.transport.publish(
            self.topics.status(self.device), self._status("offline"), retain=True
        )
        self.transport.stop()
        log.info("scheduler %s stopped", self.device)

    def current_plan(self) -> Plan | None:
        with self._lock:
            return self._plan

    @property
    def errors(self) -> int:
        return self._errors

    # --- network thread: decode and queue ---------------------------------------------------
    def _on_connect(self) -> None:
        self._connects += 1
        self.transport.publish(self.topics.status(self.device), self._status("online"), retain=True)
        current = self.current_plan()
        if self._connects > 1 and current is not None and current.scheduler == self.device:
            # the broker may have lost its retained messages: the same epoch again is harmless
            self.transport.publish(self.topics.plan, encode(current), retain=True)

    def _on_plan(self, msg: Received) -> None:
        self._take(msg, Plan, None)

    def _on_status(self, msg: Received) -> None:
        self._take(msg, DeviceStatus, "status")

    def _on_heartbeat(self, msg: Received) -> None:
        self._take(msg, Heartbeat, "heartbeat")

    def _take(self, msg: Received, kind: type[Message], topic_kind: str | None) -> None:
        if not msg.payload:
            return  # a retained message being cleared
        try:
            item = decode(kind, msg.payload)
            if topic_kind is not None:
                ident = self.topics.parse(msg.topic).ident
                device = getattr(item, "device", None)
                if ident != device:
                    raise WireError(f"{topic_kind} of {device!r} on the topic of {ident!r}")
        except DecodeError as exc:
            self.report(msg.topic, "decode", str(exc))
            return
        except WireError as exc:
            self.report(msg.topic, "validation", str(exc))
            return
        try:
            self._inbox.put_nowait(item)
        except queue.Full:
            self._overflow += 1
            if self._overflow % 100 == 1:
                log.warning("%s: inbox full, %d messages dropped", self.device, self._overflow)

    def report(self, topic: str, kind: ErrorKind, detail: str) -> None:
        """A rejected message: a counter, and a log line and an ErrorReport (rate-limited, so a
        flood of garbage floods neither the log nor the error topic)."""
        self._errors += 1
        now = time.monotonic()
        second, n = self._error_window
        if now - second >= 1.0:
            second, n = now, 0
        self._error_window = (second, n + 1)
        if n >= self.options.max_error_reports_per_s:
            return
        log.warning("%s: rejected message on %s (%s): %s", self.device, topic, kind, detail)
        report = ErrorReport(
            device=self.device,
            ts=time.time(),
            topic=topic[:256],
            kind=kind,
            detail=detail[:2048],
        )
        self.transport.publish(self.topics.error(self.device), encode(report))

    # --- control thread -------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._drain()
                now = self.clock()
                if not self._hearing(now):
                    continue
                gone = self.registry.expire(now)
                if gone:
                    log.info("%s: missed heartbeats: %s", self.device, ", ".join(gone))
                    self._changed(now)
                self._maybe_plan(now)
                self._periodic(now)
            except EdgeAppError as exc:  # never let one bad turn stop the writer of the plan
                log.error("%s: control loop: %s", self.device, exc)
            except Exception:  # a bug: log it loudly, count it, keep the fleet's plan alive
                self._errors += 1
                log.exception("%s: control loop failed; going on", self.device)
                self._stop.wait(self.options.tick_s)

    def _hearing(self, now: float) -> bool:
        """False while disconnected from the broker: silence then says nothing about the
        devices. After a reconnect they get a fresh grace period and the warm-up starts again,
        so a broker restart does not unseat the whole fleet."""
        connected = self.transport.connected
        if connected and self._deaf:
            self._deaf = False
            self.registry.grace(now)
            self._started_at = now
            log.info("%s: reconnected; warming up again before planning", self.device)
        elif not connected:
            self._deaf = True
        return connected

    def _drain(self) -> None:
        try:
            item = self._inbox.get(timeout=self.options.tick_s)
        except queue.Empty:
            return
        for _ in range(self.options.queue_limit):
            self._apply(item, self.clock())
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return

    def _apply(self, item: Message, now: float) -> None:
        if isinstance(item, Heartbeat):
            if self.registry.on_heartbeat(item, now):
                self._changed(now)
        elif isinstance(item, DeviceStatus):
            if self.registry.on_status(item, now):
                self._changed(now)
        elif isinstance(item, Plan):
            self._on_plan_item(item)

    def _on_plan_item(self, incoming: Plan) -> None:
        with self._lock:
            current = self._plan
            if current is not None and incoming.epoch <= current.epoch:
                return  # our own plan echoed back, or an older one
            self._plan = incoming
        if incoming.scheduler != self.device and self._published:
            log.warning(
                "%s: %s published plan epoch %d: run one scheduler per fleet (one writer)",
                self.device,
                incoming.scheduler,
                incoming.epoch,
            )
        elif incoming.scheduler != self.device:
            log.info(
                "%s: plan epoch %d from %s (retained): continuing from it",
                self.device,
                incoming.epoch,
                incoming.scheduler,
            )

    def _changed(self, now: float) -> None:
        if self._dirty_since is None:
            self._dirty_since = now
        self._last_change = now

    def _maybe_plan(self, now: float) -> None:
        if now - self._started_at < self.warmup_s:
            return
        dirty = self._dirty_since
        due = dirty is not None and (
            now - self._last_change >= self.options.debounce_s
            or now - dirty >= self.options.max_delay_s
        )
        if due or now >= self._next_refresh:
            self._replan(now)

    def _replan(self, now: float) -> None:
        self._dirty_since = None
        self._next_refresh = now + self.options.refresh_s
        devices = self.registry.workers(now)
        current = self.current_plan()
        new = plan(devices, self.profile, current, now, self.policy)
        if new is None:
            if devices and not self._no_plan_logged:
                log.warning(
                    "%s: %d worker(s) cannot run model %s (memory?); keeping epoch %s",
                    self.device,
                    len(devices),
                    self.profile.model.name,
                    current.epoch if current else None,
                )
            self._no_plan_logged = True
            return
        self._no_plan_logged = False
        if new is current:
            return
        with self._lock:
            self._plan = new
        self.transport.publish(self.topics.plan, encode(new), retain=True)
        self._published += 1
        log.info("%s: published plan epoch %d (%s)", self.device, new.epoch, new.reason)

    def _periodic(self, now: float) -> None:
        if now >= self._next_hb:
            self._next_hb = now + self.config.heartbeat_s
            self._heartbeat()
        if now >= self._next_metrics:
            self._next_metrics = now + self.options.metrics_s
            self._publish_metrics()

    # --- reporting ----------------------------------------------------------------------------
    def _status(self, state: DeviceState) -> bytes:
        return status_payload(self.device, "scheduler", state)

    def _heartbeat(self) -> None:
        self._hb_seq += 1
        current = self.current_plan()
        hb = Heartbeat(
            device=self.device,
            role="scheduler",
            seq=self._hb_seq,
            ts=time.time(),
            interval_s=self.config.heartbeat_s,
            queue_depth=self._inbox.qsize(),
            queue_limit=self.options.queue_limit,
            epoch=current.epoch if current else 0,
        )
        self.transport.publish(self.topics.heartbeat(self.device), encode(hb), qos=0)

    def _publish_metrics(self) -> None:
        metrics = Metrics(
            device=self.device,
            role="scheduler",
            ts=time.time(),
            errors=self._errors + self._overflow,
        )
        self.transport.publish(self.topics.metrics(self.device), encode(metrics), qos=0)
