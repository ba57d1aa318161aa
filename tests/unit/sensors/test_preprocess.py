"""Preprocessing against independent references: Pillow by hand, and the card's formulas."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edge_app.errors import SourceError
from edge_app.inference.card import InputQuantization, InputSpec, ModelCard
from edge_app.sensors.preprocess import (
    ClipAssembler,
    FramePreprocessor,
    Preprocessor,
    crop_box,
    frame_step,
    letterbox_size,
    resize,
)


@pytest.fixture
def frame() -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)


def test_stretch_matches_pillow(frame: np.ndarray) -> None:
    ref = np.asarray(Image.fromarray(frame).resize((64, 48), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(resize(frame, 64, 48, "stretch"), ref)


def test_crop_is_a_centred_cut_then_resize(frame: np.ndarray) -> None:
    # 320x240 into a square: the centred 240x240 box.
    assert crop_box(320, 240, 64, 64) == (40, 0, 280, 240)
    assert crop_box(240, 320, 64, 64) == (0, 40, 240, 280)
    ref = np.asarray(Image.fromarray(frame[:, 40:280]).resize((64, 64), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(resize(frame, 64, 64, "crop"), ref)


def test_letterbox_pads_with_black_and_keeps_aspect(frame: np.ndarray) -> None:
    assert letterbox_size(320, 240, 64, 64) == (64, 48)
    out = resize(frame, 64, 64, "letterbox")
    assert out.shape == (64, 64, 3)
    assert not out[:8].any() and not out[56:].any()  # bars top and bottom
    ref = np.asarray(Image.fromarray(frame).resize((64, 48), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(out[8:56], ref)


def test_same_size_is_untouched(frame: np.ndarray) -> None:
    assert resize(frame, 320, 240, "crop") is frame


@pytest.mark.parametrize("order", ["RGB", "BGR", "GRAY"])
def test_colour_order_and_normalization(frame: np.ndarray, order: str) -> None:
    channels = 1 if order == "GRAY" else 3
    mean = (10.0, 20.0, 30.0)[:channels]
    std = (2.0, 4.0, 8.0)[:channels]
    spec = InputSpec(
        shape=(1, 24, 32, channels), colour_order=order, mean=mean, std=std, resize="stretch"
    )
    out = FramePreprocessor(spec)(frame)
    small = Image.fromarray(frame).resize((32, 24), Image.Resampling.BILINEAR)
    if order == "GRAY":
        pixels = np.asarray(small.convert("L"))[:, :, None]
    else:
        pixels = np.asarray(small)
        if order == "BGR":
            pixels = pixels[:, :, ::-1]
    expected = (pixels.astype(np.float64) - np.array(mean)) / np.array(std)
    assert out.dtype == np.float32 and out.shape == (24, 32, channels)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)


def test_int8_quantization(frame: np.ndarray) -> None:
    spec = InputSpec(
        shape=(1, 24, 32, 3),
        dtype="int8",
        mean=(0.0,),
        std=(255.0,),
        quantization=InputQuantization(scale=1 / 255, zero_point=-128),
    )
    out = FramePreprocessor(spec)(frame)
    small = np.asarray(Image.fromarray(frame).resize((32, 24), Image.Resampling.BILINEAR))
    assert out.dtype == np.int8
    np.testing.assert_array_equal(out.astype(np.int32), small.astype(np.int32) - 128)


def test_clip_windows_slide_by_stride() -> None:
    clips = ClipAssembler(frames=4, stride=2)
    outs = [clips.push(np.full((2, 2, 1), i, np.float32)) for i in range(10)]
    firsts = [None if c is None else c[:, 0, 0, 0].tolist() for c in outs]
    assert firsts == [
        None,
        None,
        None,
        [0, 1, 2, 3],
        None,
        [2, 3, 4, 5],
        None,
        [4, 5, 6, 7],
        None,
        [6, 7, 8, 9],
    ]
    clips.reset()
    assert clips.push(np.zeros((2, 2, 1), np.float32)) is None


def test_bad_frames_are_clear_errors() -> None:
    with pytest.raises(SourceError, match="RGB uint8"):
        resize(np.zeros((10, 10), np.uint8), 4, 4, "stretch")
    with pytest.raises(SourceError, match="stride"):
        ClipAssembler(4, 0)


def action_card(frame_rate: float | None) -> ModelCard:
    return ModelCard(
        name="clips",
        task="action",
        file="m.tflite",
        sha256="0" * 64,
        labels=("a", "b"),
        input=InputSpec(shape=(1, 4, 8, 8, 3), layout="NDHWC"),
        frames_per_clip=4,
        frame_rate=frame_rate,
    )


@pytest.mark.parametrize(
    ("source_fps", "step"), [(30.0, 2), (29.97, 2), (60.0, 4), (15.0, 1), (20.0, 1), (None, 1)]
)
def test_action_frames_are_decimated_to_the_card_rate(source_fps: float | None, step: int) -> None:
    assert frame_step(action_card(15.0), source_fps) == step
    prep = Preprocessor(action_card(15.0), source_fps=source_fps)
    kept = [prep.take() for _ in range(8)]
    assert kept == [i % step == 0 for i in range(8)]


def test_image_models_and_cards_without_a_rate_take_every_frame() -> None:
    assert frame_step(action_card(None), 60.0) == 1
