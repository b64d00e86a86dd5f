"""Motions generated from code: nothing to download, editable after ``avatar motions NAME -o``.

Angles follow the SMPL-X / FLAME rest pose (y up, facing +z, T-pose with palms down): a
left arm hangs down after a negative turn about z, a hip flexes forward with a negative
turn about x, a knee bends with a positive one, the FLAME jaw opens with a positive turn
about x. Head expressions use the built-in head's components (smile, lips apart, pucker,
brow raise, brow furrow, blink, cheek puff, frown, lip stretch, sneer).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from avatarcli.errors import AvatarError
from avatarcli.motion.motion import Motion, check_fps, check_frames, relaxed_body_pose
from avatarcli.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from avatarcli.templates.mannequin.head_shape import EXPRESSION_NAMES
from avatarcli.templates.skeletons import SMPLX_JOINT_NAMES

B = {name: i for i, name in enumerate(SMPLX_JOINT_NAMES)}
E = {name: i for i, name in enumerate(EXPRESSION_NAMES)}
FINGERS = ("index", "middle", "ring", "pinky")


def _time(seconds: float, fps: float) -> Tensor:
    return torch.arange(round(seconds * fps) + 1, dtype=torch.float32) / fps


def _axis(x: float | Tensor = 0.0, y: float | Tensor = 0.0, z: float | Tensor = 0.0, t: Tensor | None = None) -> Tensor:
    n = 1 if t is None else len(t)

    def col(v: float | Tensor) -> Tensor:
        return v if isinstance(v, Tensor) else torch.full((n,), float(v))

    return torch.stack([col(x), col(y), col(z)], dim=-1)


def _then(first: Tensor, second: Tensor) -> Tensor:
    """Axis-angle of turning by ``first`` and then by ``second`` (both (T, 3))."""
    return matrix_to_axis_angle(axis_angle_to_matrix(second) @ axis_angle_to_matrix(first))


def _blinks(t: Tensor, times: list[float]) -> Tensor:
    out = torch.zeros_like(t)
    for tb in times:
        out = torch.maximum(out, torch.exp(-(((t - tb) / 0.06) ** 2)))
    return out


def soft_hands(rot: Tensor, curl: float = 0.25) -> None:
    """Curl the fingers of SMPL-X rotations ``rot`` (T, 55, 3) gently, in place (thumbs stay)."""
    for side, sign in (("left", -1.0), ("right", 1.0)):
        for finger in FINGERS:
            for k, scale in ((1, 0.7), (2, 1.0), (3, 0.6)):
                rot[:, B[f"{side}_{finger}{k}"], 2] = sign * curl * scale


# -- heads ------------------------------------------------------------------------------------


def head_talk(t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    rot = torch.zeros(len(t), 5, 3)
    syllables = (torch.sin(2 * math.pi * 3.3 * t + 0.9 * torch.sin(2 * math.pi * 0.6 * t))).abs()
    phrase = 0.55 + 0.45 * torch.sin(2 * math.pi * 0.35 * t).clamp(min=-0.2)
    open_ = 0.22 * syllables * phrase
    rot[:, 2, 0] = open_
    rot[:, 1, 0] = 0.05 * torch.sin(2 * math.pi * 0.45 * t)
    rot[:, 1, 1] = 0.10 * torch.sin(2 * math.pi * 0.23 * t + 0.5)
    rot[:, 1, 2] = 0.04 * torch.sin(2 * math.pi * 0.31 * t)
    expr = torch.zeros(len(t), len(EXPRESSION_NAMES))
    expr[:, E["lips_apart"]] = 2.0 * open_
    expr[:, E["pucker"]] = 0.4 * torch.sin(2 * math.pi * 1.7 * t).clamp(min=0)
    expr[:, E["brow_raise"]] = 0.5 * torch.exp(-(((t - 1.6) / 0.35) ** 2)) + 0.4 * torch.exp(-(((t - 3.4) / 0.3) ** 2))
    expr[:, E["smile"]] = 0.25
    expr[:, E["blink"]] = _blinks(t, [0.9, 2.7, 3.9])
    return rot, expr, torch.zeros(len(t), 3)


def head_smile(t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    rot = torch.zeros(len(t), 5, 3)
    ramp = torch.clamp(t / 0.8, 0, 1) - 0.7 * torch.clamp((t - 2.2) / 0.8, 0, 1)
    expr = torch.zeros(len(t), len(EXPRESSION_NAMES))
    expr[:, E["smile"]] = ramp
    expr[:, E["cheek_puff"]] = 0.3 * ramp
    expr[:, E["blink"]] = _blinks(t, [1.5])
    rot[:, 1, 2] = 0.08 * ramp
    rot[:, 2, 0] = 0.05 * ramp
    return rot, expr, torch.zeros(len(t), 3)


def head_blink(t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    expr = torch.zeros(len(t), len(EXPRESSION_NAMES))
    expr[:, E["blink"]] = _blinks(t, [0.4, 1.1, 1.35])
    return torch.zeros(len(t), 5, 3), expr, torch.zeros(len(t), 3)


def head_nod(t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    rot = torch.zeros(len(t), 5, 3)
    rot[:, 1, 0] = 0.25 * torch.sin(2 * math.pi * 0.9 * t) * torch.clamp(t / 0.3, 0, 1)
    expr = torch.zeros(len(t), len(EXPRESSION_NAMES))
    expr[:, E["smile"]] = 0.3
    expr[:, E["blink"]] = _blinks(t, [1.8])
    return rot, expr, torch.zeros(len(t), 3)


def head_turn(t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    rot = torch.zeros(len(t), 5, 3)
    yaw = 0.8 * torch.sin(2 * math.pi * t / t[-1].clamp(min=1e-6))
    rot[:, 1, 1] = yaw
    rot[:, 3, 1] = 0.3 * torch.sin(2 * math.pi * t / t[-1].clamp(min=1e-6) + 0.5)  # eyes lead the head
    rot[:, 4, 1] = rot[:, 3, 1]
    expr = torch.zeros(len(t), len(EXPRESSION_NAMES))
    expr[:, E["blink"]] = _blinks(t, [1.0, 3.0])
    return rot, expr, torch.zeros(len(t), 3)


# -- bodies -----------------------------------------------------------------------------------


def _arms_down(rot: Tensor, t: Tensor, swing_left: Tensor | float = 0.0, swing_right: Tensor | float = 0.0, lower: float = 1.25) -> None:
    """Hang both arms, then swing each forward (positive) about the world x axis."""
    for side, sign, swing in (("left", -1.0, swing_left), ("right", 1.0, swing_right)):
        down = _axis(z=sign * lower, t=t)
        fwd = _axis(x=-swing if isinstance(swing, Tensor) else -float(swing), t=t)
        rot[:, B[f"{side}_shoulder"]] = _then(down, fwd)
        rot[:, B[f"{side}_elbow"]] = _axis(y=sign * 0.25, t=t)


def body_idle(t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    rot = relaxed_body_pose(len(t))
    breath = torch.sin(2 * math.pi * 0.25 * t)
    _arms_down(rot, t, 0.05 * breath, 0.05 * breath, lower=1.22)
    rot[:, B["spine3"], 0] = -0.025 * breath
    rot[:, B["spine1"], 2] = 0.03 * torch.sin(2 * math.pi * 0.12 * t)
    rot[:, B["head"], 1] = 0.25 * torch.sin(2 * math.pi * 0.15 * t)
    rot[:, B["neck"], 0] = 0.05 * torch.sin(2 * math.pi * 0.21 * t)
    rot[:, B["left_hip"], 2] = 0.04 * torch.sin(2 * math.pi * 0.12 * t)
    rot[:, B["right_hip"], 2] = 0.04 * torch.sin(2 * math.pi * 0.12 * t)
    soft_hands(rot)
    trans = _axis(x=0.015 * torch.sin(2 * math.pi * 0.12 * t), t=t)
    expr = torch.zeros(len(t), len(EXPRESSION_NAMES))
    expr[:, E["blink"]] = _blinks(t, [1.2, 3.8, 5.1])
    return rot, expr, trans


def body_walk(t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    rot = torch.zeros(len(t), 55, 3)
    phase = 2 * math.pi * t / 1.1
    for side, shift in (("left", 0.0), ("right", math.pi)):
        p = phase + shift
        rot[:, B[f"{side}_hip"], 0] = -0.42 * torch.sin(p)
        rot[:, B[f"{side}_knee"], 0] = 0.08 + 0.65 * torch.clamp(torch.sin(p + 1.2), min=0) ** 1.5
        rot[:, B[f"{side}_ankle"], 0] = 0.15 * torch.sin(p - 0.6)
    _arms_down(rot, t, 0.35 * torch.sin(phase + math.pi), 0.35 * torch.sin(phase))
    rot[:, 0, 1] = 0.08 * torch.sin(phase)
    rot[:, B["spine3"], 1] = -0.12 * torch.sin(phase)
    rot[:, B["spine1"], 0] = 0.05
    soft_hands(rot)
    trans = _axis(x=0.0, y=0.018 * torch.cos(2 * phase), z=1.25 * t, t=t)
    expr = torch.zeros(len(t), len(EXPRESSION_NAMES))
    expr[:, E["blink"]] = _blinks(t, [1.7, 3.3])
    return rot, expr, trans


def body_wave(t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    rot = relaxed_body_pose(len(t))
    _arms_down(rot, t)
    raise_ = torch.clamp(t / 0.6, 0, 1)
    rot[:, B["right_shoulder"]] = _axis(z=1.25 - 2.25 * raise_, t=t)
    rot[:, B["right_elbow"]] = _axis(z=-raise_ * (0.65 + 0.35 * torch.sin(2 * math.pi * 1.8 * t)), t=t)
    rot[:, B["right_wrist"], 2] = -0.2 * raise_ * torch.sin(2 * math.pi * 1.8 * t + 0.6)
    rot[:, B["head"], 2] = 0.08 * raise_
    rot[:, B["spine3"], 2] = 0.05 * raise_
    soft_hands(rot)
    for finger in FINGERS:  # an open, waving hand
        for k in (1, 2, 3):
            rot[:, B[f"right_{finger}{k}"], 2] = 0.05
    expr = torch.zeros(len(t), len(EXPRESSION_NAMES))
    expr[:, E["smile"]] = 0.8 * raise_
    expr[:, E["blink"]] = _blinks(t, [2.2])
    return rot, expr, torch.zeros(len(t), 3)


def body_dance(t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    rot = torch.zeros(len(t), 55, 3)
    beat = 2 * math.pi * 2.0 * t  # 120 beats a minute
    sway = torch.sin(beat / 2)
    bounce = torch.sin(beat).abs()
    for side, sign in (("left", 1.0), ("right", -1.0)):
        rot[:, B[f"{side}_hip"], 0] = -0.25 * bounce
        rot[:, B[f"{side}_knee"], 0] = 0.5 * bounce
        rot[:, B[f"{side}_ankle"], 0] = -0.25 * bounce
        lift = 0.6 + 0.5 * torch.sin(beat / 2 + (0 if sign > 0 else math.pi))
        rot[:, B[f"{side}_shoulder"]] = _axis(z=-sign * (0.6 - 0.8 * lift), t=t)
        rot[:, B[f"{side}_elbow"]] = _axis(y=-sign * (1.3 + 0.3 * torch.sin(beat)), t=t)
    rot[:, 0, 2] = 0.10 * sway
    rot[:, B["spine2"], 1] = 0.25 * sway
    rot[:, B["spine3"], 2] = -0.12 * sway
    rot[:, B["head"], 2] = 0.15 * torch.sin(beat / 2 + 0.7)
    soft_hands(rot, 0.5)
    trans = _axis(x=0.06 * sway, y=-0.06 * bounce, t=t)
    expr = torch.zeros(len(t), len(EXPRESSION_NAMES))
    expr[:, E["smile"]] = 1.0
    expr[:, E["lips_apart"]] = 0.4 * bounce
    return rot, expr, trans


def body_turn(t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    rot = relaxed_body_pose(len(t))
    _arms_down(rot, t)
    rot[:, 0, 1] = 2 * math.pi * t / t[-1].clamp(min=1e-6)
    soft_hands(rot)
    expr = torch.zeros(len(t), len(EXPRESSION_NAMES))
    return rot, expr, torch.zeros(len(t), 3)


@dataclass(frozen=True)
class Builtin:
    kind: str
    seconds: float
    description: str
    make: Callable[[Tensor], tuple[Tensor, Tensor, Tensor]]


BUILTINS: dict[str, dict[str, Builtin]] = {
    "head": {
        "talk": Builtin("head", 4.0, "speech-like jaw, lips and head motion with blinks", head_talk),
        "smile": Builtin("head", 3.0, "a smile that grows and relaxes", head_smile),
        "blink": Builtin("head", 2.0, "three blinks, one double", head_blink),
        "nod": Builtin("head", 3.0, "nodding yes", head_nod),
        "turn": Builtin("head", 4.0, "looking left and right", head_turn),
    },
    "body": {
        "idle": Builtin("body", 6.0, "standing, breathing, shifting weight", body_idle),
        "walk": Builtin("body", 4.4, "walking forward at 1.25 m/s", body_walk),
        "wave": Builtin("body", 4.0, "raising the right hand and waving", body_wave),
        "dance": Builtin("body", 6.0, "bouncing to 120 bpm", body_dance),
        "turn": Builtin("body", 4.0, "turning around on the spot", body_turn),
    },
}


def find_builtin(name: str, kind: str | None = None) -> Builtin | None:
    """The built-in called ``name``, preferring ``kind``'s when both kinds have one; None if none."""
    if kind in BUILTINS and name in BUILTINS[kind]:
        return BUILTINS[kind][name]
    matches = [b[name] for b in BUILTINS.values() if name in b]
    if len(matches) > 1:
        raise AvatarError(f"both heads and bodies have a built-in motion {name!r}: say which with --model head or --model body")
    return matches[0] if matches else None


def builtin_motion(name: str, kind: str | None = None, seconds: float | None = None, fps: float = 30.0) -> Motion:
    """The built-in motion ``name`` at ``fps`` (its own length unless ``seconds`` is given)."""
    spec = find_builtin(name, kind)
    if spec is None:
        names = sorted({n for b in BUILTINS.values() for n in b})
        raise AvatarError(f"unknown motion {name!r}; built-in motions: {', '.join(names)}")
    length = spec.seconds if seconds is None else seconds
    if not (math.isfinite(length) and length > 0):
        raise AvatarError(f"the length of a motion must be a positive number of seconds (got {length:g})")
    check_fps(fps)
    check_frames(length * fps + 1, length, fps)  # before rounding: a product may overflow
    t = _time(length, fps)
    rot, expr, trans = spec.make(t)
    return Motion(spec.kind, rot.float(), expr.float(), trans.float(), float(fps), f"built-in '{name}'").validate()
