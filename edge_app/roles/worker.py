"""The worker role: heartbeats, the plan's seats, and the data path of the custody protocol.

Threads: the transport's network thread only decodes, validates and queues (it never computes);
one compute thread drains the bounded job queue through the :class:`Engine`; a loader thread cuts
and loads the seats of each new plan; a control thread sends heartbeats and metrics and re-sends
or drops what the courier holds (receiver offline, unseated, ack timeout, deadline).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_app.config import FleetConfig
from edge_app.errors import DecodeError, EdgeAppError
from edge_app.messages.codec import Ack, decode_ack
from edge_app.messages.schemas import (
    DeviceState,
    DeviceStatus,
    Hardware,
    Plan,
    decode,
    encode,
    status_payload,
)
from edge_app.pipeline.accounting import Accounting, ErrorReporter
from edge_app.pipeline.courier import Courier, CourierConfig
from edge_app.pipeline.engine import ComputeHook, Engine, WorkQueue, error_kind
from edge_app.pipeline.health import HeartbeatBuilder, hardware
from edge_app.pipeline.intake import Intake
from edge_app.pipeline.merge import MergeBuffer
from edge_app.pipeline.stages import Loader, StageCache, TfliteLoader
from edge_app.transport.base import Received, Transport

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerOptions:
    window: int = 4  # in-flight envelopes per receiver
    ack_timeout_s: float = 10.0  # the longest wait for an ack (before any was measured)
    min_ack_timeout_s: float = 3.0  # the adaptive ack timeout's floor
    metrics_s: float = 5.0
    merge_timeout_s: float = 10.0
    merge_capacity: int = 64
    tick_s: float = 0.05
    drain_s: float = 2.0
    output_limit: int = 1024  # results carry the whole output vector up to this size
    emulate: str | None = None  # device profile name (issue 7 fills the emulation in)
    speed: float = 1.0  # heartbeat speed (an emulated device reports its profile's)
    hardware: Callable[[], Hardware] | None = None  # heartbeat hardware (emulation overrides)
    max_error_reports_per_s: int = 50


class Worker:
    def __init__(
        self,
        config: FleetConfig,
        device_id: str,
        model_path: Path | str,
        threads: int = 1,
        queue_limit: int = 64,
        *,
        transport: Transport | None = None,
        loader: Loader | None = None,
        model_sha256: str | None = None,
        model_name: str = "",
        labels: Sequence[str] = (),
        options: WorkerOptions = WorkerOptions(),
        compute_hook: ComputeHook | None = None,
    ) -> None:
        self.config = config
        self.device = device_id
        self.topics = config.topics
        self.options = options
        if loader is None:
            tfl = TfliteLoader(Path(model_path), threads)
            loader, model_sha256 = tfl, tfl.sha256
        self.model_sha256 = model_sha256
        self.queue_limit = queue_limit
        if transport is None:
            from edge_app.transport.mqtt import MqttTransport

            transport = MqttTransport(config.broker, client_id=f"edge-worker-{device_id}")
        self.transport = transport
        self.accounting = Accounting(device_id, "worker")
        error_topic = self.topics.error(device_id)
        self.report = ErrorReporter(
            lambda payload: transport.publish(error_topic, payload),
            device_id,
            self.accounting,
            options.max_error_reports_per_s,
        )
        self._build(model_name or Path(model_path).stem, loader, labels, compute_hook)
        self._fanouts: set[int] = set()
        self._plan_changed = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _build(
        self, name: str, loader: Loader, labels: Sequence[str], compute_hook: ComputeHook | None
    ) -> None:
        """The data path's parts: courier, stage cache, merge buffer, queue, engine, intake."""
        options, device_id, transport = self.options, self.device, self.transport
        cc = CourierConfig(
            window=options.window,
            ack_timeout_s=options.ack_timeout_s,
            min_ack_timeout_s=options.min_ack_timeout_s,
        )
        self.courier = Courier(
            transport, self.topics, device_id, self.accounting, config=cc, model_name=name
        )
        self.cache = StageCache(loader)
        self.merges = MergeBuffer(options.merge_capacity, options.merge_timeout_s)
        self.queue = WorkQueue(self.queue_limit, options.merge_capacity)
        self.engine = Engine(
            device_id,
            self.courier,
            self.cache,
            self.accounting,
            report=self.report,
            plan=self.current_plan,
            labels=labels,
            model_name=name,
            output_limit=options.output_limit,
            compute_hook=compute_hook,
        )
        self._beats = HeartbeatBuilder(
            device_id,
            self.config.heartbeat_s,
            self.queue_limit,
            options.hardware or (lambda: hardware(options.emulate)),
            options.speed,
        )
        self.intake = Intake(
            device_id,
            report=self.report,
            accounting=self.accounting,
            courier=self.courier,
            merges=self.merges,
            queue=self.queue,
        )

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        t = self.transport
        t.set_will(self.topics.status(self.device), self._status("offline"), retain=True)
        t.on_connect(self._online)
        t.subscribe(self.topics.plan, self._on_plan)
        t.subscribe(self.topics.all("status"), self._on_status)
        t.subscribe(self.topics.task(self.device), self.intake.on_task)
        t.subscribe(self.topics.ack(self.device), self._on_ack)
        t.start()
        self._online()
        for name, target in (
            ("compute", self._compute_loop),
            ("loader", self._loader_loop),
            ("control", self._control_loop),
        ):
            thread = threading.Thread(target=target, name=f"{self.device}-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("worker %s started", self.device)

    def run(self) -> None:
        """Start and block until :meth:`stop` (e.g. from a signal handler)."""
        self.start()
        while not self._stop.wait(0.5):
            pass

    def stop(self) -> None:
        """Stop taking work, finish what is queued and held (bounded), go offline cleanly."""
        if self._stop.is_set():
            return
        self.transport.unsubscribe(self.topics.task(self.device))
        for stage in list(self._fanouts):
            self.transport.unsubscribe(self.topics.fanout(stage))
        end = time.monotonic() + self.options.drain_s
        while len(self.queue) and time.monotonic() < end:
            time.sleep(0.02)
        self.courier.drain(max(0.0, end - time.monotonic()))
        self._stop.set()
        self.courier.close()
        for thread in self._threads:
            thread.join(timeout=5.0)
        self._publish_metrics()
        self.transport.publish(
            self.topics.status(self.device), self._status("offline"), retain=True
        )
        self.transport.stop()
        log.info("worker %s stopped", self.device)

    def current_plan(self) -> Plan | None:
        return self.intake.plan

    # --- reporting ------------------------------------------------------------------------------
    def _status(self, state: DeviceState) -> bytes:
        return status_payload(self.device, "worker", state)

    def _online(self) -> None:
        self.transport.publish(self.topics.status(self.device), self._status("online"), retain=True)

    # --- handlers (network thread: quick) -----------------------------------------------------
    def _on_plan(self, msg: Received) -> None:
        try:
            plan = decode(Plan, msg.payload)
        except DecodeError as exc:
            self.report(msg.topic, "decode", str(exc))
            return
        current = self.intake.plan
        if current is not None and plan.epoch <= current.epoch:
            if plan.epoch < current.epoch:
                self.report(msg.topic, "stale", f"plan epoch {plan.epoch} < {current.epoch}")
            return
        if self.model_sha256 and plan.model.sha256 != self.model_sha256:
            self.report(
                msg.topic,
                "validation",
                f"plan epoch {plan.epoch} is for model "
                f"{plan.model.name} {plan.model.sha256[:12]}, this device holds "
                f"{self.model_sha256[:12]}: seats ignored",
            )
            return
        self.intake.set_plan(plan)  # seats first: the courier's re-sends may come back to us
        self.cache.sync(self.intake.seats)  # quick: new seats are "loading" (jobs wait for them)
        self.courier.set_plan(plan)
        self._plan_changed.set()
        self.intake.replay_early()
        log.info(
            "%s: plan epoch %d, seats %s",
            self.device,
            plan.epoch,
            [s.key for s in self.intake.seats],
        )

    def _on_status(self, msg: Received) -> None:
        try:
            status = decode(DeviceStatus, msg.payload)
        except DecodeError as exc:
            self.report(msg.topic, "decode", str(exc))
            return
        if status.device != self.device:
            self.courier.set_online(status.device, status.state == "online")

    def _on_ack(self, msg: Received) -> None:
        try:
            ack = decode_ack(msg.payload)
        except DecodeError as exc:
            self.report(msg.topic, error_kind(exc), str(exc))
            return
        if self.courier.on_ack(ack):
            self.accounting.count("completed")
        elif not self._fanout_ack(ack):  # every shard holder acks a fan-out: one releases it
            self.accounting.count("duplicates")

    def _fanout_ack(self, ack: Ack) -> bool:
        plan = self.current_plan()
        if plan is None or ack.shard is not None or ack.stage >= len(plan.stages):
            return False
        return plan.stages[ack.stage].mode == "sharded"

    # --- threads --------------------------------------------------------------------------------
    def _compute_loop(self) -> None:
        while not self._stop.is_set():
            work = self.queue.take(timeout=0.2)
            if work is not None:
                self.engine.process(work)

    def _loader_loop(self) -> None:
        while not self._stop.is_set():
            if not self._plan_changed.wait(timeout=0.2):
                continue
            self._plan_changed.clear()
            plan = self.current_plan()
            if plan is not None:  # every sharded stage: a device seated later is listening already
                self._sync_fanouts({sp.stage.index for sp in plan.stages if sp.mode == "sharded"})
            for slot in self.cache.slots():  # the plan handler marked them "loading"
                if self._plan_changed.is_set() or self._stop.is_set():
                    break  # a newer plan came: its seats first
                if slot.state == "loading":
                    self.cache.load(slot.seat)
            release = getattr(self.cache.loader, "release", None)
            if callable(release):  # the parsed model file is not kept between plans
                release()
            self._heartbeat()

    def _sync_fanouts(self, wanted: set[int]) -> None:
        for stage in sorted(wanted - self._fanouts):
            self.transport.subscribe(self.topics.fanout(stage), self.intake.on_fanout)
        for stage in sorted(self._fanouts - wanted):
            self.transport.unsubscribe(self.topics.fanout(stage))
        self._fanouts = set(wanted)

    def _control_loop(self) -> None:
        next_hb = next_metrics = 0.0
        while not self._stop.wait(self.options.tick_s):
            try:
                self.courier.check()
                for merge in self.merges.expire():
                    log.info(
                        "%s: merge of %s timed out with shards %s",
                        self.device,
                        merge.key[0],
                        sorted(merge.slots),
                    )
                now = time.monotonic()
                if now >= next_hb:
                    next_hb = now + self.config.heartbeat_s
                    self._heartbeat()
                if now >= next_metrics:
                    next_metrics = now + self.options.metrics_s
                    self._publish_metrics()
            except EdgeAppError as exc:
                log.warning("%s: control loop: %s", self.device, exc)

    def _heartbeat(self) -> None:
        plan = self.current_plan()
        hb = self._beats.build(
            busy_s=self.engine.busy_s,
            queue_depth=len(self.queue),
            epoch=plan.epoch if plan else 0,
            slots=self.cache.slots(),
        )
        self.transport.publish(self.topics.heartbeat(self.device), encode(hb), qos=0)

    def _publish_metrics(self) -> None:
        payload = encode(self.accounting.metrics())
        self.transport.publish(self.topics.metrics(self.device), payload, qos=0)
