"""Read a .tflite flatbuffer into `graph.Model` and write it back, deterministically.

Everything the runtimes need round-trips: operator codes (with the deprecated int8 code), tensors
with shapes, shape signatures and (per-channel) quantization, every builtin options table (generic,
see ``options_io``), custom options, buffers and metadata. Not kept: signature defs, sparsity,
operator intermediates and debug metadata. Constant data is 16-byte aligned, as TFLite likes it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flatbuffers
import numpy as np
import tflite

from edge_app.errors import GraphError
from edge_app.inference import dtypes
from edge_app.inference.graph import (
    Model,
    Operator,
    OperatorCode,
    Quantization,
    Subgraph,
    Tensor,
)
from edge_app.inference.options_io import options_union, read_options, write_options

IDENTIFIER = b"TFL3"
_ALIGN = 16
_MAX_SIZE = 2**31 - 1
_GREATER_OP_CODES = tflite.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES


# ---------------------------------------------------------------------------------------- read
def read_model(data: bytes) -> Model:
    """Parses a TFLite flatbuffer; any malformed input raises GraphError, never anything else."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise GraphError(f"expected the bytes of a .tflite file, got {type(data).__name__}")
    if len(data) < 16:
        raise GraphError(f"not a TFLite model: only {len(data)} bytes")
    if bytes(data[4:8]) != IDENTIFIER:
        raise GraphError(f"not a TFLite model: file identifier {bytes(data[4:8])!r}, not b'TFL3'")
    try:
        model = _read(bytes(data))
    except GraphError:
        raise
    except Exception as exc:  # flatbuffers raises struct.error, IndexError, ... on garbage
        raise GraphError(f"malformed TFLite flatbuffer: {type(exc).__name__}: {exc}") from exc
    validate(model)
    return model


def _read(data: bytes) -> Model:
    fb = tflite.Model.GetRootAs(data, 0)
    codes = [_read_opcode(fb.OperatorCodes(i)) for i in range(fb.OperatorCodesLength())]
    subgraphs = [_read_subgraph(fb.Subgraphs(i)) for i in range(fb.SubgraphsLength())]
    buffers = [_read_buffer(fb.Buffers(i), i) for i in range(fb.BuffersLength())]
    metadata = []
    for i in range(fb.MetadataLength()):
        meta = fb.Metadata(i)
        metadata.append((_text(meta.Name()), int(meta.Buffer())))
    return Model(
        operator_codes=codes,
        subgraphs=subgraphs,
        buffers=buffers or [b""],
        description=_text(fb.Description()),
        version=int(fb.Version()),
        metadata=metadata,
    )


def _text(raw: bytes | None) -> str:
    return "" if raw is None else raw.decode("utf-8", "surrogateescape")


def _ints(is_none: bool, values: Any) -> list[int]:
    return [] if is_none else [int(v) for v in values]


def _read_opcode(code: tflite.OperatorCode) -> OperatorCode:
    builtin = max(int(code.BuiltinCode()), int(code.DeprecatedBuiltinCode()))
    custom = code.CustomCode()
    return OperatorCode(builtin, int(code.Version()), None if custom is None else _text(custom))


def _read_buffer(buf: tflite.Buffer, index: int) -> bytes:
    if buf.Offset() > 1:
        raise GraphError(f"buffer {index} is stored outside the flatbuffer (>2 GB model)")
    return b"" if buf.DataIsNone() else buf.DataAsNumpy().tobytes()


def _read_subgraph(sg: tflite.SubGraph) -> Subgraph:
    tensors = [_read_tensor(sg.Tensors(i)) for i in range(sg.TensorsLength())]
    operators = [_read_operator(sg.Operators(i)) for i in range(sg.OperatorsLength())]
    return Subgraph(
        tensors=tensors,
        operators=operators,
        inputs=_ints(sg.InputsIsNone(), sg.InputsAsNumpy()),
        outputs=_ints(sg.OutputsIsNone(), sg.OutputsAsNumpy()),
        name=_text(sg.Name()),
    )


