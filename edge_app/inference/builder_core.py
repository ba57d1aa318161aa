"""The plumbing of `builder.GraphBuilder`: tensors, constants, operator codes, build()."""

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


def out_size(size: int, window: int, stride: int, padding: str) -> int:
    if padding not in PADDINGS:
        raise ModelError(f"padding must be 'same' or 'valid', not {padding!r}")
    if padding == "same":
        return math.ceil(size / stride)
    if size < window:
        raise ModelError(f"window {window} larger than input size {size} with 'valid' padding")
    return (size - window) // stride + 1


def activation_code(name: str | None) -> int:
    if name not in ACTIVATIONS:
        raise ModelError(f"unknown activation {name!r}; use one of {list(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class GraphCore:
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

    def input(self, name: str, shape: Sequence[int], dtype: Any = np.float32) -> TensorRef:
        ref = self._tensor(self._layer_name("input", name), shape, dtype)
        self._inputs.append(ref.index)
        return ref

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
