"""Runner: loading, checked inputs, named outputs, intermediate tensors, in this venv's runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_app.errors import InterpreterError
from edge_app.inference.builder import GraphBuilder
from edge_app.inference.interpreter import Runner, TensorSpec, runtime_name

pytestmark = pytest.mark.interpreter


def _two_input_model() -> bytes:
    rng = np.random.default_rng(0)
    g = GraphBuilder()
    a = g.input("a", (1, 4, 4, 2))
    b = g.input("b", (1, 3))
    h = g.conv2d(a, rng.normal(size=(3, 3, 3, 2)), None, activation="relu", name="features")
    h = g.fully_connected(g.flatten(h), rng.normal(size=(3, 48)), None, name="dense")
    g.output(g.add(h, b), "sum")
    g.output(g.softmax(h), "probs")
    return g.to_bytes()


def _inputs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return (
        rng.normal(size=(1, 4, 4, 2)).astype(np.float32),
        rng.normal(size=(1, 3)).astype(np.float32),
    )


def test_runtime_name_names_the_runtime() -> None:
    assert runtime_name().split()[0] in {"tflite-runtime", "ai-edge-litert"}


def test_specs_and_outputs_by_name() -> None:
    runner = Runner(_two_input_model(), num_threads=2)
    assert runner.inputs == [
        TensorSpec("a", (1, 4, 4, 2), np.dtype(np.float32), 0.0, 0),
        TensorSpec("b", (1, 3), np.dtype(np.float32), 0.0, 0),
    ]
    assert [s.name for s in runner.outputs] == ["sum", "probs"]
    a, b = _inputs()
    by_seq = runner.run([a, b])
    by_map = runner.run({"b": b, "a": a})
    assert set(by_seq) == {"sum", "probs"}
    np.testing.assert_array_equal(by_seq["sum"], by_map["sum"])
    np.testing.assert_allclose(by_seq["probs"].sum(), 1.0, rtol=1e-6)


def test_outputs_are_copies() -> None:
    runner = Runner(_two_input_model())
    a, b = _inputs()
    first = runner.run([a, b])["sum"]
    runner.run([a * 2, b])
    second = runner.run([a, b])["sum"]
    np.testing.assert_array_equal(first, second)
    other = runner.run([a * 2, b])["sum"]
    assert not np.array_equal(first, other)


def test_loads_from_path(tmp_path: Path) -> None:
    path = tmp_path / "m.tflite"
    path.write_bytes(_two_input_model())
    a, b = _inputs()
    assert Runner(path).run([a, b])["sum"].shape == (1, 3)


def test_preserved_intermediate_tensors() -> None:
    runner = Runner(_two_input_model(), preserve_all_tensors=True)
    a, b = _inputs()
    out = runner.run([a, b])
    features = runner.tensor("features")
    assert features.shape == (1, 4, 4, 3)
    assert features.min() >= 0.0  # fused relu
    assert "dense" in runner.tensor_names
    dense = runner.tensor("dense")
    np.testing.assert_allclose(dense + b, out["sum"], rtol=1e-6)


def test_intermediates_need_preserve() -> None:
    runner = Runner(_two_input_model())
    a, b = _inputs()
    with pytest.raises(InterpreterError, match="after run"):
        runner.tensor("sum")
    runner.run([a, b])
    with pytest.raises(InterpreterError, match="preserve_all_tensors"):
        runner.tensor("features")
    with pytest.raises(InterpreterError, match="no tensor"):
        runner.tensor("nope")


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (lambda a, b: [a.astype(np.float64), b], r"'a'.*float32.*float64"),
        (lambda a, b: [a[:, :3], b], r"'a'.*\(1, 4, 4, 2\).*\(1, 3, 4, 2\)"),
        (lambda a, b: [a], "2 input"),
        (lambda a, b: {"a": a}, "missing"),
        (lambda a, b: {"a": a, "b": b, "c": b}, "unknown"),
        (lambda a, b: [a, b.astype(np.int8)], r"'b'.*int8"),
    ],
)
def test_wrong_inputs_raise_interpreter_error(inputs, message: str) -> None:  # type: ignore[no-untyped-def]
    runner = Runner(_two_input_model())
    with pytest.raises(InterpreterError, match=message):
        runner.run(inputs(*_inputs()))


def test_unloadable_models_raise_interpreter_error(tmp_path: Path) -> None:
    with pytest.raises(InterpreterError):
        Runner(b"this is not a model")
    with pytest.raises(InterpreterError):
        Runner(tmp_path / "missing.tflite")


def test_preserved_tensor_survives_in_place_ops() -> None:
    """tflite-runtime 2.14 runs ADD in place over a single-reader input; Runner must still
    return that input's own values."""
    rng = np.random.default_rng(5)
    g = GraphBuilder()
    x = g.input("x", (1, 4, 4, 2))
    conv = g.conv2d(x, rng.normal(size=(2, 3, 3, 2)), None, name="conv")
    g.output(g.mean(g.add(conv, x, activation="relu"), [1, 2]), "y")
    model = g.to_bytes()
    data = np.random.default_rng(6).normal(size=(1, 4, 4, 2)).astype(np.float32)
    runner = Runner(model, preserve_all_tensors=True)
    out = runner.run(data)
    assert list(out) == ["y"] and [s.name for s in runner.outputs] == ["y"]
    conv_values = runner.tensor("conv")
    assert conv_values.min() < 0  # not relu'd in place
    expected = np.maximum(conv_values + data, 0).mean(axis=(1, 2))
    np.testing.assert_allclose(expected, out["y"], rtol=1e-5, atol=1e-6)


_FUZZ_CHILD = """
import sys
import numpy as np
from edge_app.errors import EdgeAppError
from edge_app.inference.interpreter import Runner
data = sys.stdin.buffer.read()
rng = np.random.default_rng(1)
for _ in range(200):
    corrupt = bytearray(data)
    for pos in rng.integers(8, len(data), size=3):
        corrupt[pos] = int(rng.integers(0, 256))
    try:
        runner = Runner(bytes(corrupt))
        runner.run([np.zeros(s.shape, s.dtype) for s in runner.inputs])
    except EdgeAppError:
        pass
print("survived")
"""


def test_corrupted_models_raise_instead_of_crashing() -> None:
    """The runtimes segfault on some malformed flatbuffers; Runner checks them first."""
    import subprocess
    import sys

    rng = np.random.default_rng(0)
    g = GraphBuilder()
    x = g.input("x", (1, 8, 8, 3))
    y = g.max_pool2d(g.conv2d(x, rng.normal(size=(4, 3, 3, 3)), None, activation="relu"))
    y = g.concat([y, g.avg_pool2d(g.depthwise_conv2d(x, rng.normal(size=(1, 3, 3, 3)), None))])
    g.output(g.softmax(g.fully_connected(g.flatten(y), rng.normal(size=(5, 112)), None)))
    child = subprocess.run(
        [sys.executable, "-c", _FUZZ_CHILD],
        input=g.to_bytes(),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == 0, child.stderr.decode(errors="replace")[-2000:]
    assert b"survived" in child.stdout