def _read_tensor(t: tflite.Tensor) -> Tensor:
    signature = None
    if not t.ShapeSignatureIsNone():
        signature = tuple(int(v) for v in t.ShapeSignatureAsNumpy())
    return Tensor(
        name=_text(t.Name()),
        shape=tuple(_ints(t.ShapeIsNone(), t.ShapeAsNumpy())),
        dtype=dtypes.to_numpy(int(t.Type())),
        buffer=int(t.Buffer()),
        quantization=_read_quantization(t.Quantization()),
        shape_signature=signature,
        is_variable=bool(t.IsVariable()),
    )


def _read_quantization(q: tflite.QuantizationParameters | None) -> Quantization | None:
    if q is None:
        return None
    scale = np.array([] if q.ScaleIsNone() else q.ScaleAsNumpy(), dtype=np.float32)
    zero = np.array([] if q.ZeroPointIsNone() else q.ZeroPointAsNumpy(), dtype=np.int64)
    qmin = None if q.MinIsNone() else np.array(q.MinAsNumpy(), dtype=np.float32)
    qmax = None if q.MaxIsNone() else np.array(q.MaxAsNumpy(), dtype=np.float32)
    if scale.size == 0 and zero.size == 0 and qmin is None and qmax is None:
        return None
    return Quantization(scale, zero, int(q.QuantizedDimension()), qmin, qmax)


def _read_operator(op: tflite.Operator) -> Operator:
    custom = None if op.CustomOptionsIsNone() else op.CustomOptionsAsNumpy().tobytes()
    return Operator(
        opcode_index=int(op.OpcodeIndex()),
        inputs=_ints(op.InputsIsNone(), op.InputsAsNumpy()),
        outputs=_ints(op.OutputsIsNone(), op.OutputsAsNumpy()),
        options=read_options(op),
        custom_options=custom,
    )


def validate(model: Model) -> None:
    """Checks every index in the model; raises GraphError naming the first bad one."""
    if not model.subgraphs:
        raise GraphError("the model has no subgraph")
    n_buffers = len(model.buffers)
    for name, index in model.metadata:
        if not 0 <= index < n_buffers:
            raise GraphError(f"metadata {name!r} points at missing buffer {index}")
    for s, sg in enumerate(model.subgraphs):
        n = len(sg.tensors)
        for t in sg.tensors:
            if not 0 <= t.buffer < n_buffers:
                raise GraphError(f"tensor {t.name!r} points at missing buffer {t.buffer}")
            _check_data_size(t, len(model.buffers[t.buffer]))
        for i in sg.inputs + sg.outputs:
            if not 0 <= i < n:
                raise GraphError(f"subgraph {s} input/output {i} is not a tensor")
        for k, op in enumerate(sg.operators):
            if not 0 <= op.opcode_index < len(model.operator_codes):
                raise GraphError(f"operator {k} has unknown opcode index {op.opcode_index}")
            for i in op.inputs + op.outputs:
                if not -1 <= i < n:
                    raise GraphError(f"operator {k} refers to missing tensor {i}")


def _check_data_size(t: Tensor, size: int) -> None:
    if size == 0 or t.dtype.metadata or any(d < 0 for d in t.shape):
        return
    expected = int(np.prod(t.shape, dtype=np.int64)) * t.dtype.itemsize
    if size != expected:
        raise GraphError(
            f"tensor {t.name!r} {t.shape} {t.dtype} needs {expected} bytes, its buffer has {size}"
        )


