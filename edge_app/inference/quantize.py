"""Full-integer int8 post-training quantization of float models (no TensorFlow).

The scheme is TFLite's: activations asymmetric int8 per tensor, from min/max ranges observed by
running the float model (every intermediate made an output) over calibration inputs; conv,
depthwise and FULLY_CONNECTED weights symmetric int8 per output channel (per-channel FC checked
to run in tflite-runtime 2.14 and ai-edge-litert 2.3); biases int32 with
scale = input scale x weight scale. The model's input and output become int8 (no QUANTIZE /
DEQUANTIZE ops): quantize inputs with the input's (scale, zero_point) from `Runner.inputs`.
Kernel constraints kept: pools, reshapes and concatenations share one quantization for their
inputs and outputs; softmax outputs use scale 1/256, zero point -128.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import tflite
from numpy.typing import NDArray

from edge_app.errors import ModelError
from edge_app.inference.graph import Model, Quantization, Tensor
from edge_app.inference.graph_io import read_model, write_model
from edge_app.inference.interpreter import Runner

log = logging.getLogger(__name__)
OP = tflite.BuiltinOperator
# Operator -> the op version of its int8 kernel (tensorflow/lite/tools/versioning/op_version.cc).
INT8_VERSIONS = {
    OP.CONV_2D: 3,
    OP.DEPTHWISE_CONV_2D: 3,
    OP.FULLY_CONNECTED: 4,
    OP.MAX_POOL_2D: 2,
    OP.AVERAGE_POOL_2D: 2,
    OP.RESHAPE: 1,
    OP.ADD: 2,
    OP.CONCATENATION: 2,
    OP.SOFTMAX: 2,
    OP.MEAN: 2,
    OP.RELU: 2,
    OP.RELU6: 2,
}
_SAME_QUANTIZATION = {OP.MAX_POOL_2D, OP.AVERAGE_POOL_2D, OP.RESHAPE, OP.CONCATENATION}
_WEIGHT_AXIS: dict[int, int | None] = {
    OP.CONV_2D: 0,
    OP.DEPTHWISE_CONV_2D: 3,
    OP.FULLY_CONNECTED: 0,
}
_SOFTMAX_PARAMS = (1.0 / 256.0, -128)
MAX_CALIBRATION_SAMPLES = 1000

Params = tuple[float, int]  # (scale, zero point)
Ranges = dict[int, tuple[float, float]]


def quantize_int8(
    model_bytes: bytes,
    calibration: Iterable[NDArray[Any] | Sequence[NDArray[Any]]],
    max_samples: int = MAX_CALIBRATION_SAMPLES,
) -> bytes:
    """A full-integer int8 copy of a float model; deterministic for the same calibration data."""
    model = read_model(model_bytes)
    _check_supported(model)
    ranges = calibrate(model, calibration, max_samples)
    params = _activation_params(model, ranges)
    _rewrite(model, params)
    return write_model(model, prune=True)


def _opcode(model: Model, op_index: int) -> int:
    return model.operator_codes[model.main.operators[op_index].opcode_index].builtin_code


def _is_const(model: Model, t: Tensor) -> bool:
    return t.buffer > 0 and len(model.buffers[t.buffer]) > 0


def _check_supported(model: Model) -> None:
    if len(model.subgraphs) != 1:
        raise ModelError("int8 quantization supports single-subgraph models only")
    names = tflite.utils.BUILTIN_OPCODE2NAME
    for k in range(len(model.main.operators)):
        code = _opcode(model, k)
        if code not in INT8_VERSIONS:
            raise ModelError(f"operator {k} ({names.get(code, code)}) cannot be quantized to int8")
    for t in model.main.tensors:
        if t.dtype in (np.int8, np.uint8, np.int16):
            raise ModelError(f"tensor {t.name!r} is already quantized ({t.dtype})")
    for i in model.main.inputs:
        if model.main.tensors[i].dtype != np.float32:
            raise ModelError(f"input {model.main.tensors[i].name!r} is not float32")


def _activations(model: Model) -> list[int]:
    return [
        i
        for i, t in enumerate(model.main.tensors)
        if t.dtype == np.float32 and not _is_const(model, t)
    ]


def _observer_model(model: Model, watched: list[int]) -> bytes:
    """The float model with every watched tensor made an output (renamed ``t<index>``).

    Reading intermediates as outputs rather than with preserve_all_tensors: tflite-runtime 2.14
    still runs some ops (ADD) in place over their input then, so the input's values are lost.
    """
    sub = model.main
    tensors = [dataclasses.replace(t, name=f"t{i}") for i, t in enumerate(sub.tensors)]
    outputs = list(dict.fromkeys([*sub.outputs, *watched]))
    observer = dataclasses.replace(sub, tensors=tensors, outputs=outputs)
    return write_model(dataclasses.replace(model, subgraphs=[observer]))


def calibrate(
    model: Model,
    calibration: Iterable[NDArray[Any] | Sequence[NDArray[Any]]],
    max_samples: int = MAX_CALIBRATION_SAMPLES,
) -> Ranges:
    """(min, max) of every float activation tensor over the calibration inputs, by tensor index."""
    watched = _activations(model)
    runner = Runner(_observer_model(model, watched))
    ranges: Ranges = {}
    count = 0
    for sample in calibration:
        if count >= max_samples:
            log.info("calibration stopped after %d samples", max_samples)
            break
        arrays = [sample] if isinstance(sample, np.ndarray) else list(sample)
        outputs = runner.run([np.asarray(a, dtype=np.float32) for a in arrays])
        for i in watched:
            values = outputs[f"t{i}"]
            lo, hi = float(values.min()), float(values.max())
            old = ranges.get(i, (lo, hi))
            ranges[i] = (min(old[0], lo), max(old[1], hi))
        count += 1
    if count == 0:
        raise ModelError("int8 calibration needs at least one input sample")
    return ranges


def params_for_range(lo: float, hi: float) -> Params:
    """Asymmetric int8 (scale, zero point) covering [lo, hi] and 0 exactly."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if not np.isfinite(lo) or not np.isfinite(hi):
        raise ModelError(f"calibration saw a non-finite value ({lo}, {hi})")
    scale = max((hi - lo) / 255.0, 1e-8)
    zero_point = int(np.clip(round(-128 - lo / scale), -128, 127))
    return float(np.float32(scale)), zero_point


