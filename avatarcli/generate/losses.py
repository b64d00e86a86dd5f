"""Regularisers that keep generated Gaussians animatable."""

from __future__ import annotations

import torch
from torch import Tensor

from avatarcli.model.binding import SkinningBinding, TriangleBinding, _frames
from avatarcli.model.gaussians import Gaussians
from avatarcli.templates.template import Posed, Template


def head_geometry(gaussians: Gaussians, binding: TriangleBinding, template: Template, rest: Posed, w_pos: float, w_scale: float) -> Tensor:
    """HeadStudio's area-adaptive geometry regulariser (eqs. 8-9).

    Per Gaussian on a triangle of area a whose centre is within tau of its corners:
    ``(w_pos max(|offset|, tau/2) + w_scale |max(sqrt(a) s, tau/2)|) / sqrt(a)``, averaged.
    Only Gaussians farther than tau/2 from their triangle, or larger than tau/2, are pulled
    back; big triangles (skull, jaw) allow proportionally more, so helmets and beards grow.
    """
    centers, _, k, affine = _frames(rest.vertices, template.faces)
    tri = rest.vertices[0, template.faces]  # (F, 3, 3)
    tau = (tri - centers[0, :, None]).norm(dim=-1).max(dim=-1).values
    f = binding.face_idx
    offset = (affine[0, f] @ gaussians.means[..., None])[..., 0].norm(dim=-1)
    half = 0.5 * tau[f]
    scale = k[0, f, None] * torch.exp(gaussians.log_scales)
    l_pos = torch.maximum(offset, half)
    l_scale = torch.maximum(scale, half[:, None]).norm(dim=-1)
    return ((w_pos * l_pos + w_scale * l_scale) / k[0, f]).mean()


def body_scale(gaussians: Gaussians, limit: float) -> Tensor:
    """GaussianMotion eq. 7: mean over Gaussians of max(max axis scale, r) - r."""
    s = torch.exp(gaussians.log_scales).max(dim=-1).values
    return (torch.clamp_min(s, limit) - limit).mean()


def residual_penalty(binding: SkinningBinding, means: Tensor) -> Tensor:
    """L2 of the learnt weight corrections (keeps them close to the template's weights)."""
    if binding.residual is None:
        return means.new_zeros(())
    return (binding.residual(means) ** 2).mean()
