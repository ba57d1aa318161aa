"""A pretend fleet on MQTT for the dashboard's e2e test, benchmark and screenshots.

Publishes real wire messages (statuses, heartbeats, a plan, metrics, thumbnails, outcomes) through
a Transport, exactly as the sensor, worker and scheduler roles would.
"""

from __future__ import annotations

import io
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from PIL import Image, ImageDraw

from edge_app.messages.schemas import (
    DeviceStatus,
    Hardware,
    Heartbeat,
    JobOutcome,
    Metrics,
    ModelRef,
    Plan,
    Replica,
    ShardSeat,
    StageDef,
    StageLoad,
    StagePlan,
    TopK,
    encode,
)
from edge_app.messages.topics import Topics
from edge_app.transport.base import Transport

ACTIONS = ("waving", "clapping", "walking", "jumping", "sitting down", "standing up")
PROFILES = ("pi3b", "pi4", "pi5", None)


def thumbnail(sensor: str, hue: int) -> bytes:
    """A small, recognisable JPEG: a coloured scene with a stick figure."""
    img = Image.new("RGB", (160, 120), (30 + hue % 60, 60 + hue % 90, 90 + hue % 120))
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 85, 160, 120), fill=(70, 80 + hue % 40, 60))
    x = 50 + hue % 60
    draw.ellipse((x - 8, 30, x + 8, 46), outline=(250, 240, 220), width=3)
    draw.line((x, 46, x, 72), fill=(250, 240, 220), width=3)
    lift = (hue // 37) % 3 * 10  # a different pose per camera
    draw.line((x, 52, x - 14, 50 - lift), fill=(250, 240, 220), width=3)
    draw.line((x, 52, x + 14, 42 + lift), fill=(250, 240, 220), width=3)
    draw.line((x, 72, x - 10, 90), fill=(250, 240, 220), width=3)
    draw.line((x, 72, x + 10, 90), fill=(250, 240, 220), width=3)
    draw.text((6, 4), sensor, fill=(255, 255, 255))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=75)
    return buf.getvalue()


@dataclass
class DemoFleet:
    transport: Transport
    topics: Topics
    cameras: Sequence[str] = ("porch", "garage", "kitchen")
    workers: Sequence[str] = ("pi-a", "pi-b", "pi-c", "pi-d")
    seed: int = 7
    seq: dict[str, int] = field(default_factory=dict)
    completed: int = 0
    _hb: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def _pub(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.transport.publish(topic, payload, retain=retain)

    def status(self, device: str, state: str = "online", role: str = "worker") -> None:
        msg = DeviceStatus(device=device, role=role, state=state, ts=time.time())  # type: ignore[arg-type]
        self._pub(self.topics.status(device), encode(msg), retain=True)

    def start(self) -> None:
        """Everything retained a real fleet would have: statuses, the plan, thumbnails."""
        for w in self.workers:
            self.status(w)
        self.status("scheduler-1", role="scheduler")
        self._pub(self.topics.plan, encode(self.plan()), retain=True)
        for i, cam in enumerate(self.cameras):
            self._pub(self.topics.thumb(cam), thumbnail(cam, 37 * i + 11), retain=True)
        self.heartbeats()

    def plan(self, epoch: int = 4) -> Plan:
        ws = list(self.workers)
        conv = ws[: max(1, len(ws) - 2)]
        fc = ws[-2:] if len(ws) > 2 else ws
        width = 4096 // len(fc)
        return Plan(
            epoch=epoch,
            ts=time.time(),
            scheduler="scheduler-1",
            model=ModelRef(name="action-c3d-small", sha256="0" * 64),
            stages=[
                StagePlan(
                    stage=StageDef(index=0, inputs=["clip"], outputs=["conv5"]),
                    mode="replicated",
                    replicas=[Replica(device=d, weight=1.0 + 0.5 * i) for i, d in enumerate(conv)],
                ),
                StagePlan(
                    stage=StageDef(
                        index=1, inputs=["conv5"], outputs=["logits"], shardable_layer="fc6"
                    ),
                    mode="sharded",
                    shards=[
                        ShardSeat(device=d, index=i, lo=i * width, hi=(i + 1) * width)
                        for i, d in enumerate(fc)
                    ],
                    mergers=[Replica(device=fc[0])],
                ),
            ],
            reason="device joined",
        )

    def heartbeats(self) -> None:
        self._hb += 1
        for i, w in enumerate(self.workers):
            profile = PROFILES[i % len(PROFILES)]
            hb = Heartbeat(
                device=w,
                role="worker",
                seq=self._hb,
                ts=time.time(),
                hardware=Hardware(
                    cpu_model="Cortex-A72" if profile != "pi3b" else "Cortex-A53",
                    cores=4,
                    memory_total=(1 << 30) * (1 + i % 4),
                    memory_available=(600 << 20) + (i << 24),
                    temperature_c=48.0 + 3 * i + self.rng.random(),
                    emulated=profile,
                ),
                load=min(1.0, 0.35 + 0.15 * i + 0.1 * self.rng.random()),
                queue_depth=self.rng.randint(0, 3),
                queue_limit=8,
                epoch=4,
                stages=[self._stage_load(i)],
            )
            self._pub(self.topics.heartbeat(w), encode(hb))

    def _stage_load(self, i: int) -> StageLoad:
        """What worker ``i`` measured for its seat in :meth:`plan` (a replica, or a shard)."""
        conv = max(1, len(self.workers) - 2)
        service = 0.05 + 0.03 * i
        if i < conv or len(self.workers) <= 2:
            return StageLoad(stage=0, service_time_s=service, jobs=10 * i)
        return StageLoad(stage=1, shard=i - conv, service_time_s=service, jobs=10 * i)

    def outcome(
        self, camera: str, *, status: str = "ok", reason: str | None = None, latency: float = 0.0
    ) -> JobOutcome:
        seq = self.seq[camera] = self.seq.get(camera, 0) + 1
        now = time.time()
        latency = latency or 0.15 + 0.2 * self.rng.random()
        label = self.rng.choice(ACTIONS)
        ok = status == "ok"
        return JobOutcome(
            job=f"{camera}-{seq}-{uuid.uuid4().hex[:8]}",
            sensor=camera,
            seq=seq,
            status=status,  # type: ignore[arg-type]
            reason=reason,  # type: ignore[arg-type]
            model="action-c3d-small",
            label=label if ok else None,
            score=round(0.55 + 0.44 * self.rng.random(), 3) if ok else None,
            topk=[TopK(label=label, score=0.9)] if ok else [],
            created_ts=now - latency,
            done_ts=now,
            latency_s=latency,
            epoch=4,
        )

    def result(self, camera: str, **kwargs: object) -> JobOutcome:
        o = self.outcome(camera, **kwargs)  # type: ignore[arg-type]
        self._pub(self.topics.result(camera), encode(o))
        self.completed += o.status == "ok"
        return o

    def metrics(self) -> None:
        for w in self.workers:
            m = Metrics(device=w, role="worker", ts=time.time(), resent=self.completed // 200)
            self._pub(self.topics.metrics(w), encode(m))
        m = Metrics(device="sensor-1", role="sensor", ts=time.time(), accepted=self.completed + 2)
        self._pub(self.topics.metrics("sensor-1"), encode(m))
