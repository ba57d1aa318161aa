"""Failover measurement for ``edge-app bench pipeline``: kill -9 a worker mid-stream and time
the pipeline's return to steady throughput.

Definitions (both computed from the outcomes' ``done_ts``, so the driver's own scheduling does
not enter):

- **throughput recovery**: jobs are offered at a fixed rate. The pre-kill rate is the completion
  rate over the ``pre_window_s`` before the kill. A sliding window of ``window_s`` (step
  ``step_s``) counts completions after the kill; recovery is the start of the first window from
  which on EVERY window until the end of the stream is within ``tolerance`` (10 %) of the
  pre-kill rate (a stall is below it, the burst of re-sent jobs above it).
- **latency recovery**: from the kill until the last job with an abnormal latency completed;
  normal = at most 2 x the 95th percentile latency of the jobs done before the kill + 50 ms.
- **recovery** = the later of the two: steady in rate AND in latency.
"""

from __future__ import annotations

import bisect
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from edge_app.bench.fleet_runner import BenchFleet, seated_devices, spread_over
from edge_app.messages.schemas import JobOutcome, Plan

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Steadiness:
    window_s: float = 3.0
    step_s: float = 0.05
    tolerance: float = 0.10
    pre_window_s: float = 3.0
    tail_s: float = 1.0  # windows end this long before the stream does (its last jobs' latency)


@dataclass(frozen=True)
class KillResult:
    victim: str
    seat: str  # "conv replica" or "fc shard"
    recovery_s: float
    throughput_recovery_s: float
    latency_recovery_s: float
    pre_rate: float  # jobs/s before the kill
    pre_p95_latency_s: float  # of the jobs done before the kill
    worst_latency_s: float  # of the jobs done after the kill
    in_flight_done_s: float  # from the kill until the last job in flight at the kill completed
    replan_s: float | None  # from the kill until the scheduler's next plan arrived
    jobs: int
    vanished: int
    dropped: int


@dataclass(frozen=True)
class FailoverResult:
    model: str
    workers: int
    rate: float
    heartbeat_s: float
    kills: list[KillResult] = field(default_factory=list)

    @property
    def median_s(self) -> float:
        return statistics.median(k.recovery_s for k in self.kills) if self.kills else float("nan")

    @property
    def vanished(self) -> int:
        return sum(k.vanished for k in self.kills)

    @property
    def dropped(self) -> int:
        return sum(k.dropped for k in self.kills)


def throughput_recovery(
    done: Sequence[float], kill_ts: float, stream_end: float, rule: Steadiness
) -> tuple[float, float]:
    """(seconds from the kill to steady throughput, pre-kill rate in jobs/s)."""
    ts = sorted(done)

    def count(lo: float, hi: float) -> int:
        return bisect.bisect_left(ts, hi) - bisect.bisect_left(ts, lo)

    pre = count(kill_ts - rule.pre_window_s, kill_ts) / rule.pre_window_s
    if pre <= 0:
        return float("inf"), 0.0
    steady_from = kill_ts
    start = kill_ts
    horizon = stream_end - rule.tail_s
    while start + rule.window_s <= horizon:
        rate = count(start, start + rule.window_s) / rule.window_s
        if abs(rate - pre) > rule.tolerance * pre:
            steady_from = start + rule.step_s
        start += rule.step_s
    if steady_from + rule.window_s > horizon:
        return float("inf"), pre  # never steady within the stream
    return steady_from - kill_ts, pre


def latency_recovery(outcomes: Sequence[JobOutcome], kill_ts: float) -> float:
    """From the kill until the last abnormally late job completed (0 if none)."""
    before = [o.latency_s for o in outcomes if o.done_ts < kill_ts]
    if not before:
        return float("inf")
    normal = 2 * _p95(before) + 0.05
    late = [o.done_ts for o in outcomes if o.done_ts >= kill_ts and o.latency_s > normal]
    return max(late, default=kill_ts) - kill_ts


def _p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[int(0.95 * (len(ordered) - 1))] if ordered else float("nan")


def pick_victim(plan: Plan, trial: int) -> tuple[str, str]:
    """Even trials: a device holding only conv replicas; odd: an FC shard holder."""
    shard_holders = [s.device for sp in plan.stages for s in sp.shards]
    if trial % 2 == 1 and shard_holders:
        return shard_holders[0], "fc shard"
    conv = [r.device for r in plan.stages[0].replicas]
    only = [d for d in conv if d not in shard_holders]
    return (only or conv)[0], "conv replica"


