"""THE correctness check of edge-app: is a candidate output the reference output?

Float outputs agree when max|ref - cand| <= rel_tol * max(1e-12, max|ref|) (DESIGN invariant 1:
relative to the output's scale); integer outputs (quantized models) must be identical.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

DEFAULT_REL_TOL = 1e-5


@dataclass(frozen=True)
class Comparison:
    max_abs_diff: float  # inf when shapes or dtypes differ
    scale: float  # max|reference| (floored at 1e-12) for floats, 0 for integers
    tolerance: float  # the allowed max_abs_diff
    ok: bool

    def __str__(self) -> str:
        verdict = "ok" if self.ok else "MISMATCH"
        return (
            f"{verdict}: max abs diff {self.max_abs_diff:.3g} "
            f"(tolerance {self.tolerance:.3g}, output scale {self.scale:.3g})"
        )


def compare_outputs(
    reference: NDArray[Any], candidate: NDArray[Any], rel_tol: float = DEFAULT_REL_TOL
) -> Comparison:
    ref = np.asarray(reference)
    cand = np.asarray(candidate)
    is_float = ref.dtype.kind in "fc"
    if ref.shape != cand.shape or ref.dtype != cand.dtype:
        return Comparison(float("inf"), 0.0, 0.0, False)
    if ref.size == 0:
        return Comparison(0.0, 0.0, 0.0, True)
    if not is_float:
        diff = (
            np.abs(ref.astype(np.int64) - cand.astype(np.int64))
            if ref.dtype.kind in "iub"
            else None
        )
        max_diff = float(diff.max()) if diff is not None else float(not np.array_equal(ref, cand))
        return Comparison(max_diff, 0.0, 0.0, max_diff == 0.0)
    with np.errstate(invalid="ignore", over="ignore"):
        scale = max(1e-12, float(np.max(np.abs(ref))))
        max_diff = float(np.max(np.abs(ref.astype(np.float64) - cand.astype(np.float64))))
    tolerance = rel_tol * scale
    ok = bool(np.isfinite(max_diff) and max_diff <= tolerance) or bool(
        np.array_equal(ref, cand, equal_nan=True)
    )
    return Comparison(max_diff, scale, tolerance, ok)


def assert_same_output(
    reference: NDArray[Any], candidate: NDArray[Any], rel_tol: float = DEFAULT_REL_TOL
) -> Comparison:
    """Raises AssertionError with the numbers when the outputs differ; returns the Comparison."""
    result = compare_outputs(reference, candidate, rel_tol)
    if not result.ok:
        ref, cand = np.asarray(reference), np.asarray(candidate)
        raise AssertionError(
            f"outputs differ: {result}; reference {ref.dtype} {ref.shape}, "
            f"candidate {cand.dtype} {cand.shape}"
        )
    return result
