"""Estimators shared by the simulator and the emulated benches (so both measure alike)."""

from __future__ import annotations

import numpy as np


def completion_rate(times: list[float]) -> float:
    """Results per second: the least-squares slope of the completion count over time (less
    sensitive to where the window starts and ends than count / span)."""
    if len(times) < 2:
        return 0.0
    t = np.sort(np.asarray(times, dtype=np.float64))
    t -= t[0]
    if t[-1] <= 0:
        return 0.0
    return float(np.polyfit(t, np.arange(len(t), dtype=np.float64), 1)[0])


def percentile(values: list[float], q: float) -> float:
    """The ``q`` (0..100) percentile, linear between order statistics."""
    if not values:
        return 0.0
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))
