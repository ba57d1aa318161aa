"""An in-memory TFLite model: plain dataclasses mirroring the flatbuffer schema's parts we use.

The reader (`read_model`) and writer (`write_model`) live in ``graph_io``; everything else in
``edge_app.inference`` (partitioner, shards, builder, quantizer) works on these objects only.
Builtin operator options are kept generically as ``Options(kind, fields)`` so that operators we
do not know by name still round-trip unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Quantization:
    """Affine quantization: real = scale * (q - zero_point), per tensor or per channel."""

    scale: np.ndarray  # float32, 1 value (per tensor) or one per channel
    zero_point: np.ndarray  # int64, same length as scale
    quantized_dimension: int = 0
    min: np.ndarray | None = None
    max: np.ndarray | None = None


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    buffer: int = 0  # index into Model.buffers; 0 is the schema's empty buffer
    quantization: Quantization | None = None
    shape_signature: tuple[int, ...] | None = None
    is_variable: bool = False


@dataclass
class Options:
    """Builtin options of an operator: the schema's table name and its fields by name."""

    kind: str  # e.g. "Conv2DOptions"
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class OperatorCode:
    builtin_code: int  # tflite.BuiltinOperator value
    version: int = 1
    custom_code: str | None = None


@dataclass
class Operator:
    opcode_index: int  # index into Model.operator_codes
    inputs: list[int]  # tensor indices; -1 marks an omitted optional input
    outputs: list[int]
    options: Options | None = None
    custom_options: bytes | None = None


@dataclass
class Subgraph:
    tensors: list[Tensor]
    operators: list[Operator]
    inputs: list[int]
    outputs: list[int]
    name: str = ""


@dataclass
class Model:
    operator_codes: list[OperatorCode]
    subgraphs: list[Subgraph]
    # buffers[0] is always b"" by convention. read_model gives zero-copy memoryviews into the file
    # bytes (a model file is held in memory once); anything that makes new data may use bytes.
    buffers: list[bytes | memoryview]
    description: str = ""
    version: int = 3
    metadata: list[tuple[str, int]] = field(default_factory=list)  # (name, buffer index)

    @property
    def main(self) -> Subgraph:
        """The primary subgraph (index 0), the one that is run and partitioned."""
        return self.subgraphs[0]
