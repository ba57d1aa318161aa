"""Routing rates for replicated stages: a small fluid model of the fleet (pure).

Every device has one second of compute per second. Shard work comes first: at throughput T a
device spends ``T * shard_s[d]`` on its shards. The rest it shares among the replicated stages it
holds; ``rates[(d, s)]`` is the number of jobs per second it takes of stage s. The solver starts
from equal job rates through all of a device's stages (optimal when every device holds every
stage) and shifts time towards the stages with the least total capacity (needed when memory
limits what a device holds). T is the largest throughput the replicated stages can carry while
the shard holders keep up, found by bisection.
"""

from __future__ import annotations

Rates = dict[tuple[str, int], float]

ITERATIONS = 40
BISECTIONS = 24


def _allocate(held: dict[str, list[int]], times: dict[tuple[str, int], float],
              room: dict[str, float], stages: list[int]) -> Rates:  # fmt: skip
    rates: Rates = {}
    for d, ss in held.items():
        if ss and room.get(d, 0.0) > 0:
            lam = room[d] / sum(times[d, s] for s in ss)
            rates.update({(d, s): lam for s in ss})
    for _ in range(ITERATIONS):
        cap = _capacity(rates, stages)
        low, high = min(cap.values(), default=0.0), max(cap.values(), default=0.0)
        if low <= 0 or high / low - 1 < 1e-3:
            break
        mean = sum(cap.values()) / len(cap)
        for d, ss in held.items():
            if not ss or room.get(d, 0.0) <= 0:
                continue
            for s in ss:
                rates[d, s] *= (mean / cap[s]) ** 0.5
            used = sum(rates[d, s] * times[d, s] for s in ss)
            for s in ss:
                rates[d, s] *= room[d] / used
    return rates


def _capacity(rates: Rates, stages: list[int]) -> dict[int, float]:
    cap = dict.fromkeys(stages, 0.0)
    for (_, s), r in rates.items():
        if s in cap:
            cap[s] += r
    return cap


def throughput(rates: Rates, stages: list[int]) -> float:
    """Jobs per second the replicated stages can carry with these rates."""
    return min(_capacity(rates, stages).values(), default=float("inf"))


def solve_rates(
    held: dict[str, list[int]],
    times: dict[tuple[str, int], float],
    shard_s: dict[str, float],
    stages: list[int],
    bound: float,
) -> Rates:
    """Job rates per (device, replicated stage); see the module docstring."""
    if not stages:
        return {}
    if not any(v > 0 for v in shard_s.values()):
        return _allocate(held, times, dict.fromkeys(held, 1.0), stages)

    def room(t: float) -> dict[str, float]:
        return {d: max(0.0, 1.0 - t * shard_s.get(d, 0.0)) for d in held}

    hi = min([2.0 * bound] + [1.0 / v for v in shard_s.values() if v > 0])
    lo = 0.0
    for _ in range(BISECTIONS):
        mid = (lo + hi) / 2
        if throughput(_allocate(held, times, room(mid), stages), stages) >= mid:
            lo = mid
        else:
            hi = mid
    return _allocate(held, times, room(lo), stages)
