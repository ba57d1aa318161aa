"""Frame sources: the Pi camera, video files, webcams, image folders and generated patterns.

Every source yields RGB ``uint8`` frames of shape (H, W, 3) stamped with their capture time. A
source is opened, read until it returns ``None`` (end of stream), and closed; a live source that
fails raises :class:`~edge_app.errors.SourceError` and the sensor reopens it with backoff.

Spec strings (``edge-app sensor --source SPEC``):

=========================  ============================================================
``picamera2[:WxH[@FPS]]``  the Raspberry Pi camera (picamera2, imported only here)
``video:PATH``             a video file (mp4, avi, mkv, ...) decoded with PyAV
``webcam[:DEVICE]``        a USB/V4L2 camera through PyAV's ``v4l2`` input
``images:DIR_OR_GLOB``     still images, in name order
``pattern:NAME``           generated frames: ``demo`` (action clips), ``bars``, ``box``
=========================  ============================================================
"""

from __future__ import annotations

import glob
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image, UnidentifiedImageError

from edge_app.errors import ConfigError, SourceError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")


@dataclass(frozen=True)
class Frame:
    image: np.ndarray  # (H, W, 3) uint8, RGB
    ts: float  # capture time, time.time()
    index: int
    truth: str | None = None  # the known label of generated frames (patterns), for tests


class FrameSource(Protocol):
    name: str
    fps: float | None  # delivery rate (pacing); None = as fast as read (files)
    live: bool  # a camera: errors are counted and the source reopened

    @property
    def media_fps(self) -> float | None:
        """The rate the content was captured at (a video's own rate), for clip timing."""

    def open(self) -> None: ...
    def read(self) -> Frame | None: ...
    def close(self) -> None: ...


