"""Reliability of the data path on a real Mosquitto with worker processes (issue 3)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_app.messages.schemas import Plan
from tests.integration.pipeline.fleet import Fleet, devices_of, images, recovery_s

log = logging.getLogger(__name__)

pytestmark = [pytest.mark.interpreter, pytest.mark.slow]


@pytest.fixture
def fleet(mosquitto: object, tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(mosquitto, tmp_path, shards={1: 2})
    try:
        yield f
    finally:
        f.close()


def sharded_over(n_devices: int, k: int = 2) -> object:
    def want(plan: Plan) -> bool:
        seated = {d for sp in plan.stages for d in devices_of(sp)}
        return (
            plan.stages[1].mode == "sharded"
            and len(plan.stages[1].shards) == k
            and (len(seated) == n_devices)
        )

    return want


def test_300_jobs_on_3_workers_with_a_sharded_fc_equal_the_whole_model(fleet: Fleet) -> None:
    for d in ("w1", "w2", "w3"):
        fleet.spawn(d)
    fleet.start_scheduler()
    plan = fleet.wait_ready(sharded_over(3))  # type: ignore[arg-type]
    jobs = [fleet.submit(x) for x in images(300)]
    got = fleet.sink.wait_for(jobs, timeout=60)
    assert len(got) == 300, f"{len(got)} of 300 outcomes; {fleet.sink.counts()}"
    fleet.check(got)  # each equal to the whole model: no merge mixed two jobs
    shards_seen = {(t.stage, t.shard) for o in got.values() for t in o.stages if t.stage == 1}
    assert shards_seen == {(1, 0), (1, 1)}, plan
    assert fleet.sink.duplicates == 0 or fleet.sink.ok == 300
    assert not fleet.errors, fleet.errors[:3]


def stream_with_kill(fleet: Fleet, victim_of: object, n: int = 240, rate: float = 40.0) -> None:
    """Stream ``n`` jobs at ``rate``; kill -9 the worker ``victim_of(plan)`` a third in."""
    plan = fleet.plan
    assert plan is not None
    victim = victim_of(plan)  # type: ignore[operator]
    xs = images(n, seed=5)
    jobs: list[str] = []
    kill_ts = 0.0
    start = time.monotonic()
    for i, x in enumerate(xs):
        time.sleep(max(0.0, start + i / rate - time.monotonic()))
        jobs.append(fleet.submit(x))
        if i == n // 3:
            kill_ts = fleet.kill(victim)
    got = fleet.sink.wait_for(jobs, timeout=90)
    counts = fleet.sink.counts()
    missing = [j for j in jobs if j not in got]
    dropped = [o for o in got.values() if o.status != "ok"]
    traces = [line for j in [*missing[:2], *(o.job for o in dropped[:2])] for line in fleet.grep(j)]
    for p in fleet.plans:
        seats = [(sp.mode, [r.device for r in sp.replicas], [(x.device, x.lo, x.hi) for x in sp.shards])
                 for sp in p.stages[:2]]
        log.warning("plan %d at %+.2f s: %s %s", p.epoch, p.ts - kill_ts, p.reason, seats)
    assert not missing and not dropped, (
        f"vanished {missing}, dropped {dropped[:3]}, {counts} {traces}"
    )
    fleet.check(got)
    rec = recovery_s(list(got.values()), kill_ts)
    worst = max(got.values(), key=lambda o: o.latency_s)
    log.warning("slowest: %s %.2f s after the kill, %.2f s latency", worst.job,
                worst.created_ts - kill_ts, worst.latency_s)
    log.warning("killed %s: recovery %.2f s (0 vanished, 0 dropped of %d)", victim, rec, n)
    print(f"\nkill -9 {victim}: recovery {rec:.2f} s, 0 vanished, 0 dropped of {n}")  # noqa: T201


def test_kill_9_of_a_conv_replica_loses_nothing(fleet: Fleet) -> None:
    for d in ("w1", "w2", "w3"):
        fleet.spawn(d)
    fleet.start_scheduler()
    fleet.wait_ready(sharded_over(3))  # type: ignore[arg-type]

    def conv_only(plan: Plan) -> str:
        holders = {s.device for s in plan.stages[1].shards}
        conv = [r.device for r in plan.stages[0].replicas]
        return next((d for d in conv if d not in holders), conv[0])

    stream_with_kill(fleet, conv_only)


def test_kill_9_of_an_fc_shard_holder_loses_nothing(fleet: Fleet) -> None:
    for d in ("w1", "w2", "w3"):
        fleet.spawn(d)
    fleet.start_scheduler()
    fleet.wait_ready(sharded_over(3))  # type: ignore[arg-type]
    stream_with_kill(fleet, lambda plan: plan.stages[1].shards[0].device)


def test_a_worker_joining_mid_stream_gets_work_within_3_s(fleet: Fleet) -> None:
    for d in ("w1", "w2"):
        fleet.spawn(d)
    fleet.start_scheduler()
    fleet.wait_ready(sharded_over(2))  # type: ignore[arg-type]
    jobs = []
    joined = 0.0
    first_work = None
    start = time.monotonic()
    for i, x in enumerate(images(400, seed=9)):
        time.sleep(max(0.0, start + i / 40.0 - time.monotonic()))
        jobs.append(fleet.submit(x))
        if i == 40:
            fleet.spawn("w3")
        if not joined and "w3" in fleet.online_at:
            joined = fleet.online_at["w3"]
        if joined and first_work is None:
            done = [o for o in fleet.sink.recent() if any(t.device == "w3" for t in o.stages)]
            if done:
                first_work = min(o.created_ts for o in done)
                break
    got = fleet.sink.wait_for(jobs, timeout=60)
    assert len(got) == len(jobs)
    fleet.check(got)
    assert joined and first_work is not None, "w3 never got work"
    took = max(0.0, first_work - joined)
    print(f"\nw3 joined: first job for it created {took:.2f} s after its first heartbeat")  # noqa: T201
    assert took <= 3.0
