"""Turn camera frames into exactly what the model was trained on, as its card says.

Order of operations for each frame (RGB uint8 in):
1. geometry: ``stretch`` (resize to the input size), ``crop`` (the largest centred box of the
   input's aspect ratio, then resize) or ``letterbox`` (fit inside, pad with black, centred);
   bilinear resampling by Pillow;
2. colour order: RGB, BGR or GRAY (ITU-R 601 luma, as Pillow's ``convert("L")``);
3. normalization ``(pixel - mean) / std`` in float32;
4. for int8/uint8 inputs, quantization ``round(real / scale) + zero_point``, clipped.

Action models take clips: :class:`ClipAssembler` keeps the last N prepared frames in a bounded
window and emits a clip every ``stride`` frames.
"""

from __future__ import annotations

from collections import deque

import numpy as np
from PIL import Image

from edge_app.errors import SourceError
from edge_app.inference.card import InputSpec, ModelCard

_QRANGE = {"int8": (-128, 127), "uint8": (0, 255)}


def crop_box(width: int, height: int, out_w: int, out_h: int) -> tuple[int, int, int, int]:
    """The centred box of the output's aspect ratio inside a width x height picture."""
    if width * out_h > height * out_w:  # too wide: cut the sides
        w = max(1, round(height * out_w / out_h))
        x = (width - w) // 2
        return x, 0, x + w, height
    h = max(1, round(width * out_h / out_w))
    y = (height - h) // 2
    return 0, y, width, y + h


def letterbox_size(width: int, height: int, out_w: int, out_h: int) -> tuple[int, int]:
    """The size of the picture scaled to fit inside out_w x out_h, keeping its aspect ratio."""
    scale = min(out_w / width, out_h / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize(image: np.ndarray, out_w: int, out_h: int, mode: str) -> np.ndarray:
    """Resize an (H, W, 3) uint8 RGB frame to (out_h, out_w, 3) by ``mode``."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise SourceError(f"expected an RGB uint8 frame, got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    if (width, height) == (out_w, out_h):
        return image
    picture = Image.fromarray(image)
    if mode == "stretch":
        return np.asarray(picture.resize((out_w, out_h), Image.Resampling.BILINEAR))
    if mode == "crop":
        # Crop first, then resize, so edge pixels are not blended with what was cut away.
        cut = picture.crop(crop_box(width, height, out_w, out_h))
        return np.asarray(cut.resize((out_w, out_h), Image.Resampling.BILINEAR))
    if mode == "letterbox":
        fit_w, fit_h = letterbox_size(width, height, out_w, out_h)
        canvas = np.zeros((out_h, out_w, 3), np.uint8)
        y, x = (out_h - fit_h) // 2, (out_w - fit_w) // 2
        canvas[y : y + fit_h, x : x + fit_w] = np.asarray(
            picture.resize((fit_w, fit_h), Image.Resampling.BILINEAR)
        )
        return canvas
    raise SourceError(f"unknown resize mode {mode!r}")


def to_colour_order(image: np.ndarray, order: str) -> np.ndarray:
    """RGB uint8 -> the card's channel order (GRAY keeps a channel axis of 1)."""
    if order == "RGB":
        return image
    if order == "BGR":
        return image[:, :, ::-1]
    if order == "GRAY":
        return np.asarray(Image.fromarray(image).convert("L"))[:, :, None]
    raise SourceError(f"unknown colour order {order!r}")


class FramePreprocessor:
    """Prepares single frames for one model input spec; cheap to call per frame."""

    def __init__(self, spec: InputSpec) -> None:
        self.spec = spec
        self._mean = np.asarray(spec.mean, np.float32)
        self._inv_std = 1.0 / np.asarray(spec.std, np.float32)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) RGB uint8 -> (h, w, c) in the model's dtype (no batch axis)."""
        spec = self.spec
        sized = resize(image, spec.width, spec.height, spec.resize)
        pixels = to_colour_order(sized, spec.colour_order)
        real = (pixels.astype(np.float32) - self._mean) * self._inv_std
        if spec.quantization is None:
            return real
        lo, hi = _QRANGE[spec.dtype]
        q = np.round(real / spec.quantization.scale) + spec.quantization.zero_point
        quantized: np.ndarray = np.clip(q, lo, hi).astype(spec.dtype)
        return quantized


class ClipAssembler:
    """Sliding clips of ``frames`` prepared frames, one every ``stride`` frames; bounded."""

    def __init__(self, frames: int, stride: int) -> None:
        if frames < 1 or stride < 1:
            raise SourceError(f"clip needs frames >= 1 and stride >= 1, got {frames}, {stride}")
        self.frames, self.stride = frames, stride
        self._window: deque[np.ndarray] = deque(maxlen=frames)
        self._since_last = 0

    def push(self, frame: np.ndarray) -> np.ndarray | None:
        """Add a frame; return a (frames, h, w, c) clip when one is due, else None."""
        self._window.append(frame)
        self._since_last += 1
        if len(self._window) < self.frames or self._since_last < self.stride:
            return None
        self._since_last = 0
        clip: np.ndarray = np.stack(self._window)
        return clip

    def reset(self) -> None:
        """Forget the window (after a camera error: a clip must not span the gap)."""
        self._window.clear()
        self._since_last = 0


def frame_step(card: ModelCard, source_fps: float | None) -> int:
    """Keep every n-th frame so clips have the motion speed the action model was trained at.

    A 30 fps camera feeding a model trained on 15 fps clips would show every motion at half
    speed; taking every second frame restores it. Image models take every frame.
    """
    if card.task != "action" or not card.frame_rate or not source_fps:
        return 1
    if source_fps <= 1.5 * card.frame_rate:
        return 1
    return max(1, round(source_fps / card.frame_rate))


class Preprocessor:
    """Frames in, model inputs out (with the batch axis): a frame per job, or a clip per job.

    Call :meth:`take` for every captured frame and :meth:`push` only for those it keeps.
    """

    def __init__(self, card: ModelCard, source_fps: float | None = None) -> None:
        self.card = card
        self.step = frame_step(card, source_fps)
        self._seen = 0
        self.frame = FramePreprocessor(card.input)
        self.clips = (
            ClipAssembler(card.frames_per_clip or 1, card.clip_stride or card.frames_per_clip or 1)
            if card.task == "action"
            else None
        )

    def set_source_fps(self, source_fps: float | None) -> None:
        """The source's rate, known once it is open (a video file's own rate)."""
        self.step = frame_step(self.card, source_fps)

    def take(self) -> bool:
        """Whether the next captured frame is used (decimation to the card's frame rate)."""
        self._seen += 1
        return (self._seen - 1) % self.step == 0

    def push(self, image: np.ndarray) -> np.ndarray | None:
        prepared = self.frame(image)
        if self.clips is None:
            return prepared[None]
        clip = self.clips.push(prepared)
        return None if clip is None else clip[None]

    def reset(self) -> None:
        self._seen = 0
        if self.clips is not None:
            self.clips.reset()
