"""Stages: slicing, planning, determinism, and the acceptance round trip over real models.

Acceptance (issue 2): every small zoo model, the trained models in ``models/``, int8 models and a
model with residual adds and a branch, split into >= 3 stages with one FC layer sharded k = 2 and
k = 3 and one convolution sharded, compose to the whole model's output (float within 1e-5 of the
output's scale, int8 identical).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import numpy as np
import pytest

from edge_app.errors import PartitionError
from edge_app.inference import zoo
from edge_app.inference.catalog import REPO_MODELS, resolve_model
from edge_app.inference.compare import assert_same_output
from edge_app.inference.cutpoints import cut_points
from edge_app.inference.graph import Model
from edge_app.inference.graph_io import read_model
from edge_app.inference.interpreter import Runner
from edge_app.inference.layers import op_name
from edge_app.inference.partition import (
    StageSpec,
    cut_stage,
    default_stages,
    plan_stages,
    slice_stage,
    stage_operators,
)
from edge_app.inference.shard import merge_shards
from edge_app.inference.verify import seeded_inputs
from tests.unit.inference.test_cutpoints import BRANCH, RESIDUAL, make_graph

TRAINED = sorted(p.parent.name for p in REPO_MODELS.glob("*/card.json"))


@cache
def model_bytes(name: str) -> bytes:
    if name in zoo.ZOO_NAMES:
        return zoo.build(name, small=True)
    return resolve_model(name)[1].read_bytes()


# ---------------------------------------------------------------------------------- slicing
def test_slice_keeps_only_what_the_stage_uses_renumbered_in_order() -> None:
    model = make_graph(
        [("RELU", ["x"], ["a"]), ("ADD", ["a", "c1"], ["b"]), ("MUL", ["b", "c2"], ["y"])],
        ["x"],
        ["y"],
        consts=["c1", "c2"],
    )
    part = slice_stage(model, StageSpec(1, ("b",), ("y",)))
    sub = part.main
    assert [t.name for t in sub.tensors] == ["c2", "b", "y"]  # original order
    assert [t.buffer for t in sub.tensors] == [1, 0, 0]
    assert part.buffers == [b"", model.buffers[2]]
    assert [op_name(part, op) for op in sub.operators] == ["MUL"]
    assert len(part.operator_codes) == 1
    assert sub.inputs == [1] and sub.outputs == [2]
    assert sub.operators[0].inputs == [1, 0]


def test_stage_missing_a_needed_input_is_rejected() -> None:
    with pytest.raises(
        PartitionError, match="needs tensor 'x', which is not among its inputs \\['r2'\\]"
    ):
        stage_operators(RESIDUAL, StageSpec(1, ("r2",), ("y",)))


def test_stage_of_a_residual_block_takes_it_whole() -> None:
    ops = stage_operators(RESIDUAL, StageSpec(1, ("a",), ("s",)))
    assert ops == [1, 2, 3]


# ---------------------------------------------------------------------------------- planning
def test_explicit_cuts_must_be_cut_points() -> None:
    with pytest.raises(
        PartitionError, match="'left' is not a valid cut point; valid: \\['a', 'cat'\\]"
    ):
        plan_stages(BRANCH, cuts=["left"])
    stages = plan_stages(BRANCH, cuts=["cat", "a"])
    assert [(s.inputs, s.outputs) for s in stages] == [
        (("x",), ("a",)),
        (("a",), ("cat",)),
        (("cat",), ("y",)),
    ]


def test_too_many_stages_is_a_clear_error() -> None:
    with pytest.raises(PartitionError, match="2 cut points, so at most 3 stages"):
        plan_stages(BRANCH, n_stages=4)
    with pytest.raises(PartitionError, match="at least 1"):
        plan_stages(BRANCH, n_stages=0)


def test_balanced_stages_follow_the_macs() -> None:
    model = read_model(model_bytes("vgg16"))
    stages = plan_stages(model, n_stages=3)
    assert len(stages) == 3
    costs = []
    from edge_app.inference.layers import profile_model

    macs = {i.index: i.macs for i in profile_model(model)}
    for s in stages:
        costs.append(sum(macs[i] for i in stage_operators(model, s)))
    # No other choice of 2 cuts has a smaller largest stage: check against all pairs.
    points = cut_points(model)
    best = min(
        max(
            sum(macs[i] for i in stage_operators(model, s))
            for s in plan_stages(model, cuts=[points[a], points[b]])
        )
        for a in range(len(points))
        for b in range(a + 1, len(points))
    )
    assert best <= max(costs) <= best * 1.01


def test_balanced_stages_leave_no_stage_nearly_empty() -> None:
    model = read_model(model_bytes("alexnet"))
    stages = plan_stages(model, n_stages=6, shard_layers=["conv2", "fc6"])
    assert [s.outputs[0] for s in stages[:-1]] == ["pool1", "conv2", "conv4", "flatten", "fc6"]


def test_default_split_is_conv_part_then_each_fc_then_tail() -> None:
    model = read_model(model_bytes("alexnet"))
    stages = default_stages(model)
    assert [s.shardable_layer for s in stages] == [None, "fc6", "fc7", "fc8", None]
    assert stages[0].outputs == ("flatten",) and stages[-1].outputs == ("probabilities",)


def test_a_layer_inside_a_residual_block_cannot_be_isolated() -> None:
    model = read_model(model_bytes("resnet_branch"))
    with pytest.raises(PartitionError, match="'res1/conv_b' cannot be a stage of its own"):
        plan_stages(model, shard_layers=["res1/conv_b"])
    with pytest.raises(PartitionError, match=r"MAX_POOL_2D.*cannot be split"):
        plan_stages(model, shard_layers=["pool1"])


def test_cut_stage_is_deterministic_and_pure() -> None:
    data = model_bytes("resnet_branch")
    stages = plan_stages(read_model(data), shard_layers=["stem", "fc6"])
    stem = next(s for s in stages if s.shardable_layer == "stem")
    first = [cut_stage(data, s) for s in stages] + [cut_stage(data, stem, (1, 3))]
    again = [cut_stage(bytes(data), s) for s in stages] + [cut_stage(data, stem, (1, 3))]
    assert first == again
    assert cut_stage(data, stem, (0, 3)) != cut_stage(data, stem, (1, 3))


# -------------------------------------------------------------------------------- acceptance
def first_shardable_conv(model: Model) -> str:
    """The first CONV_2D/CONV_3D that can be a stage of its own."""
    sub = model.main
    for op in sub.operators:
        if op_name(model, op) in ("CONV_2D", "CONV_3D"):
            name = sub.tensors[op.outputs[0]].name
            try:
                plan_stages(model, shard_layers=[name])
            except PartitionError:
                continue
            return name
    raise AssertionError("no convolution can be isolated")


def run_split(
    data: bytes, stages: Sequence[StageSpec], shards: Mapping[str, int], feed: dict[str, Any]
) -> dict[str, Any]:
    env = dict(feed)
    for stage in stages:
        k = shards.get(stage.shardable_layer or "", 0)
        parts = [None] if not k else [(i, k) for i in range(k)]
        results = [
            Runner(cut_stage(data, stage, p)).run({n: env[n] for n in stage.inputs}) for p in parts
        ]
        for name in stage.outputs:
            env[name] = merge_shards([r[name] for r in results])
    return env


@pytest.mark.interpreter
@pytest.mark.parametrize("name", [*zoo.FLOAT_NAMES, *zoo.INT8_NAMES, *TRAINED])
def test_stages_and_shards_compose_to_the_whole_model(name: str) -> None:
    data = model_bytes(name)
    model = read_model(data)
    fc = next(
        model.main.tensors[op.outputs[0]].name
        for op in model.main.operators
        if op_name(model, op) == "FULLY_CONNECTED"
    )
    conv = first_shardable_conv(model)
    stages = plan_stages(model, shard_layers=[conv, fc])
    assert len(stages) >= 3
    assert {conv, fc} <= {s.shardable_layer for s in stages}
    whole = Runner(data)
    for seed, shards in enumerate([{fc: 2, conv: 2}, {fc: 3, conv: 3}, {}]):
        feed = seeded_inputs(whole.inputs, seed)
        reference = whole.run(feed)
        env = run_split(data, stages, shards, feed)
        for out, ref in reference.items():
            if ref.dtype.kind in "iu":
                np.testing.assert_array_equal(env[out], ref)
            else:
                assert_same_output(ref, env[out])


@pytest.mark.interpreter
def test_three_balanced_stages_compose_for_the_branch_model() -> None:
    data = model_bytes("resnet_branch")
    stages = plan_stages(read_model(data), n_stages=3)
    whole = Runner(data)
    feed = seeded_inputs(whole.inputs, 7)
    ref = whole.run(feed)["probabilities"]
    assert_same_output(ref, run_split(data, stages, {}, feed)["probabilities"])


@pytest.mark.interpreter
def test_two_inputs_and_two_heads_split_and_compose() -> None:
    from edge_app.inference.builder import GraphBuilder

    rng = np.random.default_rng(5)

    def w(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    b = GraphBuilder()
    left = b.fully_connected(b.input("a", (1, 6)), w(8, 6), w(8), activation="relu", name="fa")
    right = b.fully_connected(b.input("b", (1, 5)), w(8, 5), w(8), activation="relu", name="fb")
    joined = b.concat([left, right], name="joined")
    trunk = b.fully_connected(joined, w(12, 16), w(12), activation="relu", name="trunk")
    b.output(b.softmax(b.fully_connected(trunk, w(3, 12), w(3), name="h1"), name="p1"))
    b.output(b.fully_connected(trunk, w(4, 12), w(4), name="h2"))
    data = b.to_bytes()
    model = read_model(data)
    assert cut_points(model) == ["joined", "trunk"]
    stages = plan_stages(model, shard_layers=["trunk"])
    assert [(s.inputs, s.outputs) for s in stages] == [
        (("a", "b"), ("joined",)),
        (("joined",), ("trunk",)),
        (("trunk",), ("p1", "h2")),
    ]
    whole = Runner(data)
    feed = seeded_inputs(whole.inputs, 3)
    env = run_split(data, stages, {"trunk": 5}, feed)
    for name, ref in whole.run(feed).items():
        assert_same_output(ref, env[name])


def test_control_flow_operators_are_refused() -> None:
    from edge_app.inference.graph import Options

    model = make_graph([("RELU", ["x"], ["a"]), ("WHILE", ["a"], ["y"])], ["x"], ["y"])
    model.main.operators[1].options = Options(
        "WhileOptions", {"cond_subgraph_index": 1, "body_subgraph_index": 2}
    )
    with pytest.raises(PartitionError, match=r"operator 1 \(WHILE\) calls other subgraphs"):
        slice_stage(model, StageSpec(1, ("a",), ("y",)))


def _with_float16_weights(model: Model) -> Model:
    """Every FULLY_CONNECTED weight stored as float16 behind a DEQUANTIZE operator placed at the
    start of the graph, as TFLite's converter writes float16-quantized models."""
    import dataclasses

    import tflite

    from edge_app.inference.graph import Operator, OperatorCode, Tensor

    sub = model.main
    model.operator_codes.append(OperatorCode(tflite.BuiltinOperator.DEQUANTIZE))
    dequantize = len(model.operator_codes) - 1
    new_ops = []
    for op in list(sub.operators):
        if op_name(model, op) != "FULLY_CONNECTED":
            continue
        w = sub.tensors[op.inputs[1]]
        half = np.frombuffer(model.buffers[w.buffer], np.float32).astype(np.float16)
        model.buffers.append(half.tobytes())
        sub.tensors.append(
            Tensor(f"{w.name}/fp16", w.shape, np.dtype(np.float16), len(model.buffers) - 1)
        )
        sub.tensors[op.inputs[1]] = dataclasses.replace(w, buffer=0)
        new_ops.append(Operator(dequantize, [len(sub.tensors) - 1], [op.inputs[1]]))
    sub.operators[:0] = new_ops
    return model


@pytest.mark.interpreter
def test_float16_weights_behind_dequantize_split_and_shard() -> None:
    from edge_app.inference.graph_io import write_model

    model = _with_float16_weights(read_model(model_bytes("resnet_branch")))
    data = write_model(model)
    model = read_model(data)
    assert cut_points(model)[-3:] == ["fc6", "fc7", "fc8"]
    whole = Runner(data)
    feed = seeded_inputs(whole.inputs, 1)
    reference = whole.run(feed)["probabilities"]
    env = run_split(data, plan_stages(model, n_stages=4), {}, feed)
    assert_same_output(reference, env["probabilities"])
    # The float16 weights are sliced behind their DEQUANTIZE, which goes with the layer's stage.
    stages = default_stages(model)
    assert [s.shardable_layer for s in stages] == [None, "fc6", "fc7", "fc8", None]
    fc6 = stages[1]
    part = read_model(cut_stage(data, fc6, (1, 3)))
    assert [op_name(part, op) for op in part.main.operators] == ["DEQUANTIZE", "FULLY_CONNECTED"]
    env = run_split(data, stages, {"fc6": 3, "fc7": 2}, feed)
    assert_same_output(reference, env["probabilities"])
