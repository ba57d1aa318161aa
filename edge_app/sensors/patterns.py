"""Generated pictures: stick-figure action clips, coloured shapes and still test patterns.

One renderer serves three users: the training scripts in ``models/`` (so the committed models
learn from it), the sensor's ``pattern:NAME`` source and the one-machine demo (so the fleet
recognizes what it was trained on, with no camera attached). Everything is numpy + Pillow,
deterministic for a given ``numpy.random.Generator``, RGB ``uint8`` at any resolution.
Each scene draws its own variation (position, size, speed, phase, colours, background, noise)
so a model trained on it generalizes to unseen scenes. The figure's joints come from
``edge_app.sensors.figure``; this module draws them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw

from edge_app.errors import ConfigError
from edge_app.sensors.figure import ACTIONS, Point, pose

__all__ = [
    "ACTIONS",
    "SHAPES",
    "STILL_PATTERNS",
    "ActionScene",
    "colour_bars",
    "demo_stream",
    "moving_box",
    "pattern_frames",
    "render_clip",
    "render_shape",
]

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "ring")
STILL_PATTERNS: tuple[str, ...] = ("bars", "box")

_SS = 2  # supersampling factor: draw at 2x, downsample with a box filter = antialiasing
_Pixels = npt.NDArray[np.uint8]
_BARS = ((255, 255, 255), (255, 255, 0), (0, 255, 255), (0, 255, 0), (255, 0, 255), (255, 0, 0))
_BARS_TAIL = ((0, 0, 255), (0, 0, 0))


def _check_size(height: int, width: int) -> None:
    if height < 8 or width < 8:
        raise ConfigError(f"picture size {height}x{width} is too small (min 8x8)")


def _luma(rgb: npt.NDArray[Any]) -> float:
    return float(rgb @ np.array([0.299, 0.587, 0.114]))


def _contrasting(
    rng: np.random.Generator, against: npt.NDArray[Any], min_diff: float = 90
) -> npt.NDArray[Any]:
    """A random colour whose luminance differs from ``against`` by at least ``min_diff``."""
    for _ in range(64):
        colour = rng.integers(0, 256, 3)
        if abs(_luma(colour) - _luma(against)) >= min_diff:
            return colour
    return np.array([255, 255, 255]) if _luma(against) < 128 else np.array([0, 0, 0])


def _background(height: int, width: int, rng: np.random.Generator, clutter: bool) -> Image.Image:
    """A gradient in a random colour, optionally with a few muted blocks (static clutter)."""
    base = rng.integers(20, 236, 3).astype(np.float32)
    tilt = rng.uniform(-40, 40, 3).astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    # A linear ramp survives bilinear upscaling exactly: compute it small, let Pillow enlarge it.
    gh, gw = max(2, height // 8), max(2, width // 8)
    xx = np.linspace(0, np.cos(angle), gw, dtype=np.float32)
    yy = np.linspace(0, np.sin(angle), gh, dtype=np.float32)
    ramp = (yy[:, None] + xx[None, :])[..., None]
    pixels = np.clip(base + tilt * ramp, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB").resize((width, height), Image.Resampling.BILINEAR)
    if clutter:
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(0, 4))):
            x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
            w, h = rng.uniform(0.05, 0.3) * width, rng.uniform(0.05, 0.3) * height
            colour = tuple(int(v) for v in np.clip(base + rng.uniform(-50, 50, 3), 0, 255))
            box = (x0, y0, x0 + w, y0 + h)
            if rng.random() < 0.5:
                draw.rectangle(box, fill=colour)
            else:
                draw.ellipse(box, fill=colour)
    return image


def _mean_colour(image: Image.Image) -> npt.NDArray[Any]:
    mean: npt.NDArray[Any] = np.asarray(image.reduce(8), dtype=np.float32).mean((0, 1))
    return mean


def _finish(image: Image.Image, noise: float, rng: np.random.Generator) -> _Pixels:
    """Downsample the supersampled picture and add sensor noise."""
    small = image.reduce(_SS)
    pixels = np.asarray(small, dtype=np.float32)
    if noise > 0:
        grain = rng.standard_normal(pixels.shape, dtype=np.float32)
        grain *= np.float32(noise)
        pixels = pixels + grain
    pixels += np.float32(0.5)
    return np.clip(pixels, 0, 255, out=pixels).astype(np.uint8)


_FREQ = {  # (low, high) cycles per second
    "waving": (1.5, 3.0),
    "jumping": (0.6, 1.0),  # full hops per second = freq (phase/2 in figure.pose)
    "squatting": (0.6, 1.1),
    "standing_still": (0.2, 0.4),
}


class ActionScene:
    """One stick figure doing one action in front of one background; ``frame(t)`` renders it."""

    def __init__(
        self, action: str, height: int, width: int, rng: np.random.Generator, duration: float = 1.0
    ) -> None:
        if action not in ACTIONS:
            raise ConfigError(f"unknown action {action!r}; known: {', '.join(ACTIONS)}")
        _check_size(height, width)
        self.action, self.height, self.width = action, height, width
        self._rng = rng
        jump = float(rng.uniform(0.15, 0.3))
        reach = 1.1 + (jump if action == "jumping" else 0.0)  # highest point, figure heights
        size = float(rng.uniform(0.45, 0.75)) * height * _SS
        self._size = min(size, 0.93 * height * _SS / reach)  # figure height in pixels
        params = {"phase": float(rng.uniform(0, 2 * math.pi)), "side": float(rng.integers(-1, 2))}
        params["height"] = jump
        if action.startswith("walking"):
            self._plan_walk(params, duration)
        else:
            low, high = _FREQ[action]
            params["freq"] = float(rng.uniform(low, high))
            self._x = float(rng.uniform(0.25, 0.75)) * width * _SS
        self._params = params
        ground_low = max(self._size * reach, 0.7 * height * _SS)
        self._ground = float(rng.uniform(ground_low, 0.97 * height * _SS))
        self._bg = _background(height * _SS, width * _SS, rng, clutter=True)
        self._colour = tuple(int(c) for c in _contrasting(rng, _mean_colour(self._bg)))
        self._line = max(float(rng.uniform(0.035, 0.06)) * self._size, 1.5 * _SS)
        self._filled_head = bool(rng.random() < 0.5)
        self._noise = float(rng.uniform(0.0, 6.0))

    def _plan_walk(self, params: dict[str, float], duration: float) -> None:
        """Pick a speed and a start so the walk stays in the picture for ``duration`` seconds."""
        room = (self.width * _SS - 0.5 * self._size) / self._size  # in figure heights
        fastest = max(0.4, min(1.2, room / max(duration, 1e-3)))
        speed = float(self._rng.uniform(0.4, fastest))
        params["speed"] = speed
        params["freq"] = speed / float(self._rng.uniform(0.45, 0.65))
        span = min(speed * duration * self._size, self.width * _SS - 0.5 * self._size)
        margin = 0.25 * self._size
        start = float(self._rng.uniform(margin, max(margin, self.width * _SS - margin - span)))
        self._x = start if self.action == "walking_right" else self.width * _SS - start

    def frame(self, t: float) -> _Pixels:
        """The picture at time ``t`` seconds after the scene started, (H, W, 3) RGB uint8."""
        figure = pose(self.action, t, self._params)
        image = self._bg.copy()
        draw = ImageDraw.Draw(image)
        s, x0, g = self._size, self._x, self._ground
        width = round(self._line)

        def px(p: Point) -> tuple[float, float]:
            return (x0 + p[0] * s, g - p[1] * s)

        for line in figure.lines:
            draw.line([px(p) for p in line], fill=self._colour, width=width, joint="curve")
        hx, hy = px(figure.head)
        r = 0.085 * s
        box = (hx - r, hy - r, hx + r, hy + r)
        if self._filled_head:
            draw.ellipse(box, fill=self._colour)
        else:
            draw.ellipse(box, outline=self._colour, width=width)
        return _finish(image, self._noise, self._rng)


def render_clip(
    action: str,
    frames: int,
    height: int,
    width: int,
    rng: np.random.Generator,
    *,
    fps: float = 15.0,
) -> _Pixels:
    """A clip of ``frames`` pictures of one random scene at ``fps``: (T, H, W, 3) RGB uint8."""
    if frames < 1 or fps <= 0:
        raise ConfigError(f"need frames >= 1 and fps > 0, got {frames} and {fps}")
    scene = ActionScene(action, height, width, rng, duration=frames / fps)
    return np.stack([scene.frame(i / fps) for i in range(frames)])


def demo_stream(
    height: int,
    width: int,
    fps: float,
    rng: np.random.Generator,
    *,
    seconds_per_action: float = 4.0,
    actions: tuple[str, ...] = ACTIONS,
) -> Iterator[tuple[_Pixels, str]]:
    """Endless (frame, action) pairs cycling through ``actions``, a new scene for each."""
    per_action = max(1, round(seconds_per_action * fps))
    while True:
        for action in actions:
            scene = ActionScene(action, height, width, rng, duration=per_action / fps)
            for i in range(per_action):
                yield scene.frame(i / fps), action


# --- shapes for the image classifier ----------------------------------------------------------
def _shape_polygons(shape: str, r: float, turn: float) -> list[list[Point]]:
    def ring(n: int, radius: float, start: float) -> list[Point]:
        return [
            (
                radius * math.cos(start + 2 * math.pi * k / n),
                radius * math.sin(start + 2 * math.pi * k / n),
            )
            for k in range(n)
        ]

    if shape == "square":
        return [ring(4, r, turn + math.pi / 4)]
    if shape == "triangle":
        return [ring(3, r, turn - math.pi / 2)]
    if shape == "star":
        outer, inner = ring(5, r, turn), ring(5, 0.42 * r, turn + math.pi / 5)
        return [[p for pair in zip(outer, inner, strict=True) for p in pair]]
    if shape == "cross":
        w = 0.32 * r
        arm = [(-r, -w), (r, -w), (r, w), (-r, w)]
        c, s = math.cos(turn), math.sin(turn)
        bar = [(x * c - y * s, x * s + y * c) for x, y in arm]
        return [bar, [(-y, x) for x, y in bar]]
    raise ConfigError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")


def render_shape(shape: str, height: int, width: int, rng: np.random.Generator) -> _Pixels:
    """One coloured shape near the middle of a random background: (H, W, 3) RGB uint8."""
    if shape not in SHAPES:
        raise ConfigError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    _check_size(height, width)
    h, w = height * _SS, width * _SS
    image = _background(h, w, rng, clutter=False)
    colour = tuple(int(c) for c in _contrasting(rng, _mean_colour(image)))
    side = min(h, w)
    r = float(rng.uniform(0.18, 0.36)) * side
    cx = w / 2 + float(rng.uniform(-1, 1)) * (side / 2 - r) * 0.8
    cy = h / 2 + float(rng.uniform(-1, 1)) * (side / 2 - r) * 0.8
    draw = ImageDraw.Draw(image)
    if shape in ("circle", "ring"):
        box = (cx - r, cy - r, cx + r, cy + r)
        if shape == "circle":
            draw.ellipse(box, fill=colour)
        else:
            draw.ellipse(box, outline=colour, width=max(2, round(float(rng.uniform(0.2, 0.3)) * r)))
    else:
        for poly in _shape_polygons(shape, r, float(rng.uniform(0, 2 * math.pi))):
            draw.polygon([(cx + x, cy + y) for x, y in poly], fill=colour)
    return _finish(image, float(rng.uniform(0.0, 6.0)), rng)


# --- still test patterns ----------------------------------------------------------------------
def colour_bars(height: int, width: int) -> _Pixels:
    """SMPTE-like vertical colour bars: (H, W, 3) RGB uint8, the same every time."""
    _check_size(height, width)
    colours = np.array(_BARS + _BARS_TAIL, dtype=np.uint8)
    columns = (np.arange(width) * len(colours)) // width
    return np.broadcast_to(colours[columns][None], (height, width, 3)).copy()


def moving_box(height: int, width: int, index: int, period: int = 60) -> _Pixels:
    """A white box bouncing across a dark grey picture; frame ``index`` of a ``period`` loop."""
    _check_size(height, width)
    pixels = np.full((height, width, 3), 40, dtype=np.uint8)
    size = max(2, min(height, width) // 4)
    pos = (index % period) / period
    x = round((1 - abs(2 * pos - 1)) * (width - size))
    y = (height - size) // 2
    pixels[y : y + size, x : x + size] = 255
    return pixels


def pattern_frames(
    name: str, height: int, width: int, fps: float = 15.0, seed: int = 0
) -> Iterator[tuple[_Pixels, str | None]]:
    """Endless frames of a named pattern for the sensor's ``pattern:NAME`` source.

    ``bars`` and ``box`` are still test patterns (label None); ``actions`` (alias ``demo``)
    cycles the action classes (label = the action shown); an action name repeats that action in
    new scenes; ``shapes`` shows each shape class for a second in turn (label = the shape).
    """
    rng = np.random.default_rng(seed)
    if name == "bars":
        bars = colour_bars(height, width)
        while True:
            yield bars.copy(), None
    elif name == "box":
        index = 0
        while True:
            yield moving_box(height, width, index), None
            index += 1
    elif name in ("actions", "demo"):
        yield from demo_stream(height, width, fps, rng)
    elif name == "shapes":
        while True:
            for shape in SHAPES:
                picture = render_shape(shape, height, width, rng)
                for _ in range(max(1, round(fps))):
                    yield picture.copy(), shape
    elif name in ACTIONS:
        yield from demo_stream(height, width, fps, rng, actions=(name,))
    else:
        known = ", ".join((*STILL_PATTERNS, "actions", "demo", "shapes", *ACTIONS))
        raise ConfigError(f"unknown pattern {name!r}; known: {known}")
