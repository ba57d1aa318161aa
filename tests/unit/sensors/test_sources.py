"""Frame sources: real files (video encoded here with PyAV, images with Pillow), generated
patterns, and the Pi camera code path driven through a stand-in camera object."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image

from edge_app.errors import ConfigError, SourceError
from edge_app.sensors.camera import Picamera2Source
from edge_app.sensors.sources import (
    ImageFolderSource,
    PatternSource,
    VideoSource,
    open_source,
)


def write_video(path: Path, frames: int = 12, size: tuple[int, int] = (64, 48)) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=24)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            pixels = np.full((size[1], size[0], 3), (i * 20) % 256, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def read_all(source: Any, limit: int = 1000) -> list[Any]:
    source.open()
    frames = []
    while len(frames) < limit and (frame := source.read()) is not None:
        frames.append(frame)
    source.close()
    return frames


def test_video_file_frames_rate_and_loop(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    write_video(path)
    source = VideoSource(str(path))
    frames = read_all(source)
    assert len(frames) == 12
    assert source.fps == pytest.approx(24)
    assert frames[0].image.shape == (48, 64, 3) and frames[0].image.dtype == np.uint8
    assert [f.index for f in frames] == list(range(12))
    looped = read_all(VideoSource(str(path), loop=True), limit=30)
    assert len(looped) == 30


def test_corrupt_and_missing_video_are_clear_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    with pytest.raises(SourceError, match="cannot open video"):
        VideoSource(str(bad)).open()
    with pytest.raises(SourceError, match="cannot open video"):
        VideoSource(str(tmp_path / "missing.mp4")).open()


def test_image_folder_in_name_order_and_modes(tmp_path: Path) -> None:
    Image.new("L", (20, 10), 100).save(tmp_path / "b.png")
    Image.new("RGBA", (20, 10), (1, 2, 3, 4)).save(tmp_path / "a.png")
    (tmp_path / "notes.txt").write_text("not an image")
    frames = read_all(ImageFolderSource(str(tmp_path)))
    assert len(frames) == 2
    assert frames[0].image[0, 0].tolist() == [1, 2, 3]  # a.png first, alpha dropped
    assert frames[1].image[0, 0].tolist() == [100, 100, 100]  # grey expanded to RGB


def test_empty_folder_and_unreadable_image(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no images"):
        ImageFolderSource(str(tmp_path)).open()
    (tmp_path / "x.jpg").write_bytes(b"not a jpeg")
    source = ImageFolderSource(str(tmp_path))
    source.open()
    with pytest.raises(SourceError, match="cannot read image"):
        source.read()


def test_pattern_source_labels_and_unknown_name() -> None:
    frames = read_all(PatternSource("jumping", width=64, height=48), limit=3)
    assert all(f.truth == "jumping" and f.image.shape == (48, 64, 3) for f in frames)
    with pytest.raises(ConfigError, match="unknown pattern"):
        PatternSource("nope").open()


@pytest.mark.parametrize(
    ("spec", "kind"),
    [
        ("video:/x.mp4", VideoSource),
        ("webcam", VideoSource),
        ("images:/tmp/*.jpg", ImageFolderSource),
        ("pattern:actions@160x120", PatternSource),
        ("picamera2:320x240@10", Picamera2Source),
    ],
)
def test_open_source_specs(spec: str, kind: type) -> None:
    assert isinstance(open_source(spec), kind)


def test_open_source_rejects_unknown() -> None:
    with pytest.raises(ConfigError, match="unknown source"):
        open_source("ftp:whatever")


class StandInCamera:
    """Has picamera2's methods; gives B,G,R frames like its "RGB888" format does."""

    def __init__(self, fail_capture_after: int | None = None) -> None:
        self.config: dict[str, Any] = {}
        self.started = self.closed = False
        self.captures = 0
        self.fail_capture_after = fail_capture_after

    def create_video_configuration(self, **kwargs: Any) -> dict[str, Any]:
        return kwargs

    def configure(self, config: dict[str, Any]) -> None:
        self.config = config

    def start(self) -> None:
        self.started = True

    def capture_array(self, name: str = "main") -> np.ndarray:
        if self.fail_capture_after is not None and self.captures >= self.fail_capture_after:
            raise RuntimeError("camera timed out")
        self.captures += 1
        w, h = self.config["main"]["size"]
        bgr = np.zeros((h, w, 3), np.uint8)
        bgr[..., 0] = 255  # blue in B,G,R order
        return bgr

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        self.closed = True


def test_picamera2_configures_and_flips_bgr_to_rgb() -> None:
    camera = StandInCamera()
    source = Picamera2Source(width=32, height=24, fps=10, factory=lambda: camera)
    frames = read_all(source, limit=2)
    assert camera.config["main"] == {"size": (32, 24), "format": "RGB888"}
    assert camera.config["controls"] == {"FrameRate": 10.0}
    assert frames[0].image.shape == (24, 32, 3)
    assert frames[0].image[0, 0].tolist() == [0, 0, 255]  # blue ends up in the B slot of RGB
    assert camera.closed


def test_picamera2_capture_failure_is_a_source_error() -> None:
    source = Picamera2Source(factory=lambda: StandInCamera(fail_capture_after=1))
    source.open()
    assert source.read() is not None
    with pytest.raises(SourceError, match="capture failed"):
        source.read()


def test_picamera2_missing_library_is_a_clear_error() -> None:
    with pytest.raises(SourceError, match="python3-picamera2"):
        Picamera2Source().open()


@pytest.mark.parametrize(
    "spec", ["picamera2:320x240@fast", "picamera2:320x240@0", "picamera2:320x240@-5"]
)
def test_open_source_rejects_a_bad_camera_rate(spec: str) -> None:
    with pytest.raises(ConfigError, match="frame rate"):
        open_source(spec)


@pytest.mark.parametrize("rate", [0.0, -2.0, float("nan")])
def test_open_source_rejects_a_bad_rate(rate: float) -> None:
    with pytest.raises(ConfigError, match="frame rate"):
        open_source("pattern:box", rate=rate)
