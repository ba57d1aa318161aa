"""The scheduler's view of the fleet, built from DeviceStatus and Heartbeat messages.

Pure state: no I/O, no threads, no clock reads — every method takes ``now`` (the receiver's
clock; device clocks are only compared with themselves). A device is online from its ``online``
status or a heartbeat newer than its last ``offline`` status, and offline on its last will (an
``offline`` status) or after ``missed`` heartbeat intervals without one (at least
``MIN_SILENCE_S``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from edge_app.messages.schemas import DeviceStatus, Heartbeat, Role, StageLoad

MISSED_HEARTBEATS = 3
# ... but never less than this: very short intervals (tests, demos) on a loaded machine would
# otherwise flap devices offline and back, and every flap re-seats their stages.
MIN_SILENCE_S = 1.0
MAX_DEVICES = 1024
DEFAULT_INTERVAL_S = 1.0
# A heartbeat speed or memory change smaller than this fraction is not worth a re-plan.
MATERIAL_CHANGE = 0.15
# Service times are smoothed over heartbeats: one noisy interval must not re-weight the fleet.
SMOOTHING = 0.3
# A device keeps what it measured for a stage it no longer holds this long: a device unseated
# for being slow must not look like a fresh one (and be re-seated) at the next plan.
REMEMBER_S = 60.0
MAX_REMEMBERED = 64


@dataclass(frozen=True)
class DeviceView:
    """What the planner needs to know about one online worker."""

    device: str
    speed: float = 1.0
    memory_total: int = 0  # bytes; 0 = unknown (no memory limit is enforced)
    memory_available: int = 0
    stages: tuple[StageLoad, ...] = ()  # what it holds and how long each takes
    measured: tuple[StageLoad, ...] = ()  # recent measurements of stages it no longer holds
    epoch: int = 0  # the plan epoch its heartbeat reported
    load: float = 0.0
    queue_depth: int = 0
    emulated: str | None = None


@dataclass
class DeviceRecord:
    device: str
    role: Role
    online: bool
    first_seen: float
    last_seen: float  # receiver time of the newest heartbeat (or status when none yet)
    status: DeviceStatus | None = None
    heartbeat: Heartbeat | None = None
    heartbeats: int = 0
    service: dict[tuple[int, int | None], float] = field(default_factory=dict)  # smoothed
    remembered: dict[int, tuple[StageLoad, float]] = field(default_factory=dict)  # stage -> when

    def smooth(self, hb: Heartbeat, now: float) -> None:
        """Fold the heartbeat's service times into the smoothed ones (stages it still holds)
        and remember the whole-stage ones."""
        fresh: dict[tuple[int, int | None], float] = {}
        for load in hb.stages:
            key = (load.stage, load.shard)
            old = self.service.get(key)
            x = load.service_time_s
            fresh[key] = x if old is None or old <= 0 else SMOOTHING * x + (1 - SMOOTHING) * old
            if load.shard is None and load.jobs > 0:
                smoothed = load.model_copy(update={"service_time_s": fresh[key]})
                self.remembered[load.stage] = (smoothed, now)
        self.service = fresh
        while len(self.remembered) > MAX_REMEMBERED:
            oldest = min(self.remembered, key=lambda s: self.remembered[s][1])
            del self.remembered[oldest]

    @property
    def interval_s(self) -> float:
        return self.heartbeat.interval_s if self.heartbeat else DEFAULT_INTERVAL_S

    def silence_limit(self, missed: int) -> float:
        """Seconds without a heartbeat after which the device counts as gone."""
        return max(missed * self.interval_s, MIN_SILENCE_S)

    def view(self, now: float | None = None) -> DeviceView:
        hb = self.heartbeat
        if hb is None:
            return DeviceView(device=self.device)
        return DeviceView(
            device=self.device,
            speed=hb.speed,
            memory_total=hb.hardware.memory_total,
            memory_available=hb.hardware.memory_available,
            stages=tuple(
                s.model_copy(update={"service_time_s": self.service.get((s.stage, s.shard), 0.0)})
                for s in hb.stages
            ),
            epoch=hb.epoch,
            load=hb.load,
            queue_depth=hb.queue_depth,
            emulated=hb.hardware.emulated,
            measured=tuple(
                load
                for stage, (load, when) in sorted(self.remembered.items())
                if (now is None or now - when <= REMEMBER_S) and (stage, None) not in self.service
            ),
        )


@dataclass
class Registry:
    """Devices by id. Every ``on_*`` method returns True when the fleet changed materially
    (a device came or went, or its speed or memory moved by more than MATERIAL_CHANGE)."""

    missed: int = MISSED_HEARTBEATS
    max_devices: int = MAX_DEVICES
    devices: dict[str, DeviceRecord] = field(default_factory=dict)

    def on_status(self, status: DeviceStatus, now: float) -> bool:
        rec = self.devices.get(status.device)
        if rec is None:
            rec = self._add(status.device, status.role, now)
            rec.online = status.state == "online"
            rec.status = status
            return False  # not plannable before its first heartbeat
        # Statuses apply in arrival order (the broker keeps one topic's order): a last will
        # carries the time it was set, at the device's start, older than its "online".
        rec.status = status
        rec.role = status.role
        was = rec.online
        if status.state == "offline":
            rec.online = False
        elif not was:
            rec.online = True
            rec.last_seen = now  # give it a full grace period to send its heartbeat
        return was != rec.online and rec.heartbeat is not None

    def on_heartbeat(self, hb: Heartbeat, now: float) -> bool:
        rec = self.devices.get(hb.device) or self._add(hb.device, hb.role, now)
        if rec.heartbeat is not None and hb.ts < rec.heartbeat.ts and hb.seq < rec.heartbeat.seq:
            return False  # reordered
        offline_after = rec.status is not None and rec.status.state == "offline"
        if offline_after and rec.status is not None and hb.ts <= rec.status.ts:
            return False  # sent before its will or clean offline
        old, was = rec.heartbeat, rec.online
        rec.heartbeat, rec.role, rec.last_seen, rec.online = hb, hb.role, now, True
        rec.heartbeats += 1
        rec.smooth(hb, now)
        return not was or old is None or _material(old, hb)

    def expire(self, now: float) -> list[str]:
        """Mark devices offline that missed ``missed`` heartbeats; returns their ids."""
        gone = []
        for rec in self.devices.values():
            if rec.online and now - rec.last_seen > rec.silence_limit(self.missed):
                rec.online = False
                gone.append(rec.device)
        return gone

    def grace(self, now: float) -> None:
        """Count every online device as just heard (after a period we could hear nobody)."""
        for rec in self.devices.values():
            if rec.online:
                rec.last_seen = now

    def next_expiry(self) -> float | None:
        """The receiver time at which the next online device would expire (for a timer)."""
        times = [
            r.last_seen + r.silence_limit(self.missed) for r in self.devices.values() if r.online
        ]
        return min(times, default=None)

    def workers(self, now: float | None = None) -> list[DeviceView]:
        """Online workers that have sent a heartbeat, sorted by id (the planner's input)."""
        return [
            r.view(now)
            for r in sorted(self.devices.values(), key=lambda r: r.device)
            if r.online and r.role == "worker" and r.heartbeat is not None
        ]

    def pending(self) -> list[str]:
        """Workers announced online whose first heartbeat has not arrived yet."""
        return sorted(
            r.device
            for r in self.devices.values()
            if r.online and r.role == "worker" and r.heartbeat is None
        )

    def records(self) -> Iterable[DeviceRecord]:
        return sorted(self.devices.values(), key=lambda r: r.device)

    def _add(self, device: str, role: Role, now: float) -> DeviceRecord:
        if len(self.devices) >= self.max_devices:
            self._evict()
        rec = DeviceRecord(device=device, role=role, online=False, first_seen=now, last_seen=now)
        self.devices[device] = rec
        return rec

    def _evict(self) -> None:
        """Forget the offline device seen longest ago (or the oldest one if all are online)."""
        pool = [r for r in self.devices.values() if not r.online] or list(self.devices.values())
        victim = min(pool, key=lambda r: r.last_seen)
        del self.devices[victim.device]


def _material(old: Heartbeat, new: Heartbeat) -> bool:
    if old.role != new.role:
        return True
    if _moved(old.speed, new.speed):
        return True
    a, b = old.hardware.memory_available, new.hardware.memory_available
    return a != b and (a == 0 or b == 0 or _moved(a, b))


def _moved(a: float, b: float) -> bool:
    return abs(a - b) > MATERIAL_CHANGE * max(abs(a), abs(b))
