"""Model-parallel shards: a FULLY_CONNECTED or CONV_2D/CONV_3D layer split by output rows/channels.

Every shard gets the same input and computes a slice of the output's last axis; concatenating the
slices (``merge_shards``) gives the whole layer's output. Weights, bias and per-channel quantization
parameters are sliced together; fused activations and trailing element-wise operators (which
commute with the split) stay in the shard; per-tensor quantized outputs keep their scale, so the
merged int8 result is bit-identical.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence

import numpy as np

from edge_app.errors import PartitionError
from edge_app.inference.graph import Model, Operator, Quantization, Tensor
from edge_app.inference.layers import (
    consumers,
    is_constant,
    num_elements,
    op_name,
    option,
    producers,
    resolve_layer,
)

# Operator -> axis of the output channels in its weights tensor (input 1).
SHARDABLE_OPS = {"FULLY_CONNECTED": 0, "CONV_2D": 0, "CONV_3D": 4}
UNARY_ELEMENTWISE = frozenset(
    {
        *("RELU", "RELU6", "RELU_N1_TO_1", "RELU_0_TO_1", "TANH", "LOGISTIC", "LEAKY_RELU"),
        *("HARD_SWISH", "ELU", "GELU", "ABS", "NEG", "EXP", "LOG", "SQRT", "RSQRT", "SQUARE"),
        *("FLOOR", "CEIL", "ROUND", "SIN", "COS", "SIGN", "QUANTIZE", "DEQUANTIZE", "CAST"),
    }
)
# Binary element-wise operators whose other operand is a constant broadcast along the last axis.
BINARY_ELEMENTWISE = frozenset(
    {"ADD", "SUB", "MUL", "DIV", "MAXIMUM", "MINIMUM", "PRELU", "SQUARED_DIFFERENCE", "POW"}
)


def shard_bounds(n_rows: int, k: int, weights: Sequence[float] | None = None) -> tuple[int, ...]:
    """The k+1 row boundaries (0, ..., n_rows) of k shards, each at least one row.

    Without ``weights`` the split is the one of ``np.array_split``; with weights (e.g. device
    speeds) rows are shared in proportion, by largest remainder, ties to the lower index.
    """
    if k < 1:
        raise PartitionError(f"the number of shards must be at least 1, got {k}")
    if k > n_rows:
        raise PartitionError(f"cannot split {n_rows} rows/channels into {k} shards")
    if weights is None:
        sizes = [n_rows // k + (1 if j < n_rows % k else 0) for j in range(k)]
    else:
        w = [float(x) for x in weights]
        if len(w) != k or not all(math.isfinite(x) and x > 0 for x in w):
            raise PartitionError(f"need {k} positive finite shard weights, got {list(weights)}")
        spare = n_rows - k
        ideal = [spare * x / sum(w) for x in w]
        sizes = [1 + math.floor(v) for v in ideal]
        order = sorted(range(k), key=lambda j: (-(ideal[j] - math.floor(ideal[j])), j))
        for j in order[: n_rows - sum(sizes)]:
            sizes[j] += 1
    return tuple(int(v) for v in np.concatenate([[0], np.cumsum(sizes)]))


def merge_shards(parts: Sequence[np.ndarray]) -> np.ndarray:
    """The layer's output from its shards' outputs, in shard order."""
    if not parts:
        raise PartitionError("no shard outputs to merge")
    return np.concatenate(list(parts), axis=-1)


def _elementwise_other_ok(model: Model, op: Operator, data: int) -> bool:
    """True when the operator is element-wise in ``data`` and everything else is constant."""
    name = op_name(model, op)
    others = [t for t in op.inputs if t >= 0 and t != data]
    if data not in op.inputs or len(op.outputs) != 1:
        return False
    if name in UNARY_ELEMENTWISE:
        return not others
    if name in BINARY_ELEMENTWISE and len(others) == 1:
        return is_constant(model, model.main.tensors[others[0]])
    return False


def follower_chain(model: Model, layer_op: int) -> list[int]:
    """The element-wise operators that follow ``layer_op`` one after another, each the only reader
    of the previous output (graph outputs end the chain)."""
    sub = model.main
    cons = consumers(sub)
    chain: list[int] = []
    current = sub.operators[layer_op].outputs[0]
    while current not in sub.outputs and len(cons[current]) == 1:
        nxt = cons[current][0]
        if not _elementwise_other_ok(model, sub.operators[nxt], current):
            break
        chain.append(nxt)
        current = sub.operators[nxt].outputs[0]
    return chain


def constant_source(model: Model, tensor_index: int, reader: int) -> tuple[int, int | None] | None:
    """The constant behind an operator input: the tensor itself, or the input of a DEQUANTIZE that
    only ``reader`` reads (float16 weights, as converters store them), with that operator's index;
    None when the input is computed otherwise."""
    sub = model.main
    if is_constant(model, sub.tensors[tensor_index]):
        return tensor_index, None
    maker = producers(sub)[tensor_index]
    if maker < 0 or op_name(model, sub.operators[maker]) != "DEQUANTIZE":
        return None
    source = sub.operators[maker].inputs[0]
    if not is_constant(model, sub.tensors[source]) or consumers(sub)[tensor_index] != [reader]:
        return None
    return source, maker


def weight_dequantizers(model: Model, op_index: int) -> list[int]:
    """The DEQUANTIZE operators feeding a layer's weights and bias (belong to its stage)."""
    op = model.main.operators[op_index]
    found = []
    for t in op.inputs[1:3]:
        source = constant_source(model, t, op_index) if t >= 0 else None
        if source is not None and source[1] is not None:
            found.append(source[1])
    return found


