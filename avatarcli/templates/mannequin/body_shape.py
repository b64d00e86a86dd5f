"""The sculpted body of the built-in SMPL-X-format mannequin: skeleton and surface.

Rest pose is the SMPL-X one (a T-pose, palms down, feet forward), y up, z forward, x to the
body's own left, pelvis joint at the origin, metres. Real SMPL-X motion is defined relative
to that rest pose, which is why the mannequin copies it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from avatarcli.templates.mannequin import head_shape
from avatarcli.templates.mannequin import sdf as S
from avatarcli.templates.skeletons import SMPLX_JOINT_NAMES

# Where the shared head sits on the body (added to head-local coordinates).
HEAD_OFFSET = np.array([0.0, 0.642, 0.012])

_FINGERS = ("index", "middle", "ring", "pinky")
# per finger: knuckle (x, z) on the left hand, fan angle (rad, towards +z), phalanx lengths, radius
_FINGER_SPEC = {
    "index": ((0.776, 0.004), 0.10, (0.040, 0.025, 0.022), 0.0090),
    "middle": ((0.779, -0.016), 0.02, (0.044, 0.028, 0.024), 0.0093),
    "ring": ((0.775, -0.035), -0.07, (0.041, 0.027, 0.023), 0.0088),
    "pinky": ((0.766, -0.052), -0.18, (0.032, 0.020, 0.019), 0.0078),
}
_HAND_Y = 0.437
_THUMB_BASE = np.array([0.700, 0.428, 0.000])
_THUMB_DIR = np.array([0.62, -0.22, 0.75])
_THUMB_LENGTHS = (0.040, 0.031, 0.027)
_THUMB_RADII = (0.0125, 0.0105, 0.0095)


def _mirror(p: np.ndarray) -> np.ndarray:
    return p * np.array([-1.0, 1.0, 1.0])


def _finger_chain(name: str) -> list[np.ndarray]:
    """Left-hand joint positions of one finger: knuckle, middle, last joint, tip."""
    if name == "thumb":
        d = _THUMB_DIR / np.linalg.norm(_THUMB_DIR)
        pts = [_THUMB_BASE]
        for length in _THUMB_LENGTHS:
            pts.append(pts[-1] + length * d)
        return pts
    (x, z), fan, lengths, _ = _FINGER_SPEC[name]
    d = np.array([math.cos(fan), -0.03, math.sin(fan)])
    d /= np.linalg.norm(d)
    pts = [np.array([x, _HAND_Y, z])]
    for length in lengths:
        pts.append(pts[-1] + length * d)
    return pts


def joint_positions() -> np.ndarray:
    """Rest-pose positions of the 55 SMPL-X joints (55, 3), official order."""
    left = {
        "hip": (0.086, -0.080, 0.000),
        "knee": (0.096, -0.500, 0.006),
        "ankle": (0.096, -0.900, -0.030),
        "foot": (0.106, -0.955, 0.095),
        "collar": (0.072, 0.420, -0.012),
        "shoulder": (0.172, 0.440, -0.022),
        "elbow": (0.428, 0.440, -0.030),
        "wrist": (0.680, 0.440, -0.030),
    }
    pos: dict[str, np.ndarray] = {
        "pelvis": np.array([0.0, 0.0, 0.0]),
        "spine1": np.array([0.0, 0.105, -0.016]),
        "spine2": np.array([0.0, 0.235, -0.010]),
        "spine3": np.array([0.0, 0.295, -0.004]),
        "neck": np.array([0.0, 0.490, -0.022]),
        "head": HEAD_OFFSET + np.array([0.0, -0.062, -0.024]),
        "jaw": HEAD_OFFSET + np.array(head_shape.JAW_PIVOT),
        "left_eye_smplhf": HEAD_OFFSET + np.array(head_shape.EYE_CENTERS["left"]),
        "right_eye_smplhf": HEAD_OFFSET + np.array(head_shape.EYE_CENTERS["right"]),
    }
    for k, v in left.items():
        pos[f"left_{k}"] = np.array(v)
        pos[f"right_{k}"] = _mirror(np.array(v))
    for finger in ("thumb", *_FINGERS):
        chain = _finger_chain(finger)
        for i in range(3):
            pos[f"left_{finger}{i + 1}"] = chain[i]
            pos[f"right_{finger}{i + 1}"] = _mirror(chain[i])
    return np.stack([pos[n] for n in SMPLX_JOINT_NAMES])


def fingertips() -> dict[str, np.ndarray]:
    """Left and right fingertip points (past the last joint), keyed like smplx's extra joints."""
    out = {}
    for finger in ("thumb", *_FINGERS):
        tip = _finger_chain(finger)[-1]
        _, _, _, r = _FINGER_SPEC.get(finger, (None, None, None, _THUMB_RADII[-1]))
        d = tip - _finger_chain(finger)[-2]
        tip = tip + 0.9 * r * d / np.linalg.norm(d)
        out[f"l{finger}"] = tip
        out[f"r{finger}"] = _mirror(tip)
    return out


