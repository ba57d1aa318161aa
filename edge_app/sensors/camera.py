"""The Raspberry Pi camera through picamera2 (installed from apt on sensor Pis only).

picamera2 is imported lazily, so this module loads everywhere. Everything around the camera
object (configuration, frame loop, colour order, errors) is plain code tested with a stand-in that
has the same methods: ``create_video_configuration``, ``configure``, ``start``,
``capture_array``, ``stop`` and ``close``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_app.errors import SourceError
from edge_app.sensors.sources import Frame

log = logging.getLogger(__name__)

CameraFactory = Callable[[], Any]


def default_camera_factory() -> Any:
    """Open the real camera; a clear SourceError when picamera2 or the camera is missing."""
    try:
        from picamera2 import Picamera2  # type: ignore[import-not-found]
    except ImportError:
        raise SourceError(
            "picamera2 is not installed: on Raspberry Pi OS run `sudo apt install "
            "python3-picamera2` and make the venv with --system-site-packages"
        ) from None
    try:
        return Picamera2()
    except (RuntimeError, IndexError, OSError) as exc:  # no camera attached / busy
        raise SourceError(f"cannot open the Pi camera: {exc}") from None


@dataclass
class Picamera2Source:
    """Frames from the Pi camera at a set size and rate, delivered as RGB."""

    width: int = 640
    height: int = 480
    fps: float | None = 30.0
    name: str = "picamera2"
    live: bool = True
    factory: CameraFactory = default_camera_factory
    _camera: Any = None
    _index: int = 0

    def open(self) -> None:
        camera = self.factory()
        try:
            # "RGB888" is libcamera's name for B,G,R byte order in numpy; we flip it in read().
            config = camera.create_video_configuration(
                main={"size": (self.width, self.height), "format": "RGB888"},
                controls={"FrameRate": float(self.fps or 30.0)},
                buffer_count=4,
            )
            camera.configure(config)
            camera.start()
        except Exception as exc:  # the library raises many kinds; all mean "camera failed"
            _close_quietly(camera)
            raise SourceError(f"cannot start the Pi camera: {exc}") from None
        self._camera = camera

    def read(self) -> Frame | None:
        if self._camera is None:
            raise SourceError("the Pi camera is not open")
        try:
            bgr = self._camera.capture_array("main")
        except Exception as exc:
            raise SourceError(f"Pi camera capture failed: {exc}") from None
        ts = time.time()
        if not isinstance(bgr, np.ndarray) or bgr.ndim != 3 or bgr.shape[2] < 3:
            raise SourceError(f"Pi camera gave an unexpected frame: {getattr(bgr, 'shape', bgr)}")
        rgb = np.ascontiguousarray(bgr[:, :, 2::-1])
        self._index += 1
        return Frame(rgb, ts, self._index - 1)

    @property
    def media_fps(self) -> float | None:
        return self.fps

    def close(self) -> None:
        if self._camera is not None:
            _close_quietly(self._camera)
        self._camera = None


def _close_quietly(camera: Any) -> None:
    for method in ("stop", "close"):
        try:
            getattr(camera, method)()
        except Exception:  # closing a broken camera must not mask the original error
            log.debug("camera %s failed", method, exc_info=True)
