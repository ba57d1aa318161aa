"""The job side of a sensor (or ``edge-app inject``): inputs become jobs for stage 0.

A :class:`JobPublisher` stamps each input with a unique job id (sensor + sequence + random), its
``created`` and ``deadline`` times, and hands it to a :class:`~edge_app.pipeline.courier.Courier`,
which routes it to a stage-0 seat of the newest plan and holds it until that seat acks
(re-sending on a dead, unseated or silent receiver; dropping with a reason past the deadline).

Real time beats completeness: while ``max_in_flight`` jobs are held or parked, a new input is
*skipped* (not accepted, counted). Accounting of this process: ``accepted`` jobs end either
``completed`` (stage 0 acked: the job moved on) or ``dropped`` (reason on ``result/<sensor>``).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_app.config import FleetConfig
from edge_app.errors import DecodeError, EdgeAppError
from edge_app.messages.codec import Header, decode_ack
from edge_app.messages.schemas import DeviceStatus, Metrics, Plan, Role, decode, encode
from edge_app.messages.topics import check_id
from edge_app.pipeline.accounting import Accounting
from edge_app.pipeline.courier import Courier, CourierConfig
from edge_app.transport.base import Received, Transport

log = logging.getLogger(__name__)

Tensors = tuple[tuple[str, np.ndarray[Any, Any]], ...]


@dataclass(frozen=True)
class PublisherOptions:
    max_in_flight: int = 8  # jobs held or parked at once; beyond that new inputs are skipped
    window: int = 4  # in-flight envelopes per stage-0 receiver
    ack_timeout_s: float = 5.0
    deadline_s: float | None = None  # None: the fleet config's deadline_s
    tick_s: float = 0.05
    metrics_s: float = 5.0


class JobPublisher:
    """Publishes jobs for stage 0 and holds them until acked. Thread-safe ``submit``."""

    def __init__(
        self,
        transport: Transport,
        config: FleetConfig,
        sensor: str,
        *,
        device: str | None = None,
        role: Role = "sensor",
        model_name: str = "",
        options: PublisherOptions = PublisherOptions(),
    ) -> None:
        self.transport = transport
        self.config = config
        self.topics = config.topics
        self.sensor = check_id(sensor, "sensor id")
        self.device = check_id(device or sensor, "device id")
        self.role: Role = role
        self.options = options
        self.accounting = Accounting(self.device, role)
        cc = CourierConfig(
            window=options.window,
            capacity=max(options.max_in_flight, 1),
            ack_timeout_s=options.ack_timeout_s,
        )
        self.courier = Courier(
            transport, self.topics, self.device, self.accounting, config=cc, model_name=model_name
        )
        self.skipped = 0
        self._seq = 0
        self._lock = threading.Lock()
        self._plan_seen = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0

    # --- lifecycle ----------------------------------------------------------------------------
    def attach(self) -> None:
        """Subscribe to the plan, device status and our acks (before or after transport.start)."""
        t = self.transport
        t.subscribe(self.topics.plan, self._on_plan)
        t.subscribe(self.topics.all("status"), self._on_status)
        t.subscribe(self.topics.ack(self.device), self._on_ack)

    def start(self) -> None:
        """Start the timer thread: re-sends, deadline drops, metrics."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._tick_loop, name=f"{self.device}-jobs", daemon=True
            )
            self._thread.start()

    def stop(self, drain_s: float = 2.0) -> None:
        """Wait up to ``drain_s`` for held jobs to be acked, then stop (they end as drops)."""
        self.drain(drain_s)
        self.courier.close()
        self.courier.check()  # parked jobs end now with reason "shutdown"
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        self.publish_metrics()

    def wait_plan(self, timeout: float) -> Plan | None:
        self._plan_seen.wait(timeout)
        return self.courier.plan

    def drain(self, timeout: float) -> bool:
        """Wait until nothing is held or parked; True if drained."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.in_flight == 0:
                return True
            self.courier.check()
            time.sleep(0.02)
        return self.in_flight == 0

    # --- jobs -------------------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        return self.courier.held() + self.courier.parked()

    @property
    def accepted(self) -> int:
        return self.accounting.accepted

    def input_name(self) -> str:
        """The name stage 0 gives its (first) input in the current plan, else ``input``."""
        plan = self.courier.plan
        return plan.stages[0].stage.inputs[0] if plan is not None and plan.stages else "input"

    def submit(
        self,
        tensors: np.ndarray[Any, Any] | Sequence[tuple[str, np.ndarray[Any, Any]]],
        *,
        created: float | None = None,
        deadline_s: float | None = None,
    ) -> str | None:
        """Publish one input as a job; its id, or None if skipped (too many in flight)."""
        if isinstance(tensors, np.ndarray):
            named: Tensors = ((self.input_name(), tensors),)
        else:
            named = tuple(tensors)
        with self._lock:
            if self.in_flight >= self.options.max_in_flight:
                self.skipped += 1
                return None
            self._seq += 1
            seq = self._seq
        now = time.time()
        created = now if created is None else created
        budget = deadline_s or self.options.deadline_s or self.config.deadline_s
        job = f"{self.sensor}-{seq:06d}-{secrets.token_hex(4)}"
        header = Header(
            job=job,
            sensor=self.sensor,
            seq=seq,
            created=created,
            deadline=created + budget,
            epoch=0,
            stage=0,
            attempt=0,
            sender=self.device,
        )
        self.accounting.count("accepted")
        reason = self.courier.forward(header, named)
        if reason is not None:
            log.info("job %s dropped at once: %s", job, reason)
        return job

    # --- network handlers (quick) ---------------------------------------------------------------
    def _on_plan(self, msg: Received) -> None:
        try:
            plan = decode(Plan, msg.payload)
        except DecodeError as exc:
            self._reject(msg, exc)
            return
        self.courier.set_plan(plan)
        self._plan_seen.set()

    def _on_status(self, msg: Received) -> None:
        try:
            status = decode(DeviceStatus, msg.payload)
        except DecodeError as exc:
            self._reject(msg, exc)
            return
        if status.device != self.device:
            self.courier.set_online(status.device, status.state == "online")

    def _on_ack(self, msg: Received) -> None:
        try:
            ack = decode_ack(msg.payload)
        except DecodeError as exc:
            self._reject(msg, exc)
            return
        if self.courier.on_ack(ack):
            self.accounting.count("completed")
        else:
            self.accounting.count("duplicates")

    def _reject(self, msg: Received, exc: Exception) -> None:
        self.errors += 1
        self.accounting.count("errors")
        log.warning("%s: rejected message on %s: %s", self.device, msg.topic, exc)

    # --- timer ----------------------------------------------------------------------------------
    def _tick_loop(self) -> None:
        next_metrics = time.monotonic() + self.options.metrics_s
        while not self._stop.wait(self.options.tick_s):
            try:
                self.courier.check()
                if time.monotonic() >= next_metrics:
                    next_metrics = time.monotonic() + self.options.metrics_s
                    self.publish_metrics()
            except EdgeAppError as exc:
                log.warning("%s: timer: %s", self.device, exc)

    def metrics(self) -> Metrics:
        return self.accounting.metrics()

    def publish_metrics(self) -> None:
        try:
            payload = encode(self.accounting.metrics())
            self.transport.publish(self.topics.metrics(self.device), payload, qos=0)
        except EdgeAppError as exc:
            log.debug("metrics not published: %s", exc)
