"""Read a .tflite flatbuffer into `graph.Model` and write it back, deterministically.

Everything the runtimes need round-trips: operator codes (with the deprecated int8 code), tensors
with shapes, shape signatures and (per-channel) quantization, every builtin options table (generic,
see ``options_io``), custom options, buffers and metadata. Not kept: signature defs, sparsity,
operator intermediates and debug metadata. Constant data is 16-byte aligned, as TFLite likes it.

Memory: `read_model` keeps constant data as zero-copy memoryviews into the file's bytes; large
models are written with their data appended after the flatbuffer (see `write_model`), and
`write_model_to` streams to a file without building the whole file in memory.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Any, BinaryIO

import flatbuffers
import numpy as np
import tflite

from edge_app.errors import GraphError
from edge_app.inference import dtypes
from edge_app.inference.fb_write import ALIGN, write_root
from edge_app.inference.graph import (
    Model,
    Operator,
    OperatorCode,
    Quantization,
    Subgraph,
    Tensor,
)
from edge_app.inference.options_io import read_options

IDENTIFIER = b"TFL3"
_MAX_SIZE = 2**31 - 1
_PLACEHOLDER = 1 << 40
EXTERNAL_ABOVE = 64 * 2**20  # bytes of constant data above which write_model appends it


# ---------------------------------------------------------------------------------------- read
def read_model(data: bytes) -> Model:
    """Parses a TFLite flatbuffer; any malformed input raises GraphError, never anything else."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise GraphError(f"expected the bytes of a .tflite file, got {type(data).__name__}")
    if len(data) < 16:
        raise GraphError(f"not a TFLite model: only {len(data)} bytes")
    if bytes(data[4:8]) != IDENTIFIER:
        raise GraphError(f"not a TFLite model: file identifier {bytes(data[4:8])!r}, not b'TFL3'")
    if not isinstance(data, bytes):
        data = bytes(data)  # a private immutable copy: buffers are views into it
    try:
        model = _read(data)
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
    whole = memoryview(data)
    buffers = [_read_buffer(fb.Buffers(i), i, whole) for i in range(fb.BuffersLength())]
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


def _read_buffer(buf: tflite.Buffer, index: int, whole: memoryview) -> bytes | memoryview:
    """A zero-copy view of a buffer's data, inside the flatbuffer or appended after it."""
    offset, size = int(buf.Offset()), int(buf.Size())
    if offset > 1:
        if offset + size > len(whole):
            raise GraphError(f"buffer {index} ({size} bytes at {offset}) lies outside the file")
        return whole[offset : offset + size]
    if buf.DataIsNone() or buf.DataLength() == 0:
        return b""
    return memoryview(buf.DataAsNumpy())


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
    if t.Sparsity() is not None:
        raise GraphError(f"tensor {_text(t.Name())!r} is stored sparse, which is not supported")
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
def write_model(model: Model, prune: bool = False, *, external: bool | None = None) -> bytes:
    """Serializes a Model; the same Model (and arguments) always give the same bytes.

    With ``prune=True`` buffers that no tensor or metadata entry uses are dropped (renumbered).
    ``external``: store constant data after the flatbuffer (Buffer.offset/size, as TFLite does for
    models over 2 GB; both runtimes load it) instead of inside it. By default only models with
    more than EXTERNAL_ABOVE bytes of constants are written so, which keeps writing them cheap:
    the data is never copied into a flatbuffer builder.
    """
    return b"".join(_pieces(model, prune, external))


def write_model_to(
    model: Model, out: BinaryIO, prune: bool = False, *, external: bool | None = None
) -> int:
    """Streams exactly the bytes of `write_model` to a binary file; returns their number."""
    written = 0
    for piece in _pieces(model, prune, external):
        out.write(piece)
        written += len(piece)
    return written


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _pieces(model: Model, prune: bool, external: bool | None) -> list[bytes | memoryview]:
    validate(model)
    if prune:
        model = pruned(model)
    if external is None:
        external = sum(len(b) for b in model.buffers) > EXTERNAL_ABOVE
    if not external:
        return [_flatbuffer(model, None)]
    # Offsets depend on the flatbuffer's length, which does not depend on their values.
    probe = len(_flatbuffer(model, [_PLACEHOLDER if len(b) else 0 for b in model.buffers]))
    offsets, position = [], _align(probe)
    for data in model.buffers:
        offsets.append(position if len(data) else 0)
        position = _align(position + len(data)) if len(data) else position
    head = _flatbuffer(model, offsets)
    if len(head) != probe:
        raise GraphError("internal error: flatbuffer size changed between passes")
    pieces: list[bytes | memoryview] = [head, bytes(_align(probe) - probe)]
    for data, offset in zip(model.buffers, offsets, strict=True):
        if len(data):
            pieces += [data, bytes(_align(offset + len(data)) - offset - len(data))]
    return pieces


def _flatbuffer(model: Model, offsets: list[int] | None) -> bytes:
    """The flatbuffer; constant data inside it, or referenced by ``offsets`` (0: no data)."""
    hint = 4096 + sum(256 * (len(sg.tensors) + len(sg.operators)) for sg in model.subgraphs)
    if offsets is None:
        hint += sum(len(b) + 2 * ALIGN for b in model.buffers)
    builder = flatbuffers.Builder(min(hint, _MAX_SIZE))
    try:
        root = write_root(builder, model, offsets)
        builder.Finish(root, file_identifier=IDENTIFIER)
    except (flatbuffers.builder.BuilderSizeError, OverflowError) as exc:
        raise GraphError(f"model too large for a flatbuffer: {exc}") from exc
    except (struct.error, TypeError, ValueError, UnicodeError) as exc:
        raise GraphError(f"cannot write the model: {type(exc).__name__}: {exc}") from exc
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
