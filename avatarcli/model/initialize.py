"""``avatar init``: rigged Gaussians sampled on a template (HeadStudio's super-dense init).

K points evenly spread on every rest-pose triangle; each point's scale is the root mean
square distance to its three nearest neighbours; colours are a neutral skin tone lit from
above so a fresh avatar already renders as a recognisable figure: eyes with sclera, iris
and pupil, darker lips and a dark mouth (the line between the lips, which the jaw stretches
open, and the cavity behind it), as a face shows them. Heads are stored through
the triangle binding (inverting HeadStudio eq. 5), bodies through skinning weights
interpolated from the point's triangle.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial import cKDTree

from avatarcli.errors import AvatarError
from avatarcli.model.avatar import Avatar, template_meta
from avatarcli.model.binding import SkinningBinding, TriangleBinding, rest_posed, skinning_from_surface, world_to_triangle_local
from avatarcli.model.gaussians import Gaussians, rgb_to_sh0
from avatarcli.templates.template import Template

SKIN = torch.tensor([0.80, 0.64, 0.54])
SCLERA = torch.tensor([0.93, 0.92, 0.90])
IRIS = torch.tensor([0.30, 0.22, 0.15])
PUPIL = torch.tensor([0.04, 0.04, 0.04])
LIPS = torch.tensor([0.66, 0.38, 0.37])
MOUTH = torch.tensor([0.16, 0.05, 0.05])
INIT_OPACITY = 0.9
# plastic-number increments: the R2 low-discrepancy sequence on the unit square
_R2 = (0.7548776662466927, 0.5698402909980532)


def triangle_samples(k: int, num_faces: int, generator: torch.Generator) -> torch.Tensor:
    """Barycentric coordinates (F, K, 3) of K evenly spread points in each of F triangles.

    An R2 low-discrepancy set on the unit square (with a random offset per triangle so
    neighbouring triangles do not repeat one pattern), carried into the triangle by the
    area-preserving map (u, v) -> (1 - sqrt(u), sqrt(u) (1 - v), sqrt(u) v), which, unlike
    folding the square along its diagonal, never lands two samples on top of each other.
    """
    i = torch.arange(k, dtype=torch.float64)
    shift = torch.rand(num_faces, 1, 2, generator=generator, dtype=torch.float64)
    uv = torch.stack([i * _R2[0], i * _R2[1]], dim=-1)[None] + shift
    uv = uv - torch.floor(uv)
    su, v = uv[..., 0].sqrt(), uv[..., 1]
    return torch.stack([1.0 - su, su * (1.0 - v), su * v], dim=-1).float()


def knn_scale(points: np.ndarray, k: int = 3) -> np.ndarray:
    """Root mean square distance from each point (N, 3) to its k nearest neighbours (N,)."""
    d, _ = cKDTree(points).query(points, k=k + 1, workers=-1)
    return np.sqrt((d[:, 1:] ** 2).mean(1)).clip(1e-5)


def inside_polygon(points: torch.Tensor, polygon: torch.Tensor) -> torch.Tensor:
    """Whether each point (N, 2) lies inside the closed polygon (M, 2) (even-odd rule), (N,) bool."""
    a, b = polygon, polygon.roll(-1, dims=0)
    px, py = points[:, None, 0], points[:, None, 1]
    crosses = (a[None, :, 1] > py) != (b[None, :, 1] > py)
    t = (py - a[None, :, 1]) / (b[None, :, 1] - a[None, :, 1]).where(crosses, torch.ones(()))
    x_at = a[None, :, 0] + t * (b[None, :, 0] - a[None, :, 0])
    return ((crosses & (px < x_at)).sum(1) % 2) == 1


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation of (xp, fp) (K,) at x (N,), held beyond the ends (xp ascending)."""
    i = torch.searchsorted(xp.contiguous(), x.contiguous()).clamp(1, len(xp) - 1)
    x0, x1, f0, f1 = xp[i - 1], xp[i], fp[i - 1], fp[i]
    w = ((x - x0) / (x1 - x0).clamp_min(1e-9)).clamp(0.0, 1.0)
    return f0 + w * (f1 - f0)


