"""The zoo: every small model builds deterministically and runs with the expected shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_app.errors import ConfigError
from edge_app.inference import zoo
from edge_app.inference.graph_io import read_model
from edge_app.inference.interpreter import Runner

EXPECTED = {  # name: (input shape, output shape), small variants
    "alexnet": ((1, 64, 64, 3), (1, 10)),
    "vgg16": ((1, 32, 32, 3), (1, 10)),
    "c3d": ((1, 8, 32, 32, 3), (1, 10)),
    "resnet_branch": ((1, 16, 16, 3), (1, 10)),
}


@pytest.mark.interpreter
@pytest.mark.parametrize("name", zoo.FLOAT_NAMES)
def test_small_model_runs(name: str) -> None:
    runner = Runner(zoo.build(name, small=True))
    in_shape, out_shape = EXPECTED[name]
    assert runner.inputs[0].shape == in_shape
    x = np.random.default_rng(0).standard_normal(in_shape).astype(np.float32)
    (probs,) = runner.run(x).values()
    assert probs.shape == out_shape
    assert probs.dtype == np.float32
    assert np.all(np.isfinite(probs))
    assert probs.sum() == pytest.approx(1.0, abs=1e-5)
    assert probs.std() > 0  # the weights are not degenerate


@pytest.mark.parametrize("name", zoo.FLOAT_NAMES)
def test_deterministic_per_seed(name: str) -> None:
    first = zoo.build(name, small=True)
    assert zoo.build(name, small=True) == first
    assert zoo.build(name, small=True, seed=1) != first


def _op_names(data: bytes) -> set[int]:
    model = read_model(data)
    return {model.operator_codes[op.opcode_index].builtin_code for op in model.main.operators}


def test_topologies() -> None:
    import tflite

    op = tflite.BuiltinOperator
    c3d_ops = _op_names(zoo.build("c3d", small=True))
    assert op.CONV_3D in c3d_ops
    assert op.CONV_2D not in c3d_ops
    resnet_ops = _op_names(zoo.build("resnet_branch", small=True))
    assert {op.ADD, op.CONCATENATION, op.FULLY_CONNECTED} <= resnet_ops
    for name in ("alexnet", "vgg16"):
        model = read_model(zoo.build(name, small=True))
        fcs = [
            o
            for o in model.main.operators
            if model.operator_codes[o.opcode_index].builtin_code == op.FULLY_CONNECTED
        ]
        convs = [
            o
            for o in model.main.operators
            if model.operator_codes[o.opcode_index].builtin_code == op.CONV_2D
        ]
        assert len(fcs) == 3
        assert len(convs) == (5 if name == "alexnet" else 13)


def test_unknown_name() -> None:
    with pytest.raises(ConfigError, match="unknown zoo model"):
        zoo.build("lenet")


def test_cached_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_APP_CACHE", str(tmp_path))
    path = zoo.cached_build("resnet_branch", small=True)
    assert path.parent == tmp_path / "zoo"
    assert path.read_bytes() == zoo.build("resnet_branch", small=True)
    mtime = path.stat().st_mtime_ns
    assert zoo.cached_build("resnet_branch", small=True) == path
    assert path.stat().st_mtime_ns == mtime  # not rebuilt
    assert not list(path.parent.glob(".building-*"))


@pytest.mark.interpreter
@pytest.mark.parametrize("name", zoo.INT8_NAMES)
def test_small_int8_model_runs_and_agrees_with_float(name: str) -> None:
    data = zoo.build(name, small=True)
    assert zoo.build(name, small=True) == data  # deterministic, calibration included
    runner = Runner(data)
    spec = runner.inputs[0]
    assert spec.dtype == np.int8
    assert runner.outputs[0].dtype == np.int8
    float_runner = Runner(zoo.build(name.removesuffix("_int8"), small=True))
    rng = np.random.default_rng(3)
    agree = 0
    for _ in range(8):
        x = rng.uniform(-1, 1, spec.shape).astype(np.float32)
        q = np.clip(np.round(x / spec.scale) + spec.zero_point, -128, 127).astype(np.int8)
        (out,) = runner.run(q).values()
        (ref,) = float_runner.run(x).values()
        out_spec = runner.outputs[0]
        probs = (out.astype(np.float32) - out_spec.zero_point) * out_spec.scale
        assert probs.shape == ref.shape
        assert np.abs(probs - ref).max() < 0.1
        agree += int(np.argmax(probs) == np.argmax(ref))
    assert agree >= 6


def test_negative_seed_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="seed"):
        zoo.build("alexnet", small=True, seed=-1)
