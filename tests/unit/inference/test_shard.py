"""Shards: row bounds, merging, and sliced layers (float, int8) that merge to the whole output."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from edge_app.errors import PartitionError
from edge_app.inference.builder import GraphBuilder
from edge_app.inference.compare import assert_same_output
from edge_app.inference.graph import Model, Quantization
from edge_app.inference.graph_io import read_model, write_model
from edge_app.inference.interpreter import Runner
from edge_app.inference.partition import StageSpec, cut_stage
from edge_app.inference.shard import merge_shards, shard_bounds, shard_stage


# ------------------------------------------------------------------------------ bounds and merge
@pytest.mark.parametrize(("n", "k"), [(10, 3), (4096, 3), (7, 7), (5, 1), (1000, 2)])
def test_equal_bounds_match_numpy_array_split(n: int, k: int) -> None:
    bounds = shard_bounds(n, k)
    parts = np.array_split(np.arange(n), k)
    assert bounds == (*(int(p[0]) for p in parts), n)


def test_weighted_bounds_are_proportional_and_never_empty() -> None:
    assert shard_bounds(100, 2, [3.0, 1.0]) == (0, 75, 100)
    assert shard_bounds(10, 3, [1000.0, 1.0, 1.0]) == (0, 8, 9, 10)
    bounds = shard_bounds(4096, 3, [2.0, 1.0, 1.0])
    sizes = np.diff(bounds)
    assert sizes.sum() == 4096 and min(sizes) >= 1 and abs(sizes[0] - 2048) <= 1


@pytest.mark.parametrize(
    ("n", "k", "weights", "match"),
    [
        (3, 4, None, "cannot split 3 rows/channels into 4 shards"),
        (3, 0, None, "at least 1"),
        (10, 2, [1.0], "need 2 positive"),
        (10, 2, [1.0, 0.0], "need 2 positive"),
    ],
)
def test_bad_bounds_requests_fail_clearly(
    n: int, k: int, weights: list[float] | None, match: str
) -> None:
    with pytest.raises(PartitionError, match=match):
        shard_bounds(n, k, weights)


def test_merge_concatenates_on_the_last_axis() -> None:
    a, b = np.ones((1, 2, 3)), np.zeros((1, 2, 2))
    assert merge_shards([a, b]).shape == (1, 2, 5)
    with pytest.raises(PartitionError):
        merge_shards([])


# ----------------------------------------------------------------------------- int8 FC by hand
def _quant(scale: Any, zero: Any, dim: int = 0) -> Quantization:
    return Quantization(
        np.asarray(scale, np.float32).reshape(-1), np.asarray(zero, np.int64).reshape(-1), dim
    )


def _set(model: Model, name: str, dtype: Any, quant: Quantization, data: Any = None) -> None:
    sub = model.main
    i = [t.name for t in sub.tensors].index(name)
    tensor = sub.tensors[i]
    sub.tensors[i] = dataclasses.replace(tensor, dtype=np.dtype(dtype), quantization=quant)
    if data is not None:
        model.buffers[tensor.buffer] = np.ascontiguousarray(
            np.asarray(data).astype(dtype)
        ).tobytes()


def int8_fc_model(rows: int = 6, per_channel: bool = True) -> bytes:
    """x int8 [1,16] -> FC (per-channel int8 weights, int32 bias, fused relu) -> int8 [1,rows]."""
    rng = np.random.default_rng(1)
    b = GraphBuilder()
    x = b.input("x", (1, 16))
    b.output(b.fully_connected(x, np.zeros((rows, 16), np.float32), activation="relu", name="fc"))
    model = b.build()
    w_scale = rng.uniform(0.01, 0.05, rows) if per_channel else np.array([0.03])
    zeros = np.zeros(w_scale.size)
    _set(model, "x", np.int8, _quant(0.05, 0))
    _set(model, "fc/weights", np.int8, _quant(w_scale, zeros), rng.integers(-127, 128, (rows, 16)))
    _set(model, "fc/bias", np.int32, _quant(0.05 * w_scale, zeros), rng.integers(-500, 500, rows))
    _set(model, "fc", np.int8, _quant(0.2, -5))
    return write_model(model)


@pytest.mark.interpreter
@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("k", [2, 3])
def test_int8_fc_shards_merge_to_identical_output(per_channel: bool, k: int) -> None:
    data = int8_fc_model(per_channel=per_channel)
    stage = StageSpec(0, ("x",), ("fc",), "fc")
    x = np.random.default_rng(2).integers(-128, 128, (1, 16)).astype(np.int8)
    whole = Runner(data).run(x)["fc"]
    parts = [Runner(cut_stage(data, stage, (i, k))).run(x)["fc"] for i in range(k)]
    assert [p.shape[-1] for p in parts] == list(np.diff(shard_bounds(6, k)))
    merged = merge_shards(parts)
    assert merged.dtype == np.int8
    np.testing.assert_array_equal(merged, whole)


def test_int8_shard_slices_per_channel_params_and_keeps_per_tensor_ones() -> None:
    model = read_model(int8_fc_model())
    whole = {t.name: t for t in model.main.tensors}
    part = shard_stage(model, "fc", 1, 3)  # rows 2..4
    tensors = {t.name: t for t in part.main.tensors}
    w, bias, out = tensors["fc/weights"], tensors["fc/bias"], tensors["fc"]
    assert w.shape == (2, 16) and bias.shape == (2,) and out.shape == (1, 2)
    assert w.quantization is not None and whole["fc/weights"].quantization is not None
    np.testing.assert_array_equal(w.quantization.scale, whole["fc/weights"].quantization.scale[2:4])
    assert w.quantization.quantized_dimension == 0
    assert bias.quantization is not None and bias.quantization.scale.size == 2
    assert out.quantization is not None and float(out.quantization.scale[0]) == pytest.approx(0.2)
    assert int(out.quantization.zero_point[0]) == -5
    full_w = np.frombuffer(model.buffers[whole["fc/weights"].buffer], np.int8).reshape(6, 16)
    part_w = np.frombuffer(part.buffers[w.buffer], np.int8).reshape(2, 16)
    np.testing.assert_array_equal(part_w, full_w[2:4])
    assert part.main.operators[0].options == model.main.operators[0].options  # fused relu kept


# --------------------------------------------------------------------------- float conv layers
def _conv_stage_model(three_d: bool) -> bytes:
    rng = np.random.default_rng(3)
    b = GraphBuilder()
    if three_d:
        x = b.input("x", (1, 4, 6, 6, 3))
        w = rng.standard_normal((3, 3, 3, 3, 5)).astype(np.float32)
        y = b.conv3d(x, w, rng.standard_normal(5).astype(np.float32), activation="relu", name="c")
    else:
        x = b.input("x", (1, 6, 6, 3))
        w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
        y = b.conv2d(x, w, rng.standard_normal(5).astype(np.float32), activation="relu6", name="c")
    b.output(b.relu(y, name="r"))
    return b.to_bytes()


@pytest.mark.interpreter
@pytest.mark.parametrize("three_d", [False, True])
def test_conv_shards_by_output_channel_with_follower(three_d: bool) -> None:
    data = _conv_stage_model(three_d)
    stage = StageSpec(0, ("x",), ("r",), "c")
    shape = (1, 4, 6, 6, 3) if three_d else (1, 6, 6, 3)
    x = np.random.default_rng(4).standard_normal(shape).astype(np.float32)
    whole = Runner(data).run(x)["r"]
    bounds = (0, 1, 5)  # explicit, uneven
    parts = [Runner(cut_stage(data, stage, (i, 2), bounds)).run(x)["r"] for i in range(2)]
    assert [p.shape[-1] for p in parts] == [1, 4]
    assert_same_output(whole, merge_shards(parts))


def test_unsplittable_and_oversized_requests_fail_clearly() -> None:
    data = _conv_stage_model(False)
    with pytest.raises(PartitionError, match="cannot split 5 rows/channels into 6 shards"):
        cut_stage(data, StageSpec(0, ("x",), ("r",), "c"), (0, 6))
    with pytest.raises(PartitionError, match="bad shard bounds"):
        cut_stage(data, StageSpec(0, ("x",), ("r",), "c"), (0, 2), (0, 3, 4))
    with pytest.raises(PartitionError, match=r"RELU.*cannot be split"):
        cut_stage(data, StageSpec(0, ("c",), ("r",), "r"), (0, 2))
    with pytest.raises(PartitionError, match="no layer that can be sharded"):
        cut_stage(data, StageSpec(0, ("x",), ("r",), None), (0, 2))


def test_depthwise_cannot_be_split() -> None:
    b = GraphBuilder()
    x = b.input("x", (1, 4, 4, 2))
    b.output(b.depthwise_conv2d(x, np.ones((1, 3, 3, 2), np.float32), None, name="dw"))
    with pytest.raises(PartitionError, match=r"DEPTHWISE_CONV_2D.*cannot be split"):
        cut_stage(b.to_bytes(), StageSpec(0, ("x",), ("dw",), "dw"), (0, 2))
