"""TFLite tensor types <-> numpy dtypes; activation and padding codes (builder, quantizer).

Types without a numpy equivalent (STRING, RESOURCE, VARIANT, INT4, BFLOAT16) are carried as a
tagged ``uint8`` dtype (``dtype.metadata["tflite_type"]``) so that such tensors still round-trip.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tflite

from edge_app.errors import GraphError

_T = tflite.TensorType
_NUMPY_TYPES: dict[int, np.dtype[Any]] = {
    _T.FLOAT32: np.dtype(np.float32),
    _T.FLOAT16: np.dtype(np.float16),
    _T.INT32: np.dtype(np.int32),
    _T.UINT8: np.dtype(np.uint8),
    _T.INT64: np.dtype(np.int64),
    _T.BOOL: np.dtype(np.bool_),
    _T.INT16: np.dtype(np.int16),
    _T.COMPLEX64: np.dtype(np.complex64),
    _T.INT8: np.dtype(np.int8),
    _T.FLOAT64: np.dtype(np.float64),
    _T.COMPLEX128: np.dtype(np.complex128),
    _T.UINT64: np.dtype(np.uint64),
    _T.UINT32: np.dtype(np.uint32),
    _T.UINT16: np.dtype(np.uint16),
}
_TYPE_OF_DTYPE: dict[np.dtype[Any], int] = {dt: code for code, dt in _NUMPY_TYPES.items()}
_TAG = "tflite_type"
_TYPE_NAMES = {v: k for k, v in vars(_T).items() if k.isupper()}


def to_numpy(tensor_type: int) -> np.dtype[Any]:
    """The numpy dtype of a schema ``TensorType`` value (tagged uint8 for exotic types)."""
    if tensor_type in _NUMPY_TYPES:
        return _NUMPY_TYPES[tensor_type]
    if tensor_type in _TYPE_NAMES:
        return np.dtype(np.uint8, metadata={_TAG: tensor_type})
    raise GraphError(f"unknown tensor type {tensor_type}")


def to_tflite(dtype: np.dtype[Any] | type) -> int:
    """The schema ``TensorType`` value of a numpy dtype."""
    dt = np.dtype(dtype)
    if dt.metadata and _TAG in dt.metadata:
        return int(dt.metadata[_TAG])
    try:
        return _TYPE_OF_DTYPE[dt]
    except KeyError:
        raise GraphError(f"no TFLite tensor type for numpy dtype {dt}") from None


ACTIVATIONS: dict[str | None, int] = {
    None: tflite.ActivationFunctionType.NONE,
    "relu": tflite.ActivationFunctionType.RELU,
    "relu6": tflite.ActivationFunctionType.RELU6,
    "relu_n1_to_1": tflite.ActivationFunctionType.RELU_N1_TO_1,
}
PADDINGS: dict[str, int] = {"same": tflite.Padding.SAME, "valid": tflite.Padding.VALID}
