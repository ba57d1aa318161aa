"""Cut points on hand-made graphs: chains, residual blocks, branches, several inputs/outputs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import tflite

from edge_app.inference.cutpoints import analyze_cuts, cut_points
from edge_app.inference.graph import Model, Operator, OperatorCode, Subgraph, Tensor

Op = tuple[str, Sequence[str], Sequence[str]]


def make_graph(
    ops: Sequence[Op],
    inputs: Sequence[str],
    outputs: Sequence[str],
    consts: Sequence[str] = (),
) -> Model:
    """A float graph of [1, 4] tensors; ``consts`` get 16 bytes of data."""
    names: list[str] = []
    for name in [*inputs, *consts, *(n for _, i, o in ops for n in (*i, *o))]:
        if name not in names:
            names.append(name)
    buffers: list[bytes | memoryview] = [b""]
    tensors = []
    for name in names:
        buffer = 0
        if name in consts:
            buffers.append(np.zeros(4, np.float32).tobytes())
            buffer = len(buffers) - 1
        tensors.append(Tensor(name, (1, 4), np.dtype(np.float32), buffer))
    codes: list[OperatorCode] = []
    operators = []
    for kind, ins, outs in ops:
        code = OperatorCode(getattr(tflite.BuiltinOperator, kind))
        if code not in codes:
            codes.append(code)
        operators.append(
            Operator(
                codes.index(code), [names.index(n) for n in ins], [names.index(n) for n in outs]
            )
        )
    sub = Subgraph(
        tensors, operators, [names.index(n) for n in inputs], [names.index(n) for n in outputs]
    )
    return Model(codes, [sub], buffers)


CHAIN = make_graph(
    [("RELU", ["x"], ["a"]), ("ADD", ["a", "c"], ["b"]), ("TANH", ["b"], ["y"])],
    ["x"],
    ["y"],
    consts=["c"],
)

RESIDUAL = make_graph(
    [
        ("RELU", ["x"], ["a"]),
        ("TANH", ["a"], ["r1"]),
        ("RELU", ["r1"], ["r2"]),
        ("ADD", ["a", "r2"], ["s"]),
        ("RELU", ["s"], ["y"]),
    ],
    ["x"],
    ["y"],
)

BRANCH = make_graph(
    [
        ("RELU", ["x"], ["a"]),
        ("TANH", ["a"], ["left"]),
        ("RELU", ["a"], ["right1"]),
        ("TANH", ["right1"], ["right2"]),
        ("CONCATENATION", ["left", "right2"], ["cat"]),
        ("RELU", ["cat"], ["y"]),
    ],
    ["x"],
    ["y"],
)


def test_every_tensor_of_a_chain_is_a_cut_but_not_the_output() -> None:
    assert cut_points(CHAIN) == ["a", "b"]


def test_residual_block_stays_whole() -> None:
    assert cut_points(RESIDUAL) == ["a", "s"]


def test_branches_stay_whole() -> None:
    assert cut_points(BRANCH) == ["a", "cat"]


def test_two_inputs_join_before_the_first_cut() -> None:
    model = make_graph(
        [
            ("RELU", ["x1"], ["a1"]),
            ("TANH", ["x2"], ["a2"]),
            ("ADD", ["a1", "a2"], ["s"]),
            ("RELU", ["s"], ["y"]),
        ],
        ["x1", "x2"],
        ["y"],
    )
    assert cut_points(model) == ["s"]


def test_an_input_read_late_blocks_cuts_before_it() -> None:
    model = make_graph(
        [
            ("RELU", ["x1"], ["a"]),
            ("TANH", ["a"], ["b"]),
            ("ADD", ["b", "x2"], ["s"]),
            ("RELU", ["s"], ["y"]),
        ],
        ["x1", "x2"],
        ["y"],
    )
    assert cut_points(model) == ["s"]


def test_two_heads_share_the_trunk_cuts_only() -> None:
    model = make_graph(
        [
            ("RELU", ["x"], ["a"]),
            ("TANH", ["a"], ["trunk"]),
            ("RELU", ["trunk"], ["head1"]),
            ("TANH", ["trunk"], ["head2"]),
        ],
        ["x"],
        ["head1", "head2"],
    )
    assert cut_points(model) == ["a", "trunk"]


def test_an_intermediate_graph_output_is_not_a_cut_and_blocks_later_ones() -> None:
    # Cutting at b would leave the graph output a on the wrong side: two tensors would cross.
    model = make_graph(
        [("RELU", ["x"], ["a"]), ("TANH", ["a"], ["b"]), ("RELU", ["b"], ["y"])],
        ["x"],
        ["a", "y"],
    )
    assert cut_points(model) == []


def test_operator_order_in_the_file_does_not_matter() -> None:
    # The same branch graph with its independent branch operators listed in another order.
    model = make_graph(
        [
            ("RELU", ["x"], ["a"]),
            ("RELU", ["a"], ["right1"]),
            ("TANH", ["a"], ["left"]),
            ("TANH", ["right1"], ["right2"]),
            ("CONCATENATION", ["left", "right2"], ["cat"]),
            ("RELU", ["cat"], ["y"]),
        ],
        ["x"],
        ["y"],
    )
    assert cut_points(model) == cut_points(BRANCH)


def test_segments_assign_each_operator_to_the_stage_before_its_cut() -> None:
    analysis = analyze_cuts(BRANCH)
    # ops: relu(a) | tanh, relu, tanh, concat (up to cat) | relu(y)
    assert analysis.segment == (0, 1, 1, 1, 1, 2)


@pytest.mark.parametrize("model", [CHAIN, RESIDUAL, BRANCH])
def test_cut_points_are_in_topological_order(model: Model) -> None:
    sub = model.main
    producer = {t: i for i, op in enumerate(sub.operators) for t in op.outputs}
    names = cut_points(model)
    positions = [producer[[t.name for t in sub.tensors].index(n)] for n in names]
    assert positions == sorted(positions)


def test_tensors_with_ambiguous_names_are_not_cut_points() -> None:
    model = make_graph(
        [("RELU", ["x"], ["a"]), ("TANH", ["a"], ["b"]), ("RELU", ["b"], ["y"])], ["x"], ["y"]
    )
    model.main.tensors[2].name = "a"  # b renamed: two tensors called "a"
    assert cut_points(model) == []
