"""Hand-made devices and models whose simulated answers can be worked out on paper."""

from __future__ import annotations

from edge_app.emulation.profiles import DeviceProfile
from edge_app.emulation.workload import StageWork, Work, Workload
from edge_app.messages.schemas import ModelRef, StageDef
from edge_app.scheduling.profile import ModelProfile, StageProfile
from edge_app.simulation.fleet import SimDevice

GIGABIT_BPS = 940e6 / 8  # the shipped "gigabit" link: 117.5 MB/s
SRC = "hand-made test device, numbers chosen for the arithmetic"


def device(name: str, conv: float = 1e9, fc: float = 1e8) -> DeviceProfile:
    return DeviceProfile(
        name=name,
        conv_macs_per_s=conv,
        conv_source=SRC,
        fc_weight_bytes_per_s=fc,
        fc_source=SRC,
        other_bytes_per_s=1e9,
        other_source=SRC,
        memory_bytes=8 << 30,
        memory_source=SRC,
        power_idle_w=1.0,
        power_full_w=5.0,
        power_source=SRC,
        link="gigabit",
        link_source=SRC,
    )


def fleet(*profiles: DeviceProfile) -> list[SimDevice]:
    return [SimDevice(f"{p.name}-{i}", p) for i, p in enumerate(profiles)]


def two_stage(input_bytes: int, mid_bytes: int = 0, fc_rows: int = 100) -> Workload:
    """Stage 0: 2e9 conv MACs (2 s at 1 GMAC/s); stage 1: an FC of 1e8 weight bytes (1 s at
    100 MB/s), shardable by its ``fc_rows`` rows."""
    s0 = StageProfile(
        stage=StageDef(index=0, inputs=["x"], outputs=["h"]),
        macs=2_000_000_000,
        weight_bytes=1000,
        output_bytes=mid_bytes,
        input_bytes=input_bytes,
    )
    s1 = StageProfile(
        stage=StageDef(index=1, inputs=["h"], outputs=["y"], shardable_layer="fc"),
        macs=25_000_000,
        weight_bytes=100_000_000,
        output_bytes=4 * fc_rows,
        input_bytes=mid_bytes,
        rows=fc_rows,
        shard_weight_bytes=100_000_000,
        shard_macs=25_000_000,
    )
    profile = ModelProfile(model=ModelRef(name="hand", sha256="0" * 64), stages=(s0, s1))
    stages = (
        StageWork(Work(conv_macs=2e9), Work(), input_bytes, mid_bytes),
        StageWork(Work(), Work(fc_bytes=1e8), mid_bytes, 4 * fc_rows, fc_rows),
    )
    return Workload(name="hand", profile=profile, stages=stages)
