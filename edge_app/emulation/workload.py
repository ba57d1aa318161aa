"""The work of one inference per stage and per operator kind, and its time on a device profile.

A stage's time on a profile is ``conv_macs / conv_rate + fc_weight_bytes / fc_rate +
other_bytes / other_rate``; a shard of ``share`` of the rows takes that share of the shardable
layer's part. Built from a ``.tflite`` model under the partitioner's default (Musical-Chair)
stages, alongside the planner's :class:`~edge_app.scheduling.profile.ModelProfile`.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_app.emulation.profiles import DeviceProfile
from edge_app.scheduling.profile import ModelProfile, profile_from_model

CONV_KINDS = frozenset({"CONV_2D", "CONV_3D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV"})
FC_KINDS = frozenset({"FULLY_CONNECTED", "BATCH_MATMUL"})


@dataclass(frozen=True)
class Work:
    conv_macs: float = 0.0
    fc_bytes: float = 0.0
    other_bytes: float = 0.0

    def seconds(self, device: DeviceProfile) -> float:
        return (
            self.conv_macs / device.conv_macs_per_s
            + self.fc_bytes / device.fc_weight_bytes_per_s
            + self.other_bytes / device.other_bytes_per_s
        )

    def __add__(self, other: Work) -> Work:
        return Work(
            self.conv_macs + other.conv_macs,
            self.fc_bytes + other.fc_bytes,
            self.other_bytes + other.other_bytes,
        )

    def scaled(self, k: float) -> Work:
        return Work(self.conv_macs * k, self.fc_bytes * k, self.other_bytes * k)


@dataclass(frozen=True)
class StageWork:
    fixed: Work  # the part every holder of the stage does
    split: Work  # the shardable layer's part, divided among shards by rows
    input_bytes: int
    output_bytes: int
    rows: int = 0

    def work(self, share: float = 1.0) -> Work:
        return self.fixed + self.split.scaled(share)

    def seconds(self, device: DeviceProfile, share: float = 1.0) -> float:
        return self.work(share).seconds(device)


@dataclass(frozen=True)
class Workload:
    """A model as the emulator and the simulator see it: the planner's profile plus the work of
    every stage by operator kind."""

    name: str
    profile: ModelProfile
    stages: tuple[StageWork, ...]

    def seconds(self, device: DeviceProfile) -> float:
        """One whole inference on ``device``."""
        return sum(s.seconds(device) for s in self.stages)

    @property
    def total(self) -> Work:
        out = Work()
        for s in self.stages:
            out = out + s.work()
        return out

    @property
    def input_bytes(self) -> int:
        return self.stages[0].input_bytes


def _layer_work(op: str, macs: int, weight_bytes: int, activation_bytes: int) -> Work:
    if op in CONV_KINDS:
        return Work(conv_macs=macs)
    if op in FC_KINDS:
        return Work(fc_bytes=weight_bytes)
    return Work(other_bytes=activation_bytes + 4 * macs)


def workload_from_model(model_bytes: bytes, name: str) -> Workload:
    """The workload of a ``.tflite`` model under the default stages."""
    from edge_app.inference.graph_io import read_model
    from edge_app.inference.layers import profile_model, resolve_layer
    from edge_app.inference.partition import default_stages, stage_operators

    profile = profile_from_model(model_bytes, name)
    model = read_model(model_bytes)
    layers = profile_model(model)
    stages = []
    for spec, sp in zip(default_stages(model), profile.stages, strict=True):
        split_op = resolve_layer(model, spec.shardable_layer) if spec.shardable_layer else None
        fixed, split = Work(), Work()
        for i in stage_operators(model, spec):
            li = layers[i]
            w = _layer_work(li.op, li.macs, li.weight_bytes, li.activation_bytes)
            if i == split_op:
                split = split + w
            else:
                fixed = fixed + w
        stages.append(
            StageWork(fixed, split, sp.input_bytes, sp.output_bytes, sp.rows if sp.shardable else 0)
        )
    return Workload(name=name, profile=profile, stages=tuple(stages))
