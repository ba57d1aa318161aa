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

import itertools
import math
import re
import struct
from dataclasses import dataclass
from typing import Any, Final

import msgpack
import numpy as np

from edge_app.errors import DecodeError, WireError
from edge_app.messages.topics import ID_PATTERN

WIRE_VERSION: Final = 1
ACK_VERSION: Final = 1
MAGIC: Final = b"EA"
DEFAULT_MAX: Final = 64 * 1024 * 1024  # 64 MiB: larger than any activation we ship
MAX_HEADER: Final = 256 * 1024
MAX_ACK: Final = 4096
MAX_TENSORS: Final = 64
MAX_NDIM: Final = 8
MAX_TRACE: Final = 256
MAX_LAYOUT: Final = 1025
MAX_STR: Final = 256
ALIGN: Final = 8

_PREFIX = struct.Struct("<2sBI")
_ID_RE = re.compile(ID_PATTERN)

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

TraceEntry = tuple[int, int | None, str, float, float, float]
"""(stage, shard, device, queue_wait_s, compute_s, transfer_s)"""


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


def _header_fields(h: Header) -> list[Any]:
    trace = [[s, sh, dev, _us(q), _us(c), _us(t)] for s, sh, dev, q, c, t in h.trace]
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


def _int(value: Any, what: str, *, minimum: int = 0, maximum: int = 2**62) -> int:
    if type(value) is not int or not minimum <= value <= maximum:
        raise DecodeError(f"{what}: expected an integer in [{minimum}, {maximum}], got {value!r}")
    return value


def _opt_int(value: Any, what: str) -> int | None:
    return None if value is None else _int(value, what)


def _float(value: Any, what: str) -> float:
    if type(value) not in (int, float) or not math.isfinite(value):
        raise DecodeError(f"{what}: expected a finite number, got {value!r}")
    return float(value)


def _str(value: Any, what: str) -> str:
    if type(value) is not str or not 0 < len(value) <= MAX_STR:
        raise DecodeError(f"{what}: expected a string of 1-{MAX_STR} characters")
    return value


def _ident(value: Any, what: str) -> str:
    if type(value) is not str or not _ID_RE.match(value):
        raise DecodeError(f"{what}: invalid id {value!r}")
    return value


def _list(value: Any, what: str, max_len: int) -> list[Any]:
    if type(value) is not list or len(value) > max_len:
        raise DecodeError(f"{what}: expected a list of at most {max_len} items")
    return value


def _bounds(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    items = _list(value, "bounds", 2)
    if len(items) != 2:
        raise DecodeError("bounds: expected [lo, hi]")
    lo, hi = _int(items[0], "bounds.lo"), _int(items[1], "bounds.hi")
    if lo > hi:
        raise DecodeError(f"bounds: lo {lo} > hi {hi}")
    return lo, hi


def _layout(value: Any) -> tuple[int, ...] | None:
    if value is None:
        return None
    items = [_int(v, "layout") for v in _list(value, "layout", MAX_LAYOUT)]
    if len(items) < 2 or any(a >= b for a, b in itertools.pairwise(items)):
        raise DecodeError("layout: expected at least 2 strictly increasing boundaries")
    return tuple(items)


def _trace_entry(value: Any) -> TraceEntry:
    items = _list(value, "trace entry", 6)
    if len(items) != 6:
        raise DecodeError("trace entry: expected 6 fields")
    stage, shard, device, *times = items
    q, c, t = (_int(v, "trace timing", maximum=2**53) / 1e6 for v in times)
    where = "trace"
    return (_int(stage, where), _opt_int(shard, where), _ident(device, where), q, c, t)


def _header(fields: list[Any]) -> Header:
    if len(fields) != 14:
        raise DecodeError(f"header: expected 14 fields, got {len(fields)}")
    return Header(
        job=_str(fields[0], "job"),
        sensor=_ident(fields[1], "sensor"),
        seq=_int(fields[2], "seq"),
        created=_float(fields[3], "created"),
        deadline=_float(fields[4], "deadline"),
        epoch=_int(fields[5], "epoch"),
        stage=_int(fields[6], "stage", maximum=1023),
        attempt=_int(fields[7], "attempt", maximum=1 << 20),
        sender=_ident(fields[8], "sender"),
        shard=_opt_int(fields[9], "shard"),
        bounds=_bounds(fields[10]),
        layout=_layout(fields[11]),
        merge_to=None if fields[12] is None else _ident(fields[12], "merge_to"),
        trace=tuple(_trace_entry(e) for e in _list(fields[13], "trace", MAX_TRACE)),
    )


_Spec = tuple[str, np.dtype[Any], tuple[int, ...]]


def _spec(value: Any) -> _Spec:
    items = _list(value, "tensor spec", 3)
    if len(items) != 3:
        raise DecodeError("tensor spec: expected [name, dtype, shape]")
    name = _str(items[0], "tensor name")
    code = items[1]
    if type(code) is not int or code not in DTYPES:
        raise DecodeError(f"tensor {name!r}: dtype code {code!r} is not allowed")
    dims = _list(items[2], f"tensor {name!r} shape", MAX_NDIM)
    shape = tuple(_int(d, f"tensor {name!r} dimension", maximum=2**40) for d in dims)
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
    fields = _list(fields, "envelope header", 15)
    if len(fields) != 15:
        raise DecodeError(f"envelope header: expected 15 fields, got {len(fields)}")
    header = _header(fields[:14])
    specs = [_spec(s) for s in _list(fields[14], "tensors", MAX_TENSORS)]
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
    fields = _list(_unpack(view, "ack", MAX_STR), "ack", 6)
    if len(fields) != 6:
        raise DecodeError(f"ack: expected 6 fields, got {len(fields)}")
    if fields[0] != ACK_VERSION or type(fields[0]) is not int:
        raise DecodeError(f"ack: unsupported version {fields[0]!r}")
    return Ack(
        job=_str(fields[1], "ack.job"),
        stage=_int(fields[2], "ack.stage", maximum=1023),
        shard=_opt_int(fields[3], "ack.shard"),
        attempt=_int(fields[4], "ack.attempt", maximum=1 << 20),
        device=_ident(fields[5], "ack.device"),
    )


def wire_overhead(env: Envelope) -> float:
    """Wire bytes over raw tensor bytes for ``env`` (1.0 = no overhead)."""
    raw = env.tensor_bytes
    return len(encode_envelope(env)) / raw if raw else math.inf
