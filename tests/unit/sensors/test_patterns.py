"""The generated pictures: deterministic per seed, right shapes, and visibly different classes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from edge_app.errors import ConfigError
from edge_app.sensors import patterns


@pytest.mark.parametrize("action", patterns.ACTIONS)
def test_clip_shape_and_determinism(action: str) -> None:
    a = patterns.render_clip(action, 5, 48, 64, np.random.default_rng(7))
    b = patterns.render_clip(action, 5, 48, 64, np.random.default_rng(7))
    c = patterns.render_clip(action, 5, 48, 64, np.random.default_rng(8))
    assert a.shape == (5, 48, 64, 3)
    assert a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize(("height", "width"), [(240, 320), (112, 112), (33, 17)])
def test_any_resolution(height: int, width: int) -> None:
    clip = patterns.render_clip("waving", 2, height, width, np.random.default_rng(0), fps=30.0)
    assert clip.shape == (2, height, width, 3)


def _moved(action: str) -> float:
    """The mean over scenes of the largest share of pixels that changed a lot since frame 0."""
    shares = []
    for seed in range(4):
        clip = patterns.render_clip(action, 8, 60, 80, np.random.default_rng(seed))
        frames = clip.astype(np.int16)
        shares.append(max(float((np.abs(f - frames[0]).sum(-1) > 80).mean()) for f in frames))
    return float(np.mean(shares))


def test_moving_actions_move_and_standing_barely_does() -> None:
    still = _moved("standing_still")
    assert still < 0.005
    for action in patterns.ACTIONS[:-1]:
        assert _moved(action) > 0.008, action


def _figure_column(frame: np.ndarray, background: np.ndarray) -> float:
    mask = np.abs(frame.astype(np.int16) - background.astype(np.int16)).sum(-1) > 80
    return float(np.nonzero(mask)[1].mean())


def test_walking_direction() -> None:
    """The figure's centre moves the way the class says (background = median over time)."""
    for action, sign in (("walking_left", -1), ("walking_right", 1)):
        scene = patterns.ActionScene(action, 120, 160, np.random.default_rng(3), duration=2.0)
        frames = [scene.frame(i / 10) for i in range(21)]
        background = np.median(np.stack(frames), axis=0)
        start = _figure_column(frames[0], background)
        end = _figure_column(frames[-1], background)
        assert sign * (end - start) > 10, (action, start, end)


def test_demo_stream_cycles_through_actions() -> None:
    stream = patterns.demo_stream(24, 32, 10.0, np.random.default_rng(0), seconds_per_action=0.3)
    labels = [label for _, label in itertools.islice(stream, 3 * len(patterns.ACTIONS))]
    assert labels == [a for a in patterns.ACTIONS for _ in range(3)]


def test_demo_walk_stays_in_the_picture() -> None:
    stream = patterns.demo_stream(
        60, 80, 10.0, np.random.default_rng(1), seconds_per_action=4.0, actions=("walking_left",)
    )
    frames = [f for f, _ in itertools.islice(stream, 40)]
    background_ish = np.median(np.stack(frames), axis=0)
    for frame in frames:
        mask = np.abs(frame.astype(np.int16) - background_ish.astype(np.int16)).sum(-1) > 60
        assert mask.any()


@pytest.mark.parametrize("shape", patterns.SHAPES)
def test_shapes(shape: str) -> None:
    a = patterns.render_shape(shape, 120, 160, np.random.default_rng(5))
    b = patterns.render_shape(shape, 120, 160, np.random.default_rng(5))
    assert a.shape == (120, 160, 3)
    assert a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)


def test_still_patterns() -> None:
    bars = patterns.colour_bars(30, 80)
    assert bars.shape == (30, 80, 3)
    assert tuple(bars[0, 0]) == (255, 255, 255)
    assert tuple(bars[-1, -1]) == (0, 0, 0)
    boxes = [patterns.moving_box(40, 60, i) for i in range(3)]
    assert not np.array_equal(boxes[0], boxes[1])
    assert (boxes[0] == 255).any()


@pytest.mark.parametrize("name", ["bars", "box", "actions", "demo", "shapes", "jumping"])
def test_pattern_frames(name: str) -> None:
    frames = list(itertools.islice(patterns.pattern_frames(name, 24, 32, seed=1), 3))
    assert all(f.shape == (24, 32, 3) and f.dtype == np.uint8 for f, _ in frames)
    if name == "jumping":
        assert {label for _, label in frames} == {"jumping"}
    if name == "shapes":
        assert {label for _, label in frames} == {patterns.SHAPES[0]}


def test_bad_names_and_sizes() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match="unknown action"):
        patterns.render_clip("dancing", 2, 32, 32, rng)
    with pytest.raises(ConfigError, match="unknown shape"):
        patterns.render_shape("hexagon", 32, 32, rng)
    with pytest.raises(ConfigError, match="unknown pattern"):
        next(patterns.pattern_frames("nope", 32, 32))
    with pytest.raises(ConfigError, match="too small"):
        patterns.render_clip("waving", 2, 4, 32, rng)
    with pytest.raises(ConfigError, match="frames"):
        patterns.render_clip("waving", 0, 32, 32, rng)
