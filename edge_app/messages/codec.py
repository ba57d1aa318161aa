"""The data plane: tensors in msgpack-framed envelopes, decoded without copying.

Wire layout of an envelope (all integers little-endian)::

    b"EA" | version: u8 | header_len: u32 | header: msgpack array | pad | tensor 0 | pad | ...

The msgpack header is a compact array (no field names) holding the job fields and, per tensor,
``[name, dtype code, shape]``. Tensor bytes follow the header, each starting at an offset that is
a multiple of 8 from the start of the payload, so the decoder can hand out read-only
``numpy.frombuffer`` views of the received ``bytes`` (zero copies) instead of letting msgpack
copy a ``bin`` object. The decoder checks the size limit first, then the header, then that the
tensors' byte counts (shape x itemsize) exactly fill the rest of the payload, all before any
array exists. Every failure is a :class:`~edge_app.errors.DecodeError` with the reason.

Trace timings (seconds) travel as integer microseconds: a trace entry decodes to the value
rounded to 1 us.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import msgpack
import numpy as np

from edge_app.errors import DecodeError, WireError
from edge_app.messages import checks
from edge_app.messages.checks import (
    ID_RE,
    MAX_ATTEMPT,
    MAX_DIM,
    MAX_INT,
    MAX_LAYOUT,
    MAX_NDIM,
    MAX_STAGE,
    MAX_STR,
    MAX_TRACE,
)

TraceEntry: TypeAlias = checks.TraceEntry
"""(stage, shard, device, queue_wait_s, compute_s, transfer_s)"""

WIRE_VERSION: Final = 1
ACK_VERSION: Final = 1
MAGIC: Final = b"EA"
DEFAULT_MAX: Final = 64 * 1024 * 1024  # 64 MiB: larger than any activation we ship
MAX_HEADER: Final = 256 * 1024
MAX_ACK: Final = 4096
MAX_TENSORS: Final = 64
ALIGN: Final = 8

_PREFIX = struct.Struct("<2sBI")

# Wire code -> dtype (little-endian). The whitelist: nothing else is accepted.
DTYPES: Final[dict[int, np.dtype[Any]]] = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("u1"),
    3: np.dtype("<i4"),
    4: np.dtype("<i8"),
    5: np.dtype("<f2"),
}
_CODES: Final = {dt: code for code, dt in DTYPES.items()}


@dataclass(frozen=True)
class Header:
    job: str
    sensor: str
    seq: int
    created: float
    deadline: float
    epoch: int
    stage: int
    attempt: int
    sender: str
    shard: int | None = None
    bounds: tuple[int, int] | None = None
    layout: tuple[int, ...] | None = None
    merge_to: str | None = None
    trace: tuple[TraceEntry, ...] = ()


@dataclass(frozen=True)
class Envelope:
    header: Header
    tensors: tuple[tuple[str, np.ndarray[Any, Any]], ...]

    def tensor(self, name: str) -> np.ndarray[Any, Any]:
        for key, value in self.tensors:
            if key == name:
                return value
        raise KeyError(name)

    @property
    def tensor_bytes(self) -> int:
        return sum(int(a.nbytes) for _, a in self.tensors)


@dataclass(frozen=True)
class Ack:
    job: str
    stage: int
    shard: int | None
    attempt: int
    device: str


# --- encoding --------------------------------------------------------------------------------


def _us(seconds: float) -> int:
    return max(0, round(seconds * 1e6))


def _wire_trace(trace: tuple[TraceEntry, ...]) -> list[list[Any]]:
    """Timings in integer microseconds; a device equal to the previous entry's is sent as nil
    (a device that runs several stages in a row appears once)."""
    out, previous = [], None
    for stage, shard, device, q, c, t in trace:
        out.append([stage, shard, None if device == previous else device, _us(q), _us(c), _us(t)])
        previous = device
    return out


def _header_fields(h: Header) -> list[Any]:
    trace = _wire_trace(h.trace)
    return [
        h.job,
        h.sensor,
        h.seq,
        float(h.created),
        float(h.deadline),
        h.epoch,
        h.stage,
        h.attempt,
        h.sender,
        h.shard,
        list(h.bounds) if h.bounds is not None else None,
        list(h.layout) if h.layout is not None else None,
        h.merge_to,
        trace,
    ]


def _wire_array(name: str, array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    if dtype not in _CODES:
        raise WireError(f"tensor {name!r}: dtype {array.dtype} is not allowed on the wire")
    return np.asarray(array, dtype=dtype, order="C")


def encode_envelope(env: Envelope) -> bytes:
    """Serialize ``env``; the tensor bytes are copied once, straight into the payload."""
    arrays = [(name, _wire_array(name, a)) for name, a in env.tensors]
    specs = [[name, _CODES[a.dtype], list(a.shape)] for name, a in arrays]
    header = msgpack.packb([*_header_fields(env.header), specs], use_bin_type=True)
    parts: list[Any] = [_PREFIX.pack(MAGIC, WIRE_VERSION, len(header)), header]
    offset = _PREFIX.size + len(header)
    for _, a in arrays:
        pad = -offset % ALIGN
        if pad:
            parts.append(b"\0" * pad)
        parts.append(a.reshape(-1).view(np.uint8).data)
        offset += pad + a.nbytes
    return b"".join(parts)


def encode_ack(ack: Ack) -> bytes:
    fields = [ACK_VERSION, ack.job, ack.stage, ack.shard, ack.attempt, ack.device]
    return msgpack.packb(fields, use_bin_type=True)


# --- decoding: field checks ------------------------------------------------------------------


def _scalars_ok(f: list[Any]) -> bool:
    """The scalar header fields in one expression; False sends decoding to the slow path."""
    return (
        type(f[0]) is str
        and 0 < len(f[0]) <= MAX_STR
        and type(f[1]) is str
        and ID_RE.match(f[1]) is not None
        and type(f[2]) is int
        and 0 <= f[2] <= MAX_INT
        and type(f[3]) is float
        and type(f[4]) is float
        and math.isfinite(f[3])
        and math.isfinite(f[4])
        and type(f[5]) is int
        and 0 <= f[5] <= MAX_INT
        and type(f[6]) is int
        and 0 <= f[6] <= MAX_STAGE
        and type(f[7]) is int
        and 0 <= f[7] <= MAX_ATTEMPT
        and type(f[8]) is str
        and ID_RE.match(f[8]) is not None
        and (f[9] is None or (type(f[9]) is int and 0 <= f[9] <= MAX_INT))
        and (f[12] is None or (type(f[12]) is str and ID_RE.match(f[12]) is not None))
    )


def _header(fields: list[Any]) -> Header:
    if len(fields) != 14:
        raise DecodeError(f"header: expected 14 fields, got {len(fields)}")
    if _scalars_ok(fields):
        job, sensor, seq, created, deadline, epoch, stage, attempt, sender, shard = fields[:10]
        merge_to = fields[12]
    else:  # the field-by-field checks raise with the reason
        job, sensor, seq = (
            checks.str_field(fields[0], "job"),
            checks.ident(fields[1], "sensor"),
            checks.int_field(fields[2], "seq"),
        )
        created, deadline = (
            checks.float_field(fields[3], "created"),
            checks.float_field(fields[4], "deadline"),
        )
        epoch = checks.int_field(fields[5], "epoch")
        stage = checks.int_field(fields[6], "stage", maximum=MAX_STAGE)
        attempt = checks.int_field(fields[7], "attempt", maximum=MAX_ATTEMPT)
        sender, shard = checks.ident(fields[8], "sender"), checks.opt_int(fields[9], "shard")
        merge_to = None if fields[12] is None else checks.ident(fields[12], "merge_to")
    return Header(
        job, sensor, seq, created, deadline, epoch, stage, attempt, sender, shard,
        checks.bounds(fields[10]), checks.layout(fields[11]), merge_to, checks.trace(fields[13]),
    )  # fmt: skip


_Spec = tuple[str, np.dtype[Any], tuple[int, ...]]


def _spec(value: Any) -> _Spec:
    items = checks.list_field(value, "tensor spec", 3)
    if len(items) != 3:
        raise DecodeError("tensor spec: expected [name, dtype, shape]")
    name = checks.str_field(items[0], "tensor name")
    code = items[1]
    if type(code) is not int or code not in DTYPES:
        raise DecodeError(f"tensor {name!r}: dtype code {code!r} is not allowed")
    try:  # messages name the tensor only on failure: no formatting on the hot path
        dims = checks.list_field(items[2], "shape", MAX_NDIM)
        shape = tuple([checks.int_field(d, "dimension", maximum=MAX_DIM) for d in dims])
    except DecodeError as exc:
        raise DecodeError(f"tensor {name!r} {exc}") from None
    return name, DTYPES[code], shape


def _unpack(data: Any, what: str, max_len: int) -> Any:
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_str_len=max_len,
            max_bin_len=0,
            max_ext_len=0,
            max_map_len=0,
            max_array_len=max(MAX_LAYOUT, MAX_TRACE) + 1,
        )
    except Exception as exc:  # msgpack raises a zoo of types on bad input; map them all
        raise DecodeError(f"{what}: malformed msgpack ({type(exc).__name__}: {exc})") from None


def _as_bytes(payload: Any, max_bytes: int, what: str) -> memoryview:
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise DecodeError(f"{what}: payload must be bytes, got {type(payload).__name__}")
    if len(payload) > max_bytes:  # len() of a non-byte memoryview undercounts: checked below
        raise DecodeError(f"{what}: payload of {len(payload)} bytes exceeds {max_bytes}")
    try:
        view = memoryview(payload).cast("B")
    except (TypeError, ValueError) as exc:
        raise DecodeError(f"{what}: payload is not a contiguous byte buffer ({exc})") from None
    if view.nbytes > max_bytes:
        raise DecodeError(f"{what}: payload of {view.nbytes} bytes exceeds {max_bytes}")
    return view


# --- decoding --------------------------------------------------------------------------------


def _layout_tensors(specs: list[_Spec], start: int, total: int) -> list[tuple[int, int]]:
    """Offsets and element counts of each tensor; the bytes must fill the payload exactly."""
    placed: list[tuple[int, int]] = []
    offset = start
    for name, dtype, shape in specs:
        offset += -offset % ALIGN
        count = math.prod(shape)
        nbytes = count * dtype.itemsize
        if offset + nbytes > total:
            raise DecodeError(
                f"tensor {name!r}: shape {shape} x {dtype.itemsize} bytes needs {nbytes} bytes,"
                f" only {max(0, total - offset)} left in the payload"
            )
        placed.append((offset, count))
        offset += nbytes
    if offset != total:
        raise DecodeError(f"payload has {total - offset} unexpected trailing bytes")
    return placed


def decode_envelope(payload: bytes, max_bytes: int = DEFAULT_MAX) -> Envelope:
    """Parse an envelope; arrays are read-only views into ``payload`` (no copy)."""
    view = _as_bytes(payload, max_bytes, "envelope")
    if view.nbytes < _PREFIX.size:
        raise DecodeError(f"envelope: {view.nbytes} bytes is too short")
    magic, version, header_len = _PREFIX.unpack_from(view)
    if magic != MAGIC:
        raise DecodeError("envelope: bad magic (not an edge-app data message)")
    if version != WIRE_VERSION:
        raise DecodeError(f"envelope: unsupported wire version {version}")
    start = _PREFIX.size + header_len
    if header_len > MAX_HEADER or start > view.nbytes:
        raise DecodeError(f"envelope: header length {header_len} is out of range")
    fields = _unpack(view[_PREFIX.size : start], "envelope header", MAX_STR)
    fields = checks.list_field(fields, "envelope header", 15)
    if len(fields) != 15:
        raise DecodeError(f"envelope header: expected 15 fields, got {len(fields)}")
    header = _header(fields[:14])
    specs = [_spec(s) for s in checks.list_field(fields[14], "tensors", MAX_TENSORS)]
    names = [name for name, _, _ in specs]
    if len(set(names)) != len(names):
        raise DecodeError(f"duplicate tensor names {names}")
    placed = _layout_tensors(specs, start, view.nbytes)
    tensors = []
    for (name, dtype, shape), (offset, count) in zip(specs, placed, strict=True):
        array = np.frombuffer(view, dtype=dtype, count=count, offset=offset).reshape(shape)
        array.flags.writeable = False
        tensors.append((name, array))
    return Envelope(header, tuple(tensors))


def decode_ack(payload: bytes) -> Ack:
    view = _as_bytes(payload, MAX_ACK, "ack")
    fields = checks.list_field(_unpack(view, "ack", MAX_STR), "ack", 6)
    if len(fields) != 6:
        raise DecodeError(f"ack: expected 6 fields, got {len(fields)}")
    if fields[0] != ACK_VERSION or type(fields[0]) is not int:
        raise DecodeError(f"ack: unsupported version {fields[0]!r}")
    return Ack(
        job=checks.str_field(fields[1], "ack.job"),
        stage=checks.int_field(fields[2], "ack.stage", maximum=MAX_STAGE),
        shard=checks.opt_int(fields[3], "ack.shard"),
        attempt=checks.int_field(fields[4], "ack.attempt", maximum=MAX_ATTEMPT),
        device=checks.ident(fields[5], "ack.device"),
    )


def wire_overhead(env: Envelope) -> float:
    """Wire bytes over raw tensor bytes for ``env`` (1.0 = no overhead)."""
    raw = env.tensor_bytes
    return len(encode_envelope(env)) / raw if raw else math.inf
