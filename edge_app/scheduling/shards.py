"""Shard layouts: which devices hold the row slices of a sharded stage (pure).

Rows are shared in proportion to each holder's speed on the stage, capped by what fits in its
memory. A previous layout is kept when its holders are still there, still fit and their
proportional share moved less than the tolerance; a lost holder's slice goes to one new device
with the same bounds, so the other holders do not reload anything.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from edge_app.messages.schemas import ShardSeat
from edge_app.scheduling.costs import Costs, max_rows
from edge_app.scheduling.profile import StageProfile


@dataclass
class ShardLayout:
    devices: list[str]
    bounds: list[int]  # k + 1 row boundaries, 0 .. rows

    def bounds_pairs(self) -> list[tuple[int, int]]:
        return list(zip(self.bounds[:-1], self.bounds[1:], strict=True))

    def seats(self) -> list[ShardSeat]:
        return [
            ShardSeat(device=d, index=i, lo=lo, hi=hi)
            for i, (d, (lo, hi)) in enumerate(zip(self.devices, self.bounds_pairs(), strict=True))
        ]


def split_rows(rows: int, weights: Sequence[float], caps: Sequence[int]) -> list[int] | None:
    """Bounds sharing ``rows`` in proportion to ``weights``, each slice within ``[1, cap]``;
    None when the caps cannot hold all rows. Largest remainder, ties to the lower index."""
    k = len(weights)
    if k == 0 or k > rows or sum(caps) < rows or min(caps) < 1:
        return None
    sizes: list[float] = [0.0] * k
    active = set(range(k))
    left = float(rows)
    while active:
        total = sum(weights[i] for i in active)
        share = {i: left * weights[i] / total for i in active}
        over = [i for i in active if share[i] > caps[i]]
        if not over:
            for i in active:
                sizes[i] = share[i]
            break
        for i in over:
            sizes[i] = caps[i]
            left -= caps[i]
            active.discard(i)
    whole = [max(1, min(caps[i], math.floor(sizes[i]))) for i in range(k)]
    order = sorted(range(k), key=lambda i: (-(sizes[i] - math.floor(sizes[i])), i))
    while sum(whole) != rows:
        step = 1 if sum(whole) < rows else -1
        moved = False
        for i in order:
            if (step > 0 and whole[i] < caps[i]) or (step < 0 and whole[i] > 1):
                whole[i] += step
                moved = True
                if sum(whole) == rows:
                    break
        if not moved:
            return None
    bounds = [0]
    for n in whole:
        bounds.append(bounds[-1] + n)
    return bounds


@dataclass(frozen=True)
class ShardRequest:
    """A stage that must be sharded in at least ``k_min`` slices (exactly ``k_min`` if forced)."""

    sp: StageProfile
    costs: Costs
    free: dict[str, float]  # bytes each device has left
    bound: float  # the fleet's compute bound, jobs/s
    busy_max: float  # the busiest holder's share of time at the bound
    tolerance: float  # re-balance a kept layout only when a slice drifts more than this
    k_min: int
    k_max: int
    forced: bool
    old: ShardLayout | None
    shard_count: dict[str, int]  # shards each device already holds (of other stages)

    def caps(self, devices: Sequence[str]) -> list[int]:
        return [max_rows(self.sp, self.free[d]) for d in devices]

    def balanced(self, devices: Sequence[str]) -> list[int] | None:
        speeds = [self.costs.speed(d, self.sp.index) for d in devices]
        return split_rows(self.sp.rows, speeds, self.caps(devices))

    def slowest(self, layout: ShardLayout) -> float:
        """Seconds the slowest holder needs for its slice of one job (the stage's pace)."""
        return max(
            self.costs.time(d, self.sp.index, self.sp.fraction(lo, hi))
            for d, (lo, hi) in zip(layout.devices, layout.bounds_pairs(), strict=True)
        )

    def busy_ok(self, layout: ShardLayout, slack: float = 1.0) -> bool:
        """The busiest holder stays under ``busy_max`` (times ``slack``) at the fleet's bound."""
        return self.bound * self.slowest(layout) <= self.busy_max * slack


def layout_shards(req: ShardRequest) -> ShardLayout | None:
    """The layout for ``req``: the old one (repaired) when it still serves, else a fresh one with
    the smallest k whose busiest holder stays under ``busy_max``; None if memory cannot hold it."""
    old, sp = req.old, req.sp
    if (
        old is not None
        and old.bounds[-1] == sp.rows
        and (not req.forced or len(old.devices) == req.k_min)
    ):
        kept = _repair(req, old)
        # A kept layout gets the same slack as its bounds: noise in the measured speeds moves
        # the fleet's bound too, and must not re-cut the shards back and forth.
        if kept is not None and (req.forced or req.busy_ok(kept, slack=1 + req.tolerance)):
            return kept
    prefer = set(old.devices) if old is not None else set()
    order = sorted(
        (d for d in req.free if max_rows(sp, req.free[d]) >= 1),
        key=lambda d: (
            req.shard_count.get(d, 0),
            d not in prefer,
            -req.costs.speed(d, sp.index),
            d,
        ),
    )
    fallback = None
    sizes = [req.k_min] if req.forced else range(req.k_min, max(req.k_min, req.k_max) + 1)
    for k in sizes:
        devices = order[:k]
        if len(devices) < k:
            break
        bounds = req.balanced(devices)
        if bounds is None:
            continue
        layout = ShardLayout(devices, bounds)
        if req.forced or req.busy_ok(layout):
            return layout
        fallback = layout
    return fallback


def _repair(ctx: ShardRequest, old: ShardLayout) -> ShardLayout | None:
    """``old`` with lost holders replaced (same bounds) and re-balanced only if it drifted."""
    devices = list(old.devices)
    pairs = old.bounds_pairs()
    for i, d in enumerate(devices):
        rows = pairs[i][1] - pairs[i][0]
        if d in ctx.free and max_rows(ctx.sp, ctx.free[d]) >= rows:
            continue
        spare = [c for c in ctx.free if c not in devices and max_rows(ctx.sp, ctx.free[c]) >= rows]
        if not spare:
            return None
        devices[i] = min(
            spare,
            key=lambda c: (ctx.shard_count.get(c, 0), -ctx.costs.speed(c, ctx.sp.index), c),
        )
    kept = ShardLayout(devices, list(old.bounds))
    fresh = ctx.balanced(devices)
    if fresh is None:
        return kept
    drift = max(
        abs((b - a) - (d - c)) / max(b - a, d - c)
        for (a, b), (c, d) in zip(pairs, itertools.pairwise(fresh), strict=True)
    )
    if drift <= ctx.tolerance:
        return kept
    # Re-cutting every shard costs each holder a reload and every sender a re-send of its
    # in-flight fan-outs: only worth it when the stage's pace really improves, not when noisy
    # service times merely move the balance point.
    balanced = ShardLayout(devices, fresh)
    gain = ctx.slowest(kept) / max(1e-12, ctx.slowest(balanced))
    return balanced if gain > 1 + ctx.tolerance else kept
