"""One emulated configuration, measured and set beside the simulator and the bound.

``run_config`` starts an :class:`~edge_app.emulation.fleet.EmulatedFleet`, measures it, then
simulates the SAME plan it ran (so the comparison isolates the simulator's model of the data
path, not two planner runs) and computes the bound. All figures are given in device time: the
emulated wall-clock rates are multiplied back by the time scale.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path

from edge_app.emulation.fleet import EmulatedFleet, FleetSpec
from edge_app.emulation.surrogate import surrogate_workloads
from edge_app.emulation.workload import Workload, workload_from_model
from edge_app.messages.schemas import Plan
from edge_app.scheduling.planner import PlanPolicy
from edge_app.simulation.fleet import parse_fleet
from edge_app.simulation.run import Load, bound_of, describe, simulate

log = logging.getLogger(__name__)


@dataclass
class Row:
    label: str
    model: str
    fleet: str
    devices: int
    real_model: str  # what the host really ran ("surrogate" or "full")
    time_scale: float
    window: int
    throughput: float  # emulated, inferences/s of device time
    bound: float
    binds: str
    efficiency: float
    sim_throughput: float
    sim_error: float  # sim / emulated - 1
    p50: float  # emulated, seconds of device time
    p90: float
    sim_p50: float
    sim_p90: float
    sim_p50_error: float
    mean_latency: float  # emulated; in a closed loop = in-flight jobs / throughput (Little)
    sim_mean_latency: float
    energy_j: float
    results: int
    dropped: int
    overruns: int
    jobs_padded: int
    resent: int
    epochs: tuple[int, int]
    wall_s: float
    plan: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@cache
def workloads(model: str, surrogate: bool) -> tuple[Path, Workload, Workload]:
    """(model file the workers run, its workload, the workload they emulate)."""
    if surrogate:
        return surrogate_workloads(model)
    from edge_app.inference.zoo import cached_build

    path = cached_build(model)
    full = workload_from_model(path.read_bytes(), model)
    return path, full, full


def run_config(
    label: str,
    model: str,
    fleet: str,
    *,
    surrogate: bool,
    time_scale: float,
    jobs: int,
    warmup: int | None = None,
    window: int = 4,
    fixed_plan: Plan | None = None,
    policy: PlanPolicy | None = None,
) -> tuple[Row, Plan]:
    path, real, timing = workloads(model, surrogate)
    devices = parse_fleet(fleet)
    in_flight = 2 * len(devices) + 2
    spec = FleetSpec(
        devices,
        path,
        real,
        timing,
        time_scale=time_scale,
        in_flight=in_flight,
        window=window,
        policy=policy or PlanPolicy(),
        fixed_plan=fixed_plan,
    )
    emulated = EmulatedFleet(spec)
    emulated.start()
    try:
        run = emulated.measure(jobs=jobs, warmup=in_flight if warmup is None else warmup)
    finally:
        emulated.stop()
    load = Load(jobs=1000, warmup=100, in_flight=in_flight, window=window)
    sim = simulate(devices, timing, load, plan=run.plan)
    bound = bound_of(run.plan, devices, timing, load)
    thr = run.throughput / time_scale
    p50 = run.latency_p50 * time_scale
    row = Row(
        label=label,
        model=model,
        fleet=fleet,
        devices=len(devices),
        real_model="surrogate" if surrogate else "full",
        time_scale=time_scale,
        window=window,
        throughput=thr,
        bound=bound.value,
        binds=bound.binds,
        efficiency=thr / bound.value if bound.value > 0 else 0.0,
        sim_throughput=sim.throughput,
        sim_error=sim.throughput / thr - 1 if thr > 0 else float("inf"),
        p50=p50,
        p90=run.latency_p90 * time_scale,
        sim_p50=sim.latency_p50,
        sim_p90=sim.latency_p90,
        sim_p50_error=sim.latency_p50 / p50 - 1 if p50 > 0 else float("inf"),
        mean_latency=run.latency_mean * time_scale,
        sim_mean_latency=sim.latency_mean,
        energy_j=run.energy_j,
        results=run.results,
        dropped=run.dropped,
        overruns=run.overruns,
        jobs_padded=run.jobs_padded,
        resent=run.resent,
        epochs=run.epochs,
        wall_s=run.wall_s,
        plan=describe(run.plan),
    )
    log.info("%s: %s", label, row)
    return row, run.plan
