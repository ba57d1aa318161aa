"""A real fleet for the pipeline's integration tests: Mosquitto, the scheduler, worker
processes (killable with -9), a job publisher and an outcome sink, and the whole model run
in-process as the reference every result is compared with."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge_app.bench.fleet_runner import plan_loaded, seated_devices
from edge_app.config import FleetConfig
from edge_app.inference.catalog import resolve_model
from edge_app.inference.compare import compare_outputs
from edge_app.inference.interpreter import Runner
from edge_app.messages.schemas import ErrorReport, Heartbeat, JobOutcome, Plan, decode
from edge_app.pipeline.jobs import JobPublisher, PublisherOptions
from edge_app.roles.scheduler import Scheduler, SchedulerOptions
from edge_app.roles.sink import OutcomeSink
from edge_app.scheduling.planner import PlanPolicy
from edge_app.scheduling.profile import profile_from_model
from edge_app.transport.base import Received
from edge_app.transport.mqtt import MqttTransport

REPO = Path(__file__).resolve().parents[3]


class Fleet:
    def __init__(
        self,
        broker: Any,
        workdir: Path,
        model: str = "shapes",
        shards: dict[int, int] | None = None,
        deadline_s: float = 60.0,
    ) -> None:
        self.broker = broker
        self.workdir = workdir
        self.config: FleetConfig = broker.fleet("test")
        self.topics = self.config.topics
        self.card, self.model_path = resolve_model(str(REPO / "models" / model))
        self.reference = Runner(self.model_path)
        self.shards = shards or {}
        self.extra_args: list[str] = []
        self.model_arg = str(self.model_path.parent)  # what `worker --model` gets
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.lock = threading.Lock()
        self.plan: Plan | None = None
        self.plans: list[Plan] = []
        self.beats: dict[str, Heartbeat] = {}
        self.errors: list[ErrorReport] = []
        self.online_at: dict[str, float] = {}
        self.scheduler: Scheduler | None = None
        self.obs = MqttTransport(self.config.broker, client_id="test-observer")
        self.obs.subscribe(self.topics.plan, self._on_plan)
        self.obs.subscribe(self.topics.all("heartbeat"), self._on_beat)
        self.obs.subscribe(self.topics.all("error"), self._on_error)
        self.obs.start()
        # one filter has one handler per transport: the publisher gets its own connection
        self.io = MqttTransport(self.config.broker, client_id="test-source")
        self.jobs = JobPublisher(self.io, self.config, "cam1", device="cam1",
                                 options=PublisherOptions(max_in_flight=16, window=8,
                                                          deadline_s=deadline_s))  # fmt: skip
        self.jobs.attach()
        self.jobs.start()
        self.sink = OutcomeSink(self.io, self.topics, "cam1", capacity=100_000)
        self.sink.attach()
        self.io.start()
        self.inputs: dict[str, np.ndarray] = {}

    # --- observation ----------------------------------------------------------------------------
    def _on_plan(self, msg: Received) -> None:
        plan = decode(Plan, msg.payload)
        with self.lock:
            self.plan = plan
            self.plans.append(plan)

    def _on_beat(self, msg: Received) -> None:
        hb = decode(Heartbeat, msg.payload)
        with self.lock:
            self.online_at.setdefault(hb.device, time.time())
            self.beats[hb.device] = hb

    def _on_error(self, msg: Received) -> None:
        with self.lock:
            self.errors.append(decode(ErrorReport, msg.payload))

    # --- processes ------------------------------------------------------------------------------
    def start_scheduler(self) -> None:
        profile = profile_from_model(self.model_path.read_bytes(), self.card.name)
        options = SchedulerOptions(policy=PlanPolicy(shards=self.shards))
        self.scheduler = Scheduler(self.config, profile, "sched", options=options)
        self.scheduler.start()

    def spawn(self, device: str) -> None:
        log = (self.workdir / f"{device}.log").open("wb")
        verbosity = os.environ.get("EDGE_TEST_LOG", "-v")  # -vv: debug logs of every hop
        cmd = [sys.executable, "-m", "edge_app.cli", verbosity, "worker", "--device", device,
               "--model", self.model_arg, "--broker", self.broker.url,
               "--fleet", "test", *self.extra_args]  # fmt: skip
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.workers[device] = subprocess.Popen(cmd, stdout=log, stderr=log, cwd=REPO, env=env)

    def kill(self, device: str) -> float:
        self.workers[device].send_signal(signal.SIGKILL)
        self.workers[device].wait(5)
        return time.time()

    def alive(self, device: str) -> bool:
        return self.workers[device].poll() is None

    def log(self, device: str) -> str:
        return (self.workdir / f"{device}.log").read_text(errors="replace")[-4000:]

    def grep(self, needle: str) -> list[str]:
        """Lines of the worker logs that mention ``needle`` (for failure messages)."""
        out = []
        for device in self.workers:
            text = (self.workdir / f"{device}.log").read_text(errors="replace")
            out += [f"{device}: {line}" for line in text.splitlines() if needle in line]
        return out

    def close(self) -> None:
        self.jobs.stop(drain_s=0.5)
        if self.scheduler is not None:
            self.scheduler.stop()
        for proc in self.workers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.workers.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.io.stop()
        self.obs.stop()

    # --- waiting --------------------------------------------------------------------------------
    def ready(self, want: Callable[[Plan], bool]) -> bool:
        """A plan satisfying ``want`` whose every seat is loaded (per the heartbeats)."""
        with self.lock:
            plan, beats = self.plan, dict(self.beats)
        return plan is not None and want(plan) and plan_loaded(plan, beats)

    def wait_ready(self, want: Callable[[Plan], bool], timeout: float = 30.0) -> Plan:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.ready(want):
                assert self.plan is not None
                return self.plan
            time.sleep(0.05)
        logs = {d: self.log(d)[-1500:] for d in self.workers}
        raise AssertionError(f"fleet not ready: plan {self.plan}, beats {self.beats}, {logs}")

    # --- jobs -----------------------------------------------------------------------------------
    def submit(self, x: np.ndarray, timeout: float = 30.0) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            job = self.jobs.submit(x)
            if job is not None:
                self.inputs[job] = x
                return job
            time.sleep(0.002)
        raise AssertionError("the publisher never had room")

    def check(self, outcomes: dict[str, JobOutcome]) -> None:
        """Every outcome ok and equal to the whole model's output for its input."""
        for job, out in outcomes.items():
            assert out.status == "ok", out
            assert out.output is not None
            ref = next(iter(self.reference.run(self.inputs[job]).values())).reshape(-1)
            cmp = compare_outputs(ref, np.asarray(out.output, dtype=ref.dtype))
            assert cmp.ok, f"job {job}: {cmp}"


