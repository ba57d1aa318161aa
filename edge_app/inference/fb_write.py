"""The flatbuffer tables of a Model, written with the `tflite` package's builder functions.

Used by ``graph_io.write_model``; constant data goes inside the flatbuffer (16-byte aligned) or,
when ``offsets`` are given, is referenced by Buffer.offset/size and appended by the caller.
"""

from __future__ import annotations

from typing import Any

import flatbuffers
import numpy as np
import tflite

from edge_app.inference import dtypes
from edge_app.inference.graph import Model, Operator, OperatorCode, Quantization, Subgraph, Tensor
from edge_app.inference.options_io import options_union, write_options

ALIGN = 16
_GREATER_OP_CODES = tflite.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES


def write_root(b: flatbuffers.Builder, model: Model, offsets: list[int] | None) -> int:
    where = offsets or [0] * len(model.buffers)
    buffers = _table_vector(
        b, [_write_buffer(b, data, off) for data, off in zip(model.buffers, where, strict=True)]
    )
    codes = _table_vector(b, [_write_opcode(b, c) for c in model.operator_codes])
    subgraphs = _table_vector(b, [_write_subgraph(b, sg) for sg in model.subgraphs])
    metadata = _table_vector(b, [_write_metadata(b, n, i) for n, i in model.metadata])
    description = _string(b, model.description)
    tflite.ModelStart(b)
    tflite.ModelAddVersion(b, model.version)
    tflite.ModelAddOperatorCodes(b, codes)
    tflite.ModelAddSubgraphs(b, subgraphs)
    tflite.ModelAddDescription(b, description)
    tflite.ModelAddBuffers(b, buffers)
    if model.metadata:
        tflite.ModelAddMetadata(b, metadata)
    return int(tflite.ModelEnd(b))


def _string(b: flatbuffers.Builder, text: str) -> int:
    """Strings read with surrogateescape (undecodable bytes) are written back byte for byte."""
    return int(b.CreateString(text.encode("utf-8", "surrogateescape")))


def _table_vector(b: flatbuffers.Builder, offsets: list[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return int(b.EndVector())


def _numbers(b: flatbuffers.Builder, values: Any, dtype: type) -> int:
    return int(b.CreateNumpyVector(np.asarray(values, dtype=dtype).reshape(-1)))


def _write_buffer(b: flatbuffers.Builder, data: bytes | memoryview, offset: int) -> int:
    if offset > 1:
        tflite.BufferStart(b)
        tflite.BufferAddOffset(b, offset)
        tflite.BufferAddSize(b, len(data))
        return int(tflite.BufferEnd(b))
    vector = None
    if len(data):
        b.StartVector(1, len(data), ALIGN)
        b.head = b.Head() - len(data)
        b.Bytes[b.Head() : b.Head() + len(data)] = data
        b.vectorNumElems = len(data)
        vector = b.EndVector()
    tflite.BufferStart(b)
    if vector is not None:
        tflite.BufferAddData(b, vector)
    return int(tflite.BufferEnd(b))


def _write_opcode(b: flatbuffers.Builder, code: OperatorCode) -> int:
    custom = None if code.custom_code is None else _string(b, code.custom_code)
    tflite.OperatorCodeStart(b)
    tflite.OperatorCodeAddDeprecatedBuiltinCode(b, min(code.builtin_code, _GREATER_OP_CODES))
    if custom is not None:
        tflite.OperatorCodeAddCustomCode(b, custom)
    tflite.OperatorCodeAddVersion(b, code.version)
    tflite.OperatorCodeAddBuiltinCode(b, code.builtin_code)
    return int(tflite.OperatorCodeEnd(b))


def _write_metadata(b: flatbuffers.Builder, name: str, buffer: int) -> int:
    text = _string(b, name)
    tflite.MetadataStart(b)
    tflite.MetadataAddName(b, text)
    tflite.MetadataAddBuffer(b, buffer)
    return int(tflite.MetadataEnd(b))


def _write_subgraph(b: flatbuffers.Builder, sg: Subgraph) -> int:
    tensors = _table_vector(b, [_write_tensor(b, t) for t in sg.tensors])
    operators = _table_vector(b, [_write_operator(b, op) for op in sg.operators])
    inputs = _numbers(b, sg.inputs, np.int32)
    outputs = _numbers(b, sg.outputs, np.int32)
    name = _string(b, sg.name)
    tflite.SubGraphStart(b)
    tflite.SubGraphAddTensors(b, tensors)
    tflite.SubGraphAddInputs(b, inputs)
    tflite.SubGraphAddOutputs(b, outputs)
    tflite.SubGraphAddOperators(b, operators)
    tflite.SubGraphAddName(b, name)
    return int(tflite.SubGraphEnd(b))


def _write_tensor(b: flatbuffers.Builder, t: Tensor) -> int:
    shape = _numbers(b, t.shape, np.int32)
    name = _string(b, t.name)
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
