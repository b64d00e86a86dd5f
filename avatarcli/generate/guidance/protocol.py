"""What the trainer asks of a guidance: :class:`Guidance`, called each step with the
:class:`Scene` it rendered.

:class:`~avatarcli.generate.guidance.diffusion.DiffusionGuidance` distils a Stable Diffusion
model (+ ControlNet) with SDS, NFSD or ASD;
:class:`~avatarcli.evaluation.reference.ReferenceGuidance` pulls towards a hidden reference
avatar, to measure the machinery without diffusion weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from avatarcli.generate.distributed import Share
from avatarcli.render.cameras import Cameras
from avatarcli.templates.template import Pose, Posed


@dataclass
class Scene:
    """What a training step rendered: the poses, the posed templates (with the avatar's
    shape), the cameras and the background of this process's views, and which of the step's
    views they are (``share``; the whole step in a single process). A guidance draws its
    random timesteps and noise for the whole step and keeps this share, so that several
    processes together draw what one would. ``frames`` (B,) are the video frames the views
    show (capture; None in generation), ``alphas`` (B, H, W, 1) the renders' opacity (with
    gradients)."""

    pose: Pose
    posed: Posed
    cameras: Cameras
    background: Tensor
    share: Share
    frames: Tensor | None = None
    alphas: Tensor | None = None


class Guidance(Protocol):
    """What the trainer needs from a guidance (diffusion or reference)."""

    name: str
    resolution: int

    def loss(
        self,
        images: Tensor,
        conditions: Tensor | None,
        prompts: list[str],
        progress: float,
        generator: torch.Generator,
        scene: Scene,
    ) -> tuple[Tensor, dict]:
        """The distillation loss for rendered views.

        Args:
            images: (B, H, W, 3) renders in [0, 1], requiring grad.
            conditions: (B, H', W', 3) ControlNet images in [0, 1], or None.
            prompts: B prompts (view suffixes already added).
            progress: fraction of training done (drives the timestep schedule).
            generator: CPU generator for timesteps and noise.
            scene: what was rendered.

        Returns:
            (scalar loss, info): ``info["t"]`` (B,) the timesteps drawn, ``info["elements"]``
            how many terms per view the loss sums (densification normalises by it).
        """
        ...

    def wants_conditions(self) -> bool:
        """Whether ``loss`` takes ControlNet condition images."""
        ...
