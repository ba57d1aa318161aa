"""A picture of the fleet from a few seconds of control-plane messages (pure; ``edge-app status``).

Feed it the retained statuses and plan and whatever heartbeats and metrics arrive; ``report``
turns them into one JSON-ready dict: devices (role, state, seats in the plan, what they hold and
measured, load, queue), the plan, and the accounting counters with rates where two samples of a
device's metrics were seen.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from edge_app.messages.schemas import DeviceStatus, Heartbeat, Metrics, Plan

MAX_SAMPLES = 8  # metrics samples kept per device
MAX_DEVICES = 4096


@dataclass
class FleetSnapshot:
    statuses: dict[str, DeviceStatus] = field(default_factory=dict)
    heartbeats: dict[str, tuple[float, Heartbeat]] = field(default_factory=dict)
    first_heartbeats: dict[str, Heartbeat] = field(default_factory=dict)  # for job rates
    metrics: dict[str, deque[tuple[float, Metrics]]] = field(default_factory=dict)
    plan: Plan | None = None
    errors: int = 0  # messages that did not decode

    def add_status(self, status: DeviceStatus) -> None:
        if status.device in self.statuses or len(self.statuses) < MAX_DEVICES:
            self.statuses[status.device] = status

    def add_heartbeat(self, hb: Heartbeat, now: float) -> None:
        if hb.device in self.heartbeats or len(self.heartbeats) < MAX_DEVICES:
            self.heartbeats[hb.device] = (now, hb)
            self.first_heartbeats.setdefault(hb.device, hb)

    def add_metrics(self, m: Metrics, now: float) -> None:
        if m.device not in self.metrics and len(self.metrics) >= MAX_DEVICES:
            return
        self.metrics.setdefault(m.device, deque(maxlen=MAX_SAMPLES)).append((now, m))

    def add_plan(self, plan: Plan) -> None:
        if self.plan is None or plan.epoch >= self.plan.epoch:
            self.plan = plan

    # --- the report ---------------------------------------------------------------------------
    def report(self, now: float) -> dict[str, Any]:
        names = sorted(set(self.statuses) | set(self.heartbeats) | set(self.metrics))
        seats = _seats(self.plan)
        return {
            "plan": _plan_summary(self.plan, now),
            "devices": [self._device(d, seats.get(d, []), now) for d in names],
            "totals": self._totals(),
            "undecodable_messages": self.errors,
        }

    def _device(self, device: str, seats: list[str], now: float) -> dict[str, Any]:
        status = self.statuses.get(device)
        entry: dict[str, Any] = {
            "device": device,
            "role": status.role if status else None,
            "state": status.state if status else "unknown",
            "seats": seats,
        }
        if device in self.heartbeats:
            received, hb = self.heartbeats[device]
            entry["role"] = entry["role"] or hb.role
            entry.update(_heartbeat_fields(hb, now - received))
            entry["jobs_per_s"] = _job_rate(self.first_heartbeats[device], hb)
            if self.plan is not None and hb.role == "worker":
                entry["behind_plan"] = hb.epoch < self.plan.epoch
        samples = self.metrics.get(device)
        if samples:
            entry["metrics"] = _counters(samples[-1][1])
            entry["rates"] = _rates(samples)
        return entry

    def _totals(self) -> dict[str, dict[str, Any]]:
        totals: dict[str, dict[str, Any]] = {}
        for samples in self.metrics.values():
            m = samples[-1][1]
            t = totals.setdefault(m.role, {"devices": 0, **dict.fromkeys(_COUNTERS, 0)})
            t["devices"] += 1
            for name, value in _counters(m).items():
                t[name] += value
        return totals


_COUNTERS = ("accepted", "completed", "dropped", "resent", "errors", "duplicates")


def _counters(m: Metrics) -> dict[str, int]:
    return {
        "accepted": m.accepted,
        "completed": m.completed,
        "dropped": sum(m.dropped.values()),
        "resent": m.resent,
        "errors": m.errors,
        "duplicates": m.duplicates,
    }


def _rates(samples: deque[tuple[float, Metrics]]) -> dict[str, float] | None:
    """Per-second rates between the first and last sample (None with a single sample)."""
    if len(samples) < 2:
        return None
    (t0, first), (t1, last) = samples[0], samples[-1]
    span = last.ts - first.ts or t1 - t0
    if span <= 0:
        return None
    a, b = _counters(first), _counters(last)
    return {k: round((b[k] - a[k]) / span, 3) for k in ("accepted", "completed", "dropped")}


def _job_rate(first: Heartbeat, last: Heartbeat) -> float | None:
    """Jobs per second over all the stages a device holds, between two of its heartbeats."""
    span = last.ts - first.ts
    if span <= 0:
        return None
    before = {(s.stage, s.shard): s.jobs for s in first.stages}
    done = sum(max(0, s.jobs - before.get((s.stage, s.shard), 0)) for s in last.stages)
    return round(done / span, 3)


def _heartbeat_fields(hb: Heartbeat, age: float) -> dict[str, Any]:
    hw = hb.hardware
    return {
        "heartbeat_age_s": round(max(0.0, age), 2),
        "epoch": hb.epoch,
        "load": round(hb.load, 3),
        "queue": [hb.queue_depth, hb.queue_limit],
        "speed": hb.speed,
        "memory": {"available": hw.memory_available, "total": hw.memory_total},
        "cpu": hw.cpu_model,
        "cores": hw.cores,
        "emulated": hw.emulated,
        "holds": [
            {
                "stage": s.stage,
                "shard": s.shard,
                "service_time_s": round(s.service_time_s, 5),
                "jobs": s.jobs,
            }
            for s in hb.stages
        ],
    }


def _seats(plan: Plan | None) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    if plan is None:
        return out
    for sp in plan.stages:
        i = sp.stage.index
        for r in sp.replicas:
            out.setdefault(r.device, []).append(f"{i} (w={r.weight:.3g})")
        for s in sp.shards:
            out.setdefault(s.device, []).append(f"{i}[{s.lo}:{s.hi}]")
        for m in sp.mergers:
            out.setdefault(m.device, []).append(f"merge {i}")
    return out


def _plan_summary(plan: Plan | None, now: float) -> dict[str, Any] | None:
    if plan is None:
        return None
    return {
        "epoch": plan.epoch,
        "scheduler": plan.scheduler,
        "age_s": round(max(0.0, now - plan.ts), 1),
        "reason": plan.reason,
        "model": {"name": plan.model.name, "sha256": plan.model.sha256},
        "stages": [
            {
                "stage": sp.stage.index,
                "mode": sp.mode,
                "layer": sp.stage.shardable_layer,
                "replicas": {r.device: r.weight for r in sp.replicas},
                "shards": [[s.device, s.lo, s.hi] for s in sp.shards],
                "mergers": [m.device for m in sp.mergers],
            }
            for sp in plan.stages
        ],
    }
