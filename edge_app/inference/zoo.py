"""The paper's architectures (AlexNet, VGG16, C3D) with seeded weights, and small test models.

Full-size models are what the benchmarks partition (VGG16 is about 550 MB), so they are built on
demand into a cache, never committed; their ``small`` variants keep the same topology with tiny
sizes and build and run in a fraction of a second, for tests. Weights are He-initialised float32
from ``numpy.random.default_rng(seed)``, so a name, a size and a seed always give the same bytes.
``resnet_branch`` has residual adds and a two-branch concat (cut points must keep them whole).
``*_int8`` names are full-integer int8 versions of the 2-D models (``quantize.quantize_int8``
calibrated on seeded random inputs).
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_app.errors import ConfigError, ModelError
from edge_app.inference.builder import GraphBuilder, TensorRef

log = logging.getLogger(__name__)

ZOO_VERSION = 1  # bump when an architecture or the weight recipe changes (cache key)
FLOAT_NAMES: tuple[str, ...] = ("alexnet", "vgg16", "c3d", "resnet_branch")
INT8_NAMES: tuple[str, ...] = ("alexnet_int8", "vgg16_int8", "resnet_branch_int8")
ZOO_NAMES: tuple[str, ...] = FLOAT_NAMES + INT8_NAMES
CALIBRATION_SAMPLES = 8


@dataclass(frozen=True)
class _Net:
    """Builds one network: the builder and a seeded generator for its weights."""

    b: GraphBuilder
    rng: np.random.Generator

    def _weights(self, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
        std = np.float32(math.sqrt(2.0 / fan_in))
        w = self.rng.standard_normal(shape, dtype=np.float32)
        w *= std
        return w

    def _bias(self, n: int) -> np.ndarray:
        return self.rng.standard_normal(n, dtype=np.float32) * np.float32(0.01)

    def conv(
        self,
        x: TensorRef,
        out: int,
        k: int,
        name: str,
        *,
        stride: int = 1,
        act: str | None = "relu",
    ) -> TensorRef:
        c = x.shape[-1]
        w = self._weights((out, k, k, c), k * k * c)
        return self.b.conv2d(
            x, w, self._bias(out), stride=(stride, stride), activation=act, name=name
        )

    def conv3d(self, x: TensorRef, out: int, name: str) -> TensorRef:
        c = x.shape[-1]
        w = self._weights((3, 3, 3, c, out), 27 * c)
        return self.b.conv3d(x, w, self._bias(out), activation="relu", name=name)

    def fc(self, x: TensorRef, out: int, name: str, act: str | None = "relu") -> TensorRef:
        n = x.shape[-1]
        return self.b.fully_connected(
            x, self._weights((out, n), n), self._bias(out), activation=act, name=name
        )

    def head(self, x: TensorRef, hidden: tuple[int, int], classes: int) -> None:
        """Flatten, two ReLU FC layers, the logits FC layer and a softmax output."""
        y = self.b.flatten(x, name="flatten")
        y = self.fc(y, hidden[0], "fc6")
        y = self.fc(y, hidden[1], "fc7")
        y = self.fc(y, classes, "fc8", act=None)
        self.b.output(self.b.softmax(y, name="softmax"), name="probabilities")


def _alexnet(net: _Net, small: bool) -> None:
    """AlexNet (one tower): 224x224x3, conv 96-256-384-384-256, fc 4096-4096-1000."""
    size, div, hidden, classes = (64, 16, (64, 64), 10) if small else (224, 1, (4096, 4096), 1000)
    b = net.b
    x = b.input("image", (1, size, size, 3))
    x = net.conv(x, 96 // div, 11, "conv1", stride=4)
    x = b.max_pool2d(x, (3, 3), (2, 2), name="pool1")
    x = net.conv(x, 256 // div, 5, "conv2")
    x = b.max_pool2d(x, (3, 3), (2, 2), name="pool2")
    x = net.conv(x, 384 // div, 3, "conv3")
    x = net.conv(x, 384 // div, 3, "conv4")
    x = net.conv(x, 256 // div, 3, "conv5")
    x = b.max_pool2d(x, (3, 3), (2, 2), name="pool5")
    net.head(x, hidden, classes)


_VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def _vgg16(net: _Net, small: bool) -> None:
    """VGG16: 224x224x3, 13 conv 3x3 layers in 5 blocks, fc 4096-4096-1000."""
    size, div, hidden, classes = (32, 16, (64, 64), 10) if small else (224, 1, (4096, 4096), 1000)
    x = net.b.input("image", (1, size, size, 3))
    for i, block in enumerate(_VGG16_BLOCKS, start=1):
        for j, channels in enumerate(block, start=1):
            x = net.conv(x, channels // div, 3, f"conv{i}_{j}")
        x = net.b.max_pool2d(x, name=f"pool{i}")
    net.head(x, hidden, classes)


def _c3d(net: _Net, small: bool) -> None:
    """C3D: 16x112x112x3 clips, conv3d 64-128-256-256-512-512-512-512, fc 4096-4096-487."""
    frames, size, div = (8, 32, 16) if small else (16, 112, 1)
    hidden, classes = ((64, 64), 10) if small else ((4096, 4096), 487)
    b = net.b
    x = b.input("clip", (1, frames, size, size, 3))
    x = net.conv3d(x, 64 // div, "conv1a")
    x = b.max_pool3d(x, (1, 2, 2), name="pool1")
    x = net.conv3d(x, 128 // div, "conv2a")
    x = b.max_pool3d(x, name="pool2")
    for block, channels in ((3, 256), (4, 512), (5, 512)):
        x = net.conv3d(x, channels // div, f"conv{block}a")
        x = net.conv3d(x, channels // div, f"conv{block}b")
        x = b.max_pool3d(x, padding="same", name=f"pool{block}")
    net.head(x, hidden, classes)


def _resnet_branch(net: _Net, small: bool) -> None:
    """Stem conv, two residual blocks, a 1x1 / 3x3 two-branch concat, pooling and an FC head."""
    size, width = (16, 4) if small else (64, 16)
    b = net.b
    x = net.conv(b.input("image", (1, size, size, 3)), width, 3, "stem")
    for i in (1, 2):
        y = net.conv(x, width, 3, f"res{i}/conv_a")
        y = net.conv(y, width, 3, f"res{i}/conv_b", act=None)
        x = b.add(x, y, activation="relu", name=f"res{i}/add")
    x = b.max_pool2d(x, name="pool1")
    left = net.conv(x, width, 1, "branch/1x1")
    right = net.conv(net.conv(x, width, 1, "branch/3x3_reduce"), width, 3, "branch/3x3")
    x = b.concat([left, right], axis=-1, name="branch/concat")
    x = b.max_pool2d(x, name="pool2")
    net.head(x, (4 * width, 2 * width), 10)


_ARCHITECTURES: dict[str, Callable[[_Net, bool], None]] = {
    "alexnet": _alexnet,
    "vgg16": _vgg16,
    "c3d": _c3d,
    "resnet_branch": _resnet_branch,
}


def _build_float(name: str, small: bool, seed: int) -> bytes:
    builder = GraphBuilder(
        description=f"edge-app zoo {name}{' small' if small else ''} seed {seed}"
    )
    _ARCHITECTURES[name](_Net(builder, np.random.default_rng(seed)), small)
    return builder.to_bytes()


def _quantized(float_model: bytes, seed: int) -> bytes:
    from edge_app.inference.interpreter import Runner
    from edge_app.inference.quantize import quantize_int8

    spec = Runner(float_model).inputs[0]
    rng = np.random.default_rng(seed + 1)
    samples = [
        rng.uniform(-1.0, 1.0, spec.shape).astype(np.float32) for _ in range(CALIBRATION_SAMPLES)
    ]
    quantized: bytes = quantize_int8(float_model, samples)
    return quantized


def build(name: str, small: bool = False, seed: int = 0) -> bytes:
    """The ``.tflite`` bytes of zoo model ``name``; the same arguments give the same bytes."""
    if name not in ZOO_NAMES:
        raise ConfigError(f"unknown zoo model {name!r}; known: {', '.join(ZOO_NAMES)}")
    if seed < 0:
        raise ConfigError(f"the seed must be a non-negative integer, not {seed}")
    base = name.removesuffix("_int8")
    log.info("building zoo model %s (small=%s, seed=%d)", name, small, seed)
    data = _build_float(base, small, seed)
    return _quantized(data, seed) if name != base else data


def cache_dir() -> Path:
    """``$EDGE_APP_CACHE/zoo`` if set, else ``~/.cache/edge-app/zoo``."""
    root = os.environ.get("EDGE_APP_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "edge-app") / "zoo"


def cached_build(name: str, small: bool = False) -> Path:
    """Build ``name`` (seed 0) into the cache once; later calls return the cached file."""
    if name not in ZOO_NAMES:
        raise ConfigError(f"unknown zoo model {name!r}; known: {', '.join(ZOO_NAMES)}")
    folder = cache_dir()
    path = folder / f"{name}{'-small' if small else ''}-v{ZOO_VERSION}.tflite"
    if path.is_file():
        return path
    data = build(name, small)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_model_file(path, data)
    except OSError as exc:
        raise ModelError(f"cannot write zoo model to cache {folder}: {exc}") from exc
    return path


def write_model_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (a temporary file beside it, then a rename):
    readers see no file or the whole model, never a half-written one. OSError on failure."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
