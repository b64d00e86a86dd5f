"""``avatar rig``: bind Gaussians to a template so they can be animated.

Input is world-space Gaussians in the template's rest pose: an existing avatar (re-rig from
its current rest-pose positions) or any INRIA 3DGS .ply. Heads bind each Gaussian to its
nearest triangle (the triangle binding, inverted at the rest pose); bodies take skinning
weights from the nearest surface point and then smooth them over neighbouring Gaussians,
more the farther a Gaussian floats off the skin, so hair, capes and skirts move as one
piece instead of tearing between bones. Gaussians on the skin keep the skin's weights
exactly, so rigging an avatar twice changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from avatarcli.errors import AvatarError
from avatarcli.model.avatar import Avatar, template_meta
from avatarcli.model.binding import (
    SkinningBinding,
    TriangleBinding,
    nearest_surface,
    rest_posed,
    skinning_from_surface,
    surface_offsets,
    world_to_triangle_local,
)
from avatarcli.model.gaussians import Gaussians
from avatarcli.templates.template import Template

FAR_FRACTION = 0.3  # default --max-distance: this fraction of the template's bounding radius
SMOOTH_FRACTION = 0.05  # Gaussians this fraction of the radius off the skin take the smoothed weights
BLUR_FRACTION = 0.08  # the smoothing's reach, as a fraction of the template's radius
SIZE_TOLERANCE = 0.25  # a splat whose height differs more than this needs --fit


@dataclass
class RigReport:
    """What rigging found.

    Attributes:
        count: Gaussians rigged (after dropping far ones, if asked).
        far: Gaussians beyond ``max_distance`` from the template surface.
        dropped: how many were removed.
        max_distance: the threshold in metres.
        per_part: Gaussians per joint they mostly follow.
        fit: (scale, translation) applied by ``--fit``, or None.
        kept: (N,) bool, which of the Gaussians given were rigged (all but dropped far ones).
    """

    count: int
    far: int
    dropped: int
    max_distance: float
    per_part: dict[str, int] = field(default_factory=dict)
    fit: tuple[float, list[float]] | None = None
    kept: Tensor | None = None


def template_radius(template: Template, betas: Tensor | None = None) -> float:
    v = template.rest_vertices(betas)
    return float((v.max(0).values - v.min(0).values).norm() / 2)


def rest_world_gaussians(avatar: Avatar, template: Template) -> Gaussians:
    """The avatar's Gaussians in world space at the rest pose (pre-activation values)."""
    with torch.no_grad():
        return avatar.posed(template).gaussians().to("cpu")


def fit_to_template(g: Gaussians, template: Template) -> tuple[Gaussians, float, Tensor]:
    """Scale and move Gaussians so their bounding box matches the template's (height and centre)."""
    v = template.rest_vertices().cpu()
    lo, hi = _robust_bounds(g.means)
    s = float((v[:, 1].max() - v[:, 1].min()) / (hi[1] - lo[1]).clamp_min(1e-9))
    t = (v.max(0).values + v.min(0).values) / 2 - s * (lo + hi) / 2
    moved = Gaussians(g.means * s + t, g.log_scales + float(np.log(s)), g.quats, g.opacity_logits, g.sh)
    return moved, s, t


def _robust_bounds(means: Tensor) -> tuple[Tensor, Tensor]:
    if len(means) > 1000:
        sample = means[torch.randperm(len(means), generator=torch.Generator().manual_seed(0))[:200_000]]
        return torch.quantile(sample, 0.001, dim=0), torch.quantile(sample, 0.999, dim=0)
    return means.min(0).values, means.max(0).values


