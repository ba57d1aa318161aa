"""Write TFLite models from layer calls and numpy weights (no TensorFlow needed).

Layouts are TFLite's: activations NHWC / NDHWC, CONV_2D weights [out, kh, kw, in] (OHWI),
DEPTHWISE_CONV_2D weights [1, kh, kw, channels * multiplier], CONV_3D filters
[kd, kh, kw, in, out], FULLY_CONNECTED weights [out, in]. A missing bias is written as zeros
(simpler for every runtime and for the quantizer). 3-D max pooling is built from builtins
(MAX_POOL_2D over H,W, then MAX_POOL_2D over depth on a reshaped tensor) because the MaxPool3D
custom op is registered in neither Python runtime.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_app.errors import ModelError
from edge_app.inference.builder_core import OP, GraphCore, TensorRef
from edge_app.inference.builder_core import activation_code as _activation
from edge_app.inference.builder_core import out_size as _out_size
from edge_app.inference.dtypes import PADDINGS
from edge_app.inference.graph import Options

__all__ = ["GraphBuilder", "TensorRef"]


class GraphBuilder(GraphCore):
    """Layer calls that add TFLite operators; ``build()`` / ``to_bytes()`` give the model."""

    def conv2d(
        self,
        x: TensorRef,
        weights: NDArray[Any],
        bias: NDArray[Any] | None = None,
        *,
        stride: tuple[int, int] = (1, 1),
        padding: str = "same",
        activation: str | None = None,
        name: str | None = None,
    ) -> TensorRef:
        self._rank(x, 4, "conv2d")
        c = x.shape[3]
        out_c, kh, kw, in_c = np.shape(weights)
        if in_c != c:
            raise ModelError(f"conv2d weights expect {in_c} input channels, input has {c}")
        name = self._layer_name("conv2d", name)
        wt = self._float_const(f"{name}/weights", weights, (out_c, kh, kw, c))
        bt = self._bias(f"{name}/bias", bias, out_c)
        shape = _window2d(x, (kh, kw), stride, padding, out_c)
        opts = _conv2d_options("Conv2DOptions", stride, padding, activation)
        return self._op(OP.CONV_2D, [x, wt, bt], name, shape, options=opts)

    def depthwise_conv2d(
        self,
        x: TensorRef,
        weights: NDArray[Any],
        bias: NDArray[Any] | None = None,
        *,
        stride: tuple[int, int] = (1, 1),
        padding: str = "same",
        activation: str | None = None,
        name: str | None = None,
    ) -> TensorRef:
        self._rank(x, 4, "depthwise_conv2d")
        c = x.shape[3]
        one, kh, kw, out_c = np.shape(weights)
        if one != 1 or out_c % c:
            raise ModelError(f"depthwise weights must be [1,kh,kw,{c}*m], got {np.shape(weights)}")
        name = self._layer_name("depthwise_conv2d", name)
        wt = self._float_const(f"{name}/weights", weights, (1, kh, kw, out_c))
        bt = self._bias(f"{name}/bias", bias, out_c)
        shape = _window2d(x, (kh, kw), stride, padding, out_c)
        multiplier = {"depth_multiplier": out_c // c}
        opts = _conv2d_options("DepthwiseConv2DOptions", stride, padding, activation, multiplier)
        return self._op(OP.DEPTHWISE_CONV_2D, [x, wt, bt], name, shape, options=opts)

    def conv3d(
        self,
        x: TensorRef,
        weights: NDArray[Any],
        bias: NDArray[Any] | None = None,
        *,
        stride: tuple[int, int, int] = (1, 1, 1),
        padding: str = "same",
        activation: str | None = None,
        name: str | None = None,
    ) -> TensorRef:
        self._rank(x, 5, "conv3d")
        n, d, h, w, c = x.shape
        kd, kh, kw, in_c, out_c = np.shape(weights)
        if in_c != c:
            raise ModelError(f"conv3d filter expects {in_c} input channels, input has {c}")
        name = self._layer_name("conv3d", name)
        wt = self._float_const(f"{name}/weights", weights, (kd, kh, kw, c, out_c))
        bt = self._bias(f"{name}/bias", bias, out_c)
        sizes = [
            _out_size(s, k, st, padding)
            for s, k, st in zip((d, h, w), (kd, kh, kw), stride, strict=True)
        ]
        opts = Options(
            "Conv3DOptions",
            {
                "padding": PADDINGS[padding],
                "stride_d": stride[0],
                "stride_h": stride[1],
                "stride_w": stride[2],
                "fused_activation_function": _activation(activation),
                "dilation_d_factor": 1,
                "dilation_h_factor": 1,
                "dilation_w_factor": 1,
            },
        )
        return self._op(OP.CONV_3D, [x, wt, bt], name, (n, *sizes, out_c), options=opts)

    def _pool2d(
        self,
        code: int,
        x: TensorRef,
        *,
        pool: tuple[int, int],
        stride: tuple[int, int] | None,
        padding: str,
        name: str,
    ) -> TensorRef:
        self._rank(x, 4, "2-D pooling")
        stride = pool if stride is None else stride
        shape = _window2d(x, pool, stride, padding, x.shape[3])
        opts = Options(
            "Pool2DOptions",
            {
                "padding": PADDINGS[padding],
                "stride_h": stride[0],
                "stride_w": stride[1],
                "filter_height": pool[0],
                "filter_width": pool[1],
                "fused_activation_function": 0,
            },
        )
        return self._op(code, [x], name, shape, options=opts, dtype=x.dtype)

    def max_pool2d(
        self,
        x: TensorRef,
        pool: tuple[int, int] = (2, 2),
        stride: tuple[int, int] | None = None,
        padding: str = "valid",
        name: str | None = None,
    ) -> TensorRef:
        name = self._layer_name("max_pool2d", name)
        return self._pool2d(OP.MAX_POOL_2D, x, pool=pool, stride=stride, padding=padding, name=name)

    def avg_pool2d(
        self,
        x: TensorRef,
        pool: tuple[int, int] = (2, 2),
        stride: tuple[int, int] | None = None,
        padding: str = "valid",
        name: str | None = None,
    ) -> TensorRef:
        name = self._layer_name("avg_pool2d", name)
        return self._pool2d(
            OP.AVERAGE_POOL_2D, x, pool=pool, stride=stride, padding=padding, name=name
        )

    def max_pool3d(
        self,
        x: TensorRef,
        pool: tuple[int, int, int] = (2, 2, 2),
        stride: tuple[int, int, int] | None = None,
        padding: str = "valid",
        name: str | None = None,
    ) -> TensorRef:
        """Max pooling over D,H,W: MAX_POOL_2D over H,W, then over D (max is separable)."""
        self._rank(x, 5, "max_pool3d")
        stride = pool if stride is None else stride
        name = self._layer_name("max_pool3d", name)
        n, d, h, w, c = x.shape
        y = self.reshape(x, (n * d, h, w, c), name=f"{name}/frames")
        y = self._pool2d(
            OP.MAX_POOL_2D, y, pool=pool[1:], stride=stride[1:], padding=padding, name=f"{name}/hw"
        )
        _, h2, w2, _ = y.shape
        y = self.reshape(y, (n, d, h2 * w2, c), name=f"{name}/depth_major")
        y = self._pool2d(
            OP.MAX_POOL_2D,
            y,
            pool=(pool[0], 1),
            stride=(stride[0], 1),
            padding=padding,
            name=f"{name}/d",
        )
        return self.reshape(y, (n, y.shape[1], h2, w2, c), name=name)

    def fully_connected(
        self,
        x: TensorRef,
        weights: NDArray[Any],
        bias: NDArray[Any] | None = None,
        *,
        activation: str | None = None,
        name: str | None = None,
    ) -> TensorRef:
        out_n, in_n = np.shape(weights)
        if not x.shape or x.shape[-1] != in_n:
            raise ModelError(f"fully_connected weights expect {in_n} inputs, input is {x.shape}")
        name = self._layer_name("fully_connected", name)
        wt = self._float_const(f"{name}/weights", weights, (out_n, in_n))
        bt = self._bias(f"{name}/bias", bias, out_n)
        rows = int(np.prod(x.shape)) // in_n
        opts = Options(
            "FullyConnectedOptions",
            {"fused_activation_function": _activation(activation), "keep_num_dims": False},
        )
        return self._op(OP.FULLY_CONNECTED, [x, wt, bt], name, (rows, out_n), options=opts)

    def reshape(self, x: TensorRef, shape: Sequence[int], name: str | None = None) -> TensorRef:
        size = int(np.prod(x.shape))
        dims = [int(d) for d in shape]
        if dims.count(-1) > 1:
            raise ModelError(f"reshape to {tuple(shape)}: at most one -1")
        if -1 in dims:
            known = int(np.prod([d for d in dims if d != -1]))
            dims[dims.index(-1)] = size // known if known else 0
        if int(np.prod(dims)) != size:
            raise ModelError(f"cannot reshape {x.shape} to {tuple(shape)}")
        name = self._layer_name("reshape", name)
        target = self.const(f"{name}/shape", np.array(dims, dtype=np.int32))
        opts = Options("ReshapeOptions", {"new_shape": dims})
        return self._op(OP.RESHAPE, [x, target], name, dims, options=opts, dtype=x.dtype)

    def flatten(self, x: TensorRef, name: str | None = None) -> TensorRef:
        """Reshape to (batch, -1)."""
        return self.reshape(x, (x.shape[0], -1), name=name or self._layer_name("flatten", None))

    def add(
        self, a: TensorRef, b: TensorRef, activation: str | None = None, name: str | None = None
    ) -> TensorRef:
        try:
            shape = np.broadcast_shapes(a.shape, b.shape)
        except ValueError:
            raise ModelError(f"add: shapes {a.shape} and {b.shape} do not broadcast") from None
        if a.dtype != b.dtype:
            raise ModelError(f"add: dtypes {a.dtype} and {b.dtype} differ")
        opts = Options("AddOptions", {"fused_activation_function": _activation(activation)})
        return self._op(
            OP.ADD, [a, b], self._layer_name("add", name), shape, options=opts, dtype=a.dtype
        )

    def concat(self, xs: Sequence[TensorRef], axis: int = -1, name: str | None = None) -> TensorRef:
        if not xs:
            raise ModelError("concat of nothing")
        rank = len(xs[0].shape)
        ax = axis % rank
        for x in xs:
            if (
                len(x.shape) != rank
                or x.shape[:ax] + x.shape[ax + 1 :] != xs[0].shape[:ax] + xs[0].shape[ax + 1 :]
            ):
                raise ModelError(f"concat: shapes {[x.shape for x in xs]} differ off axis {axis}")
        if len({x.dtype for x in xs}) != 1:
            raise ModelError(f"concat: dtypes {[str(x.dtype) for x in xs]} differ")
        shape = list(xs[0].shape)
        shape[ax] = sum(x.shape[ax] for x in xs)
        opts = Options("ConcatenationOptions", {"axis": ax, "fused_activation_function": 0})
        return self._op(
            OP.CONCATENATION,
            list(xs),
            self._layer_name("concat", name),
            shape,
            options=opts,
            dtype=xs[0].dtype,
        )

    def relu(self, x: TensorRef, name: str | None = None) -> TensorRef:
        return self._op(
            OP.RELU, [x], self._layer_name("relu", name), x.shape, options=None, dtype=x.dtype
        )

    def softmax(self, x: TensorRef, name: str | None = None) -> TensorRef:
        opts = Options("SoftmaxOptions", {"beta": 1.0})
        return self._op(
            OP.SOFTMAX, [x], self._layer_name("softmax", name), x.shape, options=opts, dtype=x.dtype
        )

    def mean(
        self, x: TensorRef, axes: Sequence[int], keepdims: bool = False, name: str | None = None
    ) -> TensorRef:
        rank = len(x.shape)
        norm = sorted({a % rank for a in axes})
        name = self._layer_name("mean", name)
        axes_t = self.const(f"{name}/axes", np.array(norm, dtype=np.int32))
        if keepdims:
            shape = [1 if i in norm else d for i, d in enumerate(x.shape)]
        else:
            shape = [d for i, d in enumerate(x.shape) if i not in norm]
        opts = Options("ReducerOptions", {"keep_dims": keepdims})
        return self._op(OP.MEAN, [x, axes_t], name, shape, options=opts, dtype=x.dtype)


def _window2d(
    x: TensorRef, window: tuple[int, int], stride: tuple[int, int], padding: str, channels: int
) -> tuple[int, ...]:
    """The NHWC output shape of a 2-D window (convolution or pooling) sliding over ``x``."""
    n, h, w, _ = x.shape
    return (
        n,
        _out_size(h, window[0], stride[0], padding),
        _out_size(w, window[1], stride[1], padding),
        channels,
    )


def _conv2d_options(
    kind: str,
    stride: tuple[int, int],
    padding: str,
    activation: str | None,
    extra: dict[str, int] | None = None,
) -> Options:
    """Options of a 2-D convolution (``extra`` goes after the strides, as TFLite orders it)."""
    return Options(
        kind,
        {
            "padding": PADDINGS[padding],
            "stride_h": stride[0],
            "stride_w": stride[1],
            **(extra or {}),
            "fused_activation_function": _activation(activation),
            "dilation_h_factor": 1,
            "dilation_w_factor": 1,
        },
    )