def mouth_regions(template: Template, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Which rest-pose points (N, 3) are lips and which are mouth, from the template's iBUG-68 lips.

    Seen from the front (the rest pose faces +z), a point inside the outer lip outline is
    mouth when it lies where the lips meet or behind the lips' front surface (the cavity);
    otherwise it is lip. Where the lips meet is the opening between the inner lip outlines
    where they are apart at rest, and at least a seam where they touch (about 5 mm high at
    the middle for a 5 cm mouth, narrowing to the corners): opening the jaw stretches either
    into the dark opening. The seam is not added to the opening: where the lips are apart,
    that would reach past the inner outlines onto the lips' fronts and show a dark band
    across a closed mouth. Templates without a landmark embedding have neither.
    Returns (lips, mouth), (N,) bool each.
    """
    none = torch.zeros(len(points), dtype=torch.bool)
    try:
        lm = template.landmarks68(rest_posed(template))[0].to(points)
    except ValueError:
        return none, none
    width = float((lm[54, :2] - lm[48, :2]).norm())
    if width <= 0:
        return none, none
    outside = ~inside_polygon(points[:, :2], lm[48:60, :2])

    # the lips' front surface across the mouth: the nearer of the outer upper and lower lip
    def depth_along(outline: torch.Tensor) -> torch.Tensor:
        o = outline[:, 0].argsort()
        return _interp(points[:, 0], outline[o, 0], outline[o, 2])

    front = torch.maximum(depth_along(lm[48:55]), depth_along(lm[[54, 55, 56, 57, 58, 59, 48]]))
    # the line where the lips meet: corners, and the middles of the three inner-lip pairs
    upper, lower = lm[[60, 61, 62, 63, 64]], lm[[60, 67, 66, 65, 64]]
    middle = (upper + lower) / 2
    order = middle[:, 0].argsort()
    line_y = _interp(points[:, 0], middle[order, 0], middle[order, 1])
    gap = _interp(points[:, 0], middle[order, 0], ((upper - lower)[order, 1].abs() / 2))
    across = ((points[:, 0] - middle[2, 0]) / (width / 2)).clamp(-1.0, 1.0)
    band = torch.maximum(gap, 0.05 * width * (1.0 - across**2).sqrt())
    near = (points[:, 2] > front - 0.8 * width) & ~outside
    mouth = near & (((points[:, 1] - line_y).abs() < band) | (points[:, 2] < front - 0.12 * width))
    return near & ~mouth, mouth


def default_colors(template: Template, face_idx: torch.Tensor, bary: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
    """A lit neutral skin tone (N, 3); eyeball Gaussians get sclera, iris and pupil, the lips
    a darker red and the mouth (:func:`mouth_regions`) a dark red-brown."""
    light = F.normalize(torch.tensor([0.3, 0.75, 0.6]), dim=0)
    fill = F.normalize(torch.tensor([-0.5, 0.1, 0.4]), dim=0)
    shade = 0.52 + 0.38 * (normals @ light).clamp_min(0) + 0.14 * (normals @ fill).clamp_min(0)
    rgb = SKIN[None] * shade[:, None]
    corners = template.faces[face_idx]
    lips, mouth = mouth_regions(template, (template.v_template[corners] * bary[..., None]).sum(1))
    rgb[lips] = LIPS[None] * shade[lips, None]
    rgb[mouth] = MOUTH[None] * (0.8 + 0.2 * shade[mouth, None])
    # eyes: Gaussians on triangles skinned to an eye joint
    names = template.joint_names
    eye_joints = [i for i, n in enumerate(names) if "eye" in n]
    on_eye = template.weights[corners][:, :, eye_joints].sum(-1).mean(-1) > 0.5
    if bool(on_eye.any()):
        rest = template.v_template
        pts = (rest[corners[on_eye]] * bary[on_eye, :, None]).sum(1)
        joints = torch.einsum("jv,vk->jk", template.j_regressor, rest)[eye_joints]
        nearest = torch.cdist(pts, joints).argmin(1)
        direction = F.normalize(pts - joints[nearest], dim=-1)
        angle = torch.acos(direction[:, 2].clamp(-1, 1))
        eye = torch.where((angle < 0.42)[:, None], IRIS[None], SCLERA[None])
        eye = torch.where((angle < 0.17)[:, None], PUPIL[None], eye)
        rgb[on_eye] = eye * (0.85 + 0.15 * shade[on_eye, None])
    return rgb.clamp(0.0, 1.0)


def init_avatar(template: Template, points_per_triangle: int = 10, seed: int = 0) -> Avatar:
    """Sample rigged Gaussians on ``template``'s rest pose.

    Args:
        template: the body model to bind to.
        points_per_triangle: K >= 1 points on every triangle.
        seed: makes the sampling reproducible.

    Returns:
        A stage-"init" avatar with F * K Gaussians.
    """
    if points_per_triangle < 1:
        raise AvatarError(f"points per triangle must be at least 1 (got {points_per_triangle})")
    gen = torch.Generator().manual_seed(seed)
    tpl = template.to("cpu") if template.device.type != "cpu" else template
    faces = tpl.faces
    nf = faces.shape[0]
    bary = triangle_samples(points_per_triangle, nf, gen).reshape(-1, 3)
    face_idx = torch.arange(nf).repeat_interleave(points_per_triangle)
    posed = rest_posed(tpl)
    verts = posed.vertices[0]
    corners = verts[faces[face_idx]]  # (N, 3, 3)
    means = (corners * bary[..., None]).sum(1)
    normals = F.normalize(torch.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0], dim=-1), dim=-1)
    scale = torch.from_numpy(knn_scale(means.double().numpy())).float()
    log_scales = torch.log(scale)[:, None].expand(-1, 3).clone()
    world_quats = torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(len(means), -1)
    rgb = default_colors(tpl, face_idx, bary, normals)
    opacity = torch.full((len(means),), float(np.log(INIT_OPACITY / (1 - INIT_OPACITY))))
    sh = rgb_to_sh0(rgb)[:, None, :]

    if tpl.kind == "head":
        lm, lq, ls = world_to_triangle_local(means, world_quats, log_scales, face_idx, posed, tpl)
        gaussians = Gaussians(lm, ls, lq, opacity, sh)
        binding = TriangleBinding(face_idx)
    else:
        gaussians = Gaussians(means, log_scales, world_quats.clone(), opacity, sh)
        binding = SkinningBinding(skinning_from_surface(tpl, face_idx, bary), face_idx, bary)
    meta = {"template": template_meta(tpl), "stage": "init", "prompt": None, "seed": seed, "points_per_triangle": points_per_triangle}
    return Avatar(tpl.kind, gaussians, binding, torch.zeros(tpl.num_betas), meta)
