"""graph_io: byte-identical round trips, generic options, pruning and rejection of bad input."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import tflite

from edge_app.errors import GraphError
from edge_app.inference import graph_io
from edge_app.inference.builder import GraphBuilder
from edge_app.inference.graph import Operator, OperatorCode, Options, Quantization
from edge_app.inference.graph_io import pruned, read_model, write_model, write_model_to
from edge_app.inference.interpreter import Runner
from edge_app.inference.options_io import fields_of


def _small_model_bytes() -> bytes:
    rng = np.random.default_rng(0)
    g = GraphBuilder()
    x = g.input("image", (1, 6, 6, 2))
    y = g.conv2d(x, rng.normal(size=(3, 3, 3, 2)), rng.normal(size=3), activation="relu")
    y = g.max_pool2d(y)
    y = g.fully_connected(g.flatten(y), rng.normal(size=(4, 27)), None)
    g.output(g.softmax(y), "probs")
    return g.to_bytes()


def test_write_read_write_is_byte_identical() -> None:
    first = _small_model_bytes()
    model = read_model(first)
    second = write_model(model)
    assert second == first
    assert write_model(read_model(second)) == second


def test_read_model_contents() -> None:
    model = read_model(_small_model_bytes())
    sub = model.main
    assert [sub.tensors[i].name for i in sub.inputs] == ["image"]
    assert [sub.tensors[i].name for i in sub.outputs] == ["probs"]
    codes = [model.operator_codes[op.opcode_index].builtin_code for op in sub.operators]
    assert codes[0] == tflite.BuiltinOperator.CONV_2D
    conv = sub.operators[0]
    assert conv.options is not None and conv.options.kind == "Conv2DOptions"
    assert conv.options.fields["fused_activation_function"] == tflite.ActivationFunctionType.RELU
    weights = sub.tensors[conv.inputs[1]]
    data = np.frombuffer(model.buffers[weights.buffer], dtype=weights.dtype).reshape(weights.shape)
    assert data.shape == (3, 3, 3, 2)
    assert model.buffers[0] == b""


def test_buffers_are_16_byte_aligned() -> None:
    data = _small_model_bytes()
    fb = tflite.Model.GetRootAs(data, 0)
    for i in range(fb.BuffersLength()):
        buf = fb.Buffers(i)
        if not buf.DataIsNone():
            start = buf._tab.Vector(buf._tab.Offset(4))
            assert start % 16 == 0


def test_unknown_to_us_options_round_trip() -> None:
    """Options of ops the builder never writes (vectors, strings, floats, bools) survive."""
    model = read_model(_small_model_bytes())
    extra = [
        Options("SqueezeOptions", {"squeeze_dims": [1, 2]}),
        Options(
            "StablehloCustomCallOptions",
            {
                "call_target_name": "héllo",
                "api_version": 3,
                "has_side_effect": True,
                "custom_attributes": [1, 2],
            },
        ),
        Options("LeakyReluOptions", {"alpha": 0.25}),
        Options("StableHLOCompositeOptions", {"name": "x", "decomposition_subgraph_index": 2}),
    ]
    model.operator_codes.append(OperatorCode(tflite.BuiltinOperator.SQUEEZE))
    for opts in extra:
        model.main.operators.append(Operator(len(model.operator_codes) - 1, [0], [1], opts))
    model.main.operators.append(
        Operator(len(model.operator_codes) - 1, [0, -1], [1], None, custom_options=b"\x01\x02")
    )
    again = read_model(write_model(model))
    for opts, op in zip(extra, again.main.operators[-5:], strict=False):
        assert op.options is not None and op.options.kind == opts.kind
        for key, value in opts.fields.items():
            assert op.options.fields[key] == value
    assert again.main.operators[-1].custom_options == b"\x01\x02"
    assert again.main.operators[-1].inputs == [0, -1]


def test_every_options_table_is_reflectable() -> None:
    kinds = [k for k in vars(tflite.BuiltinOptions) if k[0].isupper() and k != "NONE"]
    assert len(kinds) > 100
    for kind in kinds:
        fields_of(kind)  # raises if some field cannot be classified
    assert [f.name for f in fields_of("Pool2DOptions")] == [
        "padding",
        "stride_w",
        "stride_h",
        "filter_width",
        "filter_height",
        "fused_activation_function",
    ]


def test_quantization_and_large_opcodes_round_trip() -> None:
    model = read_model(_small_model_bytes())
    weights = model.main.tensors[model.main.operators[0].inputs[1]]
    weights.quantization = Quantization(
        scale=np.array([0.5, 0.25, 0.125], dtype=np.float32),
        zero_point=np.zeros(3, dtype=np.int64),
        quantized_dimension=0,
    )
    model.operator_codes.append(OperatorCode(tflite.BuiltinOperator.CONV_3D, 1))
    model.operator_codes.append(OperatorCode(tflite.BuiltinOperator.CUSTOM, 1, "MyOp"))
    again = read_model(write_model(model))
    q = again.main.tensors[model.main.operators[0].inputs[1]].quantization
    assert q is not None
    np.testing.assert_array_equal(q.scale, [0.5, 0.25, 0.125])
    assert again.operator_codes[-2].builtin_code == tflite.BuiltinOperator.CONV_3D
    assert again.operator_codes[-1].custom_code == "MyOp"


def test_prune_drops_unreferenced_buffers() -> None:
    model = read_model(_small_model_bytes())
    model.buffers.append(b"\x00" * 1000)
    model.metadata.append(("note", len(model.buffers) - 1))
    model.buffers.append(b"\x01" * 5000)  # nobody uses this one
    kept = pruned(model)
    assert len(kept.buffers) == len(model.buffers) - 1
    assert kept.metadata == [("note", len(kept.buffers) - 1)]
    full, small = write_model(model), write_model(model, prune=True)
    assert len(full) - len(small) >= 5000
    assert [bytes(b) for b in read_model(small).buffers] == [bytes(b) for b in kept.buffers]


@pytest.mark.interpreter
def test_written_model_runs_and_matches_original() -> None:
    first = _small_model_bytes()
    rewritten = write_model(read_model(first))
    x = np.random.default_rng(1).normal(size=(1, 6, 6, 2)).astype(np.float32)
    a, b = Runner(first).run(x)["probs"], Runner(rewritten).run(x)["probs"]
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"TFL3",
        b"\x00" * 64,
        b"not a model at all, just some text....",
        b"\x10\x00\x00\x00TFL3" + b"\xff" * 40,
    ],
)
def test_garbage_raises_graph_error(data: bytes) -> None:
    with pytest.raises(GraphError):
        read_model(data)


def test_truncated_and_corrupted_models_raise_graph_error() -> None:
    data = _small_model_bytes()
    rng = np.random.default_rng(3)
    for cut in (16, len(data) // 3, len(data) // 2, len(data) - 100):
        with pytest.raises(GraphError):
            read_model(data[:cut])
    for _ in range(300):  # random byte flips: GraphError or a valid model, never another error
        corrupt = bytearray(data)
        for pos in rng.integers(8, len(data), size=4):
            corrupt[pos] = int(rng.integers(0, 256))
        with contextlib.suppress(GraphError):
            write_model(read_model(bytes(corrupt)))


def test_write_rejects_inconsistent_models() -> None:
    model = read_model(_small_model_bytes())
    bad = dataclasses.replace(model, buffers=model.buffers[:1])
    with pytest.raises(GraphError):
        write_model(bad)
    model.main.operators[0].options = Options("Conv2DOptions", {"no_such_field": 1})
    with pytest.raises(GraphError):
        write_model(model)


def test_not_bytes_raises_graph_error() -> None:
    with pytest.raises(GraphError):
        read_model("model.tflite")  # type: ignore[arg-type]


def test_external_layout_round_trips_and_streams(tmp_path: Path) -> None:
    model = read_model(_small_model_bytes())
    external = write_model(model, external=True)
    assert external != write_model(model)
    again = read_model(external)
    assert [bytes(b) for b in again.buffers] == [bytes(b) for b in model.buffers]
    assert write_model(again, external=True) == external
    assert write_model(again) == write_model(model)  # back to the embedded layout
    fb = tflite.Model.GetRootAs(external, 0)
    data_buffers = [fb.Buffers(i) for i in range(fb.BuffersLength()) if fb.Buffers(i).Size()]
    assert data_buffers and all(b.Offset() % 16 == 0 and b.DataIsNone() for b in data_buffers)
    path = tmp_path / "m.tflite"
    with path.open("wb") as out:
        assert write_model_to(again, out, external=True) == len(external)
    assert path.read_bytes() == external


def test_large_models_use_the_external_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    model = read_model(_small_model_bytes())
    monkeypatch.setattr(graph_io, "EXTERNAL_ABOVE", 100)
    assert write_model(model) == write_model(model, external=True)
    monkeypatch.setattr(graph_io, "EXTERNAL_ABOVE", 10**9)
    assert write_model(model) == write_model(model, external=False)


def test_buffers_are_views_into_the_file() -> None:
    data = _small_model_bytes()
    model = read_model(data)
    views = [b for b in model.buffers if len(b)]
    assert views and all(isinstance(b, memoryview) and b.readonly for b in views)
    assert all(bytes(b) in data for b in views)


def test_external_buffer_outside_the_file_is_rejected() -> None:
    external = write_model(read_model(_small_model_bytes()), external=True)
    with pytest.raises(GraphError, match="outside the file"):
        read_model(external[: len(external) - 64])


@pytest.mark.interpreter
def test_external_layout_runs_in_the_runtime() -> None:
    model = read_model(_small_model_bytes())
    x = np.random.default_rng(4).normal(size=(1, 6, 6, 2)).astype(np.float32)
    embedded = Runner(write_model(model)).run(x)["probs"]
    external = Runner(write_model(model, external=True)).run(x)["probs"]
    np.testing.assert_array_equal(embedded, external)


def test_undecodable_names_round_trip_byte_for_byte() -> None:
    model = read_model(_small_model_bytes())
    odd = b"caf\xe9 \xff".decode("utf-8", "surrogateescape")
    model.description = odd
    model.main.name = odd
    model.main.tensors[0].name = odd
    again = write_model(read_model(write_model(model)))
    assert again == write_model(model)
    assert read_model(again).main.tensors[0].name == odd


def test_bad_option_values_raise_graph_error() -> None:
    model = read_model(_small_model_bytes())
    model.main.operators[0].options = Options("Conv2DOptions", {"stride_w": "two"})
    with pytest.raises(GraphError):
        write_model(model)
