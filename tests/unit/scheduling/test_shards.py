"""Row splits: proportional to speed, capped by memory, every row exactly once."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_app.scheduling.shards import split_rows


@pytest.mark.parametrize(
    ("rows", "weights", "caps", "expect"),
    [
        (4096, [1, 1], [4096, 4096], [0, 2048, 4096]),
        (4096, [1, 3], [4096, 4096], [0, 1024, 4096]),
        (10, [1, 1, 1], [10, 10, 10], [0, 4, 7, 10]),
        (4096, [1, 3], [4096, 1000], [0, 3096, 4096]),  # the fast one is short of memory
        (4096, [1, 1], [2000, 2000], None),  # not enough memory in total
        (2, [1, 1, 1], [2, 2, 2], None),  # more shards than rows
        (8, [1, 1], [8, 0], None),  # a device that cannot hold one row
    ],
)
def test_split_rows(
    rows: int, weights: list[float], caps: list[int], expect: list[int] | None
) -> None:
    assert split_rows(rows, weights, caps) == expect


@given(
    rows=st.integers(1, 5000),
    weights=st.lists(st.floats(0.01, 100), min_size=1, max_size=12),
    slack=st.floats(1.0, 3.0),
)
def test_split_rows_properties(rows: int, weights: list[float], slack: float) -> None:
    k = len(weights)
    caps = [max(1, int(rows * slack * w / sum(weights)) + 1) for w in weights]
    bounds = split_rows(rows, weights, caps)
    if k > rows or sum(caps) < rows:
        assert bounds is None
        return
    assert bounds is not None
    sizes = [b - a for a, b in itertools.pairwise(bounds)]
    assert bounds[0] == 0 and bounds[-1] == rows
    assert all(1 <= n <= c for n, c in zip(sizes, caps, strict=True))
