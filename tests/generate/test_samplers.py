"""Training views: how the recipes frame their subjects."""

from __future__ import annotations

import math

import torch

from avatarcli.generate.config import recipe
from avatarcli.generate.guidance.diffusion import DiffusionGuidance, GuidanceConfig
from avatarcli.generate.guidance.random_weights import tiny_components
from avatarcli.generate.trainer import Trainer


def _fill(cameras, targets: torch.Tensor, height: float) -> torch.Tensor:
    """(C,) the fraction of each image's height that a segment of ``height`` metres, upright in
    the image and centred on the camera's target (C, 3), covers: projected, not computed."""
    up = -cameras.viewmats[:, 1, :3]  # the image's up direction (camera -y) in world space
    ends = torch.stack([targets + 0.5 * height * up, targets - 0.5 * height * up], dim=1)
    px, _ = cameras.project(ends)
    return (px[:, 0] - px[:, 1]).norm(dim=-1) / cameras.height


def test_heads_are_framed_as_headstudio_frames_flame(head_template, head_avatar):
    """HeadStudio scales FLAME so that its bounding box's longest side is 0.6 * 1.1**10 = 1.556
    units and samples cameras 1.5-2.0 units away with a vertical field of view of 40-70
    degrees: the head fills 1.556 / (2 d tan(fovy/2)) = 55.6 % to 142.5 % of the image height.
    The trainer's own view sampler must frame the template's head the same way."""
    cfg = recipe("head", "a knight", steps=2, batch=2, resolution=64)
    trainer = Trainer(head_avatar, head_template, DiffusionGuidance(tiny_components(torch.device("cpu")), GuidanceConfig()), cfg)
    lo, hi = head_template.v_template.min(0).values, head_template.v_template.max(0).values
    head = float((hi - lo).max())  # the head's longest side, as HeadStudio measures FLAME
    n = 1500
    posed = head_template.pose(head_template.zero_pose(n))
    views = trainer.source.sampler(posed, 512)
    verts = posed.vertices
    targets = (verts.max(1).values + verts.min(1).values) / 2
    fill = _fill(views.cameras, targets, head)
    near, far = 0.6 * 1.1**10 / (2 * 1.5 * math.tan(math.radians(20))), 0.6 * 1.1**10 / (2 * 2.0 * math.tan(math.radians(35)))
    assert abs(near - 1.4253) < 1e-3 and abs(far - 0.5557) < 1e-3
    assert float(fill.min()) >= far - 1e-3 and float(fill.max()) <= near + 1e-3
    # the draws reach both ends of the range: whole heads and close-ups
    assert float(fill.min()) < 0.62 and float(fill.max()) > 1.3
    # the head's centre is where the cameras look: the middle of the image
    px, depth = views.cameras.project(targets[:, None])
    assert (px[:, 0] - 256.0).abs().max() < 1e-2 and bool((depth > 0).all())
