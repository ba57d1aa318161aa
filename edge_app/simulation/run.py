"""``simulate``: a fleet, a model and a load in; throughput, latency, utilization, the bottleneck,
energy per inference and the bound out.

The bound is the lesser of the compute bound (every device busy on whole inferences:
``sum over devices of 1 / its time for one inference``) and the link bound (the sensor's uplink
over the input bytes of one inference; the fleet's summed uplinks over the bytes the plan moves
between devices per inference). The report says which one binds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from edge_app.emulation.profiles import Link, load_profiles
from edge_app.emulation.workload import Workload
from edge_app.errors import ConfigError
from edge_app.messages.schemas import Plan
from edge_app.scheduling.planner import PlanPolicy
from edge_app.simulation.engine import Simulation
from edge_app.simulation.fleet import SimDevice, converged_plan
from edge_app.simulation.stats import completion_rate, percentile

SENSOR = "sensor"


@dataclass(frozen=True)
class Load:
    jobs: int = 200  # measured after the warm-up
    warmup: int = 20
    in_flight: int | None = None  # the sensor's max in-flight jobs; None: 2 x devices + 2
    rate: float | None = None  # frames/s offered by the sensor; None: as fast as it may
    window: int = 4  # in-flight envelopes per receiver (the courier's default)
    sensor_link: str = "wifi-n"
    time_scale: float = 1.0  # every emulated time divided by this


@dataclass
class Bound:
    compute: float
    sensor_link: float
    fleet_links: float
    bytes_per_inference: float

    @property
    def value(self) -> float:
        return min(self.compute, self.sensor_link, self.fleet_links)

    @property
    def binds(self) -> str:
        pairs = {"compute": self.compute, "sensor link": self.sensor_link}
        pairs["fleet links"] = self.fleet_links
        return min(pairs, key=lambda k: pairs[k])


@dataclass
class SimReport:
    model: str
    fleet: dict[str, int]
    throughput: float
    latency_p50: float
    latency_p90: float
    latency_p99: float
    latency_mean: float
    utilization: dict[str, float]
    link_utilization: dict[str, float]
    bottleneck: str
    energy_j: float
    power_w: float
    bound: Bound
    in_flight: int
    completed: int
    skipped: int = 0
    stages: list[str] = field(default_factory=list)

    @property
    def efficiency(self) -> float:
        return self.throughput / self.bound.value if self.bound.value > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["bound"] = {**asdict(self.bound), "value": self.bound.value, "binds": self.bound.binds}
        out["efficiency"] = self.efficiency
        return out


def describe(plan: Plan) -> list[str]:
    """One line per stage: mode and seats."""
    out = []
    for sp in plan.stages:
        if sp.mode == "sharded":
            seats = ", ".join(f"{s.device}[{s.lo}:{s.hi}]" for s in sp.shards)
            out.append(f"stage {sp.stage.index}: sharded x{len(sp.shards)}: {seats}")
        else:
            out.append(f"stage {sp.stage.index}: {len(sp.replicas)} replicas")
    return out


def compute_bound(devices: list[SimDevice], workload: Workload, scale: float = 1.0) -> float:
    return sum(scale / workload.seconds(d.profile) for d in devices)


def moved_bytes(plan: Plan, workload: Workload) -> float:
    """Bytes sent between devices per inference under ``plan`` (partials included)."""
    total = 0.0
    for i, sp in enumerate(plan.stages):
        if i == 0:
            continue
        sw = workload.stages[i]
        if sp.mode == "sharded":
            total += sw.input_bytes + sw.output_bytes
            continue
        prev = plan.stages[i - 1]
        here = {r.device for r in sp.replicas}
        if prev.mode == "replicated" and not {r.device for r in prev.replicas} <= here:
            total += sw.input_bytes
    return total


def link_rates(devices: list[SimDevice], load: Load) -> dict[str, float]:
    profiles = load_profiles()
    if load.sensor_link not in profiles.links:
        raise ConfigError(f"unknown link {load.sensor_link!r}; known: {sorted(profiles.links)}")
    rates = {d.id: profiles.links[d.profile.link].bytes_per_s * load.time_scale for d in devices}
    rates[SENSOR] = _rate(profiles.links[load.sensor_link]) * load.time_scale
    return rates


def _rate(link: Link) -> float:
    return link.bytes_per_s


def bound_of(plan: Plan, devices: list[SimDevice], workload: Workload, load: Load) -> Bound:
    rates = link_rates(devices, load)
    moved = moved_bytes(plan, workload)
    fleet = sum(r for d, r in rates.items() if d != SENSOR)
    return Bound(
        compute=compute_bound(devices, workload, load.time_scale),
        sensor_link=rates[SENSOR] / workload.input_bytes,
        fleet_links=fleet / moved if moved > 0 else float("inf"),
        bytes_per_inference=workload.input_bytes + moved,
    )


def simulate(
    devices: list[SimDevice],
    workload: Workload,
    load: Load = Load(),
    *,
    plan: Plan | None = None,
    policy: PlanPolicy | None = None,
) -> SimReport:
    """Simulate ``load`` on ``devices`` under ``plan`` (default: the planner's converged plan)."""
    if load.jobs < 2 or load.warmup < 0 or load.time_scale <= 0:
        raise ConfigError("jobs must be >= 2, warmup >= 0, time_scale > 0")
    plan = plan or converged_plan(devices, workload, policy=policy, time_scale=load.time_scale)
    by_id = {d.id: d for d in devices}
    scale = load.time_scale

    def stage_time(dev: str, stage: int, share: float) -> float:
        return workload.stages[stage].seconds(by_id[dev].profile, share) / scale

    sim = Simulation(
        plan,
        stage_time=stage_time,
        input_bytes=lambda s: float(workload.stages[s].input_bytes),
        partial_bytes=lambda s, share: workload.stages[s].output_bytes * share,
        links=link_rates(devices, load),
        window=load.window,
    )
    limit = load.in_flight or 2 * len(devices) + 2
    total = load.warmup + load.jobs
    state = {"next": 0, "skipped": 0}  # next job id; offers skipped (sensor window full)

    # The sensor never stops: the measurement ends at the last counted completion, with the
    # pipeline as full as at its start (no drain phase inflating the rate).
    def offer() -> None:
        while sim.in_flight(SENSOR) < limit:
            sim.submit(SENSOR, state["next"])
            state["next"] += 1
            if load.rate is not None:
                return

    if load.rate is None:
        sim.on_ack = lambda node: offer() if node == SENSOR else None
        sim.at(0.0, offer)
    else:
        period = 1.0 / load.rate

        def tick() -> None:
            if sim.in_flight(SENSOR) >= limit:
                state["skipped"] += 1
            else:
                offer()
            sim.at(sim.now + period, tick)

        sim.at(0.0, tick)
    marks: dict[str, object] = {}

    def on_done(job: int) -> None:
        if len(sim.done) == load.warmup + 1:
            marks["t0"] = sim.now
            marks["busy0"] = {d: n.busy_s for d, n in sim.nodes.items()}
            marks["link0"] = {d: n.link.busy_s for d, n in sim.nodes.items()}

    sim.on_done = on_done
    sim.run(until_done=total)
    if len(sim.done) < total:
        raise ConfigError(f"simulation stalled after {len(sim.done)} of {total} jobs")
    return _report(
        sim, plan, devices, workload, load, marks=marks, limit=limit, skipped=state["skipped"]
    )


def _report(
    sim: Simulation,
    plan: Plan,
    devices: list[SimDevice],
    workload: Workload,
    load: Load,
    *,
    marks: dict[str, object],
    limit: int,
    skipped: int,
) -> SimReport:
    t0 = float(marks["t0"])  # type: ignore[arg-type]
    span = max(sim.now - t0, 1e-12)
    ordered = sorted(sim.done, key=lambda j: sim.done[j])
    window = ordered[load.warmup :]
    latencies = sorted(sim.done[j] - sim.created[j] for j in window)
    throughput = completion_rate([sim.done[j] for j in window])
    busy0: dict[str, float] = marks["busy0"]  # type: ignore[assignment]
    link0: dict[str, float] = marks["link0"]  # type: ignore[assignment]
    util = {d.id: (sim.nodes[d.id].busy_s - busy0[d.id]) / span for d in devices}
    link_util = {d: (n.link.busy_s - link0[d]) / span for d, n in sim.nodes.items()}
    util = {d: min(1.0, u) for d, u in util.items()}
    power = sum(
        d.profile.power_idle_w + (d.profile.power_full_w - d.profile.power_idle_w) * util[d.id]
        for d in devices
    )
    hottest = max(util, key=lambda d: util[d])
    hot_link = max(link_util, key=lambda d: link_util[d])
    bottleneck = hottest if util[hottest] >= link_util[hot_link] else f"link of {hot_link}"
    counts: dict[str, int] = {}
    for d in devices:
        counts[d.profile.name] = counts.get(d.profile.name, 0) + 1
    return SimReport(
        model=workload.name,
        fleet=counts,
        throughput=throughput,
        latency_p50=percentile(latencies, 50),
        latency_p90=percentile(latencies, 90),
        latency_p99=percentile(latencies, 99),
        latency_mean=sum(latencies) / len(latencies) if latencies else 0.0,
        utilization=util,
        link_utilization=link_util,
        bottleneck=bottleneck,
        energy_j=power / load.time_scale / throughput if throughput > 0 else float("inf"),
        power_w=power,
        bound=bound_of(plan, devices, workload, load),
        in_flight=limit,
        completed=len(sim.done),
        skipped=skipped,
        stages=describe(plan),
    )
