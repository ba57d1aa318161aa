"""Real wire messages for the dashboard tests (encoded with the project's schemas)."""

from __future__ import annotations

import io
import time

from PIL import Image

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
    encode,
)

SHA = "ab" * 32


def outcome(
    sensor: str = "cam1",
    seq: int = 1,
    *,
    label: str | None = "waving",
    score: float | None = 0.9,
    status: str = "ok",
    reason: str | None = None,
    done: float | None = None,
    latency: float = 0.2,
    job: str | None = None,
) -> bytes:
    done = time.time() if done is None else done
    return encode(
        JobOutcome(
            job=job or f"{sensor}-{seq}-x",
            sensor=sensor,
            seq=seq,
            status=status,  # type: ignore[arg-type]
            reason=reason,  # type: ignore[arg-type]
            label=label if status == "ok" else None,
            score=score if status == "ok" else None,
            created_ts=done - latency,
            done_ts=done,
            latency_s=latency,
        )
    )


def status(
    device: str, state: str = "online", role: str = "worker", ts: float | None = None
) -> bytes:
    return encode(
        DeviceStatus(device=device, role=role, state=state, ts=time.time() if ts is None else ts)  # type: ignore[arg-type]
    )


def heartbeat(
    device: str,
    *,
    load: float = 0.5,
    seq: int = 1,
    ts: float | None = None,
    emulated: str | None = "pi3b",
    temperature: float | None = 51.5,
    service: float = 0.12,
) -> bytes:
    return encode(
        Heartbeat(
            device=device,
            role="worker",
            seq=seq,
            ts=time.time() if ts is None else ts,
            hardware=Hardware(
                cpu_model="Cortex-A53",
                cores=4,
                memory_total=1 << 30,
                memory_available=600 << 20,
                temperature_c=temperature,
                emulated=emulated,
            ),
            load=load,
            queue_depth=2,
            queue_limit=8,
            epoch=3,
            stages=[StageLoad(stage=0, service_time_s=service, jobs=10)],
        )
    )


def plan(
    epoch: int = 3, replicas: tuple[str, ...] = ("w1", "w2"), shards: tuple[str, ...] = ("w3", "w4")
) -> bytes:
    s0 = StagePlan(
        stage=StageDef(index=0, inputs=["in"], outputs=["a"]),
        mode="replicated",
        replicas=[Replica(device=d, weight=1.0 + i) for i, d in enumerate(replicas)],
    )
    width = 4096 // max(1, len(shards))
    s1 = StagePlan(
        stage=StageDef(index=1, inputs=["a"], outputs=["out"], shardable_layer="fc1"),
        mode="sharded",
        shards=[
            ShardSeat(device=d, index=i, lo=i * width, hi=(i + 1) * width)
            for i, d in enumerate(shards)
        ],
        mergers=[Replica(device=replicas[0])] if replicas else [],
    )
    return encode(
        Plan(
            epoch=epoch,
            ts=time.time(),
            scheduler="sched",
            model=ModelRef(name="alexnet", sha256=SHA),
            stages=[s0, s1],
            reason="worker joined",
        )
    )


def metrics(device: str, role: str = "worker", **counts: object) -> bytes:
    return encode(Metrics(device=device, role=role, ts=time.time(), **counts))  # type: ignore[arg-type]


def jpeg(color: tuple[int, int, int] = (40, 120, 200), size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG", quality=80)
    return buf.getvalue()