def layer_weights(model: Model, op_index: int) -> tuple[Tensor, int]:
    """The weights tensor of a shardable layer and its output-channel axis (PartitionError if the
    operator cannot be split)."""
    sub = model.main
    op = sub.operators[op_index]
    name = op_name(model, op)
    label = f"layer {sub.tensors[op.outputs[0]].name!r} ({name})"
    if name not in SHARDABLE_OPS:
        raise PartitionError(f"{label} cannot be split: only {sorted(SHARDABLE_OPS)} can")
    source = (
        None
        if len(op.inputs) < 2 or op.inputs[1] < 0
        else constant_source(model, op.inputs[1], op_index)
    )
    if source is None:
        raise PartitionError(f"{label} cannot be split: its weights are not constant")
    if name == "FULLY_CONNECTED" and option(op, "weights_format", 0) not in (0, None):
        raise PartitionError(f"{label} cannot be split: shuffled weights format")
    weights = sub.tensors[source[0]]
    axis = SHARDABLE_OPS[name]
    if weights.dtype.metadata:
        raise PartitionError(f"{label} cannot be split: packed weight type")
    if name == "CONV_2D" and sub.tensors[op.inputs[0]].shape[-1] != weights.shape[3]:
        raise PartitionError(f"{label} cannot be split: grouped convolution")
    return weights, axis


def shard_stage(
    stage: Model, layer: str, index: int, k: int, bounds: Sequence[int] | None = None
) -> Model:
    """Shard ``index`` of ``k`` of a stage model made of one shardable layer and its element-wise
    followers. ``bounds`` (k+1 row boundaries) overrides the equal split."""
    op_index = resolve_layer(stage, layer)
    sub = stage.main
    chain = follower_chain(stage, op_index)
    dequantizers = weight_dequantizers(stage, op_index)
    if sorted([op_index, *chain, *dequantizers]) != list(range(len(sub.operators))):
        raise PartitionError(
            f"cannot shard layer {layer!r}: its stage holds other operators than the layer and "
            "its element-wise followers"
        )
    weights, axis = layer_weights(stage, op_index)
    n_rows = weights.shape[axis]
    bounds = tuple(bounds) if bounds is not None else shard_bounds(n_rows, k)
    _check_bounds(bounds, n_rows, k, layer)
    if not 0 <= index < k:
        raise PartitionError(f"shard index {index} is out of range for {k} shards")
    rows = (int(bounds[index]), int(bounds[index + 1]))
    slicer = _Slicer(stage, n_rows, rows)
    op = sub.operators[op_index]
    for t, ax in zip(op.inputs[1:3], (axis, 0), strict=False):
        source = constant_source(stage, t, op_index) if t >= 0 else (-1, None)
        if source is None:
            raise PartitionError(f"cannot shard layer {layer!r}: its bias is not constant")
        if source[0] >= 0:
            slicer.slice_const(source[0], ax)
        if source[1] is not None:
            slicer.narrow_axis(t, ax)
    slicer.narrow_activation(op.outputs[0])
    for f in chain:
        fop = sub.operators[f]
        for t in fop.inputs:
            if t >= 0 and is_constant(stage, sub.tensors[t]):
                slicer.slice_broadcast(t)
        slicer.narrow_activation(fop.outputs[0])
    return slicer.result()


