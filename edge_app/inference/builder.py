"""Write TFLite models from layer calls and numpy weights (no TensorFlow needed).

Layouts are TFLite's: activations NHWC / NDHWC, CONV_2D weights [out, kh, kw, in] (OHWI),
DEPTHWISE_CONV_2D weights [1, kh, kw, channels * multiplier], CONV_3D filters
[kd, kh, kw, in, out], FULLY_CONNECTED weights [out, in]. A missing bias is written as zeros
(simpler for every runtime and for the quantizer). 3-D max pooling is built from builtins
(MAX_POOL_2D over H,W, then MAX_POOL_2D over depth on a reshaped tensor) because the MaxPool3D
custom op is registered in neither Python runtime.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tflite
from numpy.typing import NDArray

from edge_app.errors import ModelError
from edge_app.inference.dtypes import ACTIVATIONS, PADDINGS
from edge_app.inference.graph import Model, Operator, OperatorCode, Options, Subgraph, Tensor
from edge_app.inference.graph_io import write_model

OP = tflite.BuiltinOperator


@dataclass(frozen=True)
class TensorRef:
    """A tensor of the graph being built."""

    index: int
    shape: tuple[int, ...]
    dtype: np.dtype[Any]


def _out_size(size: int, window: int, stride: int, padding: str) -> int:
    if padding not in PADDINGS:
        raise ModelError(f"padding must be 'same' or 'valid', not {padding!r}")
    if padding == "same":
        return math.ceil(size / stride)
    if size < window:
        raise ModelError(f"window {window} larger than input size {size} with 'valid' padding")
    return (size - window) // stride + 1


def _activation(name: str | None) -> int:
    if name not in ACTIVATIONS:
        raise ModelError(f"unknown activation {name!r}; use one of {list(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class GraphBuilder:
    """Collects tensors and operators; ``build()`` returns a `graph.Model`."""

    def __init__(self, description: str = "edge-app GraphBuilder") -> None:
        self.description = description
        self._tensors: list[Tensor] = []
        self._operators: list[Operator] = []
        self._codes: list[OperatorCode] = []
        self._buffers: list[bytes] = [b""]
        self._inputs: list[int] = []
        self._outputs: list[int] = []
        self._counters: dict[str, int] = {}
        self._names: set[str] = set()

    # ----------------------------------------------------------------------------- plumbing
    def _layer_name(self, kind: str, name: str | None) -> str:
        if name is None:
            self._counters[kind] = self._counters.get(kind, 0) + 1
            name = f"{kind}_{self._counters[kind]}"
        if name in self._names:
            raise ModelError(f"duplicate layer/tensor name {name!r}")
        return name

    def _tensor(self, name: str, shape: Sequence[int], dtype: Any, data: bytes = b"") -> TensorRef:
        if name in self._names:
            raise ModelError(f"duplicate tensor name {name!r}")
        self._names.add(name)
        buffer = 0
        if data:
            self._buffers.append(data)
            buffer = len(self._buffers) - 1
        dt = np.dtype(dtype)
        self._tensors.append(Tensor(name, tuple(int(d) for d in shape), dt, buffer))
        return TensorRef(len(self._tensors) - 1, tuple(int(d) for d in shape), dt)

    def const(self, name: str, array: NDArray[Any]) -> TensorRef:
        """A constant tensor holding ``array`` (little-endian, C order)."""
        arr = np.ascontiguousarray(array)
        return self._tensor(
            name, arr.shape, arr.dtype, arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        )

    def _op(
        self,
        code: int,
        inputs: Sequence[TensorRef | None],
        out_name: str,
        out_shape: Sequence[int],
        *,
        options: Options | None = None,
        dtype: Any = np.float32,
    ) -> TensorRef:
        out = self._tensor(out_name, out_shape, dtype)
        key = OperatorCode(code, 1)
        if key not in self._codes:
            self._codes.append(key)
        ins = [-1 if t is None else t.index for t in inputs]
        self._operators.append(Operator(self._codes.index(key), ins, [out.index], options))
        return out

    def _float_const(self, name: str, array: Any, shape: tuple[int, ...]) -> TensorRef:
        arr = np.asarray(array, dtype=np.float32)
        if arr.shape != shape:
            raise ModelError(f"{name}: expected shape {shape}, got {arr.shape}")
        return self.const(name, arr)

    def _bias(self, name: str, bias: NDArray[Any] | None, n: int) -> TensorRef:
        return self._float_const(name, np.zeros(n) if bias is None else bias, (n,))

    @staticmethod
    def _rank(x: TensorRef, rank: int, what: str) -> None:
        if len(x.shape) != rank:
            raise ModelError(f"{what} needs a rank-{rank} input, got shape {x.shape}")

    # ------------------------------------------------------------------------------- layers
    def input(self, name: str, shape: Sequence[int], dtype: Any = np.float32) -> TensorRef:
        ref = self._tensor(self._layer_name("input", name), shape, dtype)
        self._inputs.append(ref.index)
        return ref

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
        n, h, w, c = x.shape
        out_c, kh, kw, in_c = np.shape(weights)
        if in_c != c:
            raise ModelError(f"conv2d weights expect {in_c} input channels, input has {c}")
        name = self._layer_name("conv2d", name)
        wt = self._float_const(f"{name}/weights", weights, (out_c, kh, kw, c))
        bt = self._bias(f"{name}/bias", bias, out_c)
        shape = (
            n,
            _out_size(h, kh, stride[0], padding),
            _out_size(w, kw, stride[1], padding),
            out_c,
        )
        opts = Options(
            "Conv2DOptions",
            {
                "padding": PADDINGS[padding],
                "stride_h": stride[0],
                "stride_w": stride[1],
                "fused_activation_function": _activation(activation),
                "dilation_h_factor": 1,
                "dilation_w_factor": 1,
            },
        )
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
        n, h, w, c = x.shape
        one, kh, kw, out_c = np.shape(weights)
        if one != 1 or out_c % c:
            raise ModelError(f"depthwise weights must be [1,kh,kw,{c}*m], got {np.shape(weights)}")
        name = self._layer_name("depthwise_conv2d", name)
        wt = self._float_const(f"{name}/weights", weights, (1, kh, kw, out_c))
        bt = self._bias(f"{name}/bias", bias, out_c)
        shape = (
            n,
            _out_size(h, kh, stride[0], padding),
            _out_size(w, kw, stride[1], padding),
            out_c,
        )
        opts = Options(
            "DepthwiseConv2DOptions",
            {
                "padding": PADDINGS[padding],
                "stride_h": stride[0],
                "stride_w": stride[1],
                "depth_multiplier": out_c // c,
                "fused_activation_function": _activation(activation),
                "dilation_h_factor": 1,
                "dilation_w_factor": 1,
            },
        )
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
        n, h, w, c = x.shape
        shape = (
            n,
            _out_size(h, pool[0], stride[0], padding),
            _out_size(w, pool[1], stride[1], padding),
            c,
        )
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

    def output(self, x: TensorRef, name: str | None = None) -> TensorRef:
        """Marks ``x`` as a graph output, renaming its tensor to ``name`` if given."""
        if name is not None and name != self._tensors[x.index].name:
            if name in self._names:
                raise ModelError(f"duplicate tensor name {name!r}")
            self._names.discard(self._tensors[x.index].name)
            self._names.add(name)
            self._tensors[x.index].name = name
        if x.index not in self._outputs:
            self._outputs.append(x.index)
        return x

    # -------------------------------------------------------------------------------- result
    def build(self) -> Model:
        if not self._inputs or not self._outputs:
            raise ModelError("a model needs at least one input and one output")
        subgraph = Subgraph(
            tensors=[Tensor(t.name, t.shape, t.dtype, t.buffer) for t in self._tensors],
            operators=[
                Operator(op.opcode_index, list(op.inputs), list(op.outputs), op.options)
                for op in self._operators
            ],
            inputs=list(self._inputs),
            outputs=list(self._outputs),
            name="main",
        )
        codes = [OperatorCode(c.builtin_code, c.version, c.custom_code) for c in self._codes]
        return Model(codes, [subgraph], list(self._buffers), description=self.description)

    def to_bytes(self) -> bytes:
        return write_model(self.build())
