"""What the planner knows about a model: its stages with their cost, weight and activation sizes.

``ModelProfile`` is plain data (the simulator and the tests build it by hand);
``profile_from_model`` derives it from a ``.tflite`` file with the partitioner's default
Musical-Chair split. Costs are expressed as *reference seconds*: the time a reference device
(speed 1.0) would take, estimated from MACs and weight bytes until workers report measured
service times (the planner calibrates these estimates against measurements).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge_app.errors import ModelError
from edge_app.messages.schemas import ModelRef, StageDef

if TYPE_CHECKING:  # the inference layer is imported only when a model file is profiled
    from edge_app.inference.graph import Model
    from edge_app.inference.layers import LayerInfo
    from edge_app.inference.partition import StageSpec

# A Raspberry Pi 3B-like reference: VGG16's convolutions (15.3 GMAC) take ~7.3 s, so ~2.1 GMAC/s;
# its fc_1 (411 MB of float weights, 0.1 GMAC) takes ~2.5 s: FC layers are bound by memory
# bandwidth, ~170 MB/s effective. Both terms matter for the relative cost of conv and FC stages.
REFERENCE_MACS_PER_S = 2.1e9
REFERENCE_WEIGHT_BYTES_PER_S = 1.7e8
# Zero-MAC stages (pooling, softmax, reshapes) still cost something: one MAC-equivalent per byte.
ACTIVATION_COST_PER_BYTE = 1.0


@dataclass(frozen=True)
class StageProfile:
    """One stage: cost and sizes. ``rows`` > 1 marks a stage that can be sharded by rows."""

    stage: StageDef
    macs: int
    weight_bytes: int
    output_bytes: int
    input_bytes: int = 0
    rows: int = 0  # output rows/channels of the shardable layer; 0 when not shardable
    shard_weight_bytes: int = 0  # the part of weight_bytes that is split with the rows
    shard_macs: int = 0  # the part of macs that is split with the rows

    def __post_init__(self) -> None:
        sizes = (self.macs, self.weight_bytes, self.output_bytes, self.input_bytes, self.rows)
        if min(sizes) < 0 or self.shard_weight_bytes < 0 or self.shard_macs < 0:
            raise ModelError(f"stage {self.stage.index}: negative size in profile")
        if self.shard_weight_bytes > self.weight_bytes or self.shard_macs > self.macs:
            raise ModelError(f"stage {self.stage.index}: shard part larger than the stage")

    @property
    def index(self) -> int:
        return self.stage.index

    @property
    def shardable(self) -> bool:
        return self.rows >= 2 and self.stage.shardable_layer is not None

    def fraction(self, lo: int, hi: int) -> float:
        """The share of the shardable rows in ``[lo, hi)``."""
        return (hi - lo) / self.rows if self.rows else 1.0

    def weight_bytes_for(self, share: float = 1.0) -> int:
        """Weight bytes a device holds for ``share`` of the rows (1.0 = the whole stage)."""
        fixed = self.weight_bytes - self.shard_weight_bytes
        return int(fixed + self.shard_weight_bytes * share)

    def memory_for(self, share: float = 1.0) -> int:
        """Bytes a device needs to run the stage (or a shard): weights plus activation buffers."""
        out = self.output_bytes * share if self.shardable else self.output_bytes
        return int(self.weight_bytes_for(share) + self.input_bytes + out)

    def reference_s(self, share: float = 1.0) -> float:
        """Estimated seconds per job on a speed-1.0 device for ``share`` of the rows."""
        macs = (self.macs - self.shard_macs) + self.shard_macs * share
        weights = self.weight_bytes_for(share)
        io = (self.input_bytes + self.output_bytes) * ACTIVATION_COST_PER_BYTE
        return (macs + io) / REFERENCE_MACS_PER_S + weights / REFERENCE_WEIGHT_BYTES_PER_S


@dataclass(frozen=True)
class ModelProfile:
    model: ModelRef
    stages: tuple[StageProfile, ...]

    def __post_init__(self) -> None:
        if not self.stages:
            raise ModelError(f"model {self.model.name}: a profile needs at least one stage")
        for i, s in enumerate(self.stages):
            if s.index != i:
                raise ModelError(f"model {self.model.name}: stage {i} has index {s.index}")

    def stage(self, index: int) -> StageProfile:
        return self.stages[index]

    @property
    def reference_s(self) -> float:
        """Estimated seconds of one inference on a speed-1.0 device."""
        return sum(s.reference_s() for s in self.stages)


def profile_from_model(model_bytes: bytes, name: str) -> ModelProfile:
    """The profile of a ``.tflite`` model under the partitioner's default stages."""
    from edge_app.inference.graph_io import read_model
    from edge_app.inference.layers import profile_model
    from edge_app.inference.partition import default_stages

    model = read_model(model_bytes)
    layers = profile_model(model)
    stages = tuple(_stage_profile(model, layers, spec) for spec in default_stages(model))
    ref = ModelRef(name=name, sha256=hashlib.sha256(model_bytes).hexdigest())
    return ModelProfile(model=ref, stages=stages)


def _stage_profile(model: Model, layers: list[LayerInfo], spec: StageSpec) -> StageProfile:
    from edge_app.inference.layers import resolve_layer, tensor_bytes, tensor_index
    from edge_app.inference.partition import stage_operators
    from edge_app.inference.shard import layer_weights

    sub = model.main
    ops = stage_operators(model, spec)
    rows = shard_w = shard_macs = 0
    if spec.shardable_layer is not None:
        op = resolve_layer(model, spec.shardable_layer)
        weights, axis = layer_weights(model, op)
        rows, shard_w, shard_macs = weights.shape[axis], layers[op].weight_bytes, layers[op].macs
    return StageProfile(
        stage=StageDef(
            index=spec.index,
            inputs=list(spec.inputs),
            outputs=list(spec.outputs),
            shardable_layer=spec.shardable_layer,
        ),
        macs=sum(layers[i].macs for i in ops),
        weight_bytes=sum(layers[i].weight_bytes for i in ops),
        output_bytes=sum(tensor_bytes(sub.tensors[tensor_index(sub, n)]) for n in spec.outputs),
        input_bytes=sum(tensor_bytes(sub.tensors[tensor_index(sub, n)]) for n in spec.inputs),
        rows=rows,
        shard_weight_bytes=shard_w,
        shard_macs=shard_macs,
    )
