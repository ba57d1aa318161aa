"""Per-operator profile: MACs, parameters, bytes, names; layer and tensor lookup."""

from __future__ import annotations

import numpy as np
import pytest
import tflite

from edge_app.errors import PartitionError
from edge_app.inference.graph import Model, Operator, OperatorCode, Subgraph, Tensor
from edge_app.inference.layers import profile_model, resolve_layer, tensor_index

F32 = np.dtype(np.float32)
B = tflite.BuiltinOperator


def _model() -> Model:
    """input [1,8,8,3] -> conv 5x3x3x3 -> depthwise 1x3x3x5 -> reshape -> FC 7x320 -> softmax."""

    def const(shape: tuple[int, ...], dtype: np.dtype = F32) -> tuple[tuple[int, ...], bytes]:
        return shape, np.zeros(shape, dtype).tobytes()

    specs: list[tuple[str, tuple[int, ...], bytes, np.dtype]] = [
        ("image", (1, 8, 8, 3), b"", F32),
        ("conv/w", *const((5, 3, 3, 3)), F32),
        ("conv/b", *const((5,)), F32),
        ("conv", (1, 8, 8, 5), b"", F32),
        ("dw/w", *const((1, 3, 3, 5)), F32),
        ("dw/b", *const((5,)), F32),
        ("dw", (1, 8, 8, 5), b"", F32),
        ("shape", *const((2,), np.dtype(np.int32)), np.dtype(np.int32)),
        ("flat", (1, 320), b"", F32),
        ("fc/w", *const((7, 320)), F32),
        ("fc/b", *const((7,)), F32),
        ("fc", (1, 7), b"", F32),
        ("prob", (1, 7), b"", F32),
    ]
    buffers: list[bytes | memoryview] = [b""]
    tensors = []
    for name, shape, data, dtype in specs:
        if data:
            buffers.append(data)
        tensors.append(Tensor(name, shape, dtype, len(buffers) - 1 if data else 0))
    codes = [
        OperatorCode(c)
        for c in (B.CONV_2D, B.DEPTHWISE_CONV_2D, B.RESHAPE, B.FULLY_CONNECTED, B.SOFTMAX)
    ]
    ops = [
        Operator(0, [0, 1, 2], [3]),
        Operator(1, [3, 4, 5], [6]),
        Operator(2, [6, 7], [8]),
        Operator(3, [8, 9, 10], [11]),
        Operator(4, [11], [12]),
    ]
    return Model(codes, [Subgraph(tensors, ops, [0], [12])], buffers)


def test_profile_counts_macs_params_and_bytes() -> None:
    infos = profile_model(_model())
    assert [i.op for i in infos] == [
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "RESHAPE",
        "FULLY_CONNECTED",
        "SOFTMAX",
    ]
    conv, dw, reshape, fc, softmax = infos
    assert conv.macs == 8 * 8 * 5 * 3 * 3 * 3
    assert conv.params == 5 * 27 + 5
    assert conv.weight_bytes == 4 * (5 * 27 + 5)
    assert conv.activation_bytes == 4 * 8 * 8 * 5
    assert conv.output_shape == (1, 8, 8, 5)
    assert dw.macs == 8 * 8 * 5 * 9
    assert reshape.macs == 0 and reshape.params == 2 and reshape.weight_bytes == 8
    assert fc.macs == 7 * 320 and fc.params == 7 * 320 + 7
    assert softmax.macs == 0 and softmax.params == 0 and softmax.outputs == ["prob"]


def test_resolve_layer_by_output_name_or_index() -> None:
    model = _model()
    assert resolve_layer(model, "fc") == 3
    assert resolve_layer(model, "1") == 1
    with pytest.raises(PartitionError, match="no layer named 'nope'"):
        resolve_layer(model, "nope")


def test_tensor_index_rejects_unknown_and_ambiguous_names() -> None:
    model = _model()
    assert tensor_index(model.main, "flat") == 8
    with pytest.raises(PartitionError, match="no tensor named"):
        tensor_index(model.main, "missing")
    model.main.tensors[3].name = "flat"
    with pytest.raises(PartitionError, match="used by 2 tensors"):
        tensor_index(model.main, "flat")
