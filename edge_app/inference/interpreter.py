"""The one place that imports a TFLite interpreter: tflite-runtime (Python 3.11) or ai-edge-litert.

`Runner` wraps an interpreter with checked inputs and named outputs. With
``preserve_all_tensors=True`` the default delegates (XNNPACK) are disabled and every operator
output is made a graph output, so that every intermediate tensor stays readable with
`Runner.tensor` (``.outputs`` and ``run()`` still give the model's own outputs only).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from edge_app.errors import InterpreterError

if TYPE_CHECKING:
    from edge_app.inference.graph import Model

try:  # Raspberry Pi OS Bookworm, Python 3.11, numpy < 2
    from tflite_runtime import interpreter as _tfl

    _RUNTIME = "tflite-runtime"
except ImportError:  # pragma: no cover - depends on the venv
    from ai_edge_litert import interpreter as _tfl

    _RUNTIME = "ai-edge-litert"

log = logging.getLogger(__name__)
_MAX_MODEL_BYTES = 2**31


def runtime_name() -> str:
    """``tflite-runtime`` or ``ai-edge-litert``, with its version."""
    version = getattr(_tfl, "__version__", None) or _package_version()
    return f"{_RUNTIME} {version}"


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(_RUNTIME)
    except PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    scale: float  # 0.0 for float tensors
    zero_point: int


def _spec(detail: Mapping[str, Any]) -> TensorSpec:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return TensorSpec(
        name=str(detail["name"]),
        shape=tuple(int(d) for d in detail["shape"]),
        dtype=np.dtype(detail["dtype"]),
        scale=float(scale),
        zero_point=int(zero_point),
    )


class Runner:
    """A loaded model: ``run(inputs) -> {output name: array}``."""

    def __init__(
        self, model: bytes | Path, num_threads: int = 1, preserve_all_tensors: bool = False
    ) -> None:
        content = _load_bytes(model)
        graph = _precheck(content)
        resolver = _tfl.OpResolverType.AUTO
        n_outputs: int | None = None
        if preserve_all_tensors:
            resolver = _tfl.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
            content, n_outputs = _expose_intermediates(graph)
        try:
            self._interp = _tfl.Interpreter(
                model_content=content,
                num_threads=max(1, int(num_threads)),
                experimental_op_resolver_type=resolver,
                experimental_preserve_all_tensors=preserve_all_tensors,
            )
            self._interp.allocate_tensors()
            self._input_details = self._interp.get_input_details()
            self._output_details = self._interp.get_output_details()[:n_outputs]
            details = self._interp.get_tensor_details()
        except (ValueError, RuntimeError) as exc:  # UnicodeDecodeError of bad names included
            raise InterpreterError(f"{_RUNTIME} cannot load the model: {exc}") from exc
        self._preserve = preserve_all_tensors
        self.inputs = [_spec(d) for d in self._input_details]
        self.outputs = [_spec(d) for d in self._output_details]
        self._by_name = {str(d["name"]): int(d["index"]) for d in details}
        self._indices = {int(d["index"]) for d in details}
        self._io_indices = {int(d["index"]) for d in self._input_details + self._output_details}
        self._ran = False

    def run(
        self, inputs: NDArray[Any] | Sequence[NDArray[Any]] | Mapping[str, NDArray[Any]]
    ) -> dict[str, NDArray[Any]]:
        """Runs the model once; returns a copy of every output, by tensor name."""
        arrays = self._ordered(inputs)
        for spec, array in zip(self.inputs, arrays, strict=True):
            _check(spec, array)
        try:
            for detail, array in zip(self._input_details, arrays, strict=True):
                self._interp.set_tensor(detail["index"], array)
            self._interp.invoke()
        except (ValueError, RuntimeError) as exc:
            raise InterpreterError(f"{_RUNTIME} failed to run the model: {exc}") from exc
        self._ran = True
        return {
            spec.name: np.array(self._interp.get_tensor(d["index"]), copy=True)
            for spec, d in zip(self.outputs, self._output_details, strict=True)
        }

    def _ordered(
        self, inputs: NDArray[Any] | Sequence[NDArray[Any]] | Mapping[str, NDArray[Any]]
    ) -> list[NDArray[Any]]:
        if isinstance(inputs, np.ndarray):
            arrays = [inputs]
        elif isinstance(inputs, Mapping):
            missing = [s.name for s in self.inputs if s.name not in inputs]
            extra = sorted(set(inputs) - {s.name for s in self.inputs})
            if missing or extra:
                raise InterpreterError(f"inputs missing {missing}, unknown {extra}")
            arrays = [inputs[s.name] for s in self.inputs]
        else:
            arrays = list(inputs)
        if len(arrays) != len(self.inputs):
            names = [s.name for s in self.inputs]
            raise InterpreterError(f"model takes {len(names)} input(s) {names}, got {len(arrays)}")
        return [a if isinstance(a, np.ndarray) else np.asarray(a) for a in arrays]

    def tensor(self, key: str | int) -> NDArray[Any]:
        """A copy of a tensor, by name or model tensor index, after `run`.

        Intermediate tensors need ``preserve_all_tensors=True``.
        """
        if isinstance(key, str):
            if key not in self._by_name:
                raise InterpreterError(f"no tensor named {key!r}")
            index = self._by_name[key]
        elif key in self._indices:
            index = key
        else:
            raise InterpreterError(f"no tensor with index {key}")
        if not self._ran:
            raise InterpreterError("tensor() is only meaningful after run()")
        if not self._preserve and index not in self._io_indices:
            raise InterpreterError(f"tensor {key!r}: create the Runner with preserve_all_tensors")
        try:
            return np.array(self._interp.get_tensor(index), copy=True)
        except ValueError as exc:
            raise InterpreterError(f"tensor {key!r} cannot be read: {exc}") from exc

    @property
    def tensor_names(self) -> list[str]:
        return list(self._by_name)


def _load_bytes(model: bytes | Path) -> bytes:
    if isinstance(model, bytes | bytearray | memoryview):
        return bytes(model)
    path = Path(model)
    try:
        size = path.stat().st_size
        if size > _MAX_MODEL_BYTES:
            raise InterpreterError(f"{path}: {size} bytes is too large for a TFLite model")
        return path.read_bytes()
    except OSError as exc:
        raise InterpreterError(f"cannot read model {path}: {exc}") from exc


def _precheck(content: bytes) -> Model:
    """Parses the model with our own reader first: the runtimes crash on some malformed files."""
    from edge_app.errors import GraphError
    from edge_app.inference.graph_io import read_model

    try:
        return read_model(content)
    except GraphError as exc:
        raise InterpreterError(f"not a loadable model: {exc}") from exc


def _expose_intermediates(model: Model) -> tuple[bytes, int]:
    """The model with every operator output also a graph output; (bytes, original output count).

    preserve_all_tensors alone is not enough: tflite-runtime 2.14 still runs some ops (ADD) in
    place over an input that has no other reader, which destroys that input's values.
    ``model`` (freshly read, not shared) is changed in place.
    """
    from edge_app.inference.graph_io import write_model

    sub = model.main
    produced = [i for op in sub.operators for i in op.outputs if i >= 0]
    n_outputs = len(sub.outputs)
    sub.outputs = list(dict.fromkeys([*sub.outputs, *produced]))
    return write_model(model), n_outputs


def _check(spec: TensorSpec, array: NDArray[Any]) -> None:
    if array.dtype != spec.dtype or tuple(array.shape) != spec.shape:
        raise InterpreterError(
            f"input {spec.name!r}: expected {spec.dtype} {spec.shape}, "
            f"got {array.dtype} {tuple(array.shape)}"
        )
