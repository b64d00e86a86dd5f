"""The reference-guided reconstruction run that gauges the generation machinery, and the
held-out views and motions it is scored on (PSNR and SSIM, :mod:`~avatarcli.evaluation.metrics`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from avatarcli.evaluation.metrics import psnr, ssim
from avatarcli.evaluation.reference import ReferenceGuidance, reference_avatar
from avatarcli.generate.config import recipe
from avatarcli.generate.distributed import Group
from avatarcli.generate.trainer import StepReport, Trainer
from avatarcli.model.avatar import Avatar
from avatarcli.model.initialize import init_avatar
from avatarcli.motion.builtin import builtin_motion
from avatarcli.motion.motion import to_template_poses
from avatarcli.render.cameras import Cameras, framing, intrinsics, look_at, orbit_positions
from avatarcli.render.rasterize import render_gaussians
from avatarcli.templates.template import Pose, Template


@dataclass
class EvalSet:
    """Poses and cameras to compare renders on, one camera per pose."""

    name: str
    poses: Pose
    cameras: Cameras


def _ring(center: Tensor, distance: float, azimuths: list[float], elevations: list[float], size: int, fovy: float = 40.0) -> Cameras:
    az = torch.tensor([a for a in azimuths for _ in elevations], dtype=torch.float32)
    el = torch.tensor([e for _ in azimuths for e in elevations], dtype=torch.float32)
    c = center.cpu().float().expand(len(az), 3)
    eye = orbit_positions(c, torch.full((len(az),), distance), az, el)
    return Cameras(look_at(eye, c), intrinsics(torch.full((len(az),), fovy), size, size), size, size)


def _rest_framing(template: Template, reference: Avatar) -> tuple[Tensor, float]:
    with torch.no_grad():
        return framing(reference.posed(template).means[0])


def held_out_views(template: Template, reference: Avatar, size: int) -> EvalSet:
    """16 views in the rest pose (8 azimuths x 2 elevations) between the training cameras' draws."""
    center, radius = _rest_framing(template, reference)
    distance = radius / math.tan(math.radians(20.0)) * 1.1
    cams = _ring(center, distance, [22.5 + 45.0 * k for k in range(8)], [5.0, 25.0], size)
    return EvalSet("views", template.zero_pose(len(cams)), cams.to(template.device))


def held_out_motions(template: Template, reference: Avatar, motions: tuple[str, ...], size: int, frames: int = 6) -> EvalSet:
    """Frames of built-in motions seen from the front, three-quarters and the side."""
    center, radius = _rest_framing(template, reference)
    distance = radius / math.tan(math.radians(20.0)) * 1.15
    poses: list[Pose] = []
    cams: list[Cameras] = []
    for name in motions:
        clip, _ = to_template_poses(builtin_motion(name, template.kind), template)
        idx = torch.linspace(0, clip.batch - 1, frames).round().long().tolist()
        sel = clip.index(idx)
        sel.translation = torch.zeros_like(sel.translation)  # compare poses, not whereabouts
        for az in (0.0, 45.0, 90.0):
            poses.append(sel)
            cams.append(_ring(center, distance, [az], [5.0], size).index([0] * frames))
    pose = Pose(*(torch.cat([getattr(p, k) for p in poses]) for k in ("rotations", "expression", "translation")))
    cam = Cameras(torch.cat([c.viewmats for c in cams]), torch.cat([c.Ks for c in cams]), size, size)
    return EvalSet("motions", pose.to(template.device), cam.to(template.device))


@torch.no_grad()
def render_set(avatar: Avatar, template: Template, evalset: EvalSet, background: Tensor, batch: int = 8) -> Tensor:
    """Renders (N, H, W, 3) of ``avatar`` for every pose and camera of ``evalset``."""
    av = avatar.to(template.device)
    out = []
    for s in range(0, evalset.poses.batch, batch):
        idx = list(range(s, min(s + batch, evalset.poses.batch)))
        pg = av.posed(template, evalset.poses.index(idx))
        images, _, _ = render_gaussians(pg, evalset.cameras.index(idx), background.to(template.device))
        out.append(images.clamp(0, 1).cpu())
    return torch.cat(out)


@dataclass
class Reconstruction:
    """A reference-guided run and its scores."""

    kind: str
    steps: int
    resolution: int
    animated: bool
    gaussians: int
    seconds: float
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    avatar: Avatar | None = None


# Scores are taken on white whatever the recipe trains on, so that runs with different
# training backgrounds compare (and an avatar left see-through where the reference is solid
# shows on a background it was not trained against).
SCORE_BACKGROUND = (1.0, 1.0, 1.0)
HEAD_SPLIT = (("talk", "smile", "blink"), ("nod", "turn"))  # (train motions, held-out motions)
BODY_SPLIT = (("idle", "walk", "wave"), ("dance", "turn"))


def reconstruct(
    template: Template,
    steps: int,
    resolution: int,
    batch: int = 8,
    animated: bool = True,
    points_per_triangle: int = 4,
    seed: int = 0,
    eval_size: int | None = None,
    reference: Avatar | None = None,
    split: tuple[tuple[str, ...], tuple[str, ...]] | None = None,
    start: Avatar | None = None,
    on_step: Callable[[StepReport], None] | None = None,
    group: Group | None = None,
    learning_rates: dict[str, float] | None = None,
) -> Reconstruction:
    """Train a fresh avatar towards the hidden reference with the generate recipe, then score it.

    Training poses come from some built-in motions and scores use others, so the motion score
    is on poses training never saw. ``animated=False`` trains in the rest pose only.
    ``split`` overrides the (train, held-out) motions; ``start`` the initial avatar;
    ``group`` the processes training together (each scores the result alike);
    ``learning_rates`` overrides the recipe's by name (``LearningRates`` fields).
    """
    kind = template.kind
    train, held = split or (HEAD_SPLIT if kind == "head" else BODY_SPLIT)
    ref = reference or reference_avatar(template)
    cfg = recipe(kind, "the reference avatar", steps=steps, batch=batch, resolution=resolution, seed=seed, checkpoint_every=0)
    cfg.train_motions, cfg.animated, cfg.view_prompts = train, animated, False
    cfg.face_closeups = 0.0
    for name, value in (learning_rates or {}).items():
        if not hasattr(cfg.lr, name):
            raise ValueError(f"unknown learning rate {name!r}")
        setattr(cfg.lr, name, value)
    scale = steps / 10_000  # the recipe's densification schedule, compressed to the run's length
    d = cfg.densify
    d.start, d.stop, d.every = max(1, int(d.start * scale)), max(2, int(d.stop * scale)), max(1, int(d.every * scale))
    guide = ReferenceGuidance(ref, template, cfg.timesteps)
    start = start or init_avatar(template.to("cpu"), points_per_triangle, seed)
    t0 = time.perf_counter()
    trainer = Trainer(start, template, guide, cfg, group)
    trainer.train(on_step)
    if template.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    result = trainer.avatar(final=True)
    size = eval_size or resolution
    bg = torch.tensor(SCORE_BACKGROUND)
    scores = {}
    for evalset in (held_out_views(template, ref, size), held_out_motions(template, ref, held, size)):
        a = render_set(result, template, evalset, bg)
        b = render_set(ref, template, evalset, bg)
        scores[evalset.name] = {"psnr": psnr(a, b), "ssim": ssim(a, b)}
    return Reconstruction(kind, steps, resolution, animated, len(result), seconds, scores, result)
