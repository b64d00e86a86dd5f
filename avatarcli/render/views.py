"""Still views of an avatar: a turntable in the rest pose, for a quick look."""

from __future__ import annotations

import torch
from torch import Tensor

from avatarcli.model.avatar import Avatar
from avatarcli.render.cameras import framing, turntable_cameras
from avatarcli.render.rasterize import render_gaussians
from avatarcli.templates.template import Template


@torch.no_grad()
def render_views(
    avatar: Avatar, template: Template, views: int, size: tuple[int, int], background: Tensor, elevation: float = 5.0
) -> Tensor:
    """Turntable renders (views, H, W, 3) in [0, 1] of the avatar in its rest pose, on the template's device."""
    pg = avatar.posed(template)
    center, radius = framing(pg.means[0])
    cams = turntable_cameras(center, radius, views, size, elevation).to(template.device)
    images, _, _ = render_gaussians(pg, cams, background.to(template.device))
    return images.clamp(0, 1)