def _groups(model: Model) -> dict[int, int]:
    """Union-find root of each tensor that must share its quantization with others."""
    parent: dict[int, int] = {}

    def find(i: int) -> int:
        while parent.setdefault(i, i) != i:
            i = parent[i]
        return i

    for k, op in enumerate(model.main.operators):
        if _opcode(model, k) not in _SAME_QUANTIZATION:
            continue
        members = op.inputs[:1] if _opcode(model, k) == OP.RESHAPE else op.inputs
        for i in [*members, *op.outputs]:
            if i >= 0:
                parent[find(i)] = find(op.outputs[0])
    return {i: find(i) for i in parent}


def _activation_params(model: Model, ranges: Ranges) -> dict[int, Params]:
    """Quantization of every tensor that becomes int8 (activations and non-weight constants)."""
    weights = _weight_slots(model)
    tensors = model.main.tensors
    ranges = dict(ranges)
    for i, t in enumerate(tensors):
        if t.dtype == np.float32 and _is_const(model, t) and i not in weights:
            data = np.frombuffer(model.buffers[t.buffer], dtype=np.float32)
            ranges[i] = (float(data.min()), float(data.max()))
    fixed = {
        op.outputs[0]: _SOFTMAX_PARAMS
        for k, op in enumerate(model.main.operators)
        if _opcode(model, k) == OP.SOFTMAX
    }
    root = _groups(model)
    group_range: dict[int, tuple[float, float]] = {}
    group_fixed: dict[int, Params] = {}
    for i, (lo, hi) in ranges.items():
        g = root.get(i, i)
        old = group_range.get(g, (lo, hi))
        group_range[g] = (min(old[0], lo), max(old[1], hi))
        if i in fixed:
            group_fixed[g] = fixed[i]
    missing = [tensors[i].name for i in _activations(model) if i not in ranges]
    if missing:
        raise ModelError(f"calibration did not observe tensors {missing[:5]}")
    return {
        i: group_fixed.get(root.get(i, i)) or params_for_range(*group_range[root.get(i, i)])
        for i in ranges
    }


