"""A Gaussian's normal: its shortest axis (HRAvatar), signed to point out of the surface it is
bound to.

A flat Gaussian lying on a surface is a small disc; the axis it is thinnest along is the
surface's normal up to its sign. The sign comes from the binding, in the binding's own space
(where it does not change with the pose): a head Gaussian's triangle frame has the
triangle's normal as its second axis, a body Gaussian's rest-pose surface point has its
triangle's normal. Posing turns the Gaussian's axes with it, so the signed axis stays outward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from avatarcli.model.binding import Binding, TriangleBinding
from avatarcli.rotations import quat_to_matrix
from avatarcli.templates.template import Template


def reference_normals(binding: Binding, template: Template, n: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """The outward surface normal (N, 3) of each of ``n`` Gaussians in the binding's local space:
    the triangle frame's normal axis (0, 1, 0) for a triangle binding, the rest-pose normal of
    the bound triangle for a skinning binding."""
    device = binding.face_idx.device
    if isinstance(binding, TriangleBinding):
        return torch.tensor([0.0, 1.0, 0.0], dtype=dtype, device=device).expand(n, 3)
    tri = template.v_template.to(device=device, dtype=dtype)[template.faces.to(device)[binding.face_idx]]  # (N, 3, 3)
    return F.normalize(torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1), dim=-1, eps=1e-12)


def shortest_axes(quats: Tensor, scales: Tensor) -> Tensor:
    """The unit axis (..., N, 3) each Gaussian is thinnest along, of rotations (..., N, 4)
    (w, x, y, z, any length) and scales or log-scales (..., N, 3)."""
    rot = quat_to_matrix(F.normalize(quats, dim=-1))
    k = scales.argmin(-1)
    return rot.gather(-1, k[..., None, None].expand(*k.shape, 3, 1))[..., 0]


def outward_signs(quats: Tensor, log_scales: Tensor, reference: Tensor) -> Tensor:
    """+1 or -1 (N,): the sign that turns each Gaussian's shortest axis (of local rotations
    (N, 4) and log-scales (N, 3)) towards its reference normal (N, 3)."""
    along = (shortest_axes(quats, log_scales) * reference).sum(-1)
    return torch.where(along < 0, -1.0, 1.0).to(quats.dtype)


def gaussian_normals(quats: Tensor, scales: Tensor, signs: Tensor) -> Tensor:
    """Outward unit normals (B, N, 3) of posed Gaussians: rotations (B, N, 4), scales (B, N, 3),
    signs (N,) from :func:`outward_signs` (posing keeps which axis is the shortest)."""
    return shortest_axes(quats, scales) * signs[:, None]