# --------------------------------------------------------------------------------------- write
def write_model(model: Model, prune: bool = False) -> bytes:
    """Serializes a Model; the same Model always gives the same bytes.

    With ``prune=True`` buffers that no tensor or metadata entry uses are dropped (renumbered).
    """
    validate(model)
    if prune:
        model = pruned(model)
    hint = sum(len(b) + 2 * _ALIGN for b in model.buffers) + 4096
    hint += sum(256 * (len(sg.tensors) + len(sg.operators)) for sg in model.subgraphs)
    builder = flatbuffers.Builder(min(hint, _MAX_SIZE))
    try:
        root = _write_root(builder, model)
        builder.Finish(root, file_identifier=IDENTIFIER)
    except (flatbuffers.builder.BuilderSizeError, OverflowError) as exc:
        raise GraphError(f"model too large for a flatbuffer: {exc}") from exc
    return bytes(memoryview(builder.Bytes)[builder.Head() :])


def pruned(model: Model) -> Model:
    """A copy of the model keeping only referenced buffers (buffer 0 stays the empty one)."""
    used = {0} | {t.buffer for sg in model.subgraphs for t in sg.tensors}
    used |= {index for _, index in model.metadata}
    order = sorted(used)
    new_index = {old: new for new, old in enumerate(order)}
    subgraphs = [
        dataclasses.replace(
            sg, tensors=[dataclasses.replace(t, buffer=new_index[t.buffer]) for t in sg.tensors]
        )
        for sg in model.subgraphs
    ]
    return dataclasses.replace(
        model,
        subgraphs=subgraphs,
        buffers=[model.buffers[i] for i in order],
        metadata=[(name, new_index[i]) for name, i in model.metadata],
    )


def _write_root(b: flatbuffers.Builder, model: Model) -> int:
    buffers = _table_vector(b, [_write_buffer(b, data) for data in model.buffers])
    codes = _table_vector(b, [_write_opcode(b, c) for c in model.operator_codes])
    subgraphs = _table_vector(b, [_write_subgraph(b, sg) for sg in model.subgraphs])
    metadata = _table_vector(b, [_write_metadata(b, n, i) for n, i in model.metadata])
    description = b.CreateString(model.description.encode("utf-8", "surrogateescape"))
    tflite.ModelStart(b)
    tflite.ModelAddVersion(b, model.version)
    tflite.ModelAddOperatorCodes(b, codes)
    tflite.ModelAddSubgraphs(b, subgraphs)
    tflite.ModelAddDescription(b, description)
    tflite.ModelAddBuffers(b, buffers)
    if model.metadata:
        tflite.ModelAddMetadata(b, metadata)
    return int(tflite.ModelEnd(b))