def check_size(g: Gaussians, template: Template) -> None:
    """Refuse splats whose size or place does not match the template (they need --fit)."""
    v = template.rest_vertices().cpu()
    lo, hi = _robust_bounds(g.means)
    height, want = float(hi[1] - lo[1]), float(v[:, 1].max() - v[:, 1].min())
    centre_gap = float(((lo + hi) / 2 - (v.max(0).values + v.min(0).values) / 2).norm())
    if abs(height / want - 1.0) > SIZE_TOLERANCE or centre_gap > SIZE_TOLERANCE * want:
        raise AvatarError(
            f"the splat is {height:.2f} m tall and centred {centre_gap:.2f} m from the {template.kind} template "
            f"({want:.2f} m tall): pass --fit to scale and move it onto the template"
        )


def smooth_weights(points: np.ndarray, weights: np.ndarray, distance: np.ndarray, reach: float, scale: float) -> np.ndarray:
    """Blend the skinning weights of Gaussians that float off the skin with a spatially
    smoothed weight field, so loose parts follow a smooth mix of bones.

    The field is every Gaussian's surface weights splatted on a voxel grid and blurred with a
    Gaussian of ``scale`` metres (a low-pass of physical size, whatever the Gaussian count).

    Args:
        points: (N, 3) rest positions; weights: (N, J) surface weights; distance: (N,) to the
            template surface.
        reach: distance (metres) over which a Gaussian goes from keeping its own weights (on
            the skin) to taking the smoothed field's.
        scale: blur standard deviation in metres.

    Returns:
        (N, J) weights, rows summing to one. Gaussians on the surface are unchanged.
    """
    from scipy.ndimage import gaussian_filter, map_coordinates

    t = np.clip(distance / max(reach, 1e-9), 0.0, 1.0)
    own = 1.0 - t * t * (3.0 - 2.0 * t)  # 1 on the skin, 0 at ``reach`` and beyond
    if len(points) < 2 or bool((own >= 1.0).all()):
        return weights
    voxel = scale / 2.0
    lo = points.min(0) - 3 * scale
    dims = np.ceil((points.max(0) + 3 * scale - lo) / voxel).astype(int) + 1
    cell = np.floor((points - lo) / voxel).astype(int)
    flat = np.ravel_multi_index(cell.T, dims)
    used = np.nonzero(weights.sum(0) > 0)[0]
    grid = np.zeros((int(np.prod(dims)), len(used)))
    np.add.at(grid, flat, weights[:, used])
    mass = np.bincount(flat, minlength=grid.shape[0]).astype(np.float64)
    sigma = (2.0, 2.0, 2.0)  # voxels: ``scale`` metres
    mass = gaussian_filter(mass.reshape(dims), sigma, mode="constant")
    field = np.stack([gaussian_filter(grid[:, c].reshape(dims), sigma, mode="constant") for c in range(len(used))], -1)
    coords = ((points - lo) / voxel).T
    sampled = np.stack([map_coordinates(field[..., c], coords, order=1) for c in range(len(used))], -1)
    dens = map_coordinates(mass, coords, order=1)[:, None]
    smooth = np.zeros_like(weights)
    smooth[:, used] = sampled / np.maximum(dens, 1e-12)
    smooth = np.clip(smooth, 0.0, None)
    out = own[:, None] * weights + (1.0 - own[:, None]) * smooth
    return out / out.sum(1, keepdims=True)


