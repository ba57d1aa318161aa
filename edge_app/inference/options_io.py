"""Builtin operator options read and written generically, by reflection over the `tflite` package.

Each ``<Kind>Options`` table of the schema has, in the generated module ``tflite.<Kind>``, a reader
class with one getter per field and builder functions ``<Kind>Add<Field>``. We learn each field's
slot, kind and default by calling its ``Add`` function on a recording stand-in for the builder, so
any operator (also ones we never heard of) round-trips. Field names are the schema's snake_case
names (``stride_w``, ``fused_activation_function``); vectors are lists, strings are str.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import re
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import flatbuffers
import numpy as np
import tflite

from edge_app.errors import GraphError
from edge_app.inference.graph import Options

_UNION1 = {k: v for k, v in vars(tflite.BuiltinOptions).items() if not k.startswith("_")}
_UNION2 = {k: v for k, v in vars(tflite.BuiltinOptions2).items() if not k.startswith("_")}
_KIND1 = {v: k for k, v in _UNION1.items() if v != 0}
_KIND2 = {v: k for k, v in _UNION2.items() if v != 0}


@dataclass(frozen=True)
class _Field:
    name: str  # snake_case schema name
    camel: str  # name in the generated code
    slot: int
    kind: str  # "scalar", "string" or "vector"
    dtype: np.dtype[Any] | None  # element type of a vector


class _Recorder:
    """Stands in for a flatbuffers Builder and remembers the slot call of an ``Add`` function."""

    def __init__(self) -> None:
        self.call: tuple[str, int] | None = None

    def __getattr__(self, method: str) -> Any:
        def record(slot: int, *_: Any) -> None:
            self.call = (method, slot)

        return record


def _snake(camel: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", camel).lower()


def _module(kind: str) -> ModuleType:
    try:
        return importlib.import_module(f"tflite.{kind}")
    except ImportError:
        raise GraphError(f"unknown builtin options table {kind!r}") from None


def _vector_dtype(reader: type, camel: str) -> np.dtype[Any]:
    source = inspect.getsource(getattr(reader, camel + "AsNumpy"))
    match = re.search(r"GetVectorAsNumpy\(flatbuffers\.number_types\.(\w+)Flags", source)
    if match is None:
        raise GraphError(f"cannot tell the element type of vector {camel}")
    flags = getattr(flatbuffers.number_types, match.group(1) + "Flags")
    return np.dtype(flags.name)


@functools.cache
def fields_of(kind: str) -> tuple[_Field, ...]:
    """The fields of one options table, in slot order."""
    module = _module(kind)
    reader = getattr(module, kind)
    prefix = f"{kind}Add"
    found = []
    for fname in dir(module):
        if not fname.startswith(prefix):
            continue
        camel = fname[len(prefix) :]
        recorder = _Recorder()
        getattr(module, fname)(recorder, 0)
        if recorder.call is None:
            raise GraphError(f"cannot reflect {kind}.{camel}")
        method, slot = recorder.call
        dtype = None
        if method != "PrependUOffsetTRelativeSlot":
            kind_name = "scalar"
        elif hasattr(reader, camel + "AsNumpy"):
            kind_name, dtype = "vector", _vector_dtype(reader, camel)
        else:
            kind_name = "string"
        found.append(_Field(_snake(camel), camel, slot, kind_name, dtype))
    return tuple(sorted(found, key=lambda f: f.slot))


def read_options(op: tflite.Operator) -> Options | None:
    """The builtin options of a flatbuffer operator (either union), or None."""
    for type_of, table_of, kinds in (
        (op.BuiltinOptionsType, op.BuiltinOptions, _KIND1),
        (op.BuiltinOptions2Type, op.BuiltinOptions2, _KIND2),
    ):
        code = type_of()
        if code == 0:
            continue
        if code not in kinds:
            raise GraphError(f"unknown builtin options type {code}")
        table = table_of()
        if table is None:
            return Options(kinds[code], {})
        reader = getattr(_module(kinds[code]), kinds[code])()
        reader.Init(table.Bytes, table.Pos)
        return Options(
            kinds[code], {f.name: _read_field(reader, f) for f in fields_of(kinds[code])}
        )
    return None


def _read_field(reader: Any, f: _Field) -> Any:
    if f.kind == "scalar":
        value = getattr(reader, f.camel)()
        return value if isinstance(value, bool | float) else int(value)
    if f.kind == "string":
        raw = getattr(reader, f.camel)()
        return None if raw is None else raw.decode("utf-8", "surrogateescape")
    if getattr(reader, f.camel + "IsNone")():
        return None
    return [v.item() for v in getattr(reader, f.camel + "AsNumpy")()]


def options_union(kind: str) -> tuple[int, int]:
    """(1 or 2 for BuiltinOptions / BuiltinOptions2, the union type value) of an options table."""
    if kind in _UNION1:
        return 1, _UNION1[kind]
    if kind in _UNION2:
        return 2, _UNION2[kind]
    raise GraphError(f"unknown builtin options table {kind!r}")


def write_options(builder: flatbuffers.Builder, options: Options) -> int:
    """Writes an options table; returns its offset. Unknown field names are an error."""
    module = _module(options.kind)
    fields = fields_of(options.kind)
    known = {f.name for f in fields}
    unknown = set(options.fields) - known
    if unknown:
        raise GraphError(f"{options.kind} has no field(s) {sorted(unknown)}")
    offsets: dict[str, int] = {}
    for f in fields:
        value = options.fields.get(f.name)
        if value is None or f.kind == "scalar":
            continue
        if f.kind == "string":
            offsets[f.name] = builder.CreateString(value.encode("utf-8", "surrogateescape"))
        else:
            offsets[f.name] = builder.CreateNumpyVector(np.asarray(value, dtype=f.dtype).ravel())
    getattr(module, f"{options.kind}Start")(builder)
    for f in fields:
        value = options.fields.get(f.name)
        if value is None:
            continue
        add = getattr(module, f"{options.kind}Add{f.camel}")
        add(builder, offsets.get(f.name, value))
    return int(getattr(module, f"{options.kind}End")(builder))
