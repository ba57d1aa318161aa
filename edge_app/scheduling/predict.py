"""What a plan should deliver on a fleet, by the planner's own cost model (pure).

Used by the tests (a weighted plan against the compute bound), by ``edge-app status`` and as the
analytic baseline of the simulator: at throughput T, a device is busy
``T * (sum of its routing shares x stage times + its shard times)``; the plan's throughput is
the T at which the busiest device is fully busy.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_app.messages.schemas import Plan
from edge_app.scheduling.costs import Costs
from edge_app.scheduling.profile import ModelProfile
from edge_app.scheduling.registry import DeviceView


@dataclass(frozen=True)
class Prediction:
    throughput: float  # jobs/s
    bound: float  # the fleet's compute bound, jobs/s
    bottleneck: str | None  # the busiest device
    busy: dict[str, float]  # seconds of work per job, per device

    @property
    def efficiency(self) -> float:
        return self.throughput / self.bound if self.bound > 0 else 0.0

    def utilization(self) -> dict[str, float]:
        return {d: b * self.throughput for d, b in self.busy.items()}


def predict(
    plan: Plan, devices: list[DeviceView], profile: ModelProfile, previous: Plan | None = None
) -> Prediction:
    """The throughput ``plan`` reaches on ``devices``; seats on unknown devices count as lost."""
    costs = Costs.build(devices, profile, previous or plan)
    busy = {d.device: 0.0 for d in devices}
    for sp in plan.stages:
        s = sp.stage.index
        total = sum(r.weight for r in sp.replicas if r.device in busy)
        for r in sp.replicas:
            if r.device in busy and total > 0:
                busy[r.device] += r.weight / total * costs.time(r.device, s)
        rows = max((seat.hi for seat in sp.shards), default=0)
        for seat in sp.shards:
            if seat.device not in busy:
                return Prediction(0.0, costs.bound(), seat.device, busy)
            share = (seat.hi - seat.lo) / rows
            busy[seat.device] += costs.time(seat.device, s, share)
        if sp.mode == "replicated" and total <= 0:
            return Prediction(0.0, costs.bound(), None, busy)
    worst = max(busy, key=lambda d: busy[d], default=None)
    rate = 1.0 / busy[worst] if worst is not None and busy[worst] > 0 else 0.0
    return Prediction(rate, costs.bound(), worst, busy)


def equal_split(plan: Plan) -> Plan:
    """The same seats with every device treated alike (the paper's assumption): equal routing
    weights and equal shard slices. For comparing a weighted plan against it."""
    stages = []
    for sp in plan.stages:
        replicas = [r.model_copy(update={"weight": 1.0}) for r in sp.replicas]
        seats = sorted(sp.shards, key=lambda s: s.index)
        rows = max((s.hi for s in seats), default=0)
        k = len(seats)
        shards = [
            s.model_copy(update={"lo": rows * i // k, "hi": rows * (i + 1) // k})
            for i, s in enumerate(seats)
        ]
        stages.append(sp.model_copy(update={"replicas": replicas, "shards": shards}))
    return plan.model_copy(update={"stages": stages})
