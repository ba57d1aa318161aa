"""Small JPEG thumbnails of what a sensor sees, for the dashboard; never on the data path."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

MAX_THUMB_BYTES = 16 * 1024


class Thumbnailer:
    """Makes at most one thumbnail per ``interval_s``; returns None in between."""

    def __init__(self, width: int = 160, interval_s: float = 1.0, quality: int = 70) -> None:
        self.width, self.interval_s, self.quality = width, interval_s, quality
        self._last = float("-inf")

    def due(self, now: float) -> bool:
        return now - self._last >= self.interval_s

    def make(self, image: np.ndarray, now: float) -> bytes | None:
        if not self.due(now):
            return None
        self._last = now
        return encode_thumbnail(image, self.width, self.quality)


def encode_thumbnail(image: np.ndarray, width: int = 160, quality: int = 70) -> bytes:
    """(H, W, 3) RGB uint8 -> JPEG bytes of ``width`` pixels wide, under MAX_THUMB_BYTES."""
    picture = Image.fromarray(image)
    height = max(1, round(picture.height * width / max(1, picture.width)))
    small = picture.resize((width, height), Image.Resampling.BILINEAR)
    for q in (quality, 50, 30, 15):
        out = io.BytesIO()
        small.save(out, format="JPEG", quality=q, optimize=True)
        if out.tell() <= MAX_THUMB_BYTES:
            break
    return out.getvalue()
