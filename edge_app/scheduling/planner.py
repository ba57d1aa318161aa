"""The planner: a pure function from the fleet and the model profile to a Plan.

``plan(devices, profile, previous, now)``:

1. Sharded stages first (they constrain memory most). A shardable stage is sharded when the
   policy forces it or when memory requires it (its replica would take more than
   ``replica_budget_fraction`` of a typical device, or fewer than half the devices could hold
   it); k grows until every slice fits and no shard holder is busier than ``shard_busy_max``
   at the fleet's compute bound (speed requires it). Rows are shared in proportion to speed,
   capped by memory. A previous layout is kept while its holders are online, fit and stay
   balanced within ``bounds_tolerance``; a lost holder's slice goes to one new device.
   Where memory would also allow replicas, the replicated variant is tried as well and wins
   when it predicts clearly more throughput (a large fleet outgrows ``max_shards`` holders).
2. Replicated stages: every stage gets at least one holder, then every device holds every
   replicated stage that fits (previous seats first, so re-seating is rare).
3. Routing weights: a fluid model — each device spends its time left after its shards on the
   replicated stages it holds, shifted towards the stages short of capacity; a replica's weight
   is its job rate. This is what reaches the compute bound on mixed fleets. A sharded stage
   followed by another sharded stage (or by nothing) gets ``mergers`` for its partials.
4. If the seats equal the previous plan's and every weight moved less than
   ``weight_tolerance``, the previous plan is returned as is (no new epoch).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from edge_app.messages.schemas import Plan, Replica, StagePlan
from edge_app.scheduling.costs import Costs
from edge_app.scheduling.predict import predict
from edge_app.scheduling.profile import ModelProfile, StageProfile
from edge_app.scheduling.rates import solve_rates
from edge_app.scheduling.registry import DeviceView
from edge_app.scheduling.shards import ShardLayout, ShardRequest, layout_shards

__all__ = ["PlanPolicy", "plan", "same_plan"]


@dataclass(frozen=True)
class PlanPolicy:
    scheduler: str = "scheduler"
    shards: Mapping[int, int] = field(default_factory=dict)  # stage -> forced k (1 = replicate)
    max_shards: int = 8
    replica_budget_fraction: float = 0.25
    reserve_fraction: float = 0.1  # of memory_total, never planned
    shard_busy_max: float = 0.75
    bounds_tolerance: float = 0.25
    weight_tolerance: float = 0.25
    min_share: float = 0.05  # replicas taking less than this x an average share are not seated
    mergers: int = 2


@dataclass
class _Work:
    """The plan being built: free memory and seats per device."""

    costs: Costs
    free: dict[str, float]
    shards: dict[int, ShardLayout] = field(default_factory=dict)
    held: dict[str, list[int]] = field(default_factory=dict)  # replicated stages per device

    def holders(self, stage: int) -> list[str]:
        return [d for d, ss in self.held.items() if stage in ss]


def plan(
    devices: list[DeviceView],
    profile: ModelProfile,
    previous: Plan | None,
    now: float,
    policy: PlanPolicy | None = None,
) -> Plan | None:
    """The plan for these devices, ``previous`` itself when nothing material changed, or None
    when the fleet cannot run the model (no device, or not enough memory)."""
    policy = policy or PlanPolicy()
    if not devices:
        return None
    prev = previous if previous is not None and previous.model == profile.model else None
    costs = Costs.build(devices, profile, prev, policy.reserve_fraction)
    # seats a device already holds always fit: a heartbeat taken while it was loading them
    # (memory in use, stage not yet listed) must not unseat it
    seated = _seated_bytes(prev, profile)
    budgets = {
        d.device: max(costs.budget(d.device, prev), seated.get(d.device, 0)) for d in devices
    }
    best = _best_candidate(devices, costs, budgets, profile=profile, prev=prev, policy=policy)
    if best is None:
        return None
    candidate = best.model_copy(
        update={
            "epoch": (previous.epoch + 1) if previous is not None else 1,
            "ts": now,
            "reason": _reason(previous, best.stages),
        }
    )
    if previous is not None and same_plan(previous, candidate, policy.weight_tolerance):
        return previous
    return candidate


def _best_candidate(
    devices: list[DeviceView],
    costs: Costs,
    budgets: dict[str, float],
    *,
    profile: ModelProfile,
    prev: Plan | None,
    policy: PlanPolicy,
) -> Plan | None:
    """Shard where memory says so; then, stage by stage, keep a replicated variant instead if
    memory allows it and it is clearly faster (a large fleet outgrows a few shard holders)."""
    ks = {s.index: _wants_shards(budgets, s, policy) for s in profile.stages if s.shardable}
    best = _candidate(costs, budgets, ks, profile=profile, prev=prev, policy=policy)
    best_rate = predict(best, devices, profile, prev).throughput if best else 0.0
    for s in sorted(ks, key=lambda i: -profile.stages[i].memory_for(1.0)):
        if ks[s] < 2 or s in policy.shards:
            continue
        trial = _candidate(costs, budgets, {**ks, s: 1}, profile=profile, prev=prev, policy=policy)
        rate = predict(trial, devices, profile, prev).throughput if trial else 0.0
        if rate > best_rate * (1.0 + _switch_margin(prev, s, "replicated")):
            best, best_rate, ks = trial, rate, {**ks, s: 1}
    return best


def _seated_bytes(prev: Plan | None, profile: ModelProfile) -> dict[str, int]:
    """Bytes of the stages and shards each device holds in ``prev``."""
    held: dict[str, int] = {}
    for sp in prev.stages if prev is not None else []:
        stage = profile.stages[sp.stage.index]
        for r in sp.replicas:
            held[r.device] = held.get(r.device, 0) + stage.memory_for(1.0)
        for seat in sp.shards:
            share = stage.fraction(seat.lo, seat.hi)
            held[seat.device] = held.get(seat.device, 0) + stage.memory_for(share)
    return held


def _switch_margin(prev: Plan | None, stage: int, to: str) -> float:
    """How much faster the other mode must be: more to leave the previous plan's mode."""
    if prev is None or stage >= len(prev.stages):
        return 0.03
    return -0.1 if prev.stages[stage].mode == to else 0.1