def _table_vector(b: flatbuffers.Builder, offsets: list[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return int(b.EndVector())


def _numbers(b: flatbuffers.Builder, values: Any, dtype: type) -> int:
    return int(b.CreateNumpyVector(np.asarray(values, dtype=dtype).reshape(-1)))


def _write_buffer(b: flatbuffers.Builder, data: bytes) -> int:
    vector = None
    if len(data):
        b.StartVector(1, len(data), _ALIGN)
        b.head = b.Head() - len(data)
        b.Bytes[b.Head() : b.Head() + len(data)] = data
        b.vectorNumElems = len(data)
        vector = b.EndVector()
    tflite.BufferStart(b)
    if vector is not None:
        tflite.BufferAddData(b, vector)
    return int(tflite.BufferEnd(b))


def _write_opcode(b: flatbuffers.Builder, code: OperatorCode) -> int:
    custom = None if code.custom_code is None else b.CreateString(code.custom_code)
    tflite.OperatorCodeStart(b)
    tflite.OperatorCodeAddDeprecatedBuiltinCode(b, min(code.builtin_code, _GREATER_OP_CODES))
    if custom is not None:
        tflite.OperatorCodeAddCustomCode(b, custom)
    tflite.OperatorCodeAddVersion(b, code.version)
    tflite.OperatorCodeAddBuiltinCode(b, code.builtin_code)
    return int(tflite.OperatorCodeEnd(b))


def _write_metadata(b: flatbuffers.Builder, name: str, buffer: int) -> int:
    text = b.CreateString(name)
    tflite.MetadataStart(b)
    tflite.MetadataAddName(b, text)
    tflite.MetadataAddBuffer(b, buffer)
    return int(tflite.MetadataEnd(b))


def _write_subgraph(b: flatbuffers.Builder, sg: Subgraph) -> int:
    tensors = _table_vector(b, [_write_tensor(b, t) for t in sg.tensors])
    operators = _table_vector(b, [_write_operator(b, op) for op in sg.operators])
    inputs = _numbers(b, sg.inputs, np.int32)
    outputs = _numbers(b, sg.outputs, np.int32)
    name = b.CreateString(sg.name)
    tflite.SubGraphStart(b)
    tflite.SubGraphAddTensors(b, tensors)
    tflite.SubGraphAddInputs(b, inputs)
    tflite.SubGraphAddOutputs(b, outputs)
    tflite.SubGraphAddOperators(b, operators)
    tflite.SubGraphAddName(b, name)
    return int(tflite.SubGraphEnd(b))


def _write_tensor(b: flatbuffers.Builder, t: Tensor) -> int:
    shape = _numbers(b, t.shape, np.int32)
    name = b.CreateString(t.name.encode("utf-8", "surrogateescape"))
    quant = None if t.quantization is None else _write_quantization(b, t.quantization)
    signature = None
    if t.shape_signature is not None:
        signature = _numbers(b, t.shape_signature, np.int32)
    tflite.TensorStart(b)
    tflite.TensorAddShape(b, shape)
    tflite.TensorAddType(b, dtypes.to_tflite(t.dtype))
    tflite.TensorAddBuffer(b, t.buffer)
    tflite.TensorAddName(b, name)
    if quant is not None:
        tflite.TensorAddQuantization(b, quant)
    tflite.TensorAddIsVariable(b, t.is_variable)
    if signature is not None:
        tflite.TensorAddShapeSignature(b, signature)
    return int(tflite.TensorEnd(b))


def _write_quantization(b: flatbuffers.Builder, q: Quantization) -> int:
    qmin = None if q.min is None else _numbers(b, q.min, np.float32)
    qmax = None if q.max is None else _numbers(b, q.max, np.float32)
    scale = _numbers(b, q.scale, np.float32) if np.size(q.scale) else None
    zero = _numbers(b, q.zero_point, np.int64) if np.size(q.zero_point) else None
    tflite.QuantizationParametersStart(b)
    if qmin is not None:
        tflite.QuantizationParametersAddMin(b, qmin)
    if qmax is not None:
        tflite.QuantizationParametersAddMax(b, qmax)
    if scale is not None:
        tflite.QuantizationParametersAddScale(b, scale)
    if zero is not None:
        tflite.QuantizationParametersAddZeroPoint(b, zero)
    tflite.QuantizationParametersAddQuantizedDimension(b, q.quantized_dimension)
    return int(tflite.QuantizationParametersEnd(b))


def _write_operator(b: flatbuffers.Builder, op: Operator) -> int:
    inputs = _numbers(b, op.inputs, np.int32)
    outputs = _numbers(b, op.outputs, np.int32)
    options = None if op.options is None else write_options(b, op.options)
    custom = None if op.custom_options is None else b.CreateByteVector(bytes(op.custom_options))
    tflite.OperatorStart(b)
    tflite.OperatorAddOpcodeIndex(b, op.opcode_index)
    tflite.OperatorAddInputs(b, inputs)
    tflite.OperatorAddOutputs(b, outputs)
    if op.options is not None and options is not None:
        union, code = options_union(op.options.kind)
        if union == 1:
            tflite.OperatorAddBuiltinOptionsType(b, code)
            tflite.OperatorAddBuiltinOptions(b, options)
        else:
            tflite.OperatorAddBuiltinOptions2Type(b, code)
            tflite.OperatorAddBuiltinOptions2(b, options)
    if custom is not None:
        tflite.OperatorAddCustomOptions(b, custom)
    return int(tflite.OperatorEnd(b))