def _weight_slots(model: Model) -> dict[int, tuple[int, str]]:
    """Constant tensor -> (operator index, "weights" or "bias") for conv / depthwise / FC."""
    slots: dict[int, tuple[int, str]] = {}
    for k, op in enumerate(model.main.operators):
        if _opcode(model, k) not in _WEIGHT_AXIS:
            continue
        for i, role in zip(op.inputs[1:3], ("weights", "bias"), strict=False):
            if i < 0:
                continue
            if i in slots:
                raise ModelError(f"tensor {model.main.tensors[i].name!r} is shared by operators")
            if not _is_const(model, model.main.tensors[i]):
                raise ModelError(f"operator {k}: {role} must be constant to quantize")
            slots[i] = (k, role)
    return slots


def _new_buffer(model: Model, data: bytes) -> int:
    model.buffers.append(data)
    return len(model.buffers) - 1


def _quantize_activations(model: Model, params: dict[int, Params]) -> None:
    for i, (scale, zero_point) in params.items():
        t = model.main.tensors[i]
        t.quantization = Quantization(
            np.array([scale], dtype=np.float32), np.array([zero_point], dtype=np.int64)
        )
        if _is_const(model, t):
            data = np.frombuffer(model.buffers[t.buffer], dtype=np.float32)
            q = np.clip(np.round(data / scale) + zero_point, -128, 127).astype(np.int8)
            t.buffer = _new_buffer(model, q.tobytes())
        t.dtype = np.dtype(np.int8)


def _symmetric(weights: NDArray[np.float32], axis: int | None) -> tuple[NDArray[Any], NDArray[Any]]:
    """(int8 weights, float32 scales) with one scale per slice along ``axis`` (or one)."""
    if axis is None:
        maxabs = np.array([np.abs(weights).max()], dtype=np.float64)
        shaped = maxabs.reshape((1,) * weights.ndim)
    else:
        reduce = tuple(a for a in range(weights.ndim) if a != axis)
        maxabs = np.abs(weights).max(axis=reduce).astype(np.float64)
        shaped = maxabs.reshape([-1 if a == axis else 1 for a in range(weights.ndim)])
    scales = np.where(maxabs > 0, maxabs / 127.0, 1.0).astype(np.float32)
    shaped_scales = np.where(shaped > 0, shaped / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.round(weights / shaped_scales), -127, 127).astype(np.int8)
    return q, scales


def _quantize_weights(model: Model, params: dict[int, Params]) -> None:
    tensors = model.main.tensors
    for k, op in enumerate(model.main.operators):
        code = _opcode(model, k)
        if code not in _WEIGHT_AXIS:
            continue
        w = tensors[op.inputs[1]]
        data = np.frombuffer(model.buffers[w.buffer], dtype=np.float32).reshape(w.shape)
        axis = _WEIGHT_AXIS[code]
        q, scales = _symmetric(data, axis)
        w.buffer, w.dtype = _new_buffer(model, q.tobytes()), np.dtype(np.int8)
        w.quantization = Quantization(scales, np.zeros(scales.size, np.int64), axis or 0)
        if len(op.inputs) > 2 and op.inputs[2] >= 0:
            in_scale = np.float32(params[op.inputs[0]][0])
            _quantize_bias(model, tensors[op.inputs[2]], in_scale * scales)


def _quantize_bias(model: Model, b: Tensor, scales: NDArray[np.float32]) -> None:
    data = np.frombuffer(model.buffers[b.buffer], dtype=np.float32).astype(np.float64)
    per_value = np.broadcast_to(scales, data.shape).astype(np.float64)
    limit = np.iinfo(np.int32).max
    q = np.clip(np.round(data / per_value), -limit, limit).astype(np.int32)
    b.buffer, b.dtype = _new_buffer(model, q.tobytes()), np.dtype(np.int32)
    b.quantization = Quantization(
        np.broadcast_to(scales, data.shape).astype(np.float32), np.zeros(data.size, np.int64), 0
    )


def _rewrite(model: Model, params: dict[int, Params]) -> None:
    _quantize_weights(model, params)  # needs the float input scales, before activations change
    _quantize_activations(model, params)
    for code in model.operator_codes:
        code.version = max(code.version, INT8_VERSIONS[code.builtin_code])
    model.description = (model.description + " (int8)").strip()
