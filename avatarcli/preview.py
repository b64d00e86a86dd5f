"""Still views of an avatar: turntables for a quick look, and the framing every view shares."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from avatarcli.avatar import Avatar, check_template
from avatarcli.binding import PosedGaussians, deform
from avatarcli.render import render_gaussians
from avatarcli.render.cameras import Cameras, orbit
from avatarcli.templates import Pose, Template


def framing(posed: PosedGaussians) -> tuple[Tensor, float]:
    """Centre (3,) and radius of the first pose's Gaussians, ignoring stray outliers."""
    m = posed.means[0].detach()
    lo = torch.quantile(m.float(), 0.002, dim=0) if len(m) < 16_000_000 else m.min(0).values
    hi = torch.quantile(m.float(), 0.998, dim=0) if len(m) < 16_000_000 else m.max(0).values
    return (lo + hi) / 2, float((hi - lo).norm() / 2)


def turntable_cameras(
    center: Tensor, radius: float, views: int, size: tuple[int, int], elevation: float = 5.0, fovy: float = 35.0
) -> Cameras:
    """``views`` cameras evenly around the subject, starting in front."""
    az = torch.arange(views, dtype=torch.float32, device=center.device) * (360.0 / views)
    distance = radius / (0.92 * math.tan(math.radians(fovy) * 0.5))
    return orbit(center, distance, az, elevation, fovy, size[0], size[1])


@torch.no_grad()
def render_views(
    avatar: Avatar, template: Template, views: int, size: tuple[int, int], background: Tensor, elevation: float = 5.0
) -> Tensor:
    """Turntable renders (views, H, W, 3) in [0, 1] of the avatar in its rest pose."""
    check_template(avatar, template)
    device = template.device
    av = avatar.to(device)
    pose: Pose = template.zero_pose(1)
    posed = template.pose(pose, av.betas if av.betas.numel() else None)
    pg = deform(av.gaussians, av.binding, template, posed)
    center, radius = framing(pg)
    cams = turntable_cameras(center, radius, views, size, elevation).to(device)
    images, _, _ = render_gaussians(pg, cams, background.to(device))
    return images.clamp(0, 1)
