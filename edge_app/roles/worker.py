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
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_app.config import FleetConfig
from edge_app.errors import DecodeError, EdgeAppError
from edge_app.messages.codec import Ack, Envelope, decode_ack, decode_envelope
from edge_app.messages.schemas import (
    DeviceStatus,
    ErrorReport,
    Hardware,
    Heartbeat,
    Plan,
    StageLoad,
    decode,
    encode,
)
from edge_app.pipeline.accounting import Accounting
from edge_app.pipeline.courier import Courier, CourierConfig
from edge_app.pipeline.custody import UpstreamAck
from edge_app.pipeline.dedup import Dedup
from edge_app.pipeline.engine import ComputeHook, Engine, ErrorKind, Work, WorkQueue, error_kind
from edge_app.pipeline.health import LoadMeter, hardware, versions
from edge_app.pipeline.merge import MergeBuffer, Partial, check_partial
from edge_app.pipeline.stages import Loader, Seat, StageCache, TfliteLoader, seats_for
from edge_app.transport.base import Received, Transport

log = logging.getLogger(__name__)

STALE_EPOCH_LAG = 8
"""Envelopes more than this many plan epochs old are rejected as stale (not acked)."""


@dataclass(frozen=True)
class WorkerOptions:
    window: int = 4  # in-flight envelopes per receiver
    ack_timeout_s: float = 10.0
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
        name = model_name or Path(model_path).stem
        cc = CourierConfig(window=options.window, ack_timeout_s=options.ack_timeout_s)
        self.courier = Courier(
            transport, self.topics, device_id, self.accounting, config=cc, model_name=name
        )
        self.cache = StageCache(loader)
        self.merges = MergeBuffer(options.merge_capacity, options.merge_timeout_s)
        self.dedup = Dedup()
        self.queue = WorkQueue(queue_limit, options.merge_capacity)
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
        self._lock = threading.Lock()
        self._plan: Plan | None = None
        self._seats: list[Seat] = []
        self._fanouts: set[int] = set()
        self._early: deque[tuple[str, Envelope]] = deque(maxlen=256)  # fan-outs of a newer plan
        self._plan_changed = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._meter = LoadMeter()
        self._busy_seen = 0.0
        self._hb_seq = 0
        self._errors_window = (0.0, 0)
        self._versions = versions()

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        t = self.transport
        t.set_will(self.topics.status(self.device), self._status("offline"), retain=True)
        t.on_connect(self._online)
        t.subscribe(self.topics.plan, self._on_plan)
        t.subscribe(self.topics.all("status"), self._on_status)
        t.subscribe(self.topics.task(self.device), self._on_task)
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
        with self._lock:
            return self._plan

    # --- reporting ------------------------------------------------------------------------------
    def _status(self, state: str) -> bytes:
        return encode(
            DeviceStatus(
                device=self.device,
                role="worker",
                state=state,  # type: ignore[arg-type]
                ts=time.time(),
                version=self._versions.get("edge-app", ""),
            )
        )

    def _online(self) -> None:
        self.transport.publish(self.topics.status(self.device), self._status("online"), retain=True)

    def report(self, topic: str, kind: ErrorKind, detail: str) -> None:
        """A rejected message: a log line, a counter, and an ErrorReport (rate-limited)."""
        self.accounting.count("errors")
        log.warning("%s: rejected message on %s (%s): %s", self.device, topic, kind, detail)
        second, n = self._errors_window
        now = time.monotonic()
        if now - second >= 1.0:
            second, n = now, 0
        self._errors_window = (second, n + 1)
        if n >= self.options.max_error_reports_per_s:
            return
        msg = ErrorReport(
            device=self.device, ts=time.time(), topic=topic[:256], kind=kind, detail=detail[:2048]
        )
        self.transport.publish(self.topics.error(self.device), encode(msg))

    # --- handlers (network thread: quick) -----------------------------------------------------
    def _on_plan(self, msg: Received) -> None:
        try:
            plan = decode(Plan, msg.payload)
        except DecodeError as exc:
            self.report(msg.topic, "decode", str(exc))
            return
        with self._lock:
            current = self._plan
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
        with self._lock:
            self._plan = plan
            self._seats = seats_for(plan, self.device)
        self.courier.set_plan(plan)
        self._plan_changed.set()
        with self._lock:
            early = [e for e in self._early if e[1].header.epoch <= plan.epoch]
            for item in early:
                self._early.remove(item)
        for topic, env in early:
            self._take_fanout(topic, env, early_ok=False)
        log.info(
            "%s: plan epoch %d, seats %s", self.device, plan.epoch, [s.key for s in self._seats]
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
        if not self.courier.on_ack(ack):
            self.accounting.count("duplicates")

    def _envelope(self, msg: Received) -> Envelope | None:
        try:
            env = decode_envelope(msg.payload)
        except DecodeError as exc:
            self.report(msg.topic, error_kind(exc), str(exc))
            return None
        plan = self.current_plan()
        h = env.header
        if plan is not None and h.epoch + STALE_EPOCH_LAG < plan.epoch:
            self.report(
                msg.topic,
                "stale",
                f"job {h.job}: epoch {h.epoch} is more than "
                f"{STALE_EPOCH_LAG} behind plan epoch {plan.epoch}; not acked",
            )
            return None
        if plan is not None and h.stage >= len(plan.stages) + (h.shard is not None):
            self.report(msg.topic, "validation", f"job {h.job}: no stage {h.stage} in the plan")
            return None
        log.debug(
            "%s: got %s stage %d shard %s attempt %d from %s",
            self.device,
            h.job,
            h.stage,
            h.shard,
            h.attempt,
            h.sender,
        )
        if self.dedup.seen((h.job, h.stage, h.shard, h.attempt, h.sender)):
            self.accounting.count("duplicates")
            return None
        return env

    def _on_task(self, msg: Received) -> None:
        env = self._envelope(msg)
        if env is None:
            return
        h = env.header
        if h.shard is not None:
            self._on_partial(msg, env)
            return
        up = (UpstreamAck(h.sender, Ack(h.job, h.stage, None, h.attempt, self.device)),)
        self._enqueue(Work("task", h, env.tensors, time.time(), msg.topic, upstream=up))

    def _on_partial(self, msg: Received, env: Envelope) -> None:
        h = env.header
        try:
            check_partial(env)
            status, merge = self.merges.add(Partial(env, time.monotonic()))
        except DecodeError as exc:
            self.report(msg.topic, error_kind(exc), f"job {h.job}: {exc}")
            return
        if status == "late":  # merged and passed on already: release the holder now
            self.courier.ack(h.sender, Ack(h.job, h.stage, h.shard, h.attempt, self.device))
        elif status == "complete":
            work = Work("merge", h, (), time.time(), msg.topic, merge=merge)
            if not self.queue.offer(work, force=True):
                log.warning("%s: queue full, merge of %s waits for a re-send", self.device, h.job)

    def _on_fanout(self, msg: Received) -> None:
        env = self._envelope(msg)
        if env is None:
            return
        self._take_fanout(msg.topic, env, early_ok=True)

    def _take_fanout(self, topic: str, env: Envelope, *, early_ok: bool) -> None:
        h = env.header
        if h.layout is None or h.merge_to is None or h.shard is not None:
            self.report(topic, "validation", f"job {h.job}: fan-out without layout/merger")
            return
        with self._lock:
            mine = [s for s in self._seats if s.stage.index == h.stage and s.shard is not None]
            newer = self._plan is not None and h.epoch > self._plan.epoch
            held = any(s.stage.index == h.stage for s in self._seats)
            if not held and not newer:
                return  # a fan-out for other shard holders (we listen to every sharded stage)
            if (not mine or any(s.layout != h.layout for s in mine)) and newer and early_ok:
                self._early.append((topic, env))  # its plan is on the way: wait for it
                return
        if not mine or any(s.layout != h.layout for s in mine):
            self.report(
                topic,
                "stale",
                f"job {h.job}: layout {h.layout} of epoch {h.epoch}"
                f" is not this device's split of stage {h.stage}; not acked",
            )
            return
        for seat in mine:
            self._enqueue(Work("shard", h, env.tensors, time.time(), topic, shard=seat.shard))

    def _enqueue(self, work: Work) -> None:
        if not self.queue.offer(work):
            h = work.header
            shard_ack = UpstreamAck(h.sender, Ack(h.job, h.stage, None, h.attempt, self.device))
            upstream = (shard_ack,) if work.kind == "shard" else work.upstream
            self.courier.drop(h, "backpressure", f"queue of {self.device} full", upstream)

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
            with self._lock:
                seats = list(self._seats)
            plan = self.current_plan()
            if plan is not None:  # every sharded stage: a device seated later is listening already
                self._sync_fanouts({sp.stage.index for sp in plan.stages if sp.mode == "sharded"})
            for seat in self.cache.sync(seats):
                if self._plan_changed.is_set() or self._stop.is_set():
                    break  # a newer plan came: re-sync first
                self.cache.load(seat)
            self._heartbeat()

    def _sync_fanouts(self, wanted: set[int]) -> None:
        for stage in sorted(wanted - self._fanouts):
            self.transport.subscribe(self.topics.fanout(stage), self._on_fanout)
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
        busy = self.engine.busy_s
        self._meter.add(busy - self._busy_seen)
        self._busy_seen = busy
        plan = self.current_plan()
        self._hb_seq += 1
        stages = [
            StageLoad(
                stage=s.seat.stage.index,
                shard=s.seat.shard,
                service_time_s=s.service_s,
                jobs=s.jobs,
            )
            for s in self.cache.slots()
            if s.state == "ready"
        ]
        hb = Heartbeat(
            device=self.device,
            role="worker",
            seq=self._hb_seq,
            ts=time.time(),
            interval_s=self.config.heartbeat_s,
            hardware=(self.options.hardware or (lambda: hardware(self.options.emulate)))(),
            speed=self.options.speed,
            load=self._meter.read(),
            queue_depth=len(self.queue),
            queue_limit=self.queue_limit,
            epoch=plan.epoch if plan else 0,
            stages=stages,
            versions=self._versions,
        )
        self.transport.publish(self.topics.heartbeat(self.device), encode(hb), qos=0)

    def _publish_metrics(self) -> None:
        payload = encode(self.accounting.metrics())
        self.transport.publish(self.topics.metrics(self.device), payload, qos=0)
