"""The scheduler with real workers on a real Mosquitto: planning, a joining and a leaving worker,
and a scheduler killed (-9) and replaced mid-stream without a gap or an epoch going backwards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edge_app.config import FleetConfig
from edge_app.inference.catalog import resolve_model
from edge_app.inference.compare import compare_outputs
from edge_app.inference.interpreter import Runner
from edge_app.messages.schemas import Plan
from edge_app.pipeline.stages import SeatKey
from edge_app.roles.scheduler import Scheduler, SchedulerOptions
from edge_app.roles.worker import Worker
from edge_app.scheduling.planner import PlanPolicy
from edge_app.scheduling.profile import ModelProfile, profile_from_model
from edge_app.transport.mqtt import MqttTransport
from tests.conftest import MosquittoBroker
from tests.integration.scheduling.stream import Stream, seated

pytestmark = pytest.mark.interpreter

CARD, MODEL = resolve_model("shapes")
PROFILE: ModelProfile = profile_from_model(MODEL.read_bytes(), CARD.name)
INPUT = PROFILE.stages[0].stage.inputs[0]


def inputs(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32) for _ in range(n)]


@pytest.fixture
def fleet(mosquitto: MosquittoBroker) -> FleetConfig:
    return mosquitto.fleet("sched", heartbeat_s=0.2)


@pytest.fixture
def stream(fleet: FleetConfig) -> Iterator[Stream]:
    t = MqttTransport(fleet.broker, "src")
    s = Stream(t, fleet.topics, INPUT)
    t.start()
    yield s
    t.stop()


def start_workers(fleet: FleetConfig, *names: str) -> list[Worker]:
    workers = [Worker(fleet, n, MODEL, model_name=CARD.name) for n in names]
    for w in workers:
        w.start()
    return workers


def check_results(stream: Stream, n: int) -> None:
    runner = Runner(MODEL)
    assert len(stream.outcomes) == n
    for job, out in stream.outcomes.items():
        assert out.status == "ok", out
        ref = next(iter(runner.run(stream.inputs[job]).values())).reshape(-1)
        assert out.output is not None
        assert compare_outputs(ref, np.asarray(out.output, np.float32)).ok


def scheduler_process(fleet: FleetConfig, name: str, *extra: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "edge_app.cli", "scheduler", "--model", str(MODEL),
           "--broker", fleet.broker.url, "--fleet", fleet.fleet, "--id", name, *extra]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            cwd=Path(__file__).resolve().parents[3])  # fmt: skip


@pytest.mark.slow
def test_scheduler_killed_mid_stream_is_replaced_without_a_gap(
    fleet: FleetConfig, stream: Stream
) -> None:
    workers = start_workers(fleet, "w1", "w2", "w3")
    first = scheduler_process(fleet, "sched-a", "--shards", "1=2")
    second: subprocess.Popen[bytes] | None = None
    try:
        plan = stream.wait_plan(lambda p: seated(p) == {"w1", "w2", "w3"}, timeout=20)
        assert plan.scheduler == "sched-a" and plan.stages[1].mode == "sharded"
        xs = inputs(120)
        for seq, x in enumerate(xs[:60]):
            stream.send(seq, x)
            stream.pump(0.01)
        first.send_signal(signal.SIGKILL)  # mid-stream
        first.wait(timeout=10)
        for seq, x in enumerate(xs[60:90], start=60):  # the fleet runs on the retained plan
            stream.send(seq, x)
            stream.pump(0.01)
        second = scheduler_process(fleet, "sched-b", "--shards", "1=2")
        for seq, x in enumerate(xs[90:], start=90):
            stream.send(seq, x)
            stream.pump(0.03)
        assert stream.wait(120, timeout=60), f"{len(stream.outcomes)} of 120"
        check_results(stream, 120)
        # sched-b took over: a worker joins and sched-b seats it with the next epoch
        workers += start_workers(fleet, "w4")
        joined = stream.wait_plan(lambda p: "w4" in seated(p), timeout=10)
        assert joined.scheduler == "sched-b" and joined.epoch > plan.epoch
        epochs = [p.epoch for p in stream.plans]
        assert epochs == sorted(epochs) and len(set(epochs)) == len(epochs), epochs
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=10)
        for w in workers:
            w.stop()
    assert second is not None and second.returncode == 0, (
        second.stderr.read() if second and second.stderr else ""
    )


def test_a_joining_worker_gets_work_and_a_leaving_one_is_unseated(
    fleet: FleetConfig, stream: Stream
) -> None:
    workers = start_workers(fleet, "w1", "w2")
    sched = Scheduler(fleet, PROFILE, "sched", options=SchedulerOptions(policy=PlanPolicy()))
    sched.start()
    try:
        stream.wait_plan(lambda p: seated(p) == {"w1", "w2"}, timeout=10)
        joiner = start_workers(fleet, "w3")[0]
        workers.append(joiner)
        t0 = time.monotonic()
        stream.wait_plan(lambda p: "w3" in seated(p), timeout=5)
        assert time.monotonic() - t0 < 3.0  # seated within 3 s of joining
        xs = inputs(40)
        for seq, x in enumerate(xs):
            stream.send(seq, x)
            stream.pump(0.02)
        assert stream.wait(40, timeout=30)
        worked = {s.device for o in stream.outcomes.values() for s in o.stages}
        assert "w3" in worked
        check_results(stream, 40)
        leaving = workers.pop(0)
        leaving.stop()
        t1 = time.monotonic()
        after = stream.wait_plan(lambda p: "w1" not in seated(p), timeout=5)
        assert time.monotonic() - t1 < 1.5
        assert seated(after) == {"w2", "w3"}
    finally:
        sched.stop()
        for w in workers:
            w.stop()


@pytest.mark.slow
def test_status_shows_the_fleet(fleet: FleetConfig, stream: Stream) -> None:
    workers = start_workers(fleet, "w1", "w2")
    sched = Scheduler(fleet, PROFILE, "sched")
    sched.start()
    try:
        plan = stream.wait_plan(lambda p: seated(p) == {"w1", "w2"}, timeout=10)
        args = ["--broker", fleet.broker.url, "--fleet", fleet.fleet, "--wait", "1.0"]
        out = run_cli("status", "--json", *args)
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout)
        assert report["plan"]["epoch"] == plan.epoch
        assert report["plan"]["model"]["sha256"] == PROFILE.model.sha256
        devices = {d["device"]: d for d in report["devices"]}
        assert {"w1", "w2", "sched"} <= set(devices)
        for name in ("w1", "w2"):
            assert devices[name]["state"] == "online" and devices[name]["role"] == "worker"
            assert devices[name]["seats"] and devices[name]["heartbeat_age_s"] < 1.0
        assert devices["sched"]["role"] == "scheduler"
        text = run_cli("status", *args)
        assert text.returncode == 0 and f"epoch {plan.epoch}" in text.stdout
        assert "w1" in text.stdout and "stage 0 replicated" in text.stdout
    finally:
        sched.stop()
        for w in workers:
            w.stop()
    empty = run_cli("status", "--broker", fleet.broker.url, "--fleet", "nobody", "--wait", "0.3")
    assert empty.returncode == 1 and "nothing heard" in empty.stdout


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_app.cli", *args],
        check=False, capture_output=True, text=True, timeout=60,
        cwd=Path(__file__).resolve().parents[3],
    )  # fmt: skip


def test_broker_restart_keeps_the_plan_and_the_stream_goes_on(
    mosquitto: MosquittoBroker, fleet: FleetConfig, stream: Stream
) -> None:
    workers = start_workers(fleet, "w1", "w2")
    # a short debounce, so that only the scheduler's own care can avoid seating the first
    # worker that reconnects alone
    options = SchedulerOptions(debounce_s=0.02, max_delay_s=0.05)
    sched = Scheduler(fleet, PROFILE, "sched", options=options)
    sched.start()
    try:
        plan = stream.wait_plan(lambda p: seated(p) == {"w1", "w2"}, timeout=10)
        mosquitto.restart(down_s=1.5)  # longer than 3 missed heartbeats (0.6 s)
        xs = inputs(30)
        deadline = time.monotonic() + 15
        while not (sched.transport.connected and all(w.transport.connected for w in workers)):
            assert time.monotonic() < deadline, "no reconnect"
            time.sleep(0.05)
        stream.pump(3.0)  # warm-up and more: the same fleet is back, nothing to re-plan
        assert sched.current_plan() == plan, [p.epoch for p in stream.plans]
        assert [p.epoch for p in stream.plans if p.epoch > plan.epoch] == []
        for seq, x in enumerate(xs):
            stream.send(seq, x)
            stream.pump(0.02)
        assert stream.wait(30, timeout=30), f"{len(stream.outcomes)} of 30"
        check_results(stream, 30)
    finally:
        sched.stop()
        for w in workers:
            w.stop()


def test_measured_service_times_reweight_a_slow_worker(fleet: FleetConfig, stream: Stream) -> None:
    """w3 is padded to ~20 ms per conv job (a much slower device): once its heartbeats carry
    enough measurements, the scheduler gives it a small share of the convolutions."""

    def slow_conv(key: SeatKey, seconds: float) -> None:
        if key[0] == 0:
            time.sleep(max(0.0, 0.02 - seconds))

    workers = start_workers(fleet, "w1", "w2")
    slow = Worker(fleet, "w3", MODEL, model_name=CARD.name, compute_hook=slow_conv)
    slow.start()
    workers.append(slow)
    sched = Scheduler(fleet, PROFILE, "sched", options=SchedulerOptions(refresh_s=0.5))
    sched.start()
    try:
        first = stream.wait_plan(lambda p: seated(p) == {"w1", "w2", "w3"}, timeout=10)
        assert len({r.weight for r in first.stages[0].replicas}) == 1  # nothing measured yet
        xs = inputs(20)
        for seq in range(150):
            stream.send(seq, xs[seq % 20])
            stream.pump(0.01)

        def slow_is_light(p: Plan) -> bool:  # a small share, or none at all
            w = {r.device: r.weight for r in p.stages[0].replicas}
            return w.get("w3", 0.0) < 0.25 * w["w1"]

        reweighted = stream.wait_plan(slow_is_light, timeout=20)
        assert reweighted.epoch > first.epoch
        stream.pump(2.0)  # several refreshes: it must not flap back to an equal share
        assert all(slow_is_light(p) for p in stream.plans if p.epoch > reweighted.epoch)
        assert stream.wait(150, timeout=30)
    finally:
        sched.stop()
        for w in workers:
            w.stop()