def _check_bounds(bounds: Sequence[int], n_rows: int, k: int, layer: str) -> None:
    ok = (
        len(bounds) == k + 1
        and bounds[0] == 0
        and bounds[-1] == n_rows
        and all(a < b for a, b in itertools.pairwise(bounds))
    )
    if not ok:
        raise PartitionError(
            f"bad shard bounds {list(bounds)} for layer {layer!r}: need {k + 1} strictly "
            f"increasing values from 0 to {n_rows}"
        )


class _Slicer:
    """Collects the sliced tensors and buffers of one shard (the input model is not changed)."""

    def __init__(self, model: Model, n_rows: int, rows: tuple[int, int]) -> None:
        self.model = model
        self.n_rows = n_rows
        self.rows = rows
        self.tensors = list(model.main.tensors)
        self.buffers = list(model.buffers)
        self.users = [0] * len(model.buffers)
        for t in model.main.tensors:
            self.users[t.buffer] += 1

    def _store(self, tensor_index: int, data: np.ndarray, quant: Quantization | None) -> None:
        old = self.tensors[tensor_index]
        # A row range of a C-order array is contiguous: a view of the model's buffer, no copy.
        raw = np.ascontiguousarray(data).data.cast("B")
        if self.users[old.buffer] == 1:
            self.buffers[old.buffer] = raw
            buffer = old.buffer
        else:
            self.buffers.append(raw)
            buffer = len(self.buffers) - 1
        self.tensors[tensor_index] = dataclasses.replace(
            old,
            shape=tuple(data.shape),
            buffer=buffer,
            quantization=quant,
            shape_signature=None if old.shape_signature is None else tuple(data.shape),
        )

    def _array(self, tensor_index: int) -> np.ndarray:
        t = self.tensors[tensor_index]
        raw = self.buffers[t.buffer]
        if len(raw) != num_elements(t.shape) * t.dtype.itemsize:
            raise PartitionError(f"tensor {t.name!r}: buffer size does not match its shape")
        return np.frombuffer(raw, dtype=t.dtype).reshape(t.shape)

    def _quant(self, q: Quantization | None, axis: int) -> Quantization | None:
        if q is None or q.scale.size <= 1:
            return q
        if q.quantized_dimension != axis or q.scale.size != self.n_rows:
            raise PartitionError("per-channel quantization is not along the output channels")
        a, b = self.rows

        def cut(v: np.ndarray | None) -> np.ndarray | None:
            return None if v is None or v.size <= 1 else v[a:b].copy()

        return dataclasses.replace(
            q,
            scale=q.scale[a:b].copy(),
            zero_point=q.zero_point[a:b].copy(),
            min=cut(q.min),
            max=cut(q.max),
        )

    def slice_const(self, tensor_index: int, axis: int) -> None:
        t = self.tensors[tensor_index]
        index = (slice(None),) * axis + (slice(*self.rows),)
        data = self._array(tensor_index)[index]
        self._store(tensor_index, data, self._quant(t.quantization, axis))

    def slice_broadcast(self, tensor_index: int) -> None:
        """A follower's constant operand: sliced if it has one value per channel."""
        t = self.tensors[tensor_index]
        size = num_elements(t.shape)
        if size == 1:
            return
        if size != self.n_rows or t.shape[-1] != self.n_rows:
            raise PartitionError(f"constant {t.name!r} does not broadcast along the channels")
        self.slice_const(tensor_index, len(t.shape) - 1)

    def narrow_axis(self, tensor_index: int, axis: int) -> None:
        """A computed (dequantized) weight or bias tensor: its output-channel axis narrowed."""
        t = self.tensors[tensor_index]
        width = self.rows[1] - self.rows[0]
        shape = list(t.shape)
        shape[axis] = width
        sig = None if t.shape_signature is None else list(t.shape_signature)
        if sig is not None:
            sig[axis] = width
        self.tensors[tensor_index] = dataclasses.replace(
            t, shape=tuple(shape), shape_signature=None if sig is None else tuple(sig)
        )

    def narrow_activation(self, tensor_index: int) -> None:
        t = self.tensors[tensor_index]
        if not t.shape or t.shape[-1] != self.n_rows:
            raise PartitionError(f"tensor {t.name!r} does not end in the layer's channels")
        width = self.rows[1] - self.rows[0]
        sig = t.shape_signature
        self.tensors[tensor_index] = dataclasses.replace(
            t,
            shape=(*t.shape[:-1], width),
            shape_signature=None if sig is None else (*sig[:-1], width),
            quantization=self._quant(t.quantization, len(t.shape) - 1),
        )

    def result(self) -> Model:
        sub = dataclasses.replace(self.model.main, tensors=self.tensors)
        return dataclasses.replace(self.model, subgraphs=[sub], buffers=self.buffers)
