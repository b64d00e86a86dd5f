"""How Gaussians hang on a template, and how they move when it is posed.

Two bindings:

* :class:`TriangleBinding` (heads, HeadStudio eq. 5): each Gaussian belongs to one triangle
  with centroid ``T``, orthonormal frame ``R`` (columns: first edge direction, normal, their
  cross product) and area ``a``. Rotations and scales map as in eq. 5,
  ``R'_gauss = R R_gauss`` and ``s' = sqrt(a) s``: the triangle's rotation is composed *into*
  each Gaussian's rotation, so orientations follow the surface. Means use the triangle's
  affine frame ``A = [v1 - v0, v2 - v0, sqrt(a) n]``: ``mu' = A mu + T``. For a triangle that
  only turns and scales this is eq. 5's ``sqrt(a) R mu + T`` in other coordinates; when a
  triangle shears (every expression and bend does) eq. 5 lets a point on the surface slide
  off it, while the affine frame keeps it on the same surface point exactly.
* :class:`SkinningBinding` (bodies, GaussianMotion eq. 3-4): rest-pose Gaussians move by the
  blend of joint transforms ``x_o = (sum_b w_b B_b) x_c`` with weights from the nearest
  template surface point; the same surface point carries the template's shape, expression
  and pose-corrective offsets to the Gaussian before skinning, so a face Gaussian on a body
  follows the expression.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from avatarcli.geometry import SurfaceQuery
from avatarcli.model.gaussians import GaussianOffsets, Gaussians, PosedGaussians
from avatarcli.rotations import matrix_to_quat, quat_conjugate, quat_multiply
from avatarcli.templates.template import Posed, Template


@dataclass
class TriangleBinding:
    """face_idx: (N,) int64, the triangle each Gaussian belongs to."""

    face_idx: Tensor

    kind = "triangle"

    def select(self, idx: Tensor) -> TriangleBinding:
        return TriangleBinding(self.face_idx[idx])

    def to(self, device: torch.device | str) -> TriangleBinding:
        return TriangleBinding(self.face_idx.to(device))

    def tensors(self) -> dict[str, Tensor]:
        return {"face_idx": self.face_idx}


class ResidualWeights(torch.nn.Module):
    """GaussianMotion's learnt correction to skinning weights:
    ``w = normalize(relu(w_template + MLP(x)))`` for rest positions x.

    Args:
        num_joints: J.
        scale: metres that map to 1 before the positional encoding (the template's radius).
        frequencies: sin/cos octaves of the encoding; width: hidden units.
    """

    def __init__(self, num_joints: int, scale: float, frequencies: int = 4, width: int = 64) -> None:
        super().__init__()
        self.config = {"num_joints": num_joints, "scale": float(scale), "frequencies": frequencies, "width": width}
        dims = 3 + 6 * frequencies
        self.net = torch.nn.Sequential(
            torch.nn.Linear(dims, width),
            torch.nn.ReLU(),
            torch.nn.Linear(width, width),
            torch.nn.ReLU(),
            torch.nn.Linear(width, num_joints),
        )
        torch.nn.init.zeros_(self.net[-1].weight)  # starts as the template's weights
        torch.nn.init.zeros_(self.net[-1].bias)

    def forward(self, points: Tensor) -> Tensor:
        """Weight corrections (N, J) for rest positions (N, 3)."""
        x = points / self.config["scale"]
        bands = [x]
        for k in range(self.config["frequencies"]):
            bands += [torch.sin((2.0**k) * math.pi * x), torch.cos((2.0**k) * math.pi * x)]
        return self.net(torch.cat(bands, dim=-1))


@dataclass
class SkinningBinding:
    """Linear-blend skinning of rest-pose Gaussians.

    Attributes:
        weights: (N, J) skinning weights, rows summing to one.
        face_idx: (N,) int64 nearest template triangle (carries blend-shape offsets).
        bary: (N, 3) barycentric coordinates of the nearest point on that triangle.
        residual: optional learnt weight correction (shared by all Gaussians).
    """

    weights: Tensor
    face_idx: Tensor
    bary: Tensor
    residual: ResidualWeights | None = None

    kind = "skinning"

    def select(self, idx: Tensor) -> SkinningBinding:
        return SkinningBinding(self.weights[idx], self.face_idx[idx], self.bary[idx], self._residual_copy())

    def to(self, device: torch.device | str) -> SkinningBinding:
        """A copy on ``device``; this binding and its residual network stay where they are."""
        res = self._residual_copy(device)
        return SkinningBinding(self.weights.to(device), self.face_idx.to(device), self.bary.to(device), res)

    def _residual_copy(self, device: torch.device | str | None = None) -> ResidualWeights | None:
        # ``Module.to`` moves a module in place: a binding handing its own network to another
        # object would let that object move (or train) it behind this one's back
        if self.residual is None:
            return None
        res = copy.deepcopy(self.residual)
        return res if device is None else res.to(device)

    def tensors(self) -> dict[str, Tensor]:
        return {"weights": self.weights, "face_idx": self.face_idx, "bary": self.bary}

    def effective_weights(self, means: Tensor) -> Tensor:
        """The weights used for posing: the stored ones, corrected by the residual if any."""
        if self.residual is None:
            return self.weights
        w = torch.relu(self.weights + self.residual(means))
        return w / w.sum(dim=-1, keepdim=True).clamp_min(1e-8)


Binding = TriangleBinding | SkinningBinding


def triangle_frames(vertices: Tensor, faces: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-triangle centroid, frame and scale.

    Args:
        vertices: (B, V, 3); faces: (F, 3) long.

    Returns:
        centers: (B, F, 3); rotations: (B, F, 3, 3) with columns (edge, normal, edge x normal);
        scales: (B, F) square root of the area.
    """
    centers, rot, k, _ = _frames(vertices, faces)
    return centers, rot, k


def _frames(vertices: Tensor, faces: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    tri = vertices[:, faces]  # (B, F, 3, 3)
    e1 = tri[:, :, 1] - tri[:, :, 0]
    e2 = tri[:, :, 2] - tri[:, :, 0]
    cross = torch.cross(e1, e2, dim=-1)
    area = 0.5 * cross.norm(dim=-1)
    edge = F.normalize(e1, dim=-1, eps=1e-12)
    normal = F.normalize(cross, dim=-1, eps=1e-12)
    third = torch.cross(edge, normal, dim=-1)
    rot = torch.stack([edge, normal, third], dim=-1)  # columns
    k = area.clamp_min(1e-14).sqrt()
    affine = torch.stack([e1, e2, k[..., None] * normal], dim=-1)
    return tri.mean(dim=2), rot, k, affine


def deform(
    gaussians: Gaussians, binding: Binding, template: Template, posed: Posed, offsets: GaussianOffsets | None = None
) -> PosedGaussians:
    """Move bound Gaussians to the posed template.

    Args:
        gaussians: N Gaussians in the binding's local space.
        binding: their binding.
        template: the template they are bound to.
        posed: a batch of B posed templates (from ``template.pose``).
        offsets: per-pose changes to the Gaussians (B poses), added in the local space
            before posing; the result then has per-pose opacities and colours. None (no
            pose-dependent appearance) poses the Gaussians as they are, sharing their
            opacities and colours between poses, with no copies.

    Returns:
        World-space Gaussians for every pose in the batch.
    """
    quats = F.normalize(gaussians.quats, dim=-1)
    if offsets is None:
        means, log_scales = gaussians.means[None], gaussians.log_scales[None]  # (1, N, 3): views
        opacities, sh = torch.sigmoid(gaussians.opacity_logits), gaussians.sh
    else:
        means, log_scales, logits, sh = offsets.applied(gaussians)
        opacities = torch.sigmoid(logits)
    scales = torch.exp(log_scales)
    b = posed.vertices.shape[0]
    if isinstance(binding, TriangleBinding):
        centers, rots, k, affine = _frames(posed.vertices, template.faces)
        c, kk = centers[:, binding.face_idx], k[:, binding.face_idx, None]
        world_means = (affine[:, binding.face_idx] @ means[..., None])[..., 0] + c
        face_quats = matrix_to_quat(rots)[:, binding.face_idx]  # once per triangle, not per Gaussian
        world_quats = quat_multiply(face_quats, quats[None].expand(face_quats.shape[0], -1, -1))
        world_scales = kk * scales
    else:
        rest = means + surface_offsets(template, posed, binding)
        weights = binding.effective_weights(gaussians.means)
        t = torch.einsum("nj,bjk->bnk", weights, posed.transforms.reshape(posed.transforms.shape[0], -1, 16))
        t = t.reshape(t.shape[0], t.shape[1], 4, 4)
        # t[..., :3, :3] @ rest + t[..., :3, 3], column by column (a batch of 3x3 products is slow on a CPU)
        world_means = t[..., :3, 3] + t[..., :3, 0] * rest[..., 0:1] + t[..., :3, 1] * rest[..., 1:2] + t[..., :3, 2] * rest[..., 2:3]
        blended = torch.einsum("nj,bjk->bnk", weights, joint_quats(posed.transforms, template.levels))
        world_quats = quat_multiply(F.normalize(blended, dim=-1), quats[None].expand(blended.shape[0], -1, -1))
        world_scales = scales.expand(b, -1, -1)
    return PosedGaussians(world_means, world_quats, world_scales, opacities, sh)


def surface_offsets(template: Template, posed: Posed, binding: SkinningBinding) -> Tensor:
    """Blend-shape displacement (B, N, 3) of each Gaussian's surface point, before skinning."""
    corners = template.faces[binding.face_idx]  # (N, 3)
    disp = posed.unposed - template.v_template[None]  # (B, V, 3), per vertex before gathering
    bary = binding.bary[None, :, :, None]
    return disp[:, corners[:, 0]] * bary[:, :, 0] + disp[:, corners[:, 1]] * bary[:, :, 1] + disp[:, corners[:, 2]] * bary[:, :, 2]


def joint_quats(transforms: Tensor, levels: list[tuple[Tensor, Tensor]]) -> Tensor:
    """Rotations of the joint transforms (B, J, 4, 4) as quaternions (B, J, 4), each sign
    chosen to agree with its parent's so that neighbouring joints blend the short way.

    ``levels``: the kinematic tree a depth at a time (``Template.levels``), walked with index
    tensors on the device so the GPU is never waited for.
    """
    q = matrix_to_quat(transforms[..., :3, :3])
    signs = torch.ones_like(q[..., :1])
    for idx, par in levels:
        parent_sign = signs[:, par]
        dot = ((q[:, idx] * parent_sign) * q[:, par]).sum(-1, keepdim=True)
        signs[:, idx] = torch.where(dot < 0, -parent_sign, parent_sign)
    return q * signs


def rest_posed(template: Template, betas: Tensor | None = None) -> Posed:
    """The template in its rest pose, as a batch of one."""
    return template.pose(template.zero_pose(1), betas)


# Directions a triangle's affine frame stretches by less than this fraction of its longest
# carry nothing but rounding (float32 vertices: about 1e-7 of their size) and are dropped.
FRAME_RTOL = 1e-6
# Frames better conditioned than this (1 / Frobenius condition number) are inverted in
# closed form (float64: accurate to about 1e-12); the rest go through the SVD.
_WELL_CONDITIONED = 1e-4


def solve_frames(affine: Tensor, offsets: Tensor) -> Tensor:
    """Local coordinates ``x`` (N, 3) with ``affine @ x = offsets`` for frames (N, 3, 3) (float64).

    The minimum-norm least-squares solution, with the frame's singular values below
    ``FRAME_RTOL`` times its largest treated as zero. For a healthy triangle that is the
    exact inverse; for a sliver or a degenerate triangle (two corners together, three in a
    line: the frame is near-singular or singular) an exact solve would blow a point's
    rounding error up into huge coordinates, or fail, while this one keeps the coordinates
    as small as the point allows, so ``affine @ x`` lands back on it to rounding.
    """
    c1, c2, c3 = affine.unbind(-1)
    adj = torch.stack([torch.linalg.cross(c2, c3), torch.linalg.cross(c3, c1), torch.linalg.cross(c1, c2)], dim=-2)
    det = (c1 * adj[..., 0, :]).sum(-1)
    healthy = det.abs() > _WELL_CONDITIONED * affine.flatten(-2).norm(dim=-1) * adj.flatten(-2).norm(dim=-1)
    out = (adj @ offsets[..., None])[..., 0] / torch.where(healthy, det, torch.ones_like(det))[..., None]
    if not bool(healthy.all()):
        ill = (~healthy).nonzero()[:, 0]
        u, sv, vh = torch.linalg.svd(affine[ill])
        keep = sv > FRAME_RTOL * sv[..., :1]
        inv = torch.where(keep, 1.0 / torch.where(keep, sv, torch.ones_like(sv)), torch.zeros_like(sv))
        coeffs = inv * (u.transpose(-1, -2) @ offsets[ill, :, None])[..., 0]
        out[ill] = (vh.transpose(-1, -2) @ coeffs[..., None])[..., 0]
    return out


def world_to_triangle_local(
    means: Tensor, quats: Tensor, log_scales: Tensor, face_idx: Tensor, posed: Posed, template: Template
) -> tuple[Tensor, Tensor, Tensor]:
    """Invert the triangle binding: local (mean, quat, log-scale) for world values on triangles.

    Args:
        means: (N, 3), quats: (N, 4), log_scales: (N, 3) world-space values at the pose
            ``posed`` (a batch of one, usually the rest pose).
        face_idx: (N,) triangles.

    Returns:
        local means (N, 3), quats (N, 4), log-scales (N, 3).
    """
    centers, rots, k, affine = _frames(posed.vertices, template.faces)
    c, r, kk = centers[0, face_idx], rots[0, face_idx], k[0, face_idx, None]
    local_means = solve_frames(affine[0, face_idx].double(), (means - c).double()).to(means.dtype)
    local_quats = quat_multiply(quat_conjugate(matrix_to_quat(r)), F.normalize(quats, dim=-1))
    return local_means, local_quats, log_scales - torch.log(kk)


def nearest_surface(template: Template, points: np.ndarray, betas: Tensor | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest rest-pose template surface point for points (N, 3): face (N,), bary (N, 3), distance (N,)."""
    verts = template.rest_vertices(betas).detach().cpu().numpy()
    query = SurfaceQuery(verts, template.faces.cpu().numpy())
    return query.closest(points)


def skinning_from_surface(template: Template, face_idx: Tensor, bary: Tensor) -> Tensor:
    """Skinning weights (N, J): the barycentric blend of the triangle's vertex weights."""
    corners = template.faces[face_idx]  # (N, 3)
    return (template.weights[corners] * bary[..., None]).sum(dim=1)
