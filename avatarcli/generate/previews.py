"""Preview images during generation: front, side and back renders in the rest pose, and the
front view's ControlNet condition, side by side in one PNG."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from avatarcli.formats.frames import write_png
from avatarcli.generate.parameters import AvatarParameters
from avatarcli.model.binding import deform, rest_posed
from avatarcli.model.gaussians import PosedGaussians
from avatarcli.render.cameras import Cameras, framing, turntable_cameras
from avatarcli.render.rasterize import render_gaussians, to_uint8
from avatarcli.templates.template import Posed, Template


@torch.no_grad()
def write_preview(
    path: Path,
    model: AvatarParameters,
    template: Template,
    background: Tensor,
    conditions: Callable[[Posed, Cameras], Tensor] | None,
    size: int = 256,
    shade: Callable[[PosedGaussians, Cameras], Tensor] | None = None,
) -> None:
    """Write the preview of ``model`` to ``path`` (``conditions`` draws the condition image, if
    any; ``shade`` colours an avatar with materials for the views, as training does)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    posed = rest_posed(template, model.betas)
    pg = deform(model.gaussians(), model.binding(), template, posed, model.offsets(template.zero_pose(1)))
    center, radius = framing(pg.means[0])
    cams = turntable_cameras(center, radius, 4, (size, size))
    views = cams.index([0, 1, 2])
    images, _, _ = render_gaussians(pg, views, background, colors=None if shade is None else shade(pg, views))
    panels = [images]
    if conditions is not None:
        panels.append(conditions(posed, cams.index([0])))
    write_png(np.concatenate(list(to_uint8(torch.cat(panels))), axis=1), path)
