"""The sculpted head shared by both mannequins: its surface, its feature points, its face rig.

Coordinates are head-local metres: y up, z out of the face, x towards the head's own left.
The head mannequin uses them as they are; the body mannequin places the same head on its
neck, so both templates share one face (landmarks, expressions, eyes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from avatarcli.templates.mannequin import sdf as S

EYE_RADIUS = 0.0120
EYE_CENTERS = {"left": (0.0320, 0.0050, 0.0575), "right": (-0.0320, 0.0050, 0.0575)}
# Half-angles of the almond-shaped opening between the lids (radians, around each eyeball).
LID_HALF_WIDTH = 1.00
LID_HALF_HEIGHT = 0.40
MOUTH_Y = -0.0685
MOUTH_HALF_WIDTH = 0.026
JAW_PIVOT = (0.0, -0.030, -0.012)
NECK_TOP = (0.0, -0.072, -0.022)
NECK_BASE = (0.0, -0.175, -0.032)


@dataclass(frozen=True)
class HeadBounds:
    lo: tuple[float, float, float] = (-0.097, -0.180, -0.125)
    hi: tuple[float, float, float] = (0.097, 0.125, 0.122)


def _eye_opening(p: Tensor, center: tuple[float, float, float], side: float) -> Tensor:
    """Distance-like field of the almond between the lids: negative inside the opening cone."""
    q = p - torch.as_tensor(center, dtype=p.dtype)
    horiz = torch.atan2(q[:, 0] * side, q[:, 2])  # positive towards the outer corner
    flat = torch.sqrt(q[:, 0] ** 2 + q[:, 2] ** 2)
    vert = torch.atan2(q[:, 1], flat) - 0.06 * horiz  # outer corner sits a little higher
    half_h = LID_HALF_HEIGHT * torch.sqrt((1.0 - (horiz / LID_HALF_WIDTH) ** 2).clamp_min(0.0))
    half_h = half_h.clamp_min(1e-3)
    u = horiz / LID_HALF_WIDTH
    v = vert / half_h
    ang = torch.sqrt(u * u + v * v)
    return (ang - 1.0) * LID_HALF_HEIGHT * q.norm(dim=-1).clamp_min(1e-4) * 0.5


def head_sdf(p: Tensor, solid_neck: bool = False) -> Tensor:
    """Signed distance to the head's skin, in head-local coordinates (points (M, 3) -> (M,)).

    The eyeballs are separate meshes and are not part of this surface; their sockets and
    lids are. ``solid_neck`` lengthens the neck so a body can blend into it.
    """
    d = S.ellipsoid(p, (0.0, 0.020, -0.015), (0.074, 0.094, 0.098))
    d = S.smooth_union(d, S.ellipsoid(p, (0.0, -0.028, 0.034), (0.061, 0.066, 0.056)), 0.02)
    d = S.smooth_union(d, S.ellipsoid(p, (0.0, -0.074, 0.030), (0.049, 0.048, 0.050)), 0.02)
    for sx in (1.0, -1.0):
        d = S.smooth_union(d, S.round_cone(p, (0.050 * sx, -0.060, -0.014), (0.018 * sx, -0.111, 0.058), 0.012, 0.012), 0.022)
        d = S.smooth_union(d, S.ellipsoid(p, (0.046 * sx, -0.013, 0.057), (0.020, 0.013, 0.018)), 0.012)
    d = S.smooth_union(d, S.sphere(p, (0.0, -0.109, 0.068), 0.017), 0.012)
    d = S.smooth_union(d, S.capsule(p, (-0.040, 0.029, 0.071), (0.040, 0.029, 0.071), 0.011), 0.014)

    # eyes: socket, lids wrapped around the eyeball, and the opening between the lids
    for side, c in (("left", EYE_CENTERS["left"]), ("right", EYE_CENTERS["right"])):
        sx = 1.0 if side == "left" else -1.0
        d = S.smooth_subtract(d, S.ellipsoid(p, (c[0], c[1] + 0.001, c[2] + 0.014), (0.019, 0.0125, 0.014)), 0.006)
        d = S.smooth_union(d, S.sphere(p, c, EYE_RADIUS + 0.0019), 0.004)
        inner = -(S.sphere(p, c, EYE_RADIUS - 0.0015))  # outside the (shrunken) eyeball
        opening = S.smooth_intersect(_eye_opening(p, c, sx), inner, 0.0005)
        d = S.smooth_subtract(d, opening, 0.0015)

    # nose
    d = S.smooth_union(d, S.round_cone(p, (0.0, 0.014, 0.078), (0.0, -0.027, 0.101), 0.0072, 0.0092), 0.007)
    d = S.smooth_union(d, S.sphere(p, (0.0, -0.0325, 0.1020), 0.0112), 0.005)
    for sx in (1.0, -1.0):
        d = S.smooth_union(d, S.sphere(p, (0.0140 * sx, -0.0365, 0.0885), 0.0088), 0.005)
    d = S.smooth_union(d, S.ellipsoid(p, (0.0, -0.0430, 0.0930), (0.0085, 0.0060, 0.0100)), 0.004)
    for sx in (1.0, -1.0):
        d = S.smooth_subtract(d, S.ellipsoid(p, (0.0078 * sx, -0.0455, 0.0945), (0.0036, 0.0022, 0.0058)), 0.0012)

    # mouth: muzzle, lips, the slit between them and the cavity behind
    d = S.smooth_union(d, S.ellipsoid(p, (0.0, -0.064, 0.061), (0.035, 0.028, 0.030)), 0.012)
    d = S.smooth_union(d, S.ellipsoid(p, (0.0, -0.0610, 0.0890), (0.0240, 0.0072, 0.0086)), 0.004)
    d = S.smooth_union(d, S.ellipsoid(p, (0.0, -0.0765, 0.0868), (0.0210, 0.0078, 0.0090)), 0.004)
    d = S.smooth_subtract(d, S.ellipsoid(p, (0.0, MOUTH_Y, 0.0930), (MOUTH_HALF_WIDTH, 0.0016, 0.0230)), 0.0012)
    d = S.smooth_subtract(d, S.ellipsoid(p, (0.0, MOUTH_Y, 0.0680), (0.0210, 0.0090, 0.0150)), 0.003)

    # ears: a tilted shell with a bowl pressed into it
    for sx in (1.0, -1.0):
        rot = S.rotation_xyz(0.0, -0.26 * sx, 0.10 * sx)
        d = S.smooth_union(d, S.ellipsoid(p, (0.0745 * sx, -0.006, -0.013), (0.0105, 0.0300, 0.0180), rot), 0.006)
        d = S.smooth_subtract(d, S.ellipsoid(p, (0.0835 * sx, -0.010, -0.009), (0.0055, 0.0125, 0.0090), rot), 0.002)

    # neck
    base = (NECK_BASE[0], NECK_BASE[1] - (0.12 if solid_neck else 0.0), NECK_BASE[2])
    d = S.smooth_union(d, S.round_cone(p, NECK_TOP, base, 0.050, 0.056), 0.025)
    return d


def eyeball_mesh(center: tuple[float, float, float], subdivisions: int) -> tuple[np.ndarray, np.ndarray]:
    """An icosphere eyeball of :data:`EYE_RADIUS` at ``center``: vertices (V, 3), faces (F, 3)."""
    import trimesh

    sph = trimesh.creation.icosphere(subdivisions=subdivisions, radius=EYE_RADIUS)
    return np.asarray(sph.vertices) + np.asarray(center), np.asarray(sph.faces)


# ----------------------------------------------------------------------------------------
# Face rig: which joint moves which skin, expression and shape directions, landmarks.
# All functions take skin vertices in head-local coordinates (V, 3), numpy float64.

REGION_HEAD, REGION_JAW, REGION_NECK, REGION_LOWER_NECK = 0, 1, 2, 3


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _bump(p: np.ndarray, center: tuple[float, float, float], sigma: tuple[float, float, float]) -> np.ndarray:
    q = (p - np.asarray(center)) / np.asarray(sigma)
    return np.exp(-0.5 * (q * q).sum(1))


def mandible_height(z: np.ndarray) -> np.ndarray:
    """Height of the lower edge of the jaw at depth ``z`` (chin to jaw angle)."""
    return -0.127 - 0.65 * (z - 0.06)


def face_regions(p: np.ndarray) -> np.ndarray:
    """Region code per skin vertex (V,): head, jaw, upper neck or lower neck."""
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    ax = np.abs(x)
    # the jaw: below the lips' parting line (rising towards the jaw joints), above the
    # mandible's lower edge and in front of its back edge
    top = np.where(ax < MOUTH_HALF_WIDTH, MOUTH_Y, MOUTH_Y + (ax - MOUTH_HALF_WIDTH) * 0.75)
    jaw = (y < top) & (y > mandible_height(z)) & (z > -0.022)
    region = np.full(len(p), REGION_HEAD)
    region[jaw] = REGION_JAW
    below = (y < mandible_height(z)) | ((y < -0.085) & (z < -0.022))
    region[below] = REGION_NECK
    region[below & (y < -0.145)] = REGION_LOWER_NECK
    return region


def _rotate_about_x(q: np.ndarray, angle: np.ndarray) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    out = q.copy()
    out[:, 1] = q[:, 1] * c - q[:, 2] * s
    out[:, 2] = q[:, 1] * s + q[:, 2] * c
    return out


EXPRESSION_NAMES = (
    "smile", "lips_apart", "pucker", "brow_raise", "brow_furrow",
    "blink", "cheek_puff", "frown", "lip_stretch", "sneer",
)  # fmt: skip


def expression_basis(p: np.ndarray) -> np.ndarray:
    """Expression displacements (V, 3, 10) at coefficient 1, in the order of EXPRESSION_NAMES.

    They move lips, mouth corners, cheeks, brows and lids, and none of them is a jaw
    rotation (the jaw joint does that).
    """
    x = p[:, 0]
    side = np.sign(x) + (x == 0)
    out = np.zeros((len(p), 3, len(EXPRESSION_NAMES)))
    corner = np.stack(
        [
            np.exp(-0.5 * (((p - np.array([s * MOUTH_HALF_WIDTH, MOUTH_Y, 0.085])) / np.array([0.016, 0.014, 0.02])) ** 2).sum(1))
            for s in (1.0, -1.0)
        ]
    )
    corner = corner.max(0)
    front = _smoothstep(0.02, 0.05, p[:, 2])
    # smile: corners up and back, cheeks lifted
    cheek = _bump(np.c_[np.abs(x), p[:, 1:]], (0.036, -0.040, 0.070), (0.020, 0.018, 0.025))
    out[:, 0, 0] = side * 0.004 * corner
    out[:, 1, 0] = 0.006 * corner + 0.003 * cheek
    out[:, 2, 0] = -0.004 * corner + 0.002 * cheek
    # lips apart, without moving the jaw
    upper = _bump(p, (0.0, -0.060, 0.088), (0.022, 0.007, 0.02)) * (p[:, 1] > MOUTH_Y)
    lower = _bump(p, (0.0, -0.077, 0.086), (0.020, 0.008, 0.02)) * (p[:, 1] <= MOUTH_Y)
    out[:, 1, 1] = 0.0035 * upper - 0.0045 * lower
    out[:, 2, 1] = 0.001 * (upper + lower)
    # pucker: lips forward and together
    lips = _bump(p, (0.0, MOUTH_Y, 0.088), (0.020, 0.014, 0.016)) * front
    out[:, 0, 2] = -0.3 * x * lips
    out[:, 2, 2] = 0.008 * lips
    # brows
    brow = _bump(np.c_[np.abs(x), p[:, 1:]], (0.030, 0.030, 0.072), (0.028, 0.016, 0.03)) * front
    out[:, 1, 3] = 0.006 * brow
    inner = _bump(np.c_[np.abs(x), p[:, 1:]], (0.014, 0.026, 0.078), (0.012, 0.010, 0.02)) * front
    out[:, 0, 4] = -side * 0.003 * inner
    out[:, 1, 4] = -0.003 * inner
    out[:, 2, 4] = 0.001 * inner
    # blink: upper lids swing down over the eyeballs, lower lids rise a little
    for s, name in ((1.0, "left"), (-1.0, "right")):
        c = np.asarray(EYE_CENTERS[name])
        q = p - c
        r = np.linalg.norm(q, axis=1)
        near = _smoothstep(0.024, 0.016, r) * (q[:, 2] > -0.004) * (np.sign(x) == s)
        up = _smoothstep(-0.002, 0.004, q[:, 1])
        angle = near * (0.78 * up - 0.12 * (1.0 - up))
        out[:, :, 5] += _rotate_about_x(q, angle) - q
    # cheek puff
    puff = _bump(np.c_[np.abs(x), p[:, 1:]], (0.042, -0.060, 0.058), (0.018, 0.020, 0.020))
    out[:, 0, 6] = side * 0.0045 * puff
    out[:, 2, 6] = 0.004 * puff
    # frown: corners down
    out[:, 0, 7] = side * 0.001 * corner
    out[:, 1, 7] = -0.005 * corner
    # lip stretch: corners out
    out[:, 0, 8] = side * 0.006 * corner
    out[:, 2, 8] = -0.002 * corner
    # sneer: nostril wings and upper lip up
    wing = _bump(np.c_[np.abs(x), p[:, 1:]], (0.014, -0.040, 0.090), (0.010, 0.010, 0.012))
    out[:, 1, 9] = 0.004 * wing + 0.003 * upper
    out[:, 2, 9] = 0.001 * wing
    return out


HEAD_SHAPE_NAMES = (
    "size", "width", "depth", "face_length", "jaw_width",
    "nose", "cheeks", "chin", "brow", "ears",
)  # fmt: skip


def head_shape_basis(p: np.ndarray) -> np.ndarray:
    """Identity (shape) displacements (V, 3, 10) of the head at coefficient 1."""
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    side = np.sign(x) + (x == 0)
    out = np.zeros((len(p), 3, len(HEAD_SHAPE_NAMES)))
    center = np.array([0.0, 0.0, 0.0])
    out[:, :, 0] = 0.05 * (p - center)
    out[:, 0, 1] = 0.06 * x
    out[:, 2, 2] = 0.05 * np.minimum(z, 0.0)
    out[:, 1, 3] = 0.07 * np.minimum(y, 0.0) * _smoothstep(-0.16, -0.12, y)
    out[:, 0, 4] = 0.10 * x * _smoothstep(-0.03, -0.07, y) * _smoothstep(-0.16, -0.12, y)
    nose = _bump(p, (0.0, -0.025, 0.095), (0.014, 0.025, 0.02))
    out[:, 2, 5] = 0.006 * nose
    out[:, 1, 5] = -0.002 * nose
    cheek = _bump(np.c_[np.abs(x), p[:, 1:]], (0.045, -0.045, 0.055), (0.02, 0.025, 0.025))
    out[:, 0, 6] = side * 0.005 * cheek
    chin = _bump(p, (0.0, -0.115, 0.07), (0.02, 0.015, 0.02))
    out[:, 2, 7] = 0.006 * chin
    out[:, 1, 7] = -0.003 * chin
    brow = _bump(np.c_[np.abs(x), p[:, 1:]], (0.025, 0.029, 0.075), (0.03, 0.01, 0.02))
    out[:, 2, 8] = 0.004 * brow
    ear = _bump(np.c_[np.abs(x), p[:, 1:]], (0.078, -0.006, -0.013), (0.012, 0.03, 0.02))
    out[:, 0, 9] = side * 0.006 * ear
    return out


# Landmarks, as points to be snapped onto the skin. "front" points are found by a ray along -z
# from in front of the face; "near" points by the closest skin point.


def _eye_point(name: str, horiz: float, up: float, margin: float = 0.0022) -> np.ndarray:
    """A point on the lid margin of one eye: ``horiz`` in [-1, 1] (inner to outer corner),
    ``up`` in [-1, 1] (lower to upper lid)."""
    c = np.asarray(EYE_CENTERS[name])
    s = 1.0 if name == "left" else -1.0
    h = horiz * LID_HALF_WIDTH
    v = 0.06 * h + up * LID_HALF_HEIGHT * math.sqrt(max(1.0 - horiz * horiz, 0.0)) * 1.08
    d = np.array([s * math.sin(h) * math.cos(v), math.sin(v), math.cos(h) * math.cos(v)])
    return c + (EYE_RADIUS + margin) * d


def _eye_loop(name: str, count: int) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * math.pi, count, endpoint=False)
    return np.stack([_eye_point(name, math.cos(a) * 0.97, math.sin(a)) for a in t])


def _lip_outline(x: np.ndarray, upper: bool) -> np.ndarray:
    u = x / MOUTH_HALF_WIDTH
    if upper:
        # Cupid's bow: a small dip at the philtrum
        y = -0.0540 - 0.0145 * u**2 - 0.0012 * np.exp(-((x / 0.004) ** 2))
    else:
        y = -0.0843 + 0.0157 * u**2
    return np.c_[x, y]


def ibug68_targets() -> tuple[np.ndarray, np.ndarray]:
    """The 68 iBUG landmark targets (68, 3) and whether each is snapped from the front (68,)."""
    pts: list[np.ndarray] = []
    front: list[bool] = []

    def add(p: np.ndarray, is_front: bool) -> None:
        pts.append(np.asarray(p, dtype=float))
        front.append(is_front)

    for t in np.linspace(-0.47 * math.pi, 0.47 * math.pi, 17):  # 0-16 jaw, right ear to left ear
        add([0.066 * math.sin(t), -0.030 - 0.097 * math.cos(t), -0.005 + 0.072 * math.cos(t)], False)
    for x in np.linspace(-0.055, -0.013, 5):  # 17-21 right brow, outer to inner
        add([x, 0.024 + 0.007 * math.sin(math.pi * (x + 0.055) / 0.042), 0.2], True)
    for x in np.linspace(0.013, 0.055, 5):  # 22-26 left brow, inner to outer
        add([x, 0.024 + 0.007 * math.sin(math.pi * (0.055 - x) / 0.042), 0.2], True)
    for y in (0.012, -0.002, -0.016, -0.031):  # 27-30 nose bridge to tip
        add([0.0, y, 0.2], True)
    for x in (-0.0135, -0.007, 0.0, 0.007, 0.0135):  # 31-35 under the nose
        add([x, -0.0435 + 0.003 * (1 - abs(x) / 0.0135), 0.2], True)
    for h, v in ((1, 0), (0.35, 1), (-0.35, 1), (-1, 0), (-0.35, -1), (0.35, -1)):  # 36-41
        add(_eye_point("right", h * 0.97, v), False)
    for h, v in ((-1, 0), (-0.35, 1), (0.35, 1), (1, 0), (0.35, -1), (-0.35, -1)):  # 42-47
        add(_eye_point("left", h * 0.97, v), False)
    corner = MOUTH_HALF_WIDTH - 0.0008
    add([-corner, MOUTH_Y, 0.085], False)  # 48
    for x in (-0.017, -0.007, 0.0, 0.007, 0.017):  # 49-53 upper lip
        add([*_lip_outline(np.array([x]), True)[0], 0.2], True)
    add([corner, MOUTH_Y, 0.085], False)  # 54
    for x in (0.017, 0.007, 0.0, -0.007, -0.017):  # 55-59 lower lip, left to right
        add([*_lip_outline(np.array([x]), False)[0], 0.2], True)
    add([-corner + 0.004, MOUTH_Y, 0.088], False)  # 60 inner corner
    for x in (-0.010, 0.0, 0.010):  # 61-63
        add([x, MOUTH_Y + 0.0026, 0.2], True)
    add([corner - 0.004, MOUTH_Y, 0.088], False)  # 64
    for x in (0.010, 0.0, -0.010):  # 65-67
        add([x, MOUTH_Y - 0.0026, 0.2], True)
    return np.stack(pts), np.asarray(front)


# Contour groups drawn in the face-mesh condition (MediaPipe FACEMESH_CONTOURS + irises).
# name -> (closed?, targets, snapped from the front?)
def contour_targets() -> dict[str, tuple[bool, np.ndarray, bool]]:
    t = np.linspace(0.0, 2.0 * math.pi, 36, endpoint=False)
    oval = np.c_[0.067 * np.sin(t), -0.020 + 0.105 * np.cos(t), 0.005 + 0.065 * np.abs(np.cos(t))]
    groups: dict[str, tuple[bool, np.ndarray, bool]] = {"face_oval": (True, oval, False)}
    for name, s in (("left", 1.0), ("right", -1.0)):
        groups[f"{name}_eye"] = (True, _eye_loop(name, 16), False)
        xs = s * np.linspace(0.012, 0.056, 5)
        arc = np.sin(math.pi * (np.abs(xs) - 0.012) / 0.044)
        groups[f"{name}_brow_upper"] = (False, np.c_[xs, 0.0285 + 0.007 * arc, np.full(5, 0.2)], True)
        groups[f"{name}_brow_lower"] = (False, np.c_[xs, 0.0205 + 0.006 * arc, np.full(5, 0.2)], True)
    xs = np.linspace(-0.017, 0.017, 9)
    upper = np.c_[_lip_outline(xs, True), np.full(9, 0.2)]
    lower = np.c_[_lip_outline(xs[::-1], False), np.full(9, 0.2)]
    corner = MOUTH_HALF_WIDTH - 0.0008
    outer = np.vstack([[[-corner, MOUTH_Y, 0.2]], upper, [[corner, MOUTH_Y, 0.2]], lower])
    groups["lips_outer"] = (True, outer, True)
    xi = np.linspace(-0.018, 0.018, 9)
    inner = np.vstack(
        [np.c_[xi, np.full(9, MOUTH_Y + 0.0024), np.full(9, 0.2)], np.c_[xi[::-1], np.full(9, MOUTH_Y - 0.0024), np.full(9, 0.2)]]
    )
    groups["lips_inner"] = (True, inner, True)
    return groups
