"""The tensor codec: round trips, zero-copy views, strict checks and wire overhead."""

from __future__ import annotations

import struct
import time
import tracemalloc
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edge_app.errors import DecodeError, WireError
from edge_app.messages import codec
from edge_app.messages.codec import Ack, Envelope, Header

ids = st.from_regex(r"\A[A-Za-z0-9_.-]{1,64}\Z")
u32 = st.integers(0, 2**32)
micros = st.integers(0, 10**9).map(lambda k: k / 1e6)
times = st.floats(0, 4e9, allow_nan=False)
trace_entries = st.tuples(
    st.integers(0, 64), st.none() | st.integers(0, 64), ids, micros, micros, micros
)


@st.composite
def headers(draw: st.DrawFn) -> Header:
    layout = draw(st.none() | st.lists(u32, min_size=2, max_size=9, unique=True).map(sorted))
    lo_hi = draw(st.none() | st.tuples(u32, u32).map(lambda p: (min(p), max(p))))
    return Header(
        job=draw(st.text(min_size=1, max_size=80)),
        sensor=draw(ids),
        seq=draw(st.integers(0, 2**62)),
        created=draw(times),
        deadline=draw(times),
        epoch=draw(u32),
        stage=draw(st.integers(0, 1023)),
        attempt=draw(st.integers(0, 100)),
        sender=draw(ids),
        shard=draw(st.none() | st.integers(0, 255)),
        bounds=lo_hi,
        layout=tuple(layout) if layout is not None else None,
        merge_to=draw(st.none() | ids),
        trace=tuple(draw(st.lists(trace_entries, max_size=5))),
    )


arrays = hnp.arrays(
    dtype=st.sampled_from(["float32", "int8", "uint8", "int32", "int64", "float16"]),
    shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6),
)


def header(**changes: Any) -> Header:
    now = time.time()
    base = Header(
        job="cam1-000042-9f3a1c2e",
        sensor="cam1",
        seq=42,
        created=now,
        deadline=now + 5.0,
        epoch=3,
        stage=0,
        attempt=0,
        sender="cam1",
    )
    return Header(**{**base.__dict__, **changes})


def raw_payload(fields: list[Any], data: bytes, version: int = codec.WIRE_VERSION) -> bytes:
    """A hand-built envelope: the prefix, a msgpack header of our choosing, then ``data``."""
    head = msgpack.packb(fields)
    body = struct.pack("<2sBI", codec.MAGIC, version, len(head)) + head
    return body + b"\0" * (-len(body) % codec.ALIGN) + data


def valid_fields(specs: list[Any]) -> list[Any]:
    return [*codec._header_fields(header()), specs]