@dataclass(frozen=True)
class Part:
    """One sculpted piece: its surface, the joint that moves it, and how softly it joins."""

    name: str
    joint: str
    sdf: Callable[[Tensor], Tensor]
    blend: float
    axis: tuple[np.ndarray, np.ndarray] | None = None  # a limb's bone: skin behind its start is not its own


def parts() -> list[Part]:
    """The body's pieces in the order they are blended together (head not included)."""
    J = dict(zip(SMPLX_JOINT_NAMES, joint_positions(), strict=True))
    out: list[Part] = [
        Part("pelvis", "pelvis", lambda p: S.ellipsoid(p, (0, -0.030, -0.006), (0.162, 0.112, 0.104)), 0.0),
        Part("abdomen", "spine1", lambda p: S.ellipsoid(p, (0, 0.110, -0.002), (0.138, 0.110, 0.096)), 0.05),
        Part("belly", "spine1", lambda p: S.ellipsoid(p, (0, 0.055, 0.040), (0.110, 0.085, 0.060)), 0.05),
        Part("ribs", "spine2", lambda p: S.ellipsoid(p, (0, 0.220, -0.004), (0.148, 0.100, 0.104)), 0.05),
        Part("chest", "spine3", lambda p: S.ellipsoid(p, (0, 0.330, -0.010), (0.158, 0.125, 0.108)), 0.05),
    ]
    for side, sx in (("left", 1.0), ("right", -1.0)):

        def m(v: tuple[float, float, float], sx: float = sx) -> tuple[float, float, float]:
            return (v[0] * sx, v[1], v[2])

        sh, el, wr = J[f"{side}_shoulder"], J[f"{side}_elbow"], J[f"{side}_wrist"]
        hip, knee, ank = J[f"{side}_hip"], J[f"{side}_knee"], J[f"{side}_ankle"]
        out += [
            Part(f"{side}_pec", "spine3", lambda p, m=m: S.ellipsoid(p, m((0.064, 0.345, 0.058)), (0.068, 0.052, 0.042)), 0.04),
            Part(f"{side}_buttock", "pelvis", lambda p, m=m: S.ellipsoid(p, m((0.070, -0.085, -0.055)), (0.085, 0.095, 0.072)), 0.04),
            Part(
                f"{side}_trapezius",
                f"{side}_collar",
                lambda p, m=m: S.round_cone(p, (0, 0.455, -0.040), m((0.150, 0.440, -0.030)), 0.052, 0.046),
                0.04,
            ),
            Part(f"{side}_deltoid", f"{side}_shoulder", lambda p, m=m: S.sphere(p, m((0.182, 0.436, -0.022)), 0.053), 0.035),
            Part(f"{side}_upper_arm", f"{side}_shoulder", lambda p, a=sh, b=el: S.round_cone(p, a, b, 0.047, 0.036), 0.03, (sh, el)),
            Part(
                f"{side}_biceps", f"{side}_shoulder", lambda p, m=m: S.ellipsoid(p, m((0.300, 0.445, -0.018)), (0.085, 0.039, 0.041)), 0.03
            ),
            Part(f"{side}_forearm", f"{side}_elbow", lambda p, a=el, b=wr: S.round_cone(p, a, b, 0.037, 0.025), 0.02, (el, wr)),
            Part(
                f"{side}_forearm_muscle",
                f"{side}_elbow",
                lambda p, m=m: S.ellipsoid(p, m((0.510, 0.441, -0.030)), (0.095, 0.034, 0.040)),
                0.02,
            ),
            Part(f"{side}_thigh", f"{side}_hip", lambda p, a=hip, b=knee: S.round_cone(p, a, b, 0.084, 0.052), 0.05, (hip, knee)),
            Part(f"{side}_quad", f"{side}_hip", lambda p, m=m: S.ellipsoid(p, m((0.092, -0.280, 0.018)), (0.074, 0.165, 0.070)), 0.04),
            Part(f"{side}_shin", f"{side}_knee", lambda p, a=knee, b=ank: S.round_cone(p, a, b, 0.049, 0.032), 0.03, (knee, ank)),
            Part(f"{side}_calf", f"{side}_knee", lambda p, m=m: S.ellipsoid(p, m((0.097, -0.640, -0.034)), (0.046, 0.105, 0.048)), 0.03),
            Part(f"{side}_heel", f"{side}_ankle", lambda p, m=m: S.ellipsoid(p, m((0.096, -0.938, -0.045)), (0.034, 0.036, 0.044)), 0.02),
            Part(f"{side}_foot", f"{side}_ankle", lambda p, m=m: S.ellipsoid(p, m((0.101, -0.945, 0.035)), (0.041, 0.031, 0.085)), 0.02),
            Part(f"{side}_toes", f"{side}_foot", lambda p, m=m: S.ellipsoid(p, m((0.107, -0.958, 0.128)), (0.044, 0.019, 0.042)), 0.015),
            Part(
                f"{side}_palm",
                f"{side}_wrist",
                lambda p, m=m: S.rounded_box(p, m((0.732, 0.4365, -0.024)), (0.050, 0.0135, 0.037), 0.012),
                0.016,
            ),
        ]
        thumb = [(_mirror(q) if sx < 0 else q) for q in _finger_chain("thumb")]
        for i in range(3):
            out.append(
                Part(
                    f"{side}_thumb{i + 1}",
                    f"{side}_thumb{i + 1}",
                    lambda p, a=thumb[i], b=thumb[i + 1], i=i: S.round_cone(p, a, b, _THUMB_RADII[i], _THUMB_RADII[min(i + 1, 2)] * 0.95),
                    0.012 if i == 0 else 0.004,
                )
            )
        for finger in _FINGERS:
            chain = [(_mirror(q) if sx < 0 else q) for q in _finger_chain(finger)]
            r = _FINGER_SPEC[finger][3]
            for i in range(3):
                out.append(
                    Part(
                        f"{side}_{finger}{i + 1}",
                        f"{side}_{finger}{i + 1}",
                        lambda p, a=chain[i], b=chain[i + 1], r=r, i=i: S.round_cone(p, a, b, r * (1 - 0.06 * i), r * (0.94 - 0.07 * i)),
                        0.006 if i == 0 else 0.002,
                    )
                )
    return out


def body_sdf(p: Tensor, with_head: bool = True) -> Tensor:
    """Signed distance to the mannequin's skin (points (M, 3) -> (M,)), eyeballs excluded."""
    d: Tensor | None = None
    for part in parts():
        v = part.sdf(p)
        d = v if d is None else S.smooth_union(d, v, part.blend)
    assert d is not None
    if with_head:
        off = torch.as_tensor(HEAD_OFFSET, dtype=p.dtype)
        d = S.smooth_union(d, head_shape.head_sdf(p - off, solid_neck=True), 0.03)
    # flat soles
    d = S.smooth_intersect(d, -(p[:, 1] + 0.972), 0.006)
    return d


BODY_LO = np.array([-0.86, -0.985, -0.16])
BODY_HI = np.array([0.86, 0.775, 0.20])