def rig_gaussians(
    world: Gaussians,
    template: Template,
    betas: Tensor | None = None,
    max_distance: float | None = None,
    drop_far: bool = False,
    smooth: bool = True,
    meta: dict | None = None,
) -> tuple[Avatar, RigReport]:
    """Bind world-space rest-pose Gaussians to ``template``.

    Args:
        world: pre-activation Gaussians in world space, in the template's rest pose.
        template: the template to bind to.
        betas: template shape the Gaussians were made with (zeros when None).
        max_distance: metres; farther Gaussians are reported (and dropped with ``drop_far``).
        smooth: smooth body weights over neighbours (off: plain nearest-surface weights).
        meta: metadata to carry into the new avatar.
    """
    tpl = template if template.device.type == "cpu" else template.to("cpu")
    if betas is not None and betas.numel() == 0:
        betas = None
    reach = max_distance if max_distance is not None else FAR_FRACTION * template_radius(tpl, betas)
    if reach <= 0:
        raise AvatarError(f"the far distance must be positive (got {reach})")
    pts = world.means.detach().double().numpy()
    face_idx, bary, dist = nearest_surface(tpl, pts, betas)
    far = dist > reach
    far_count = int(far.sum())
    kept = torch.ones(len(pts), dtype=torch.bool)
    dropped = 0
    if drop_far and far_count:
        kept = torch.from_numpy(~far)
        world = world.select(kept)
        face_idx, bary, dist, pts = face_idx[~far], bary[~far], dist[~far], pts[~far]
        dropped = far_count
    if len(world) == 0:
        raise AvatarError("no Gaussians left to rig")
    f = torch.from_numpy(face_idx)
    b = torch.from_numpy(bary).float()
    posed = rest_posed(tpl, betas)
    if tpl.kind == "head":
        lm, lq, ls = world_to_triangle_local(world.means, world.quats, world.log_scales, f, posed, tpl)
        gaussians = Gaussians(lm, ls, lq, world.opacity_logits, world.sh)
        binding: TriangleBinding | SkinningBinding = TriangleBinding(f)
        owner = tpl.weights[tpl.faces[f]].mean(1).argmax(1)
    else:
        w = skinning_from_surface(tpl, f, b).double().numpy()
        if smooth:
            radius = template_radius(tpl, betas)
            w = smooth_weights(pts, w, dist, SMOOTH_FRACTION * radius, BLUR_FRACTION * radius)
        binding = SkinningBinding(torch.from_numpy(w).float(), f, b)
        # store positions relative to the shaped surface so that deform reproduces them at rest
        offsets = surface_offsets(tpl, posed, binding)[0]
        gaussians = Gaussians(world.means - offsets, world.log_scales, world.quats, world.opacity_logits, world.sh)
        owner = binding.weights.argmax(1)
    counts = torch.bincount(owner, minlength=tpl.num_joints)
    per_part = {tpl.joint_names[j]: int(c) for j, c in enumerate(counts) if c > 0}
    new_meta = dict(meta or {})
    new_meta["template"] = template_meta(tpl)
    new_meta.setdefault("stage", "rigged")
    av = Avatar(tpl.kind, gaussians, binding, betas if betas is not None else torch.zeros(tpl.num_betas), new_meta)
    report = RigReport(len(gaussians), far_count, dropped, float(reach), per_part, kept=kept)
    return av, report


def rig_avatar(avatar: Avatar, template: Template, **kwargs: object) -> tuple[Avatar, RigReport]:
    """Re-rig an avatar from its Gaussians' current rest-pose positions."""
    world = rest_world_gaussians(avatar, template)
    meta = dict(avatar.meta)
    meta.pop("pose_dependent", None)  # a pose-dependent model is left behind, its rest-pose look kept
    out, report = rig_gaussians(world, template, avatar.betas, meta=meta, **kwargs)  # type: ignore[arg-type]
    out.extra = {k: v for k, v in avatar.extra.items() if not k.startswith("binding.")}
    if avatar.material is not None:  # materials stay with their Gaussians
        assert report.kept is not None
        out.material = avatar.material.select(report.kept.to(avatar.material.albedo_logits.device))
    return out, report


def rig_splat(world: Gaussians, template: Template, fit: bool = False, **kwargs: object) -> tuple[Avatar, RigReport]:
    """Rig a splat made elsewhere (taken to be in the template's rest pose, or aligned by ``fit``)."""
    transform = None
    if fit:
        world, s, t = fit_to_template(world, template)
        transform = (s, t.tolist())
    else:
        check_size(world, template)
    meta = {"stage": "rigged", "prompt": None, "seed": None}
    av, report = rig_gaussians(world, template, None, meta=meta, **kwargs)  # type: ignore[arg-type]
    report.fit = transform
    return av, report
