"""Strict checks of the fields a msgpack data message decodes to (see ``codec``).

Every check returns the value or raises :class:`~edge_app.errors.DecodeError` saying which field
failed and why. ``bool`` is not an integer here, floats must be finite, ids follow
``topics.ID_PATTERN`` (they become topic levels), and every list has a bound.
"""

from __future__ import annotations

import itertools
import math
import re
from typing import Any, Final

from edge_app.errors import DecodeError
from edge_app.messages.topics import ID_PATTERN

MAX_STR: Final = 256
MAX_NDIM: Final = 8
MAX_DIM: Final = 2**40
MAX_INT: Final = 2**62
MAX_US: Final = 2**53
MAX_STAGE: Final = 1023
MAX_ATTEMPT: Final = 1 << 20
MAX_TRACE: Final = 256
MAX_LAYOUT: Final = 1025

ID_RE: Final = re.compile(ID_PATTERN)

TraceEntry = tuple[int, int | None, str, float, float, float]
"""(stage, shard, device, queue_wait_s, compute_s, transfer_s)"""


def int_field(value: Any, what: str, *, minimum: int = 0, maximum: int = MAX_INT) -> int:
    if type(value) is not int or not minimum <= value <= maximum:
        raise DecodeError(f"{what}: expected an integer in [{minimum}, {maximum}], got {value!r}")
    return value


def opt_int(value: Any, what: str) -> int | None:
    return None if value is None else int_field(value, what)


def float_field(value: Any, what: str) -> float:
    if type(value) not in (int, float) or not math.isfinite(value):
        raise DecodeError(f"{what}: expected a finite number, got {value!r}")
    return float(value)


def str_field(value: Any, what: str) -> str:
    if type(value) is not str or not 0 < len(value) <= MAX_STR:
        raise DecodeError(f"{what}: expected a string of 1-{MAX_STR} characters")
    return value


def ident(value: Any, what: str) -> str:
    if type(value) is not str or not ID_RE.match(value):
        raise DecodeError(f"{what}: invalid id {value!r}")
    return value


def list_field(value: Any, what: str, max_len: int) -> list[Any]:
    if type(value) is not list or len(value) > max_len:
        raise DecodeError(f"{what}: expected a list of at most {max_len} items")
    return value


def bounds(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    items = list_field(value, "bounds", 2)
    if len(items) != 2:
        raise DecodeError("bounds: expected [lo, hi]")
    lo, hi = int_field(items[0], "bounds.lo"), int_field(items[1], "bounds.hi")
    if lo > hi:
        raise DecodeError(f"bounds: lo {lo} > hi {hi}")
    return lo, hi


def layout(value: Any) -> tuple[int, ...] | None:
    if value is None:
        return None
    items = [int_field(v, "layout") for v in list_field(value, "layout", MAX_LAYOUT)]
    if len(items) < 2 or any(a >= b for a, b in itertools.pairwise(items)):
        raise DecodeError("layout: expected at least 2 strictly increasing boundaries")
    return tuple(items)


def trace_entry(value: Any, previous: str | None) -> TraceEntry:
    items = list_field(value, "trace entry", 6)
    if len(items) != 6:
        raise DecodeError("trace entry: expected 6 fields")
    stage, shard, device, *times = items
    q, c, t = (int_field(v, "trace timing", maximum=MAX_US) / 1e6 for v in times)
    where = "trace"
    if device is None and previous is not None:
        device = previous  # elided: same device as the entry before
    return (int_field(stage, where), opt_int(shard, where), ident(device, where), q, c, t)


def fast_entry(item: Any, previous: str | None) -> TraceEntry | None:
    """A well-formed trace entry checked in one expression (the common case), else None."""
    if type(item) is not list or len(item) != 6:
        return None
    stage, shard, device, q, c, t = item
    if device is None:
        device = previous
    if (
        type(stage) is int
        and 0 <= stage <= MAX_INT
        and (shard is None or (type(shard) is int and 0 <= shard <= MAX_INT))
        and type(device) is str
        and ID_RE.match(device) is not None
        and type(q) is int
        and type(c) is int
        and type(t) is int
        and 0 <= q <= MAX_US
        and 0 <= c <= MAX_US
        and 0 <= t <= MAX_US
    ):
        return (stage, shard, device, q / 1e6, c / 1e6, t / 1e6)
    return None


def trace(value: Any) -> tuple[TraceEntry, ...]:
    entries: list[TraceEntry] = []
    previous: str | None = None
    for item in list_field(value, "trace", MAX_TRACE):
        entry = fast_entry(item, previous) or trace_entry(item, previous)  # slow: says why
        entries.append(entry)
        previous = entry[2]
    return tuple(entries)