# --- round trips -----------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(headers(), st.lists(arrays, max_size=4))
def test_round_trip(h: Header, tensors: list[np.ndarray[Any, Any]]) -> None:
    env = Envelope(h, tuple((f"t{i}", a) for i, a in enumerate(tensors)))
    out = codec.decode_envelope(codec.encode_envelope(env))
    assert out.header == h
    assert [n for n, _ in out.tensors] == [n for n, _ in env.tensors]
    for (_, a), (_, b) in zip(env.tensors, out.tensors, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


def test_non_contiguous_and_big_endian_inputs() -> None:
    strided = np.arange(24, dtype=np.int32).reshape(4, 6)[:, ::2]
    big = np.arange(5, dtype=">f4")
    env = Envelope(header(), (("s", strided), ("b", big), ("scalar", np.array(7, np.int64))))
    out = codec.decode_envelope(codec.encode_envelope(env))
    np.testing.assert_array_equal(out.tensor("s"), strided)
    np.testing.assert_array_equal(out.tensor("b"), big)
    assert out.tensor("b").dtype == np.dtype("<f4")
    assert out.tensor("scalar").shape == () and int(out.tensor("scalar")) == 7


@given(
    st.text(min_size=1, max_size=100),
    st.integers(0, 1023),
    st.none() | st.integers(0, 255),
    st.integers(0, 1000),
    ids,
)
def test_ack_round_trip(job: str, stage: int, shard: int | None, attempt: int, dev: str) -> None:
    ack = Ack(job, stage, shard, attempt, dev)
    assert codec.decode_ack(codec.encode_ack(ack)) == ack


# --- zero copy -------------------------------------------------------------------------------


def test_decoded_arrays_are_read_only_views_of_the_payload() -> None:
    a = np.random.default_rng(0).random((3, 64, 64), dtype=np.float32)
    b = np.arange(1000, dtype=np.int8)
    payload = codec.encode_envelope(Envelope(header(), (("a", a), ("b", b))))
    whole = np.frombuffer(payload, np.uint8)
    for _, arr in codec.decode_envelope(payload).tensors:
        assert np.shares_memory(arr, whole)
        assert not arr.flags.writeable
        assert arr.ctypes.data % codec.ALIGN == whole.ctypes.data % codec.ALIGN
        with pytest.raises(ValueError, match="read-only"):
            arr[...] = 0


def test_writable_buffer_input_still_gives_read_only_views() -> None:
    payload = bytearray(codec.encode_envelope(Envelope(header(), (("a", np.ones(8, "f4")),))))
    arr = codec.decode_envelope(payload).tensor("a")
    assert not arr.flags.writeable
    assert np.shares_memory(arr, np.frombuffer(payload, np.uint8))


# --- strict checks ---------------------------------------------------------------------------


def test_size_limit_is_checked_before_parsing() -> None:
    payload = codec.encode_envelope(Envelope(header(), (("a", np.ones(4096, "f4")),)))
    with pytest.raises(DecodeError, match="exceeds 1000"):
        codec.decode_envelope(payload, max_bytes=1000)
    garbage = b"\xff" * 2000  # would fail the magic check if the size were not checked first
    with pytest.raises(DecodeError, match="exceeds"):
        codec.decode_envelope(garbage, max_bytes=1000)


def test_huge_claimed_shape_is_rejected_without_allocating() -> None:
    payload = raw_payload(valid_fields([["x", 0, [2**20, 2**20, 1024]]]), b"\0" * 64)
    tracemalloc.start()
    try:
        with pytest.raises(DecodeError, match=r"needs \d+ bytes, only 64 left"):
            codec.decode_envelope(payload)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


@pytest.mark.parametrize(
    ("specs", "data", "match"),
    [
        ([["x", 7, [4]]], b"\0" * 16, "dtype code 7"),
        ([["x", "float64", [4]]], b"\0" * 32, "dtype code"),
        ([["x", 0, [4]]], b"\0" * 12, "needs 16 bytes, only 12"),
        ([["x", 0, [4]]], b"\0" * 20, "4 unexpected trailing bytes"),
        ([["x", 0, [-4]]], b"", "dimension"),
        ([["x", 0, [1] * 9]], b"\0" * 4, "shape"),
        ([["x", 2, [2]], ["x", 2, [2]]], b"\0" * 10, "duplicate tensor names"),
        ([["x", 2]], b"", "expected \\[name, dtype, shape\\]"),
    ],
)
def test_bad_tensor_specs(specs: list[Any], data: bytes, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        codec.decode_envelope(raw_payload(valid_fields(specs), data))


@pytest.mark.parametrize(
    ("index", "value", "match"),
    [
        (0, "", "job"),
        (1, "cam/1", "sensor: invalid id"),
        (2, -1, "seq"),
        (2, True, "seq"),
        (3, float("nan"), "created"),
        (4, "soon", "deadline"),
        (6, 5000, "stage"),
        (8, "#", "sender"),
        (10, [5, 2], "bounds: lo 5 > hi 2"),
        (11, [0, 10, 10], "layout"),
        (12, "a+b", "merge_to"),
        (13, [[0, None, "w1", 1, 2]], "trace entry"),
    ],
)
def test_bad_header_fields(index: int, value: Any, match: str) -> None:
    fields = valid_fields([["x", 2, [1]]])
    fields[index] = value
    with pytest.raises(DecodeError, match=match):
        codec.decode_envelope(raw_payload(fields, b"\1"))


def test_bad_framing() -> None:
    good = codec.encode_envelope(Envelope(header(), (("a", np.ones(4, "u1")),)))
    with pytest.raises(DecodeError, match="too short"):
        codec.decode_envelope(good[:5])
    with pytest.raises(DecodeError, match="bad magic"):
        codec.decode_envelope(b"XX" + good[2:])
    with pytest.raises(DecodeError, match="wire version 9"):
        codec.decode_envelope(raw_payload(valid_fields([]), b"", version=9))
    with pytest.raises(DecodeError, match="header length"):
        codec.decode_envelope(good[:3] + struct.pack("<I", 2**31) + good[7:])
    with pytest.raises(DecodeError, match="payload must be bytes"):
        codec.decode_envelope("text")  # type: ignore[arg-type]


def test_encoding_a_disallowed_dtype_is_refused() -> None:
    with pytest.raises(WireError, match="float64"):
        codec.encode_envelope(Envelope(header(), (("a", np.ones(3)),)))


# --- wire overhead ---------------------------------------------------------------------------


@pytest.mark.parametrize("nbytes", [10 * 1024, 100 * 1024, 1024 * 1024])
def test_wire_overhead_is_within_one_percent(nbytes: int) -> None:
    tensor = np.zeros(nbytes // 4, np.float32)
    first = Envelope(header(), (("x", tensor),))
    assert codec.wire_overhead(first) <= 1.01
    if nbytes >= 100 * 1024:  # deep in the pipeline, with a trace and a shard layout
        trace = tuple((s, None, f"worker-{s}", 0.0012, 0.0345, 0.0021) for s in range(6))
        late = header(stage=6, trace=trace, shard=1, bounds=(2048, 4096), layout=(0, 2048, 4096))
        assert codec.wire_overhead(Envelope(late, (("x", tensor),))) <= 1.01


def test_trace_devices_repeated_in_a_row_travel_once() -> None:
    same = tuple((s, None, "worker-1", 0.001, 0.002, 0.0) for s in range(5))
    mixed = tuple((s, None, f"worker-{s % 2}", 0.001, 0.002, 0.0) for s in range(5))
    tensor = (("x", np.zeros(4, "f4")),)
    small = codec.encode_envelope(Envelope(header(trace=same), tensor))
    big = codec.encode_envelope(Envelope(header(trace=mixed), tensor))
    assert codec.decode_envelope(small).header.trace == same
    assert codec.decode_envelope(big).header.trace == mixed
    assert len(big) - len(small) >= 4 * len("worker-1") - codec.ALIGN
    fields = valid_fields([["x", 2, [1]]])
    fields[13] = [[0, None, None, 1, 2, 3]]  # nothing to repeat
    with pytest.raises(DecodeError, match="trace"):
        codec.decode_envelope(raw_payload(fields, b"\1"))
