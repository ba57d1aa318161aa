"""Per-operator analysis of a model: names, MACs, parameters and bytes, and graph connectivity.

Used by ``edge-app model inspect``, by the partitioner (stage costs) and by the scheduler (which
weighs stages by their MACs and weight bytes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import tflite

from edge_app.errors import PartitionError
from edge_app.inference.graph import Model, Operator, Subgraph, Tensor

_BUILTIN_NAMES: dict[int, str] = {
    v: k for k, v in vars(tflite.BuiltinOperator).items() if k.isupper() and isinstance(v, int)
}


@dataclass
class LayerInfo:
    index: int
    op: str
    output_shape: tuple[int, ...]
    macs: int
    params: int
    weight_bytes: int
    activation_bytes: int
    outputs: list[str]


def op_name(model: Model, op: Operator) -> str:
    """The builtin operator's schema name (``CONV_2D``) or the custom op's code."""
    code = model.operator_codes[op.opcode_index]
    if code.custom_code:
        return code.custom_code
    return _BUILTIN_NAMES.get(code.builtin_code, f"BUILTIN_{code.builtin_code}")


def is_constant(model: Model, tensor: Tensor) -> bool:
    """A tensor whose data is stored in the model (weights, biases, shapes)."""
    return 0 < tensor.buffer < len(model.buffers) and len(model.buffers[tensor.buffer]) > 0


def num_elements(shape: tuple[int, ...]) -> int:
    """Element count, with unknown (-1) dimensions counted as 1 (batch of one)."""
    return math.prod(max(int(d), 1) for d in shape)


def tensor_bytes(tensor: Tensor) -> int:
    return num_elements(tensor.shape) * tensor.dtype.itemsize


def option(op: Operator, name: str, default: Any = None) -> Any:
    """A builtin option by name, tolerant of snake_case or CamelCase field naming."""
    if op.options is None:
        return default
    want = name.replace("_", "").lower()
    for key, value in op.options.fields.items():
        if key.replace("_", "").lower() == want:
            return value
    return default


def producers(sub: Subgraph) -> list[int]:
    """For each tensor, the index of the operator producing it, or -1."""
    prod = [-1] * len(sub.tensors)
    for i, op in enumerate(sub.operators):
        for t in op.outputs:
            if t >= 0:
                prod[t] = i
    return prod


def consumers(sub: Subgraph) -> list[list[int]]:
    """For each tensor, the indices of the operators reading it (in order, without repeats)."""
    cons: list[list[int]] = [[] for _ in sub.tensors]
    for i, op in enumerate(sub.operators):
        for t in op.inputs:
            if t >= 0 and (not cons[t] or cons[t][-1] != i):
                cons[t].append(i)
    return cons


def tensor_index(sub: Subgraph, name: str) -> int:
    """The index of the tensor called ``name``; PartitionError if unknown or ambiguous."""
    found = [i for i, t in enumerate(sub.tensors) if t.name == name]
    if not found:
        raise PartitionError(f"no tensor named {name!r} in the model")
    if len(found) > 1:
        raise PartitionError(f"tensor name {name!r} is used by {len(found)} tensors")
    return found[0]


def resolve_layer(model: Model, ref: str) -> int:
    """The operator index named by ``ref``: the name of its (first) output tensor, or an index."""
    sub = model.main
    matches = [
        i
        for i, op in enumerate(sub.operators)
        if op.outputs and sub.tensors[op.outputs[0]].name == ref
    ]
    if len(matches) == 1:
        return matches[0]
    if not matches and ref.isdigit() and int(ref) < len(sub.operators):
        return int(ref)
    if matches:
        raise PartitionError(f"layer name {ref!r} is ambiguous ({len(matches)} operators)")
    raise PartitionError(f"no layer named {ref!r} (use an operator's output tensor name or index)")


def _macs(model: Model, op: Operator, name: str) -> int:
    sub = model.main

    def shape(pos: int) -> tuple[int, ...]:
        if pos >= len(op.inputs) or op.inputs[pos] < 0:
            return ()
        return sub.tensors[op.inputs[pos]].shape

    out = num_elements(sub.tensors[op.outputs[0]].shape) if op.outputs else 0
    w = shape(1)
    if name == "CONV_2D" and len(w) == 4:
        return out * w[1] * w[2] * w[3]
    if name == "DEPTHWISE_CONV_2D" and len(w) == 4:
        return out * w[1] * w[2]
    if name == "CONV_3D" and len(w) == 5:
        return out * w[0] * w[1] * w[2] * w[3]
    if name == "FULLY_CONNECTED" and len(w) == 2:
        return out * w[1]
    if name == "TRANSPOSE_CONV" and len(w) == 4:
        return num_elements(shape(2)) * w[0] * w[1] * w[2]
    if name == "BATCH_MATMUL" and shape(0):
        a = shape(0)
        return out * (a[-2] if option(op, "adj_x") else a[-1])
    return 0


def profile_op(model: Model, index: int) -> LayerInfo:
    sub = model.main
    op = sub.operators[index]
    name = op_name(model, op)
    consts = [sub.tensors[t] for t in op.inputs if t >= 0 and is_constant(model, sub.tensors[t])]
    outs = [sub.tensors[t] for t in op.outputs if t >= 0]
    return LayerInfo(
        index=index,
        op=name,
        output_shape=tuple(outs[0].shape) if outs else (),
        macs=_macs(model, op, name),
        params=sum(num_elements(t.shape) for t in consts),
        weight_bytes=sum(len(model.buffers[t.buffer]) for t in consts),
        activation_bytes=sum(tensor_bytes(t) for t in outs),
        outputs=[t.name for t in outs],
    )


def profile_model(model: Model) -> list[LayerInfo]:
    """One LayerInfo per operator of the main subgraph, in execution order."""
    return [profile_op(model, i) for i in range(len(model.main.operators))]