def stream_and_kill(
    fleet: BenchFleet,
    inputs: Sequence[np.ndarray],
    *,
    victim: str,
    rate: float,
    pre_s: float,
    post_s: float,
) -> tuple[list[str], float, float]:
    """Offer jobs at ``rate`` for ``pre_s + post_s``; kill -9 ``victim`` after ``pre_s``.
    Returns (job ids, kill time, end of stream)."""
    jobs: list[str] = []
    kill_ts = 0.0
    n = int(rate * (pre_s + post_s))
    start = time.monotonic()
    for i in range(n):
        time.sleep(max(0.0, start + i / rate - time.monotonic()))
        jobs.append(fleet.submit(inputs[i % len(inputs)]))
        if not kill_ts and i >= rate * pre_s:
            kill_ts = fleet.kill(victim)
    return jobs, kill_ts, time.time()


def one_kill(
    fleet: BenchFleet,
    inputs: Sequence[np.ndarray],
    *,
    trial: int,
    rate: float,
    timing: tuple[float, float, float],
    rule: Steadiness,
) -> KillResult:
    pre_s, post_s, wait_s = timing
    assert fleet.plan is not None
    victim, seat = pick_victim(fleet.plan, trial)
    jobs, kill_ts, end = stream_and_kill(
        fleet, inputs, victim=victim, rate=rate, pre_s=pre_s, post_s=post_s
    )
    got = fleet.sink.wait_for(jobs, timeout=wait_s)
    outcomes = list(got.values())
    ok = [o for o in outcomes if o.status == "ok"]
    thr, pre = throughput_recovery([o.done_ts for o in ok], kill_ts, end, rule)
    lat = latency_recovery(ok, kill_ts)
    replan = fleet.first_plan_after(kill_ts)
    result = KillResult(
        victim=victim,
        seat=seat,
        recovery_s=max(thr, lat),
        throughput_recovery_s=thr,
        latency_recovery_s=lat,
        pre_rate=pre,
        pre_p95_latency_s=_p95([o.latency_s for o in ok if o.done_ts < kill_ts]),
        worst_latency_s=max((o.latency_s for o in ok if o.done_ts >= kill_ts), default=0.0),
        in_flight_done_s=max(
            (o.done_ts - kill_ts for o in ok if o.created_ts < kill_ts <= o.done_ts), default=0.0
        ),
        replan_s=None if replan is None else replan - kill_ts,
        jobs=len(jobs),
        vanished=len(jobs) - len(outcomes),
        dropped=len(outcomes) - len(ok),
    )
    log.info("kill %d: %s", trial, result)
    return result


def run_failover(
    fleet: BenchFleet,
    inputs: Sequence[np.ndarray],
    *,
    kills: int,
    rate: float,
    workers: int = 3,
    timing: tuple[float, float, float] = (4.0, 8.0, 20.0),
    rule: Steadiness = Steadiness(),
    progress: Callable[[KillResult], None] | None = None,
) -> FailoverResult:
    """``kills`` times: stream, kill -9 a worker, measure; then start a fresh worker and wait
    for the fleet to be whole again (``workers`` seated, the forced shards in place)."""
    result = FailoverResult(fleet.card.name, workers, rate, fleet.config.heartbeat_s)
    alive: list[str] = []
    for i in range(workers):
        alive.append(f"f{i}")
        fleet.spawn(alive[-1])
    whole = spread_over(workers, fleet.shards)

    def ready(plan: Plan) -> bool:
        seated = {d for sp in plan.stages for d in seated_devices(sp)}
        return whole(plan) and seated <= set(alive)

    fleet.wait_ready(ready, timeout=60)
    for trial in range(kills):
        time.sleep(0.5)  # the new plan's first jobs are not part of the pre-kill baseline
        kill = one_kill(fleet, inputs, trial=trial, rate=rate, timing=timing, rule=rule)
        result.kills.append(kill)
        if progress is not None:
            progress(kill)
        if trial == kills - 1:
            break
        alive.remove(kill.victim)
        alive.append(f"f{workers + trial}")
        fleet.spawn(alive[-1])
        fleet.wait_ready(ready, timeout=60)
    return result
