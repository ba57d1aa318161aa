"""Hand-built model profiles and fleets for the scheduling tests."""

from __future__ import annotations

from edge_app.messages.schemas import ModelRef, StageDef, StageLoad
from edge_app.scheduling.profile import ModelProfile, StageProfile
from edge_app.scheduling.registry import DeviceView

MB = 1 << 20


def stage_def(index: int, layer: str | None = None) -> StageDef:
    return StageDef(
        index=index, inputs=[f"t{index}"], outputs=[f"t{index + 1}"], shardable_layer=layer
    )


def vgg_like(last_sharded: bool = False) -> ModelProfile:
    """Conv block (non-shardable), a big FC, a small FC and a softmax tail — like VGG16."""
    stages = [
        StageProfile(
            stage_def(0),
            macs=15_000_000_000,
            weight_bytes=60 * MB,
            output_bytes=100_000,
            input_bytes=600_000,
        ),
        StageProfile(
            stage_def(1, "fc6"),
            macs=100_000_000,
            weight_bytes=400 * MB,
            output_bytes=16_384,
            input_bytes=100_000,
            rows=4096,
            shard_weight_bytes=400 * MB,
            shard_macs=100_000_000,
        ),
        StageProfile(
            stage_def(2, "fc7"),
            macs=16_000_000,
            weight_bytes=64 * MB,
            output_bytes=4000,
            input_bytes=16_384,
            rows=1000,
            shard_weight_bytes=64 * MB,
            shard_macs=16_000_000,
        ),
    ]
    if not last_sharded:
        stages.append(
            StageProfile(stage_def(3), macs=0, weight_bytes=0, output_bytes=4000, input_bytes=4000)
        )
    return ModelProfile(model=ModelRef(name="vgg-like", sha256="ab" * 32), stages=tuple(stages))


def device(name: str, speed: float = 1.0, memory_mb: int = 0, **kw: object) -> DeviceView:
    """A worker; ``memory_mb`` 0 means the device does not report its memory."""
    total = memory_mb * MB
    return DeviceView(device=name, speed=speed, memory_total=total, memory_available=total, **kw)  # type: ignore[arg-type]


def fleet(*speeds: float, memory_mb: int = 0) -> list[DeviceView]:
    return [device(f"w{i}", s, memory_mb) for i, s in enumerate(speeds)]


def measured(view: DeviceView, stage: int, seconds: float, jobs: int = 50) -> DeviceView:
    loads = (*view.stages, StageLoad(stage=stage, service_time_s=seconds, jobs=jobs))
    return DeviceView(**{**view.__dict__, "stages": loads})
