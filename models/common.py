"""Shared parts of the training scripts (dev-only): data sets, camera-like degradation, export.

Data come from ``edge_app.sensors.patterns`` rendered at camera-like sizes, degraded the way a
video pipeline degrades frames (JPEG-like blocks, blur, noise), then prepared by the sensor's own
``FramePreprocessor`` from the model card, so the model learns exactly what a sensor sends.
Accuracy is measured by running the exported ``.tflite`` with ``Runner``, not torch.
"""

from __future__ import annotations

import hashlib
import io
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from edge_app.inference.card import InputSpec, ModelCard, sha256_file, write_card
from edge_app.inference.interpreter import Runner
from edge_app.sensors import patterns
from edge_app.sensors.preprocess import FramePreprocessor

log = logging.getLogger("train")
MODELS_DIR = Path(__file__).resolve().parent
CAMERA_SIZES = ((120, 160), (180, 240), (240, 320))  # (height, width)
HELD_OUT_SEED = 1_000_003  # never used for training data
HELD_OUT_TEXT = (
    "{n} samples ({per} per class) freshly rendered by edge_app.sensors.patterns with seed {seed} "
    "(training used other seeds) at camera sizes 160x120, 240x180 and 320x240, half of them "
    "JPEG-compressed (quality 20-90) and some blurred, prepared by the sensor's preprocessing "
    "from this card; run with the .tflite file under {runtime}"
)


def degrade(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The same JPEG round trip and blur on every frame of (T, H, W, 3) uint8, like a codec."""
    quality = int(rng.integers(20, 91)) if rng.random() < 0.5 else None
    radius = float(rng.uniform(0.3, 1.2)) if rng.random() < 0.3 else 0.0
    out = np.empty_like(frames)
    for i, frame in enumerate(frames):
        picture = Image.fromarray(frame)
        if radius:
            picture = picture.filter(ImageFilter.GaussianBlur(radius))
        if quality is not None:
            buffer = io.BytesIO()
            picture.save(buffer, format="JPEG", quality=quality)
            picture = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
        out[i] = np.asarray(picture)
    return out


def make_dataset(
    labels: tuple[str, ...],
    per_class: int,
    seed: int,
    spec: InputSpec,
    render: Callable[[str, int, int, np.random.Generator], np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` samples of each label: rendered (T, H, W, 3), degraded, prepared.

    Returns (x float32 of shape (N, *spec.shape[1:]), y int64), classes interleaved.
    """
    rng = np.random.default_rng(seed)
    prepare = FramePreprocessor(spec)
    xs, ys = [], []
    for _ in range(per_class):
        for label_index, label in enumerate(labels):
            height, width = CAMERA_SIZES[int(rng.integers(len(CAMERA_SIZES)))]
            frames = degrade(render(label, height, width, rng), rng)
            prepared = np.stack([prepare(f) for f in frames])
            xs.append(prepared if len(spec.shape) == 5 else prepared[0])
            ys.append(label_index)
    return np.stack(xs).astype(np.float32), np.array(ys, dtype=np.int64)


def cached_dataset(
    labels: tuple[str, ...],
    per_class: int,
    seed: int,
    spec: InputSpec,
    render: Callable[[str, int, int, np.random.Generator], np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """make_dataset, kept in $TMPDIR between runs (rendering clips takes minutes)."""
    key = f"{'-'.join(labels)}|{per_class}|{seed}|{spec.model_dump_json()}|{render.__name__}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"edge-app-train-{digest}.npz"
    if path.is_file():
        with np.load(path) as saved:
            return saved["x"], saved["y"]
    x, y = make_dataset(labels, per_class, seed, spec, render)
    np.savez(path, x=x, y=y)
    return x, y


def render_shape(label: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    return patterns.render_shape(label, height, width, rng)[None]


def tflite_accuracy(model: bytes | Path, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of a .tflite model on float inputs x (quantized here for int8 inputs)."""
    runner = Runner(model)
    spec = runner.inputs[0]
    hits = 0
    for sample, label in zip(x, y, strict=True):
        batch = sample[None]
        if spec.dtype != np.float32:
            q = np.round(batch / spec.scale) + spec.zero_point
            batch = np.clip(q, -128, 127).astype(spec.dtype)
        (probs,) = runner.run(batch).values()
        hits += int(np.argmax(probs[0]) == label)
    return hits / len(y)


def save_model(folder: Path, card: ModelCard, data: bytes) -> None:
    """Write ``<folder>/<card.file>`` and ``<folder>/card.json`` (with the file's sha256)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / card.file
    path.write_bytes(data)
    write_card(card.model_copy(update={"sha256": sha256_file(path)}), folder / "card.json")
    log.info("wrote %s (%d bytes) and its card", path, len(data))