devices_of = seated_devices


def images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32) for _ in range(n)]


def throughput_recovery_s(
    outcomes: list[JobOutcome], kill_ts: float, rate: float, window_s: float = 1.0
) -> float:
    """From the kill until results flow again at >= 90% of the input rate (over ``window_s``).

    The first window start t >= kill (in 50 ms steps) with at least 0.9 x rate x window_s
    results done in [t, t + window_s): the pipeline is back to steady throughput at t.
    """
    done = sorted(o.done_ts for o in outcomes if o.status == "ok")
    need = 0.9 * rate * window_s
    t = kill_ts
    while t < done[-1]:
        n = sum(1 for d in done if t <= d < t + window_s)
        if n >= need:
            return t - kill_ts
        t += 0.05
    return float("inf")


def recovery_s(outcomes: list[JobOutcome], kill_ts: float) -> float:
    """From the kill until the last job with an abnormal latency completed (0 if none).

    Normal: at most twice the 95th percentile latency of the jobs done before the kill, plus
    50 ms. Jobs in flight at the kill (re-sent) and those delayed by the re-seating are late.
    """
    before = sorted(o.latency_s for o in outcomes if o.done_ts < kill_ts)
    normal = 2 * before[int(0.95 * (len(before) - 1))] + 0.05
    late = [o.done_ts for o in outcomes if o.done_ts >= kill_ts and o.latency_s > normal]
    return max(late, default=kill_ts) - kill_ts
