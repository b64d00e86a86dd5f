"""Which keypoints a camera can see: rays from the camera against the posed mesh.

A keypoint is visible when the first surface its ray meets lies within the keypoint's
``reach``: the skin right over a joint (a joint sits inside the limb) or the surface point
itself (a landmark on the face). Anything else in front, another limb or the back of the
head, hides it. Surface landmarks are also hidden when their surface faces away.
"""

from __future__ import annotations

import torch
from torch import Tensor


def first_hits(origins: Tensor, targets: Tensor, vertices: Tensor, faces: Tensor, budget: int = 1 << 22) -> Tensor:
    """Distance along each ray to its first triangle hit (inf where none).

    Args:
        origins: (B, 3) ray origins (camera centres).
        targets: (B, K, 3) points the rays aim at (direction = target - origin).
        vertices: (B, V, 3) posed meshes; faces: (F, 3).
        budget: ray-triangle pairs tested at once (memory against loop trips).

    Returns:
        (B, K) hit distances in metres.
    """
    b, k, _ = targets.shape
    chunk = max(256, budget // max(b * k, 1))
    dirs = targets - origins[:, None]
    dirs = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    best = torch.full((b, k), float("inf"), device=targets.device, dtype=targets.dtype)
    for s in range(0, faces.shape[0], chunk):
        tri = vertices[:, faces[s : s + chunk]]  # (B, f, 3, 3)
        v0 = tri[:, :, 0]
        e1, e2 = tri[:, :, 1] - v0, tri[:, :, 2] - v0
        h = torch.cross(dirs[:, :, None], e2[:, None], dim=-1)  # (B, K, f, 3)
        a = (e1[:, None] * h).sum(-1)
        ok = a.abs() > 1e-12
        inv = torch.where(ok, 1.0 / torch.where(ok, a, torch.ones_like(a)), torch.zeros_like(a))
        sv = origins[:, None, None] - v0[:, None]
        u = inv * (sv * h).sum(-1)
        q = torch.cross(sv, e1[:, None].expand_as(sv), dim=-1)
        v = inv * (dirs[:, :, None] * q).sum(-1)
        t = inv * (e2[:, None] * q).sum(-1)
        hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 1e-6)
        t = torch.where(hit, t, torch.full_like(t, float("inf")))
        best = torch.minimum(best, t.min(dim=-1).values)
    return best


def visible(
    camera_centers: Tensor,
    points: Tensor,
    reach: Tensor,
    vertices: Tensor,
    faces: Tensor,
    normals: Tensor | None = None,
) -> Tensor:
    """Visibility (B, K) of points (B, K, 3) from cameras (B, 3).

    Args:
        reach: (K,) metres: how far in front of the point the first hit may be.
        normals: (B, K, 3) surface normals for surface points (hidden when facing away).
    """
    hit = first_hits(camera_centers, points, vertices, faces)
    dist = (points - camera_centers[:, None]).norm(dim=-1)
    ok = hit >= dist - reach[None]
    if normals is not None:
        to_cam = camera_centers[:, None] - points
        ok = ok & ((normals * to_cam).sum(-1) > 0)
    return ok


def vertex_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """Area-weighted vertex normals (B, V, 3)."""
    tri = vertices[:, faces]
    fn = torch.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0], dim=-1)
    n = torch.zeros_like(vertices)
    for k in range(3):
        n.index_add_(1, faces[:, k], fn)
    return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)
