"""Live chart series: throughput and latency percentiles per second, over a bounded window."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

WINDOW_POINTS = 600  # ten minutes of one-second points
LATENCY_WINDOW_S = 5  # percentiles are taken over the last few seconds, not one noisy second
MAX_SAMPLES_PER_SECOND = 2000


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of ``values``; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass
class _Bucket:
    second: int
    completed: int = 0
    dropped: int = 0
    latencies: list[float] = field(default_factory=list)


class Series:
    """Counts outcomes into one-second buckets and turns finished seconds into chart points."""

    def __init__(self, points: int = WINDOW_POINTS) -> None:
        self._buckets: deque[_Bucket] = deque(maxlen=LATENCY_WINDOW_S + 2)
        self.points: deque[dict[str, float | int | None]] = deque(maxlen=points)

    def _bucket(self, second: int) -> _Bucket:
        if self._buckets and self._buckets[-1].second == second:
            return self._buckets[-1]
        for bucket in reversed(self._buckets):
            if bucket.second == second:
                return bucket
        bucket = _Bucket(second)
        if self._buckets and second < self._buckets[-1].second:
            return bucket  # too old to matter: counted nowhere visible
        self._buckets.append(bucket)
        return bucket

    def add(self, now: float, ok: bool, latency_s: float | None) -> None:
        bucket = self._bucket(int(now))
        if ok:
            bucket.completed += 1
            if latency_s is not None and len(bucket.latencies) < MAX_SAMPLES_PER_SECOND:
                bucket.latencies.append(latency_s)
        else:
            bucket.dropped += 1

    def tick(self, now: float) -> dict[str, float | int | None]:
        """Close the last full second before ``now`` and return its chart point."""
        second = int(now) - 1
        current = next((b for b in self._buckets if b.second == second), None)
        recent = [
            lat
            for b in self._buckets
            if second - LATENCY_WINDOW_S < b.second <= second
            for lat in b.latencies
        ]
        p50 = percentile(recent, 50)
        p95 = percentile(recent, 95)
        point: dict[str, float | int | None] = {
            "t": second,
            "completed": current.completed if current else 0,
            "dropped": current.dropped if current else 0,
            "p50": None if p50 is None else round(p50, 4),
            "p95": None if p95 is None else round(p95, 4),
        }
        if not self.points or self.points[-1]["t"] != second:
            self.points.append(point)
        return point
