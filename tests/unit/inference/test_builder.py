"""GraphBuilder: every op against a numpy reference, in the runtime of this venv."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from edge_app.errors import ModelError
from edge_app.inference.builder import GraphBuilder, TensorRef
from edge_app.inference.compare import assert_same_output
from edge_app.inference.graph_io import read_model
from edge_app.inference.interpreter import Runner
from tests.unit.inference import np_reference as ref

RNG_SEED = 7


def _run_one(
    shape: tuple[int, ...], layer: Callable[[GraphBuilder, TensorRef], TensorRef], seed: int = 0
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Builds input -> layer -> output, runs it; returns (input, output)."""
    g = GraphBuilder()
    g.output(layer(g, g.input("x", shape)), "y")
    runner = Runner(g.to_bytes())
    x = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    return x, runner.run(x)["y"]


def _weights(*shape: int, seed: int = RNG_SEED) -> np.ndarray[Any, Any]:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


pytestmark = pytest.mark.interpreter


@pytest.mark.parametrize(
    ("stride", "padding", "activation"),
    [((1, 1), "same", None), ((2, 2), "same", "relu"), ((2, 1), "valid", "relu6")],
)
def test_conv2d_matches_im2col(
    stride: tuple[int, int], padding: str, activation: str | None
) -> None:
    w, b = _weights(5, 3, 3, 4), _weights(5, seed=1)
    x, y = _run_one(
        (2, 9, 8, 4),
        lambda g, t: g.conv2d(t, w, b, stride=stride, padding=padding, activation=activation),
    )
    expected = ref.conv2d(x, w, b, stride, padding)
    expected = {None: expected, "relu": ref.relu(expected), "relu6": ref.relu6(expected)}[
        activation
    ]
    assert_same_output(expected.astype(np.float32), y)


def test_conv2d_without_bias_and_even_kernel() -> None:
    w = _weights(3, 2, 2, 2)
    x, y = _run_one((1, 5, 5, 2), lambda g, t: g.conv2d(t, w, None, stride=(2, 2)))
    assert_same_output(ref.conv2d(x, w, np.zeros(3), (2, 2), "same").astype(np.float32), y)


@pytest.mark.parametrize(("mult", "stride", "padding"), [(1, (1, 1), "same"), (2, (2, 2), "valid")])
def test_depthwise_conv2d(mult: int, stride: tuple[int, int], padding: str) -> None:
    w, b = _weights(1, 3, 3, 3 * mult), _weights(3 * mult, seed=2)
    x, y = _run_one(
        (1, 7, 6, 3), lambda g, t: g.depthwise_conv2d(t, w, b, stride=stride, padding=padding)
    )
    assert_same_output(ref.depthwise_conv2d(x, w, b, stride, padding).astype(np.float32), y)


@pytest.mark.parametrize(("stride", "padding"), [((1, 1, 1), "same"), ((2, 2, 1), "valid")])
def test_conv3d(stride: tuple[int, int, int], padding: str) -> None:
    w, b = _weights(3, 3, 2, 2, 4), _weights(4, seed=3)
    x, y = _run_one(
        (1, 5, 6, 5, 2),
        lambda g, t: g.conv3d(t, w, b, stride=stride, padding=padding, activation="relu"),
    )
    assert_same_output(ref.relu(ref.conv3d(x, w, b, stride, padding)).astype(np.float32), y)


@pytest.mark.parametrize(
    ("pool", "stride", "padding"),
    [((2, 2), None, "valid"), ((3, 3), (2, 2), "same"), ((3, 2), (1, 2), "valid")],
)
def test_pool2d(pool: tuple[int, int], stride: tuple[int, int] | None, padding: str) -> None:
    st = stride or pool
    x, y = _run_one((2, 7, 6, 3), lambda g, t: g.max_pool2d(t, pool, stride, padding))
    assert_same_output(ref.max_pool(x, pool, st, padding).astype(np.float32), y)
    x, y = _run_one((2, 7, 6, 3), lambda g, t: g.avg_pool2d(t, pool, stride, padding))
    assert_same_output(ref.avg_pool(x, pool, st, padding).astype(np.float32), y)


