"""The stick figure's kinematics: where its joints are at time ``t`` for each action class.

Pure geometry, no drawing: ``edge_app.sensors.patterns`` scales the pose to pixels and draws it.
Figure units: height 1, x to the right, y up, origin between the feet on the ground.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edge_app.errors import ConfigError

ACTIONS: tuple[str, ...] = (
    "waving",
    "jumping",
    "walking_left",
    "walking_right",
    "squatting",
    "standing_still",
)

Point = tuple[float, float]

_THIGH = _SHIN = 0.25
_STAND = _THIGH + _SHIN  # hip height of a straight leg
_UPPER_ARM, _FOREARM = 0.17, 0.16
_ARM = (_UPPER_ARM, _FOREARM)
_TORSO, _NECK_HEAD = 0.32, 0.09


@dataclass(frozen=True)
class Pose:
    head: Point
    lines: tuple[tuple[Point, ...], ...]  # polylines: torso, arms, legs


def pose(action: str, t: float, p: dict[str, float]) -> Pose:
    """The figure's joints at time ``t`` (seconds) for one action and its scene parameters."""
    phase = 2 * math.pi * p["freq"] * t + p["phase"]
    if action in {"walking_left", "walking_right"}:
        return _walk(-1.0 if action == "walking_left" else 1.0, t, phase, p["speed"])
    if action == "jumping":
        return _jump(phase, p["height"])
    if action == "squatting":
        return _squat(phase, p["height"])
    if action in {"waving", "standing_still"}:
        return _stand(action == "waving", phase, p["side"])
    raise ConfigError(f"unknown action {action!r}; known: {', '.join(ACTIONS)}")


def _walk(d: float, t: float, phase: float, speed: float) -> Pose:
    """Walking in direction ``d`` (-1 left, +1 right), leaning slightly forward."""
    hip = (d * speed * t, _STAND - 0.02 + 0.015 * abs(math.cos(phase)))
    swing = 0.45 * math.sin(phase)
    knee = 0.35 * max(0.0, math.cos(phase))
    legs = (
        _limb(hip, swing, swing - knee, d),
        _limb(hip, -swing, -swing - 0.35 * max(0.0, -math.cos(phase)), d),
    )
    shoulder = (hip[0] + d * 0.02, hip[1] + _TORSO - 0.02)
    arms = (
        _limb(shoulder, -0.7 * swing, -0.7 * swing + 0.3, d, _ARM),
        _limb(shoulder, 0.7 * swing, 0.7 * swing + 0.3, d, _ARM),
    )
    return _body(hip, d * 0.02, arms, legs)


def _jump(phase: float, height: float) -> Pose:
    """One full hop per cycle (``phase / 2``): knees bend on the ground, arms go up in the air."""
    air = abs(math.sin(phase / 2))
    bend = 0.5 * (1 - air) ** 2
    hip = (0.0, height * air + _STAND * math.cos(bend))
    legs = tuple(_limb(hip, 0.08 + bend, 0.08 - bend, s) for s in (-1.0, 1.0))
    up = 0.3 + 2.2 * air
    return _body(hip, 0.0, _arm_pair(hip, (up, up), (up + 0.2, up + 0.2)), legs)


def _squat(phase: float, height: float) -> Pose:
    depth = height * (1 - math.cos(phase)) / 2
    hip = (0.0, _STAND - depth)
    legs = (_squat_leg(hip, -0.09, -1.0), _squat_leg(hip, 0.09, 1.0))
    reach = 0.2 + 1.3 * depth / height
    return _body(hip, 0.0, _arm_pair(hip, (reach, reach), (reach, reach)), legs)


def _stand(waving: bool, phase: float, side: float) -> Pose:
    """Standing, swaying a little; waving with the left (-1), right (+1) or both (0) arms."""
    hip = (0.004 * math.sin(phase), _STAND)
    legs = tuple(_limb(hip, 0.08, 0.08, s) for s in (-1.0, 1.0))
    if not waving:
        breathe = 0.02 * math.sin(phase)
        return _body(hip, 0.0, _arm_pair(hip, (0.15 + breathe, 0.15 + breathe), (0.2, 0.2)), legs)
    wave = 2.9 + 0.55 * math.sin(phase)
    hang = 0.15
    a1 = (2.3, hang) if side < 0 else (hang, 2.3)
    a2 = (wave, hang + 0.05) if side < 0 else (hang + 0.05, wave)
    if side == 0:
        a1, a2 = (2.3, 2.3), (wave, wave)
    return _body(hip, 0.0, _arm_pair(hip, a1, a2), legs)


def _limb(
    origin: Point, a1: float, a2: float, sx: float, lengths: tuple[float, float] = (_THIGH, _SHIN)
) -> list[Point]:
    """A two-segment limb; angles are measured from straight down, positive outward (``sx``)."""
    l1, l2 = lengths
    joint = (origin[0] + sx * l1 * math.sin(a1), origin[1] - l1 * math.cos(a1))
    end = (joint[0] + sx * l2 * math.sin(a2), joint[1] - l2 * math.cos(a2))
    return [origin, joint, end]


def _squat_leg(hip: Point, foot_x: float, sx: float) -> list[Point]:
    """Inverse kinematics: the knee pushed outward (``sx``) so that the foot stays down."""
    vx, vy = foot_x - hip[0], -hip[1]
    dist = max(math.hypot(vx, vy), 1e-6)
    bend = math.sqrt(max(_THIGH**2 - (min(dist, 2 * _THIGH) / 2) ** 2, 0.0))
    nx, ny = -vy / dist, vx / dist
    if nx * sx < 0:
        nx, ny = -nx, -ny
    knee = (hip[0] + vx / 2 + bend * nx, hip[1] + vy / 2 + bend * ny)
    return [hip, knee, (foot_x, 0.0)]


def _body(
    hip: Point, lean: float, arms: tuple[list[Point], ...], legs: tuple[list[Point], ...]
) -> Pose:
    neck = (hip[0] + lean, hip[1] + _TORSO)
    head = (neck[0], neck[1] + _NECK_HEAD)
    return Pose(head, ((hip, neck), *(tuple(a) for a in arms), *(tuple(g) for g in legs)))


def _arm_pair(
    hip: Point, a1: tuple[float, float], a2: tuple[float, float]
) -> tuple[list[Point], ...]:
    """Both arms from an upright shoulder: upper-arm angles ``a1``, forearm angles ``a2``."""
    shoulder = (hip[0], hip[1] + _TORSO - 0.02)
    return (
        _limb(shoulder, a1[0], a2[0], -1.0, _ARM),
        _limb(shoulder, a1[1], a2[1], 1.0, _ARM),
    )
