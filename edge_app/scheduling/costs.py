"""Per-device cost and memory estimates for the planner (pure).

A device's time for a stage comes from what it measured (``StageLoad.service_time_s`` in its
heartbeat) when it holds that stage, else from the profile's reference cost scaled by a factor
learned from the measurements of other devices and stages, divided by the heartbeat's ``speed``.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from edge_app.messages.schemas import Plan
from edge_app.scheduling.profile import ModelProfile, StageProfile
from edge_app.scheduling.registry import DeviceView

MIN_STAGE_S = 1e-6  # a floor so that zero-cost stages still have a finite rate
# A device's service time is trusted after this many jobs (the first runs warm caches up).
MIN_JOBS = 20


def seat_share(previous: Plan | None, device: str, stage: int, shard: int | None) -> float | None:
    """The share of rows ``device`` held for ``(stage, shard)`` in ``previous`` (1.0 unsharded)."""
    if shard is None:
        return 1.0
    if previous is None or stage >= len(previous.stages):
        return None
    sp = previous.stages[stage]
    for seat in sp.shards:
        if seat.device == device and seat.index == shard:
            total = max((s.hi for s in sp.shards), default=0)
            return (seat.hi - seat.lo) / total if total else None
    return None


@dataclass
class Costs:
    """``time(d, s, share)``: estimated seconds per job; ``budget(d)``: bytes for stages."""

    profile: ModelProfile
    devices: dict[str, DeviceView]
    reserve_fraction: float = 0.1
    factors: dict[tuple[str, int], float] = field(default_factory=dict)  # measured / reference
    stage_factor: dict[int, float] = field(default_factory=dict)
    device_factor: dict[str, float] = field(default_factory=dict)
    global_factor: float = 1.0

    @classmethod
    def build(
        cls,
        devices: list[DeviceView],
        profile: ModelProfile,
        previous: Plan | None,
        reserve_fraction: float = 0.1,
    ) -> Costs:
        costs = cls(profile, {d.device: d for d in devices}, reserve_fraction)
        # measurements of another model's stages mean nothing here
        usable = previous is None or previous.model == profile.model
        for d in devices:
            for load in (*d.stages, *d.measured):
                share = seat_share(previous, d.device, load.stage, load.shard)
                if load.stage >= len(profile.stages) or share is None or not usable:
                    continue
                if load.jobs >= MIN_JOBS and load.service_time_s > 0:
                    ref = profile.stages[load.stage].reference_s(share)
                    # normalized to speed 1.0 so that factors of different devices compare
                    costs.factors[(d.device, load.stage)] = load.service_time_s / ref * d.speed
        costs._calibrate()
        return costs

    def _calibrate(self) -> None:
        if not self.factors:
            return
        self.global_factor = statistics.median(self.factors.values())
        by_stage: dict[int, list[float]] = {}
        for (_, s), f in self.factors.items():
            by_stage.setdefault(s, []).append(f)
        self.stage_factor = {s: statistics.median(v) for s, v in by_stage.items()}
        by_device: dict[str, list[float]] = {}
        for (d, s), f in self.factors.items():
            by_device.setdefault(d, []).append(f / self.stage_factor[s])
        self.device_factor = {d: statistics.median(v) for d, v in by_device.items()}

    def time(self, device: str, stage: int, share: float = 1.0) -> float:
        """Estimated seconds per job of ``device`` for ``share`` of ``stage``'s rows."""
        view = self.devices[device]
        ref = self.profile.stages[stage].reference_s(share)
        measured = self.factors.get((device, stage))
        if measured is None:
            measured = self.stage_factor.get(stage, self.global_factor)
            measured *= self.device_factor.get(device, 1.0)
        return max(MIN_STAGE_S, ref * measured / view.speed)

    def speed(self, device: str, stage: int) -> float:
        """Jobs per second of ``device`` on the whole of ``stage``."""
        return 1.0 / self.time(device, stage)

    def budget(self, device: str, previous: Plan | None) -> float:
        """Bytes available for stages: free memory plus what its current stages use, less a
        reserve. Infinite when the device does not report its memory."""
        view = self.devices[device]
        if view.memory_total <= 0:
            return float("inf")
        held = 0
        for load in view.stages:
            share = seat_share(previous, device, load.stage, load.shard)
            if load.stage < len(self.profile.stages) and share is not None:
                held += self.profile.stages[load.stage].memory_for(share)
        return view.memory_available + held - self.reserve_fraction * view.memory_total

    def bound(self) -> float:
        """The fleet's compute bound in jobs/s: every device busy on whole inferences."""
        stages = range(len(self.profile.stages))
        return sum(1.0 / sum(self.time(d, s) for s in stages) for d in self.devices)


def max_rows(stage: StageProfile, free: float) -> int:
    """How many of ``stage``'s rows fit in ``free`` bytes (0 when not even one does)."""
    if free == float("inf"):
        return stage.rows
    per_row = (stage.shard_weight_bytes + stage.output_bytes) / max(stage.rows, 1)
    base = stage.memory_for(0.0)
    if free < base:
        return 0
    if per_row <= 0:
        return stage.rows
    return min(stage.rows, int((free - base) // per_row))
