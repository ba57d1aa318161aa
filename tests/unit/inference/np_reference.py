"""Plain numpy reference implementations of the TFLite ops our builder writes (NHWC / NDHWC)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

Array = np.ndarray[Any, Any]


def _pads(size: int, k: int, s: int, padding: str) -> tuple[int, int, int]:
    """(out size, pad before, pad after) with TensorFlow's SAME/VALID rules."""
    if padding == "valid":
        return (size - k) // s + 1, 0, 0
    out = math.ceil(size / s)
    total = max((out - 1) * s + k - size, 0)
    return out, total // 2, total - total // 2


def windows(
    x: Array, kernel: tuple[int, ...], stride: tuple[int, ...], padding: str, fill: float
) -> Array:
    """(N, *out_spatial, C, *kernel) windows of x (N, *spatial, C); padding filled with ``fill``."""
    spatial = x.shape[1:-1]
    pads = [_pads(n, k, s, padding) for n, k, s in zip(spatial, kernel, stride, strict=True)]
    padded = np.pad(
        x.astype(np.float64), [(0, 0), *[(b, a) for _, b, a in pads], (0, 0)], constant_values=fill
    )
    view = sliding_window_view(padded, kernel, axis=tuple(range(1, 1 + len(kernel))))
    index = (
        slice(None),
        *[slice(None, o * s, s) for (o, _, _), s in zip(pads, stride, strict=True)],
    )
    return view[index]


def conv2d(x: Array, w: Array, b: Array, stride: tuple[int, int], padding: str) -> Array:
    """w is [out, kh, kw, in] (OHWI): an im2col product."""
    win = windows(x, w.shape[1:3], stride, padding, 0.0)  # N,OH,OW,C,kh,kw
    cols = win.transpose(0, 1, 2, 4, 5, 3)  # N,OH,OW,kh,kw,C
    return np.tensordot(cols, w.astype(np.float64), axes=([3, 4, 5], [1, 2, 3])) + b


def depthwise_conv2d(x: Array, w: Array, b: Array, stride: tuple[int, int], padding: str) -> Array:
    c = x.shape[-1]
    mult = w.shape[-1] // c
    win = windows(x, w.shape[1:3], stride, padding, 0.0)  # N,OH,OW,C,kh,kw
    kernel = w[0].reshape(w.shape[1], w.shape[2], c, mult)  # kh,kw,C,M
    out = np.einsum("nhwcij,ijcm->nhwcm", win, kernel)
    return out.reshape(*out.shape[:3], c * mult) + b


def conv3d(x: Array, w: Array, b: Array, stride: tuple[int, int, int], padding: str) -> Array:
    """w is [kd, kh, kw, in, out]."""
    win = windows(x, w.shape[:3], stride, padding, 0.0)  # N,OD,OH,OW,C,kd,kh,kw
    return np.einsum("ndhwcijk,ijkco->ndhwo", win, w.astype(np.float64)) + b


def max_pool(x: Array, pool: tuple[int, ...], stride: tuple[int, ...], padding: str) -> Array:
    win = windows(x, pool, stride, padding, -np.inf)
    return win.max(axis=tuple(range(-len(pool), 0)))


def avg_pool(x: Array, pool: tuple[int, ...], stride: tuple[int, ...], padding: str) -> Array:
    """Averages over the window's real (unpadded) elements, as TFLite does."""
    win = windows(x, pool, stride, padding, np.nan)
    return np.nanmean(win, axis=tuple(range(-len(pool), 0)))


def fully_connected(x: Array, w: Array, b: Array) -> Array:
    return x.reshape(-1, w.shape[1]).astype(np.float64) @ w.astype(np.float64).T + b


def relu(x: Array) -> Array:
    return np.maximum(x, 0.0)


def relu6(x: Array) -> Array:
    return np.clip(x, 0.0, 6.0)


def softmax(x: Array) -> Array:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)