def _candidate(
    costs: Costs,
    budgets: dict[str, float],
    ks: dict[int, int],
    *,
    profile: ModelProfile,
    prev: Plan | None,
    policy: PlanPolicy,
) -> Plan | None:
    work = _Work(costs, dict(budgets), held={d: [] for d in budgets})
    if not _shard_stages(work, profile, prev, policy, ks):
        return None
    if not _place_replicas(work, profile, prev):
        return None
    stages = _stage_plans(work, profile, prev, policy)
    if stages is None:
        return None
    return Plan(epoch=0, ts=0.0, scheduler=policy.scheduler, model=profile.model, stages=stages)


# --- 1. shards ------------------------------------------------------------------------------


def _wants_shards(budgets: dict[str, float], sp: StageProfile, policy: PlanPolicy) -> int:
    """The minimum k for a shardable stage (1 = replicate): forced, or where memory requires."""
    n = len(budgets)
    forced = policy.shards.get(sp.index)
    if forced is not None:
        return max(1, min(forced, n, sp.rows, policy.max_shards))
    need = sp.memory_for(1.0)
    known = sorted(b for b in budgets.values() if b != math.inf)
    fits = sum(1 for b in budgets.values() if b >= need)
    typical = known[len(known) // 2] if known else math.inf
    crowded = need > policy.replica_budget_fraction * typical or fits < math.ceil(n / 2)
    return 2 if crowded and n >= 2 else 1


def _shard_stages(
    work: _Work, profile: ModelProfile, prev: Plan | None, policy: PlanPolicy, ks: dict[int, int]
) -> bool:
    shardable = [s for s in profile.stages if s.shardable]
    bound = work.costs.bound()
    # room for the stages that are always replicated (the convolutions) is kept free where
    # a device could hold them, so that shards do not crowd the heavy compute out
    base = sum(s.memory_for(1.0) for s in profile.stages if not s.shardable)
    for sp in sorted(shardable, key=lambda s: (-s.memory_for(1.0), s.index)):
        k_min = ks.get(sp.index, 1)
        if k_min < 2:
            continue
        room = {d: f - base if f - base > 0 else f for d, f in work.free.items()}
        layout = None
        for free in (room, work.free):
            req = ShardRequest(
                sp=sp,
                costs=work.costs,
                free=free,
                bound=bound,
                busy_max=policy.shard_busy_max,
                tolerance=policy.bounds_tolerance,
                k_min=k_min,
                k_max=min(policy.max_shards, len(work.free), sp.rows),
                forced=sp.index in policy.shards,
                old=_previous_layout(prev, sp.index),
                shard_count=_shard_load(work),
            )
            layout = layout_shards(req)
            if layout is not None:
                break
        if layout is None:
            return False
        work.shards[sp.index] = layout
        for dev, (lo, hi) in zip(layout.devices, layout.bounds_pairs(), strict=True):
            work.free[dev] -= sp.memory_for(sp.fraction(lo, hi))
    return True


def _shard_load(work: _Work) -> dict[str, int]:
    count = dict.fromkeys(work.free, 0)
    for layout in work.shards.values():
        for d in layout.devices:
            count[d] += 1
    return count


def _previous_layout(prev: Plan | None, stage: int) -> ShardLayout | None:
    if prev is None or stage >= len(prev.stages) or prev.stages[stage].mode != "sharded":
        return None
    seats = sorted(prev.stages[stage].shards, key=lambda s: s.index)
    if not seats:
        return None
    return ShardLayout(
        devices=[s.device for s in seats], bounds=[seats[0].lo, *(s.hi for s in seats)]
    )


# --- 2. replicas ----------------------------------------------------------------------------


def _place_replicas(work: _Work, profile: ModelProfile, prev: Plan | None) -> bool:
    stages = [s for s in profile.stages if s.index not in work.shards]
    before = _previous_holders(prev)
    # coverage: the largest stages first, each on at least one device
    for sp in sorted(stages, key=lambda s: (-s.memory_for(1.0), s.index)):
        if work.holders(sp.index):
            continue
        need = sp.memory_for(1.0)
        fits = [d for d, b in work.free.items() if b >= need]
        if not fits:
            return False
        best = min(fits, key=lambda d: (d not in before.get(sp.index, ()), -work.free[d], d))
        work.held[best].append(sp.index)
        work.free[best] -= need
    # fill: every device takes every replicated stage that still fits, its old seats first
    for dev in sorted(work.free):
        order = sorted(
            (s for s in stages if s.index not in work.held[dev]),
            key=lambda s: (dev not in before.get(s.index, ()), s.memory_for(1.0), s.index),
        )
        for sp in order:
            if work.free[dev] >= sp.memory_for(1.0):
                work.held[dev].append(sp.index)
                work.free[dev] -= sp.memory_for(1.0)
    return True


def _previous_holders(prev: Plan | None) -> dict[int, set[str]]:
    if prev is None:
        return {}
    return {sp.stage.index: {r.device for r in sp.replicas} for sp in prev.stages}


# --- 3. weights and the Plan ---------------------------------------------------------------


def _stage_plans(
    work: _Work, profile: ModelProfile, prev: Plan | None, policy: PlanPolicy
) -> list[StagePlan] | None:
    shard_busy = {d: 0.0 for d in work.free}
    for s, layout in work.shards.items():
        sp = profile.stages[s]
        for dev, (lo, hi) in zip(layout.devices, layout.bounds_pairs(), strict=True):
            shard_busy[dev] += work.costs.time(dev, s, sp.fraction(lo, hi))
    times = {(d, s): work.costs.time(d, s) for d, ss in work.held.items() for s in ss}
    replicated = [s.index for s in profile.stages if s.index not in work.shards]
    rates = solve_rates(work.held, times, shard_busy, replicated, work.costs.bound())
    before = _previous_holders(prev)
    out = []
    for sp in profile.stages:
        if sp.index in work.shards:
            seats = work.shards[sp.index].seats()
            # partials go to the next stage's replica when it has replicas; else to mergers
            last = sp.index == len(profile.stages) - 1
            mergers = (
                _mergers(work, rates, prev, sp.index, policy)
                if last or (sp.index + 1 in work.shards)
                else []
            )
            out.append(StagePlan(stage=sp.stage, mode="sharded", shards=seats, mergers=mergers))
            continue
        reps = _replicas(sp.index, rates, before.get(sp.index, set()), policy.min_share)
        if not reps:
            return None
        out.append(StagePlan(stage=sp.stage, mode="replicated", replicas=reps))
    return out


def _replicas(
    stage: int, rates: dict[tuple[str, int], float], before: set[str], min_share: float
) -> list[Replica]:
    mine = {d: r for (d, s), r in rates.items() if s == stage and r > 0}
    total = sum(mine.values())
    if total <= 0:
        return []
    # hysteresis: an existing seat stays down to half the share a new one needs
    mean = 1.0 / len(mine)
    keep = {
        d: r / total
        for d, r in mine.items()
        if r / total >= mean * (min_share / 2 if d in before else min_share)
    }
    if not keep:
        best = max(mine, key=lambda d: (mine[d], d))
        keep = {best: 1.0}
    norm = sum(keep.values())
    return [
        Replica(device=d, weight=max(float(f"{w / norm:.5g}"), 1e-6))
        for d, w in sorted(keep.items())
    ]


def _mergers(
    work: _Work,
    rates: dict[tuple[str, int], float],
    prev: Plan | None,
    stage: int,
    policy: PlanPolicy,
) -> list[Replica]:
    """Devices that merge a stage's partials: old mergers first, then the least busy."""
    old: set[str] = set()
    if prev is not None and stage < len(prev.stages):
        old = {m.device for m in prev.stages[stage].mergers}
    busy = {d: 0.0 for d in work.free}
    for (d, s), r in rates.items():
        busy[d] += r * work.costs.time(d, s)
    order = sorted(work.free, key=lambda d: (d not in old, busy[d], d))
    return [Replica(device=d) for d in sorted(order[: max(1, policy.mergers)])]


def _reason(previous: Plan | None, stages: list[StagePlan]) -> str:
    if previous is None:
        return "initial plan"
    seated = {d for sp in stages for d in _devices(sp)}
    before = {d for sp in previous.stages for d in _devices(sp)}
    parts = []
    if seated - before:
        parts.append("joined: " + ",".join(sorted(seated - before)))
    if before - seated:
        parts.append("left: " + ",".join(sorted(before - seated)))
    return ("; ".join(parts) or "re-weighted")[:256]


def _devices(sp: StagePlan) -> list[str]:
    return [r.device for r in sp.replicas] + [s.device for s in sp.shards]


def same_plan(a: Plan, b: Plan, tolerance: float = 0.2) -> bool:
    """Equal seats and routing weights within ``tolerance`` (relative), ignoring epoch and time."""
    if a.model != b.model or len(a.stages) != len(b.stages):
        return False
    for x, y in zip(a.stages, b.stages, strict=True):
        if x.stage != y.stage or x.mode != y.mode or x.shards != y.shards:
            return False
        if {m.device for m in x.mergers} != {m.device for m in y.mergers}:
            return False
        wx = {r.device: r.weight for r in x.replicas}
        wy = {r.device: r.weight for r in y.replicas}
        if wx.keys() != wy.keys():
            return False
        if any(abs(wx[d] - wy[d]) > tolerance * max(wx[d], wy[d]) + 1e-9 for d in wx):
            return False
    return True
