"""quantize_int8: full-integer models that agree with the float model and load in the runtime."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import tflite

from edge_app.errors import ModelError
from edge_app.inference.builder import GraphBuilder
from edge_app.inference.graph_io import read_model
from edge_app.inference.interpreter import Runner, TensorSpec
from edge_app.inference.quantize import INT8_VERSIONS, params_for_range, quantize_int8

Array = np.ndarray[Any, Any]
SHAPE = (1, 16, 16, 3)


def _small_cnn(seed: int = 0) -> bytes:
    """Every op the quantizer supports: conv, depthwise, both pools, concat, add, mean, FC..."""
    rng = np.random.default_rng(seed)

    def he(*shape: int) -> Array:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
        return (rng.normal(size=shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    g = GraphBuilder()
    x = g.input("image", SHAPE)
    a = g.conv2d(x, he(8, 3, 3, 3), rng.normal(size=8) * 0.1, activation="relu")
    a = g.max_pool2d(a)
    b = g.depthwise_conv2d(a, he(1, 3, 3, 8) * 3, None, activation="relu6")
    c = g.conv2d(g.avg_pool2d(a, (3, 3), (1, 1), padding="same"), he(8, 1, 1, 8), None)
    joined = g.concat([b, c])
    r = g.add(g.conv2d(joined, he(16, 3, 3, 16), None), joined, activation="relu")
    wide = g.fully_connected(
        g.flatten(g.max_pool2d(r)), he(24, 4 * 4 * 16), None, activation="relu"
    )
    pooled = g.mean(r, [1, 2])
    logits = g.fully_connected(g.concat([pooled, g.relu(wide)]), he(10, 40), rng.normal(size=10))
    g.output(g.softmax(logits), "probs")
    return g.to_bytes()


def _inputs(n: int, seed: int) -> list[Array]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=SHAPE).astype(np.float32) for _ in range(n)]


def _quantize_input(x: Array, spec: TensorSpec) -> Array:
    return np.clip(np.round(x / spec.scale) + spec.zero_point, -128, 127).astype(np.int8)


def _dequantize(q: Array, spec: TensorSpec) -> Array:
    return (q.astype(np.float32) - spec.zero_point) * spec.scale


@pytest.fixture(scope="module")
def models() -> tuple[bytes, bytes]:
    float_model = _small_cnn()
    return float_model, quantize_int8(float_model, _inputs(64, seed=1))


@pytest.mark.interpreter
def test_int8_agrees_with_float_and_keeps_top1(models: tuple[bytes, bytes]) -> None:
    float_model, int8_model = models
    ref, quant = Runner(float_model), Runner(int8_model)
    spec_in, spec_out = quant.inputs[0], quant.outputs[0]
    assert spec_in.dtype == np.int8 and spec_out.dtype == np.int8
    diffs, same_top1 = [], 0
    held_out = _inputs(60, seed=2)
    for x in held_out:
        expected = ref.run(x)["probs"]
        got = _dequantize(quant.run(_quantize_input(x, spec_in))["probs"], spec_out)
        diffs.append(float(np.abs(expected - got).max()))
        same_top1 += int(expected.argmax() == got.argmax())
    assert max(diffs) < 0.1, f"worst probability difference {max(diffs):.3f}"
    assert float(np.mean(diffs)) < 0.03
    assert same_top1 >= 0.9 * len(held_out), f"top-1 kept on {same_top1}/{len(held_out)}"


@pytest.mark.interpreter
def test_int8_model_is_deterministic_and_smaller(models: tuple[bytes, bytes]) -> None:
    float_model, int8_model = models
    assert quantize_int8(float_model, _inputs(64, seed=1)) == int8_model
    assert len(int8_model) < 0.5 * len(float_model)
    assert quantize_int8(float_model, _inputs(48, seed=5)) != int8_model


@pytest.mark.interpreter
def test_int8_tensor_layout(models: tuple[bytes, bytes]) -> None:
    model = read_model(models[1])
    sub = model.main
    for k, op in enumerate(sub.operators):
        code = model.operator_codes[op.opcode_index]
        assert code.version == max(1, INT8_VERSIONS[code.builtin_code])
        if code.builtin_code in (
            tflite.BuiltinOperator.CONV_2D,
            tflite.BuiltinOperator.DEPTHWISE_CONV_2D,
            tflite.BuiltinOperator.FULLY_CONNECTED,
        ):
            x, w, b = (sub.tensors[i] for i in op.inputs)
            axis = 3 if code.builtin_code == tflite.BuiltinOperator.DEPTHWISE_CONV_2D else 0
            channels = w.shape[axis]
            assert w.dtype == np.int8 and b.dtype == np.int32, k
            assert w.quantization is not None and b.quantization is not None and x.quantization
            assert w.quantization.quantized_dimension == axis
            assert w.quantization.scale.shape == (channels,)
            assert not w.quantization.zero_point.any()
            q = np.frombuffer(model.buffers[w.buffer], dtype=np.int8)
            assert q.min() >= -127 and q.max() <= 127
            np.testing.assert_allclose(
                b.quantization.scale, x.quantization.scale[0] * w.quantization.scale, rtol=1e-6
            )
        out = sub.tensors[op.outputs[0]]
        assert out.dtype == np.int8 and out.quantization is not None
        if code.builtin_code == tflite.BuiltinOperator.SOFTMAX:
            assert out.quantization.scale[0] == pytest.approx(1 / 256)
            assert out.quantization.zero_point[0] == -128
        if code.builtin_code in (
            tflite.BuiltinOperator.MAX_POOL_2D,
            tflite.BuiltinOperator.CONCATENATION,
            tflite.BuiltinOperator.RESHAPE,
        ):
            for i in op.inputs[
                : 1 if code.builtin_code == tflite.BuiltinOperator.RESHAPE else None
            ]:
                q_in = sub.tensors[i].quantization
                assert q_in is not None
                assert (q_in.scale[0], q_in.zero_point[0]) == (
                    out.quantization.scale[0],
                    out.quantization.zero_point[0],
                )


@pytest.mark.interpreter
def test_multiple_inputs_and_sequence_calibration() -> None:
    rng = np.random.default_rng(0)
    g = GraphBuilder()
    a, b = g.input("a", (1, 6)), g.input("b", (1, 6))
    g.output(g.fully_connected(g.add(a, b), rng.normal(size=(4, 6)), None), "y")
    model = g.to_bytes()
    samples = [(rng.normal(size=(1, 6)), rng.normal(size=(1, 6))) for _ in range(16)]
    runner = Runner(quantize_int8(model, samples))
    assert [s.name for s in runner.inputs] == ["a", "b"]
    xa, xb = samples[0]
    got = runner.run([_quantize_input(xa, runner.inputs[0]), _quantize_input(xb, runner.inputs[1])])
    expected = Runner(model).run([xa.astype(np.float32), xb.astype(np.float32)])["y"]
    out = runner.outputs[0]
    assert np.abs(_dequantize(got["y"], out) - expected).max() < 4 * out.scale


def test_params_for_range() -> None:
    scale, zero = params_for_range(-1.0, 3.0)
    assert scale == pytest.approx(4.0 / 255)
    assert -128 + (0 - -1.0) / scale == pytest.approx(zero, abs=0.5)
    scale, zero = params_for_range(0.5, 6.0)  # range always includes 0
    assert zero == -128 and scale == pytest.approx(6.0 / 255)
    assert params_for_range(0.0, 0.0)[0] > 0


def test_conv3d_cannot_be_quantized() -> None:
    g = GraphBuilder()
    x = g.input("clip", (1, 4, 4, 4, 2))
    g.output(g.conv3d(x, np.ones((1, 1, 1, 2, 3), np.float32), None))
    with pytest.raises(ModelError, match="CONV_3D"):
        quantize_int8(g.to_bytes(), [np.zeros((1, 4, 4, 4, 2), np.float32)])


def test_bad_calibration_and_already_quantized(models: tuple[bytes, bytes]) -> None:
    float_model, int8_model = models
    with pytest.raises(ModelError, match="at least one"):
        quantize_int8(float_model, [])
    with pytest.raises(ModelError, match="already quantized"):
        quantize_int8(int8_model, _inputs(2, seed=0))
