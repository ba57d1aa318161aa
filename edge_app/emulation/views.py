"""What an emulated device tells the scheduler: speed, memory and measured service times.

Shared by the emulator (its heartbeats) and the simulator (the planner's input), so that both
give the planner the same picture of the same fleet.
"""

from __future__ import annotations

from edge_app.emulation.profiles import DeviceProfile
from edge_app.emulation.workload import Workload
from edge_app.messages.schemas import Plan, StageLoad
from edge_app.scheduling.registry import DeviceView

FREE_FRACTION = 0.8  # of the board's RAM left for stages once the OS and the worker run
MEASURED_JOBS = 100  # what a converged heartbeat reports


def speed_of(profile: DeviceProfile, workload: Workload, reference_s: float) -> float:
    """Heartbeat speed: ``reference_s`` (one inference on the speed-1.0 device) over the
    profile's time for one inference."""
    return reference_s / workload.seconds(profile)


def seat_shares(plan: Plan | None, device: str) -> list[tuple[int, int | None, float]]:
    """(stage, shard, share of rows) of every seat ``device`` holds in ``plan``."""
    out: list[tuple[int, int | None, float]] = []
    if plan is None:
        return out
    for sp in plan.stages:
        s = sp.stage.index
        if any(r.device == device for r in sp.replicas):
            out.append((s, None, 1.0))
        rows = max((seat.hi for seat in sp.shards), default=0)
        for seat in sp.shards:
            if seat.device == device and rows:
                out.append((s, seat.index, (seat.hi - seat.lo) / rows))
    return out


def memory_available(
    profile: DeviceProfile, workload: Workload, plan: Plan | None, device: str
) -> int:
    held = sum(
        workload.profile.stages[s].memory_for(share) for s, _, share in seat_shares(plan, device)
    )
    return max(0, int(profile.memory_bytes * FREE_FRACTION - held))


def device_view(
    device: str,
    profile: DeviceProfile,
    workload: Workload,
    plan: Plan | None = None,
    *,
    time_scale: float = 1.0,
) -> DeviceView:
    """The planner's view of an emulated device; with ``plan``, as after it ran its seats."""
    stages = tuple(
        StageLoad(
            stage=s,
            shard=k,
            service_time_s=workload.stages[s].seconds(profile, share) / time_scale,
            jobs=MEASURED_JOBS,
        )
        for s, k, share in seat_shares(plan, device)
    )
    return DeviceView(
        device=device,
        speed=speed_of(profile, workload, workload.profile.reference_s) * time_scale,
        memory_total=profile.memory_bytes,
        memory_available=memory_available(profile, workload, plan, device),
        stages=stages,
        emulated=profile.name,
    )
