from __future__ import annotations

import io

import numpy as np
from PIL import Image

from edge_app.sensors.thumbnail import MAX_THUMB_BYTES, Thumbnailer, encode_thumbnail


def test_thumbnail_is_a_small_jpeg_of_the_frame() -> None:
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)  # noise: worst case for JPEG
    data = encode_thumbnail(frame, width=160)
    assert len(data) <= MAX_THUMB_BYTES
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "JPEG" and img.size == (160, 120)


def test_at_most_one_thumbnail_per_interval() -> None:
    thumbs = Thumbnailer(interval_s=1.0)
    frame = np.zeros((48, 64, 3), np.uint8)
    made = [thumbs.make(frame, t) is not None for t in (0.0, 0.5, 0.99, 1.0, 1.5, 2.2)]
    assert made == [True, False, False, True, False, True]
