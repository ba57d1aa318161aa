"""A private fleet for benchmarks: the scheduler in this process, workers as separate processes
(``edge-app worker``, killable with -9), a job publisher and an outcome sink, on a broker the
caller provides (e.g. :func:`edge_app.bench.codec.private_broker`).

Workers are started through :class:`edge_app.roles.supervisor.ChildSet` (own session, a log file
each, SIGTERM if this process dies), so a crashed benchmark leaves no orphans behind.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_app.config import BrokerConfig, FleetConfig
from edge_app.errors import EdgeAppError, TransportError
from edge_app.inference.catalog import resolve_model
from edge_app.messages.schemas import Heartbeat, JobOutcome, Plan, StagePlan, decode
from edge_app.pipeline.jobs import JobPublisher, PublisherOptions
from edge_app.pipeline.stages import seats_for
from edge_app.roles.scheduler import Scheduler, SchedulerOptions
from edge_app.roles.sink import OutcomeSink
from edge_app.roles.supervisor import Child, ChildSet
from edge_app.scheduling.planner import PlanPolicy
from edge_app.scheduling.profile import profile_from_model
from edge_app.transport.base import Received
from edge_app.transport.mqtt import MqttTransport

log = logging.getLogger(__name__)

ARRIVALS_LIMIT = 100_000


@dataclass(frozen=True)
class Arrival:
    """An outcome and the time (``time.time()``) the sink received it."""

    ts: float
    outcome: JobOutcome


def seated_devices(sp: StagePlan) -> list[str]:
    return [r.device for r in sp.replicas] + [s.device for s in sp.shards]


def plan_loaded(plan: Plan, beats: Mapping[str, Heartbeat]) -> bool:
    """Every device seated in ``plan`` obeys its epoch and has loaded its seats (heartbeats)."""
    for device in {d for sp in plan.stages for d in seated_devices(sp)}:
        hb = beats.get(device)
        if hb is None or hb.epoch != plan.epoch:
            return False
        loaded = {(s.stage, s.shard) for s in hb.stages}
        if not {s.key for s in seats_for(plan, device)} <= loaded:
            return False
    return True


def plan_summary(plan: Plan) -> str:
    """One line per stage: replicas with weights, or shards with their row bounds."""
    parts = []
    for sp in plan.stages:
        if sp.mode == "sharded":
            seats = ", ".join(f"{s.device}[{s.lo}:{s.hi}]" for s in sp.shards)
        else:
            seats = ", ".join(f"{r.device}x{r.weight:.2f}" for r in sp.replicas)
        parts.append(f"stage {sp.stage.index} {sp.mode}: {seats}")
    return "; ".join(parts)


class BenchFleet:
    """Scheduler + worker processes + publisher + sink for one fleet name on one broker."""

    def __init__(
        self,
        broker: BrokerConfig,
        fleet: str,
        model: str,
        workdir: Path,
        *,
        threads: int = 1,
        shards: Mapping[int, int] | None = None,
        deadline_s: float = 60.0,
        max_in_flight: int = 16,
    ) -> None:
        self.config = FleetConfig(fleet=fleet, broker=broker)
        self.topics = self.config.topics
        self.model = model
        self.card, self.model_path = resolve_model(model)
        self.threads = threads
        self.shards = dict(shards or {})
        self.children = ChildSet(workdir)
        self.workers: dict[str, Child] = {}
        self.scheduler: Scheduler | None = None
        self._lock = threading.Lock()
        self.plan: Plan | None = None
        self.plan_log: deque[tuple[float, int]] = deque(maxlen=1024)  # (arrival, epoch)
        self.beats: dict[str, Heartbeat] = {}
        self.arrivals: deque[Arrival] = deque(maxlen=ARRIVALS_LIMIT)
        tag = f"{fleet}-{time.monotonic_ns() % 10**9}"
        self.obs = MqttTransport(broker, client_id=f"bench-obs-{tag}")
        self.obs.subscribe(self.topics.plan, self._on_plan)
        self.obs.subscribe(self.topics.all("heartbeat"), self._on_beat)
        self.io = MqttTransport(broker, client_id=f"bench-src-{tag}")
        options = PublisherOptions(
            max_in_flight=max_in_flight, window=max_in_flight, deadline_s=deadline_s
        )
        self.jobs = JobPublisher(self.io, self.config, "bench", device="bench-src", options=options)
        self.sink = OutcomeSink(
            self.io, self.topics, "bench", capacity=ARRIVALS_LIMIT, on_outcome=self._on_outcome
        )

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self.obs.start()
        self.jobs.attach()
        self.sink.attach()
        self.io.start()
        self.jobs.start()
        profile = profile_from_model(self.model_path.read_bytes(), self.card.name)
        options = SchedulerOptions(policy=PlanPolicy(shards=self.shards))
        self.scheduler = Scheduler(
            self.config, profile, f"sched-{self.config.fleet}", options=options
        )
        self.scheduler.start()

    def close(self) -> None:
        steps: list[Callable[[], None]] = [
            lambda: self.jobs.stop(drain_s=0.5),
            self.scheduler.stop if self.scheduler else lambda: None,
            self.children.stop_all,
            self.io.stop,
            self.obs.stop,
        ]
        for step in steps:
            try:
                step()
            except EdgeAppError as exc:  # keep closing the rest
                log.warning("closing fleet %s: %s", self.config.fleet, exc)

    def __enter__(self) -> BenchFleet:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- workers --------------------------------------------------------------------------------
    def spawn(self, device: str) -> None:
        b = self.config.broker
        argv = [sys.executable, "-m", "edge_app.cli", "worker", "--device", device,
                "--model", self.model, "--threads", str(self.threads),
                "--broker", b.url, "--fleet", self.config.fleet]  # fmt: skip
        self.workers[device] = self.children.start(Child("worker", device, argv))

    def kill(self, device: str) -> float:
        """kill -9 the worker; the time right after it is gone."""
        proc = self.workers[device].proc
        assert proc is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        self.workers[device].reported = True  # an intended death, not a crash
        return time.time()

    def worker_cpu_s(self) -> float:
        """User + system CPU seconds of this fleet's live worker processes (Linux /proc)."""
        total = 0.0
        tick = os.sysconf("SC_CLK_TCK")
        for child in self.workers.values():
            if child.proc is None or child.proc.poll() is not None:
                continue
            try:
                stat = Path(f"/proc/{child.proc.pid}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        return total

    # --- observation ----------------------------------------------------------------------------
    def _on_plan(self, msg: Received) -> None:
        try:
            plan = decode(Plan, msg.payload)
        except EdgeAppError:
            return
        with self._lock:
            self.plan = plan
            self.plan_log.append((time.time(), plan.epoch))

    def _on_beat(self, msg: Received) -> None:
        try:
            hb = decode(Heartbeat, msg.payload)
        except EdgeAppError:
            return
        with self._lock:
            self.beats[hb.device] = hb

    def _on_outcome(self, outcome: JobOutcome) -> None:
        self.arrivals.append(Arrival(time.time(), outcome))

    def ready(self, want: Callable[[Plan], bool]) -> Plan | None:
        """The newest plan if it satisfies ``want`` and every seat is loaded (heartbeats)."""
        with self._lock:
            plan, beats = self.plan, dict(self.beats)
        if plan is None or not want(plan) or not plan_loaded(plan, beats):
            return None
        return plan

    def wait_ready(self, want: Callable[[Plan], bool], timeout: float) -> Plan:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            plan = self.ready(want)
            if plan is not None:
                return plan
            for crash in self.children.crashes():
                raise TransportError(f"{crash.child.name} exited: {crash.child.tail(5)}")
            time.sleep(0.05)
        raise TransportError(
            f"fleet {self.config.fleet} not ready in {timeout:.0f} s: plan "
            f"{plan_summary(self.plan) if self.plan else None}"
        )

    # --- jobs -----------------------------------------------------------------------------------
    def submit(self, x: np.ndarray[Any, Any], timeout: float = 30.0) -> str:
        """Submit one input, waiting while the publisher is full."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            job = self.jobs.submit(x)
            if job is not None:
                return job
            time.sleep(0.001)
        raise TransportError("the job publisher never had room")

    def first_plan_after(self, ts: float) -> float | None:
        """Arrival time of the first plan that came after ``ts`` (None if none)."""
        with self._lock:
            return next((at for at, _ in self.plan_log if at >= ts), None)

    def outcomes_since(self, index: int) -> list[Arrival]:
        return list(self.arrivals)[index:]


def spread_over(n_devices: int, shards: Mapping[int, int]) -> Callable[[Plan], bool]:
    """A plan condition: ``n_devices`` seated, each forced stage sharded ``k`` ways."""

    def want(plan: Plan) -> bool:
        seated = {d for sp in plan.stages for d in seated_devices(sp)}
        for stage, k in shards.items():
            if k > 1:
                sp = plan.stages[stage]
                if sp.mode != "sharded" or len(sp.shards) != k:
                    return False
        return len(seated) == n_devices

    return want
