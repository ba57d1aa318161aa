"""Where a stage's input goes next, decided by the sender from the newest plan.

Replicated stage: smooth weighted round-robin over the stage's replicas that are online and have
room in their in-flight window (weights from the plan, which the scheduler derives from measured
speed). Sharded stage: one envelope on the stage's fan-out topic for all shard holders, with the
plan's shard boundaries (``layout``) and the device that will merge the partials (``merge_to``):
a replica of the next stage when it is replicated, else one of the stage's ``mergers``, else one
of its shard holders. No ``$share`` subscriptions: a busy receiver simply has no room.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from edge_app.messages.schemas import Plan, Replica, StagePlan


@dataclass(frozen=True)
class TaskRoute:
    """Send on ``task/<device>``."""

    stage: int
    device: str

    @property
    def receivers(self) -> frozenset[str]:
        return frozenset((self.device,))


@dataclass(frozen=True)
class FanoutRoute:
    """Send once on ``fanout/<stage>``; the holders' partials go to ``merge_to``."""

    stage: int
    layout: tuple[int, ...]
    holders: tuple[str, ...]  # by shard index
    merge_to: str

    @property
    def receivers(self) -> frozenset[str]:
        return frozenset((*self.holders, self.merge_to))


@dataclass(frozen=True)
class NoRoute:
    reason: Literal["full", "no_route"]
    detail: str


Route = TaskRoute | FanoutRoute


def shard_layout(sp: StagePlan) -> tuple[tuple[int, ...], tuple[str, ...]] | None:
    """The boundaries and holders of a sharded stage, or None if its seats do not tile the rows."""
    seats = sorted(sp.shards, key=lambda s: s.index)
    if not seats or [s.index for s in seats] != list(range(len(seats))):
        return None
    layout = [seats[0].lo]
    for seat in seats:
        if seat.lo != layout[-1] or seat.hi <= seat.lo:
            return None
        layout.append(seat.hi)
    return tuple(layout), tuple(s.device for s in seats)


def merge_candidates(plan: Plan, stage: int) -> list[Replica]:
    """Who may merge the partials of sharded ``stage`` (see the module docstring)."""
    nxt = stage + 1
    if (
        nxt < len(plan.stages)
        and plan.stages[nxt].mode == "replicated"
        and plan.stages[nxt].replicas
    ):
        return list(plan.stages[nxt].replicas)
    sp = plan.stages[stage]
    if sp.mergers:
        return list(sp.mergers)
    return [Replica(device=s.device) for s in sp.shards]


class SmoothWRR:
    """Smooth weighted round-robin (as in nginx) over a changing set of eligible devices."""

    def __init__(self) -> None:
        self._current: dict[str, float] = {}

    def pick(self, eligible: Sequence[Replica]) -> str:
        total = sum(r.weight for r in eligible)
        best: Replica | None = None
        for r in eligible:
            self._current[r.device] = self._current.get(r.device, 0.0) + r.weight
            if best is None or self._current[r.device] > self._current[best.device]:
                best = r
        assert best is not None
        self._current[best.device] -= total
        if len(self._current) > 4 * len(eligible) + 64:  # forget devices long gone
            keep = {r.device for r in eligible}
            self._current = {d: v for d, v in self._current.items() if d in keep}
        return best.device


class Router:
    """Picks receivers; not thread-safe (the courier calls it under its lock)."""

    def __init__(self, window: int = 4) -> None:
        if window < 1:
            raise ValueError("window must be >= 1")
        self.window = window
        self._wrr: dict[tuple[str, int], SmoothWRR] = {}

    def _pick(
        self,
        *,
        kind: str,
        stage: int,
        seats: Sequence[Replica],
        inflight: Mapping[str, int],
        offline: Collection[str],
        exclude: Collection[str],
    ) -> str | NoRoute:
        live = [r for r in seats if r.device not in offline and r.device not in exclude]
        if not live:
            return NoRoute("no_route", f"no live {kind} for stage {stage}")
        room = [r for r in live if inflight.get(r.device, 0) < self.window]
        if not room:
            return NoRoute("full", f"every {kind} of stage {stage} has a full window")
        return self._wrr.setdefault((kind, stage), SmoothWRR()).pick(room)

    def route(
        self,
        plan: Plan,
        stage: int,
        *,
        inflight: Mapping[str, int],
        offline: Collection[str] = (),
        exclude: Collection[str] = (),
    ) -> Route | NoRoute:
        """Where the input of ``stage`` goes now under ``plan``."""
        if not 0 <= stage < len(plan.stages):
            return NoRoute("no_route", f"plan epoch {plan.epoch} has no stage {stage}")
        sp = plan.stages[stage]
        if sp.mode == "replicated":
            got = self._pick(
                kind="replica",
                stage=stage,
                seats=sp.replicas,
                inflight=inflight,
                offline=offline,
                exclude=exclude,
            )
            return got if isinstance(got, NoRoute) else TaskRoute(stage, got)
        return self._fanout(plan, stage, inflight, offline, exclude)

    def _fanout(
        self,
        plan: Plan,
        stage: int,
        inflight: Mapping[str, int],
        offline: Collection[str],
        exclude: Collection[str],
    ) -> FanoutRoute | NoRoute:
        tiled = shard_layout(plan.stages[stage])
        if tiled is None:
            return NoRoute("no_route", f"plan epoch {plan.epoch}: stage {stage} shards do not tile")
        layout, holders = tiled
        dead = [d for d in holders if d in offline or d in exclude]
        if dead:
            return NoRoute("no_route", f"shard holders {dead} of stage {stage} are offline")
        if any(inflight.get(d, 0) >= self.window for d in holders):
            return NoRoute("full", f"a shard holder of stage {stage} has a full window")
        merger = self._pick(
            kind="merger",
            stage=stage,
            seats=merge_candidates(plan, stage),
            inflight=inflight,
            offline=offline,
            exclude=exclude,
        )
        if isinstance(merger, NoRoute):
            return merger
        return FanoutRoute(stage, layout, holders, merger)


def is_seated(plan: Plan, route: Route) -> bool:
    """Is ``route`` still valid under ``plan`` (its receivers hold those seats)?"""
    if not 0 <= route.stage < len(plan.stages):
        return False
    sp = plan.stages[route.stage]
    if isinstance(route, TaskRoute):
        return sp.mode == "replicated" and any(r.device == route.device for r in sp.replicas)
    if sp.mode != "sharded" or shard_layout(sp) != (route.layout, route.holders):
        return False
    return any(r.device == route.merge_to for r in merge_candidates(plan, route.stage))