@dataclass
class ImageFolderSource:
    """Still images from a folder or a glob, each read once, in sorted name order."""

    pattern: str
    name: str = "images"
    fps: float | None = None
    live: bool = False
    _paths: list[Path] = field(default_factory=list)
    _next: int = 0

    def open(self) -> None:
        path = Path(self.pattern)
        if path.is_dir():
            paths = [p for p in sorted(path.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
        else:
            paths = [Path(p) for p in sorted(glob.glob(self.pattern))]
        if not paths:
            raise SourceError(f"no images found at {self.pattern!r}")
        self._paths, self._next = paths, 0

    def read(self) -> Frame | None:
        if self._next >= len(self._paths):
            return None
        path = self._paths[self._next]
        self._next += 1
        try:
            with Image.open(path) as img:
                rgb = np.asarray(img.convert("RGB"))
        except (OSError, UnidentifiedImageError) as exc:
            raise SourceError(f"cannot read image {path}: {exc}") from None
        return Frame(rgb, time.time(), self._next - 1)

    @property
    def media_fps(self) -> float | None:
        return None

    def close(self) -> None:
        self._paths = []


@dataclass
class VideoSource:
    """A video file decoded with PyAV; optionally looped and paced at its own or a set rate."""

    path: str
    loop: bool = False
    rate: float | None = None  # frames per second to deliver; None = the file's own rate
    name: str = "video"
    live: bool = False
    fps: float | None = None
    device_format: str | None = None  # "v4l2" for a webcam
    native_fps: float | None = None  # the file's own rate, known once open
    _container: Any = None
    _frames: Iterator[Any] | None = None
    _index: int = 0

    def open(self) -> None:
        import av

        try:
            self._container = av.open(self.path, format=self.device_format)
            stream = self._container.streams.video[0]
        except (av.error.FFmpegError, IndexError, OSError) as exc:
            raise SourceError(f"cannot open video {self.path!r}: {exc}") from None
        stream.thread_type = "AUTO"
        self.native_fps = float(stream.average_rate) if stream.average_rate else None
        self.fps = self.rate or self.native_fps
        self._frames = self._container.decode(stream)

    def read(self) -> Frame | None:
        import av

        if self._frames is None:
            raise SourceError(f"video {self.path!r} is not open")
        try:
            frame = next(self._frames, None)
        except (av.error.FFmpegError, OSError) as exc:
            raise SourceError(f"corrupt video {self.path!r}: {exc}") from None
        if frame is None:
            if not self.loop or self._index == 0:
                return None
            self.close()
            self.open()
            return self.read()
        self._index += 1
        return Frame(frame.to_ndarray(format="rgb24"), time.time(), self._index - 1)

    @property
    def media_fps(self) -> float | None:
        return self.native_fps

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container, self._frames = None, None


def parse_size(text: str) -> tuple[int, int]:
    """``"640x480"`` -> (width, height)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"bad size {text!r}: expected WIDTHxHEIGHT") from None
    if not (16 <= w <= 8192 and 16 <= h <= 8192):
        raise ConfigError(f"size {text!r} out of range")
    return w, h


def _parse_rate(text: str) -> float:
    try:
        return _check_rate(float(text))
    except ValueError:
        raise ConfigError(f"bad frame rate {text!r}: expected frames per second") from None


def _check_rate(fps: float) -> float:
    if not 0 < fps <= 1000:  # also refuses NaN
        raise ConfigError(f"frame rate {fps:g} out of range (0, 1000] frames per second")
    return fps


@dataclass
class PatternSource:
    """Generated frames (see ``sensors.patterns``), paced at ``fps``: no camera or file needed."""

    pattern: str
    width: int = 320
    height: int = 240
    fps: float | None = 15.0
    seed: int = 0
    name: str = "pattern"
    live: bool = False
    _frames: Iterator[tuple[np.ndarray, str | None]] | None = None
    _pending: tuple[np.ndarray, str | None] | None = None
    _index: int = 0

    def open(self) -> None:
        from edge_app.sensors.patterns import pattern_frames

        self._frames = pattern_frames(
            self.pattern, self.height, self.width, fps=self.fps or 15.0, seed=self.seed
        )
        self._index = 0
        # pattern_frames is a generator: an unknown name only fails on the first frame,
        # so take it now to fail at open() rather than mid-stream.
        self._pending = next(self._frames)

    def read(self) -> Frame | None:
        if self._frames is None:
            raise SourceError(f"pattern {self.pattern!r} is not open")
        if self._pending is not None:
            image, truth = self._pending
            self._pending = None
        else:
            image, truth = next(self._frames)
        self._index += 1
        return Frame(image, time.time(), self._index - 1, truth)

    @property
    def media_fps(self) -> float | None:
        return self.fps

    def close(self) -> None:
        self._frames = None


def open_source(spec: str, *, loop: bool = False, rate: float | None = None) -> FrameSource:
    """Build (not yet open) the source named by a ``--source`` spec string."""
    if rate is not None:
        _check_rate(rate)
    kind, _, arg = spec.partition(":")
    if kind == "picamera2":
        from edge_app.sensors.camera import Picamera2Source

        size, _, fps = arg.partition("@")
        w, h = parse_size(size) if size else (640, 480)
        return Picamera2Source(width=w, height=h, fps=_parse_rate(fps) if fps else rate or 30.0)
    if kind == "video" and arg:
        return VideoSource(arg, loop=loop, rate=rate)
    if kind == "webcam":
        return VideoSource(
            arg or "/dev/video0", rate=rate, name="webcam", live=True, device_format="v4l2"
        )
    if kind == "images" and arg:
        return ImageFolderSource(arg, fps=rate)
    if kind == "pattern" and arg:
        name, _, size = arg.partition("@")
        w, h = parse_size(size) if size else (320, 240)
        return PatternSource(name, width=w, height=h, fps=rate or 15.0)
    raise ConfigError(
        f"unknown source {spec!r}: use picamera2[:WxH[@FPS]], video:PATH, webcam[:DEVICE], "
        "images:DIR_OR_GLOB or pattern:NAME[@WxH]"
    )
