"""Every decoder fed arbitrary bytes: a valid message or a DecodeError, never anything else."""

from __future__ import annotations

import struct
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_app.errors import DecodeError
from edge_app.messages import codec, schemas
from edge_app.messages.codec import Envelope, Header

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

CONTROL_KINDS = [
    schemas.DeviceStatus,
    schemas.Heartbeat,
    schemas.Plan,
    schemas.JobOutcome,
    schemas.ErrorReport,
    schemas.Metrics,
]

msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=16) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=40,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=30,
)


def sample_payload() -> bytes:
    h = Header("j-1", "cam1", 1, 1.0, 2.0, 1, 0, 0, "cam1", trace=((0, None, "w1", 0.1, 0.2, 0.3),))
    tensors = (("x", np.arange(24, dtype=np.float32)), ("y", np.arange(5, dtype=np.int8)))
    return codec.encode_envelope(Envelope(h, tensors))


SAMPLE = sample_payload()
SAMPLE_ACK = codec.encode_ack(codec.Ack("j-1", 2, None, 0, "w1"))


def only_decode_errors(fn: Any, payload: Any) -> None:
    try:
        fn(payload)
    except DecodeError as exc:
        assert str(exc), "a DecodeError must say why"


@FUZZ
@given(st.binary(max_size=512))
def test_arbitrary_bytes(payload: bytes) -> None:
    only_decode_errors(codec.decode_envelope, payload)
    only_decode_errors(codec.decode_ack, payload)
    for kind in CONTROL_KINDS:
        only_decode_errors(lambda p, k=kind: schemas.decode(k, p), payload)


@FUZZ
@given(msgpack_values)
def test_arbitrary_msgpack_behind_a_valid_prefix(value: Any) -> None:
    head = msgpack.packb(value, use_bin_type=True)
    payload = struct.pack("<2sBI", codec.MAGIC, codec.WIRE_VERSION, len(head)) + head
    only_decode_errors(codec.decode_envelope, payload)
    only_decode_errors(codec.decode_ack, head)


@FUZZ
@given(st.dictionaries(st.integers(0, 17), msgpack_values, min_size=1, max_size=3))
def test_valid_header_with_arbitrary_fields(replaced: dict[int, Any]) -> None:
    head = msgpack.unpackb(SAMPLE[7 : 7 + struct.unpack_from("<I", SAMPLE, 3)[0]])
    specs = head[14]
    for index, value in replaced.items():
        if index < len(head):
            head[index] = value
        else:  # inside the first tensor spec: name, dtype code or shape
            specs[0][index - len(head)] = value
    packed = msgpack.packb(head, use_bin_type=True)
    payload = struct.pack("<2sBI", codec.MAGIC, codec.WIRE_VERSION, len(packed)) + packed
    only_decode_errors(codec.decode_envelope, payload + b"\0" * 128)


@FUZZ
@given(st.data())
def test_mutated_valid_payloads(data: st.DataObject) -> None:
    for original in (SAMPLE, SAMPLE_ACK):
        payload = bytearray(original)
        for _ in range(data.draw(st.integers(1, 4))):
            pos = data.draw(st.integers(0, len(payload) - 1))
            payload[pos] = data.draw(st.integers(0, 255))
        cut = data.draw(st.integers(0, len(payload)))
        tail = data.draw(st.binary(max_size=16))
        for mutated in (bytes(payload), bytes(payload[:cut]), bytes(payload) + tail):
            only_decode_errors(codec.decode_envelope, mutated)
            only_decode_errors(codec.decode_ack, mutated)


@FUZZ
@given(json_values)
def test_arbitrary_json_for_control_messages(value: Any) -> None:
    import json

    payload = json.dumps(value).encode()
    for kind in CONTROL_KINDS:
        only_decode_errors(lambda p, k=kind: schemas.decode(k, p), payload)


@pytest.mark.parametrize("depth", [1000, 100_000])
def test_deeply_nested_input(depth: int) -> None:
    nested = b"\x91" * depth + b"\xc0"  # msgpack fixarray of one, nested
    only_decode_errors(codec.decode_ack, nested)
    head = nested
    payload = struct.pack("<2sBI", codec.MAGIC, codec.WIRE_VERSION, len(head)) + head
    only_decode_errors(codec.decode_envelope, payload)
    for kind in CONTROL_KINDS:
        only_decode_errors(lambda p, k=kind: schemas.decode(k, p), b"[" * depth + b"]" * depth)