@pytest.mark.parametrize(
    ("pool", "stride", "padding"),
    [((2, 2, 2), None, "valid"), ((1, 2, 2), None, "valid"), ((3, 3, 3), (2, 2, 2), "same")],
)
def test_max_pool3d_from_builtins(
    pool: tuple[int, int, int], stride: tuple[int, int, int] | None, padding: str
) -> None:
    x, y = _run_one((2, 5, 6, 7, 3), lambda g, t: g.max_pool3d(t, pool, stride, padding))
    assert_same_output(ref.max_pool(x, pool, stride or pool, padding).astype(np.float32), y)


def test_max_pool3d_uses_no_custom_op() -> None:
    g = GraphBuilder()
    g.output(g.max_pool3d(g.input("x", (1, 4, 4, 4, 2))))
    model = g.build()
    assert all(c.custom_code is None for c in model.operator_codes)


def test_fully_connected_flatten_softmax() -> None:
    w, b = _weights(10, 4 * 3 * 2), _weights(10, seed=4)

    def layers(g: GraphBuilder, t: TensorRef) -> TensorRef:
        return g.softmax(g.fully_connected(g.flatten(t), w, b, activation="relu"))

    x, y = _run_one((3, 4, 3, 2), layers)
    expected = ref.softmax(ref.relu(ref.fully_connected(x.reshape(3, -1), w, b)))
    assert y.shape == (3, 10)
    assert_same_output(expected.astype(np.float32), y)


def test_add_concat_relu_mean_reshape() -> None:
    w = _weights(4, 1, 1, 3)

    def layers(g: GraphBuilder, t: TensorRef) -> TensorRef:
        branch = g.conv2d(t, w, None)
        joined = g.concat([g.relu(t), branch], axis=-1)
        summed = g.add(joined, g.const("offset", np.arange(7, dtype=np.float32)), activation="relu")
        pooled = g.mean(summed, axes=[1, 2], keepdims=True)
        return g.reshape(pooled, (-1, 7))

    x, y = _run_one((2, 4, 5, 3), layers)
    joined = np.concatenate([ref.relu(x), ref.conv2d(x, w, np.zeros(4), (1, 1), "same")], -1)
    expected = ref.relu(joined + np.arange(7)).mean(axis=(1, 2)).reshape(-1, 7)
    assert_same_output(expected.astype(np.float32), y)


def test_mean_without_keepdims() -> None:
    x, y = _run_one((2, 3, 4, 5), lambda g, t: g.mean(t, axes=[-1, 1]))
    assert_same_output(x.astype(np.float64).mean(axis=(1, 3)).astype(np.float32), y)


def test_names_are_deterministic_and_stable() -> None:
    def build() -> bytes:
        g = GraphBuilder()
        t = g.conv2d(g.input("x", (1, 4, 4, 1)), _weights(2, 3, 3, 1), None)
        g.output(g.softmax(g.flatten(g.max_pool2d(t))))
        return g.to_bytes()

    first = build()
    assert first == build()
    names = [t.name for t in read_model(first).main.tensors]
    assert names[:4] == ["x", "conv2d_1/weights", "conv2d_1/bias", "conv2d_1"]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize(
    "bad",
    [
        lambda g, t: g.conv2d(t, _weights(2, 3, 3, 5), None),  # wrong in-channels
        lambda g, t: g.fully_connected(t, _weights(3, 7), None),  # not matching inputs
        lambda g, t: g.reshape(t, (5, -1)),  # does not divide
        lambda g, t: g.max_pool2d(t, (9, 9)),  # window larger than input, valid
        lambda g, t: g.conv2d(t, _weights(2, 1, 1, 4), None, padding="full"),
        lambda g, t: g.conv2d(t, _weights(2, 1, 1, 4), None, activation="tanh"),
        lambda g, t: g.add(t, g.input("other", (1, 3))),
        lambda g, t: g.add(t, g.const("c", np.zeros(4, np.float64))),  # dtypes differ
        lambda g, t: g.concat([t, g.input("i", (1, 3, 3, 1), np.int8)]),
        lambda g, t: g.conv3d(t, _weights(1, 1, 1, 4, 2), None),  # rank 4 input
    ],
)
def test_bad_layers_raise_model_error(bad: Callable[[GraphBuilder, TensorRef], TensorRef]) -> None:
    g = GraphBuilder()
    with pytest.raises(ModelError):
        bad(g, g.input("x", (1, 3, 3, 4)))


def test_build_needs_inputs_and_outputs() -> None:
    g = GraphBuilder()
    g.input("x", (1, 2))
    with pytest.raises(ModelError):
        g.build()
