"""Still views of an avatar: a turntable in the rest pose, for a quick look."""

from __future__ import annotations

import torch
from torch import Tensor

from avatarcli.model.avatar import Avatar
from avatarcli.render.cameras import framing, turntable_cameras
from avatarcli.render.lights import EnvironmentLight
from avatarcli.render.rasterize import render_gaussians
from avatarcli.render.shading import Lighting, avatar_colors, own_light
from avatarcli.templates.template import Template


@torch.no_grad()
def render_views(
    avatar: Avatar,
    template: Template,
    views: int,
    size: tuple[int, int],
    background: Tensor,
    elevation: float = 5.0,
    light: EnvironmentLight | None = None,
) -> Tensor:
    """Turntable renders (views, H, W, 3) in [0, 1] of the avatar in its rest pose, on the
    template's device; an avatar with materials lit by ``light`` (default: its own)."""
    pg = avatar.posed(template)
    center, radius = framing(pg.means[0])
    cams = turntable_cameras(center, radius, views, size, elevation).to(template.device)
    lit = (light or own_light(avatar)) if avatar.material is not None else None
    colors = None if lit is None else avatar_colors(avatar, template, pg, cams, Lighting.of(lit, template.device))
    images, _, _ = render_gaussians(pg, cams, background.to(template.device), colors=colors)
    return images.clamp(0, 1)
