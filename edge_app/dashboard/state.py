"""What the dashboard knows about the fleet, built from MQTT messages by :meth:`FleetState.ingest`.

Pure state: no I/O, no clock of its own (callers pass ``now``), so unit tests feed it
``(topic, payload)`` pairs directly. Every ingest returns the :class:`Event` list the page and the
history store need; a bad message is counted and logged, never raised.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from edge_app.errors import WireError
from edge_app.messages.schemas import (
    DeviceStatus,
    Heartbeat,
    JobOutcome,
    Metrics,
    Plan,
    decode,
)
from edge_app.messages.topics import Topics

from .series import Series

log = logging.getLogger(__name__)

RECENT_PER_CAMERA = 24
MAX_CAMERAS = 256
MAX_DEVICES = 1024
SEEN_JOBS = 20_000  # outcome de-duplication window (delivery is at-least-once)
MAX_THUMB_BYTES = 512 * 1024
MISSED_HEARTBEATS = 3

Json = dict[str, Any]
_T = TypeVar("_T")


@dataclass(frozen=True)
class Event:
    """One change for the page (SSE event name + JSON data) and, if ``history``, for SQLite."""

    kind: str
    data: Json
    history: bool = False


def outcome_summary(o: JobOutcome) -> Json:
    return {
        "job": o.job,
        "sensor": o.sensor,
        "seq": o.seq,
        "status": o.status,
        "label": o.label,
        "score": o.score,
        "reason": o.reason,
        "ts": o.done_ts,
        "created": o.created_ts,
        "latency": o.latency_s or max(0.0, o.done_ts - o.created_ts),
        "epoch": o.epoch,
    }


@dataclass
class Camera:
    sensor: str
    last: Json | None = None
    last_ok: Json | None = None
    recent: deque[Json] = field(default_factory=lambda: deque(maxlen=RECENT_PER_CAMERA))
    thumb: bytes | None = None
    thumb_version: int = 0

    def to_json(self) -> Json:
        return {
            "sensor": self.sensor,
            "last": self.last,
            "last_ok": self.last_ok,
            "recent": list(self.recent),
            "thumb_version": self.thumb_version if self.thumb else 0,
        }


@dataclass
class Device:
    device: str
    role: str = "worker"
    state: str = "offline"
    version: str = ""
    status_ts: float = 0.0
    heartbeat: Heartbeat | None = None
    seen: float = 0.0  # receive time of the last heartbeat
    late: bool = False  # heartbeats stopped while the status still says online

    def online(self, now: float) -> bool:
        return self.state == "online" and not self.heartbeats_stopped(now)

    def heartbeats_stopped(self, now: float) -> bool:
        """It sent heartbeats, and missed MISSED_HEARTBEATS of them since."""
        hb = self.heartbeat
        if hb is None or self.seen <= 0:
            return False
        return now - self.seen > MISSED_HEARTBEATS * hb.interval_s + 0.5

    def to_json(self, now: float, seats: list[Json]) -> Json:
        hb = self.heartbeat
        hw = hb.hardware if hb else None
        return {
            "device": self.device,
            "role": self.role,
            "online": self.online(now),
            "state": self.state,
            "version": self.version,
            "last_seen": self.seen or self.status_ts,
            "seats": seats,
            "load": hb.load if hb else None,
            "queue": hb.queue_depth if hb else None,
            "queue_limit": hb.queue_limit if hb else None,
            "epoch": hb.epoch if hb else None,
            "speed": hb.speed if hb else None,
            "service": [s.model_dump(exclude={"v"}) for s in hb.stages] if hb else [],
            "memory_total": hw.memory_total if hw else None,
            "memory_available": hw.memory_available if hw else None,
            "temperature_c": hw.temperature_c if hw else None,
            "emulated": hw.emulated if hw else None,
            "cpu_model": hw.cpu_model if hw else "",
            "cores": hw.cores if hw else None,
            "sensor": hb.sensor.model_dump(exclude={"v"}) if hb and hb.sensor else None,
        }


def plan_seats(plan: Plan | None) -> dict[str, list[Json]]:
    """Device id -> the seats the plan gives it (replica with weight, shard with bounds)."""
    seats: dict[str, list[Json]] = {}
    if plan is None:
        return seats
    for sp in plan.stages:
        idx = sp.stage.index
        for r in sp.replicas:
            seats.setdefault(r.device, []).append(
                {"stage": idx, "mode": "replica", "weight": r.weight}
            )
        for s in sp.shards:
            seats.setdefault(s.device, []).append(
                {"stage": idx, "mode": "shard", "shard": s.index, "lo": s.lo, "hi": s.hi}
            )
        for m in sp.mergers:
            seats.setdefault(m.device, []).append({"stage": idx, "mode": "merger"})
    return seats


def plan_json(plan: Plan | None) -> Json | None:
    if plan is None:
        return None
    return {
        "epoch": plan.epoch,
        "ts": plan.ts,
        "scheduler": plan.scheduler,
        "model": plan.model.name,
        "reason": plan.reason,
        "stages": [
            {
                "index": sp.stage.index,
                "mode": sp.mode,
                "layer": sp.stage.shardable_layer,
                "replicas": [{"device": r.device, "weight": r.weight} for r in sp.replicas],
                "shards": [
                    {"device": s.device, "index": s.index, "lo": s.lo, "hi": s.hi}
                    for s in sp.shards
                ],
                "mergers": [m.device for m in sp.mergers],
            }
            for sp in plan.stages
        ],
    }


class FleetState:
    """Cameras, devices, the plan and the counters, updated one MQTT message at a time."""

    def __init__(self, topics: Topics, started: float = 0.0) -> None:
        self.topics = topics
        self.started = started  # outcome counters count from here (metrics are cumulative)
        self.cameras: dict[str, Camera] = {}
        self.devices: dict[str, Device] = {}
        self.plan: Plan | None = None
        self.metrics: dict[str, Metrics] = {}
        self.series = Series()
        self.completed = 0
        self.dropped: Counter[str] = Counter()
        self.bad_messages = 0
        self.overflow = 0
        self._seen_jobs: OrderedDict[str, None] = OrderedDict()
        self._seats: dict[str, list[Json]] = {}

    # --- ingest ------------------------------------------------------------------------------
    def ingest(self, topic: str, payload: bytes, now: float) -> list[Event]:
        """Apply one message; a malformed one is counted and logged, and yields no events."""
        try:
            parsed = self.topics.parse(topic)
            handler = getattr(self, f"_on_{parsed.kind}", None)
            if handler is None:
                return []
            events: list[Event] = handler(parsed.ident, payload, now)
            return events
        except WireError as exc:
            self.bad_messages += 1
            if self.bad_messages <= 20 or self.bad_messages % 1000 == 0:  # no log flood
                log.warning(
                    "dashboard: rejected message on %s (%d so far): %s",
                    topic,
                    self.bad_messages,
                    exc,
                )
            return []

    def _on_result(self, sensor: str, payload: bytes, now: float) -> list[Event]:
        o = decode(JobOutcome, payload)
        if o.sensor != sensor:
            raise WireError(f"outcome for sensor {o.sensor!r} on the topic of {sensor!r}")
        if o.job in self._seen_jobs:
            return []
        self._seen_jobs[o.job] = None
        if len(self._seen_jobs) > SEEN_JOBS:
            self._seen_jobs.popitem(last=False)
        summary = outcome_summary(o)
        if o.status == "ok":
            self.completed += 1
        else:
            self.dropped[o.reason or "error"] += 1
        self.series.add(now, o.status == "ok", summary["latency"])
        cam = self.camera(sensor)
        if cam is None:
            return []
        self.remember(cam, summary)
        return [Event("result", summary, history=True)]

    def remember(self, cam: Camera, summary: Json) -> None:
        cam.last = summary
        if summary["status"] == "ok":
            cam.last_ok = summary
        cam.recent.append(summary)

    def camera(self, sensor: str) -> Camera | None:
        """The camera's card state, created on first sight (None past MAX_CAMERAS)."""
        return self._slot(self.cameras, sensor, Camera, MAX_CAMERAS)

    def _on_thumb(self, sensor: str, payload: bytes, now: float) -> list[Event]:
        if not payload:
            return []  # a cleared retained thumbnail
        if len(payload) > MAX_THUMB_BYTES or not payload.startswith(b"\xff\xd8"):
            raise WireError(f"thumbnail of {len(payload)} bytes is not a small JPEG")
        cam = self.camera(sensor)
        if cam is None:
            return []
        cam.thumb = payload
        cam.thumb_version += 1
        return [Event("thumb", {"sensor": sensor, "version": cam.thumb_version})]

    def _on_status(self, device: str, payload: bytes, now: float) -> list[Event]:
        if not payload:  # the retained status was cleared: the device left the fleet
            if self.devices.pop(device, None) is None:
                return []
            self.metrics.pop(device, None)
            data = {"device": device, "change": "removed"}
            return [Event("device_removed", data, history=True)]
        st = decode(DeviceStatus, payload)
        if st.device != device:
            raise WireError(f"status of {st.device!r} on the topic of {device!r}")
        dev = self._device(device)
        if dev is None:
            return []
        was = dev.online(now)
        dev.role, dev.state, dev.version, dev.status_ts = st.role, st.state, st.version, st.ts
        if st.state == "online":
            dev.seen = now  # a fresh start: heartbeats are due from now on
        return self._device_events(dev, was, now)

    def _on_heartbeat(self, device: str, payload: bytes, now: float) -> list[Event]:
        hb = decode(Heartbeat, payload)
        if hb.device != device:
            raise WireError(f"heartbeat of {hb.device!r} on the topic of {device!r}")
        dev = self._device(device)
        if dev is None:
            return []
        was = dev.online(now)
        dev.heartbeat, dev.seen, dev.role = hb, now, hb.role
        if dev.status_ts == 0:
            dev.state = "online"  # no status seen yet (none retained): heartbeats say it lives
        return self._device_events(dev, was, now)

    def _device(self, device: str) -> Device | None:
        return self._slot(self.devices, device, Device, MAX_DEVICES)

    def _slot(
        self, table: dict[str, _T], key: str, make: Callable[[str], _T], limit: int
    ) -> _T | None:
        """``table[key]``, made on first sight; None (counted as overflow) once ``limit`` keys
        are known: the tables are fed from the network and must stay bounded."""
        entry = table.get(key)
        if entry is None:
            if len(table) >= limit:
                self.overflow += 1
                return None
            entry = table[key] = make(key)
        return entry

    def _device_events(self, dev: Device, was: bool, now: float) -> list[Event]:
        data = self.device_json(dev, now)
        is_online = data["online"]
        if was == is_online:
            return [Event("device", data)]
        data = {**data, "change": "online" if is_online else "offline"}
        return [Event("device", data, history=True)]

    def _on_plan(self, _ident: str | None, payload: bytes, now: float) -> list[Event]:
        if not payload:
            return []
        plan = decode(Plan, payload)
        if self.plan is not None and plan.epoch <= self.plan.epoch:
            if plan.epoch < self.plan.epoch:
                log.info("dashboard: ignoring plan epoch %d < %d", plan.epoch, self.plan.epoch)
            return []  # the same epoch again (e.g. retained, after a reconnect): nothing new
        self.plan = plan
        self._seats = plan_seats(plan)
        events = [Event("plan", {**self.pipeline_json(), "change": "plan"}, history=True)]
        events += [Event("device", self.device_json(d, now)) for d in self.devices.values()]
        return events

    def _on_metrics(self, device: str, payload: bytes, now: float) -> list[Event]:
        m = decode(Metrics, payload)
        if m.device != device:
            raise WireError(f"metrics of {m.device!r} on the topic of {device!r}")
        if device not in self.metrics and len(self.metrics) >= MAX_DEVICES:
            self.overflow += 1
            return []
        self.metrics[device] = m
        return [Event("counters", self.counters())]

    # --- periodic ----------------------------------------------------------------------------
    def tick(self, now: float) -> list[Event]:
        """Once a second: the chart point, and devices whose heartbeats stopped."""
        events = [Event("tick", self.series.tick(now))]
        for dev in self.devices.values():
            if dev.state == "online" and dev.heartbeat is not None:
                late = dev.heartbeats_stopped(now)
                if late and not dev.late:
                    data = {**self.device_json(dev, now), "change": "stale"}
                    events.append(Event("device", data, history=True))
                dev.late = late
        return events

    # --- views -------------------------------------------------------------------------------
    def device_json(self, dev: Device, now: float) -> Json:
        return dev.to_json(now, self._seats.get(dev.device, []))

    def counters(self) -> Json:
        metrics = list(self.metrics.values())
        return {
            "completed": self.completed,
            "dropped": dict(self.dropped),
            "resent": sum(m.resent for m in metrics),
            "accepted": sum(m.accepted for m in metrics if m.role in ("sensor", "inject")),
            "errors": sum(m.errors for m in metrics),
            "duplicates": sum(m.duplicates for m in metrics),
            "bad_messages": self.bad_messages,
            "since": self.started,
        }

    def pipeline_json(self) -> Json:
        return {"plan": plan_json(self.plan), "counters": self.counters()}

    def snapshot(self, now: float) -> Json:
        return {
            "now": now,
            "cameras": [c.to_json() for c in self.cameras.values()],
            "devices": [self.device_json(d, now) for d in self.devices.values()],
            "pipeline": self.pipeline_json(),
            "series": list(self.series.points),
        }
