"""Signed distance primitives used to sculpt the built-in mannequins.

Every function takes query points ``p`` of shape (M, 3) (float tensor, metres) and returns
signed distances of shape (M,): negative inside, positive outside. The shapes are
approximate distance bounds (exact for spheres, capsules and round cones), which is all
marching cubes needs. The mannequins are built from these in
:mod:`avatarcli.templates.head_mannequin` and :mod:`avatarcli.templates.body_mannequin`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

Vec3 = Sequence[float]


def _vec(v: Vec3, like: Tensor) -> Tensor:
    return torch.as_tensor(v, dtype=like.dtype, device=like.device)


def sphere(p: Tensor, center: Vec3, radius: float) -> Tensor:
    """Sphere of ``radius`` around ``center`` (3,)."""
    return (p - _vec(center, p)).norm(dim=-1) - radius


def ellipsoid(p: Tensor, center: Vec3, radii: Vec3, rotation: Tensor | None = None) -> Tensor:
    """Ellipsoid with semi-axes ``radii`` (3,), optionally rotated by ``rotation`` (3, 3).

    Uses the first-order bound ``k0 (k0 - 1) / k1`` which is close to the true distance near
    the surface and never overestimates it by much elsewhere.
    """
    q = p - _vec(center, p)
    if rotation is not None:
        q = q @ rotation.to(p)  # world -> local (rotation columns are the local axes)
    r = _vec(radii, p)
    k0 = (q / r).norm(dim=-1)
    k1 = (q / (r * r)).norm(dim=-1).clamp_min(1e-9)
    return k0 * (k0 - 1.0) / k1


def round_cone(p: Tensor, a: Vec3, b: Vec3, ra: float, rb: float) -> Tensor:
    """Exact distance to the convex hull of two spheres (centres ``a``, ``b``; radii ``ra``, ``rb``).

    A capsule is the special case ``ra == rb``.
    """
    a_t, b_t = _vec(a, p), _vec(b, p)
    ba = b_t - a_t
    l2 = float((ba * ba).sum())
    rr = ra - rb
    a2 = l2 - rr * rr
    il2 = 1.0 / l2
    pa = p - a_t
    y = (pa * ba).sum(-1)
    z = y - l2
    xv = pa * l2 - y[:, None] * ba
    x2 = (xv * xv).sum(-1)
    y2 = y * y * l2
    z2 = z * z * l2
    k = (1.0 if rr >= 0 else -1.0) * rr * rr * x2
    d_b = torch.sqrt(x2 + z2) * il2 - rb
    d_a = torch.sqrt(x2 + y2) * il2 - ra
    d_side = (torch.sqrt(x2 * a2 * il2) + y * rr) * il2 - ra
    sign_z = torch.sign(z) * a2 * z2
    sign_y = torch.sign(y) * a2 * y2
    return torch.where(sign_z > k, d_b, torch.where(sign_y < k, d_a, d_side))


def capsule(p: Tensor, a: Vec3, b: Vec3, radius: float) -> Tensor:
    """Capsule of ``radius`` around the segment ``a``-``b``."""
    return round_cone(p, a, b, radius, radius)


def rounded_box(p: Tensor, center: Vec3, half_extents: Vec3, radius: float, rotation: Tensor | None = None) -> Tensor:
    """Box of ``half_extents`` (3,) whose edges are rounded by ``radius``."""
    q = p - _vec(center, p)
    if rotation is not None:
        q = q @ rotation.to(p)
    d = q.abs() - (_vec(half_extents, p) - radius)
    outside = d.clamp_min(0.0).norm(dim=-1)
    inside = d.max(dim=-1).values.clamp_max(0.0)
    return outside + inside - radius


def smooth_union(d1: Tensor, d2: Tensor, k: float) -> Tensor:
    """Polynomial smooth minimum: blends the two surfaces over a band of width ``k``."""
    if k <= 0:
        return torch.minimum(d1, d2)
    h = (k - (d1 - d2).abs()).clamp_min(0.0) / k
    return torch.minimum(d1, d2) - h * h * k * 0.25


def smooth_subtract(d: Tensor, cut: Tensor, k: float) -> Tensor:
    """Removes the inside of ``cut`` from ``d`` with a rounded edge of width ``k``."""
    return -smooth_union(-d, cut, k)


def smooth_intersect(d1: Tensor, d2: Tensor, k: float) -> Tensor:
    """Smooth maximum: keeps what is inside both."""
    return -smooth_union(-d1, -d2, k)


def rotation_xyz(rx: float = 0.0, ry: float = 0.0, rz: float = 0.0) -> Tensor:
    """Rotation matrix (3, 3, float64) from Euler angles in radians, applied in x, then y, then z order."""
    cx, sx = math.cos(rx), math.sin(rx)
    cy, sy = math.cos(ry), math.sin(ry)
    cz, sz = math.cos(rz), math.sin(rz)
    mx = torch.tensor([[1.0, 0.0, 0.0], [0.0, cx, -sx], [0.0, sx, cx]], dtype=torch.float64)
    my = torch.tensor([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]], dtype=torch.float64)
    mz = torch.tensor([[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    return mz @ my @ mx
