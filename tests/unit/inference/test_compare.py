"""compare_outputs: the relative float rule and the exact integer rule."""

from __future__ import annotations

import numpy as np
import pytest

from edge_app.inference.compare import Comparison, assert_same_output, compare_outputs


def test_float_within_relative_tolerance() -> None:
    ref = np.array([[100.0, -200.0, 3.0]], dtype=np.float32)
    close = ref + np.float32(0.0019)  # tolerance is 1e-5 * 200 = 0.002
    result = compare_outputs(ref, close)
    assert result.ok
    assert result.scale == pytest.approx(200.0)
    assert result.tolerance == pytest.approx(0.002)
    assert result.max_abs_diff == pytest.approx(0.0019, rel=1e-2)


def test_float_over_tolerance() -> None:
    ref = np.array([1.0, -2.0], dtype=np.float32)
    result = compare_outputs(ref, ref + np.float32(3e-5))
    assert not result.ok
    assert compare_outputs(ref, ref + np.float32(3e-5), rel_tol=1e-4).ok


def test_all_zero_reference_uses_floor() -> None:
    zeros = np.zeros(4, dtype=np.float32)
    assert compare_outputs(zeros, zeros).ok
    assert not compare_outputs(zeros, zeros + np.float32(1e-9)).ok


def test_shape_or_dtype_mismatch_is_not_ok() -> None:
    ref = np.ones((2, 3), dtype=np.float32)
    assert not compare_outputs(ref, ref.reshape(3, 2)).ok
    assert not compare_outputs(ref, ref.astype(np.float64)).ok
    assert compare_outputs(ref, ref.reshape(3, 2)).max_abs_diff == float("inf")


def test_integers_must_be_identical() -> None:
    ref = np.array([-128, 0, 127], dtype=np.int8)
    assert compare_outputs(ref, ref.copy()) == Comparison(0.0, 0.0, 0.0, True)
    off = ref.copy()
    off[1] = 1
    result = compare_outputs(ref, off)
    assert not result.ok and result.max_abs_diff == 1.0
    assert compare_outputs(ref, np.array([127, 0, -128], dtype=np.int8)).max_abs_diff == 255.0


def test_nan_handling() -> None:
    ref = np.array([1.0, np.nan], dtype=np.float32)
    assert compare_outputs(ref, ref.copy()).ok
    assert not compare_outputs(ref, np.array([1.0, 2.0], dtype=np.float32)).ok


def test_assert_same_output_message_has_numbers() -> None:
    ref = np.array([1.0, 2.0], dtype=np.float32)
    assert assert_same_output(ref, ref).ok
    with pytest.raises(AssertionError, match=r"max abs diff 0\.5.*tolerance 2e-05"):
        assert_same_output(ref, ref + np.float32(0.5))
