"""`edge-app inject` inputs: images, .npy arrays and videos become the model's input tensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_app.commands.inject import read_items
from edge_app.errors import SourceError
from edge_app.inference.card import InputSpec, ModelCard
from edge_app.sensors.patterns import render_clip, render_shape
from edge_app.sensors.preprocess import Preprocessor

IMAGE_CARD = ModelCard(
    name="img",
    task="image",
    file="img.tflite",
    sha256="0" * 64,
    labels=("a", "b"),
    input=InputSpec(shape=(1, 32, 32, 3), resize="crop", mean=(127.5,), std=(127.5,)),
)
ACTION_CARD = ModelCard(
    name="act",
    task="action",
    file="act.tflite",
    sha256="0" * 64,
    labels=("a", "b"),
    input=InputSpec(shape=(1, 4, 24, 24, 3), layout="NDHWC", mean=(127.5,), std=(127.5,)),
    frames_per_clip=4,
    clip_stride=4,
    frame_rate=15.0,
)


def write_video(path: Path, frames: np.ndarray, fps: int) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_image_file_is_prepared_like_the_sensor_does(tmp_path: Path) -> None:
    rgb = render_shape("star", 120, 160, np.random.default_rng(1))
    Image.fromarray(rgb).save(tmp_path / "star.png")
    (item,) = list(read_items(IMAGE_CARD, tmp_path / "star.png"))
    expected = Preprocessor(IMAGE_CARD).push(rgb)
    assert item.tensor.shape == (1, 32, 32, 3) and item.tensor.dtype == np.float32
    np.testing.assert_array_equal(item.tensor, expected)
    assert item.name.endswith("star.png#0")


def test_npy_as_input_or_as_frames(tmp_path: Path) -> None:
    ready = np.random.default_rng(0).standard_normal((32, 32, 3)).astype(np.float32)
    np.save(tmp_path / "ready.npy", ready)
    (item,) = list(read_items(IMAGE_CARD, tmp_path / "ready.npy"))
    np.testing.assert_array_equal(item.tensor, ready[None])
    frame = render_shape("ring", 48, 64, np.random.default_rng(2))
    np.save(tmp_path / "frame.npy", frame)
    (item,) = list(read_items(IMAGE_CARD, tmp_path / "frame.npy"))
    np.testing.assert_array_equal(item.tensor, Preprocessor(IMAGE_CARD).push(frame))
    np.save(tmp_path / "bad.npy", np.zeros((5, 5), np.float64))
    with pytest.raises(SourceError, match="neither the model input"):
        list(read_items(IMAGE_CARD, tmp_path / "bad.npy"))
    (tmp_path / "broken.npy").write_bytes(b"not numpy")
    with pytest.raises(SourceError, match="cannot read"):
        list(read_items(IMAGE_CARD, tmp_path / "broken.npy"))


def test_video_gives_clips_at_the_cards_frame_rate(tmp_path: Path) -> None:
    frames = render_clip("waving", 24, 48, 64, np.random.default_rng(3), fps=30.0)
    write_video(tmp_path / "wave.mp4", frames, fps=30)
    items = list(read_items(ACTION_CARD, tmp_path / "wave.mp4"))
    # 24 frames at 30 fps -> 12 at 15 fps -> clips of 4 every 4 frames: 3 clips
    assert [i.name.rsplit("#", 1)[1] for i in items] == ["0", "1", "2"]
    assert all(i.tensor.shape == (1, 4, 24, 24, 3) for i in items)
    per_frame = list(read_items(IMAGE_CARD, tmp_path / "wave.mp4"))
    assert len(per_frame) == 24


def test_unusable_inputs_say_why(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "x.png")
    with pytest.raises(SourceError, match="takes clips"):
        list(read_items(ACTION_CARD, tmp_path / "x.png"))
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(SourceError, match="unknown file type"):
        list(read_items(IMAGE_CARD, tmp_path / "notes.txt"))
    (tmp_path / "fake.mp4").write_bytes(b"\0" * 100)
    with pytest.raises(SourceError):
        list(read_items(IMAGE_CARD, tmp_path / "fake.mp4"))
    np.save(tmp_path / "short.npy", np.zeros((2, 24, 24, 3), np.uint8))
    with pytest.raises(SourceError, match="no whole clip"):
        list(read_items(ACTION_CARD, tmp_path / "short.npy"))


def test_an_image_name_with_glob_characters_is_that_file(tmp_path: Path) -> None:
    """``shot[1].png`` is the file of that name, not a pattern matching ``shot1.png``."""
    rng = np.random.default_rng(2)
    wanted, other = render_shape("star", 64, 64, rng), render_shape("ring", 64, 64, rng)
    Image.fromarray(wanted).save(tmp_path / "shot[1].png")
    Image.fromarray(other).save(tmp_path / "shot1.png")
    (item,) = list(read_items(IMAGE_CARD, tmp_path / "shot[1].png"))
    np.testing.assert_array_equal(item.tensor, Preprocessor(IMAGE_CARD).push(wanted))
