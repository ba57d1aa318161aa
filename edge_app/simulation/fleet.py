"""A simulated fleet: devices from profiles, and the plan the real planner gives them.

``parse_fleet("pi3b:8,pi4:2")`` names the devices; :func:`converged_plan` runs
:func:`edge_app.scheduling.planner.plan` as the live scheduler would: a first plan from the
heartbeats' speeds and memory, then re-plans with the service times the devices measured on their
seats, until the plan stops changing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edge_app.emulation.profiles import DeviceProfile, ProfileFile, get_profile, load_profiles
from edge_app.emulation.views import device_view
from edge_app.emulation.workload import Workload
from edge_app.errors import ConfigError
from edge_app.messages.schemas import Plan
from edge_app.scheduling.planner import PlanPolicy, plan

MAX_DEVICES = 1000
_ITEM = re.compile(r"^([A-Za-z0-9_.-]+)(?::(\d+))?$")


@dataclass(frozen=True)
class SimDevice:
    id: str
    profile: DeviceProfile


def parse_fleet(spec: str, profiles: ProfileFile | None = None) -> list[SimDevice]:
    """``"pi3b:8,pi4:2"`` -> devices ``pi3b-01..08, pi4-01..02`` (a count of 1 may be left out)."""
    profiles = profiles or load_profiles()
    devices: list[SimDevice] = []
    for item in (p.strip() for p in spec.split(",")):
        m = _ITEM.match(item)
        if not m:
            raise ConfigError(f"fleet item {item!r}: expected PROFILE or PROFILE:COUNT")
        name, count = m.group(1), int(m.group(2) or 1)
        if count < 1:
            raise ConfigError(f"fleet item {item!r}: the count must be at least 1")
        profile = get_profile(name, profiles)
        base = len([d for d in devices if d.profile.name == name])
        devices += [SimDevice(f"{name}-{base + i + 1:02d}", profile) for i in range(count)]
        if len(devices) > MAX_DEVICES:
            raise ConfigError(f"fleet of more than {MAX_DEVICES} devices")
    if not devices:
        raise ConfigError("empty fleet")
    return devices


def converged_plan(
    devices: list[SimDevice],
    workload: Workload,
    *,
    policy: PlanPolicy | None = None,
    time_scale: float = 1.0,
    rounds: int = 4,
) -> Plan:
    """The plan the scheduler settles on for this fleet (ConfigError if it cannot run it)."""
    current: Plan | None = None
    now = 1.0
    for _ in range(rounds):
        views = [
            device_view(d.id, d.profile, workload, current, time_scale=time_scale) for d in devices
        ]
        nxt = plan(views, workload.profile, current, now, policy)
        if nxt is None:
            raise ConfigError(
                f"the planner cannot seat {workload.name} on this fleet (not enough memory?)"
            )
        if current is not None and nxt.epoch == current.epoch:
            break
        current, now = nxt, now + 1.0
    assert current is not None
    return current
