"""``avatar animate``: a motion drives an avatar; frames come out in batches.

The motion is fitted to the template (joint layout, expression length), resampled to the
output rate, and paired with a camera per frame: ``front`` (fixed, framing the whole clip),
``follow`` (keeps the root in frame for walks), ``orbit`` (one turn over the clip) or ``auto``
(the default: ``follow`` for a clip whose root travels further than half the subject's
height, so a walker stays large in frame, else ``front``).
Frames are posed, deformed and rendered ``batch`` at a time on the avatar's device.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from avatarcli.errors import AvatarError
from avatarcli.model.avatar import Avatar
from avatarcli.motion.motion import Motion, Retarget, resample, to_template_poses
from avatarcli.render.cameras import Cameras, framing, framing_distance, intrinsics, look_at, orbit_positions
from avatarcli.render.lights import EnvironmentLight
from avatarcli.render.rasterize import render_gaussians, to_uint8
from avatarcli.render.shading import Lighting, avatar_colors, own_light
from avatarcli.templates.template import Pose, Template

CAMERAS = ("auto", "front", "follow", "orbit")
FOLLOW_TRAVEL = 0.5  # ``auto`` follows a root that goes further than this many subject heights


@dataclass
class AnimateOptions:
    """How to turn a motion into frames.

    Attributes:
        fps: output frame rate; None keeps the motion's.
        size: (width, height) in pixels.
        camera: "auto", "front", "follow" or "orbit" (see :func:`choose_camera`).
        distance: camera distance in metres; None frames the subject.
        elevation, azimuth: camera angles in degrees (azimuth 0 faces the avatar).
        fovy: vertical field of view in degrees.
        background: (3,) colour.
        start, end: seconds of the motion to use.
        batch: frames rendered together.
    """

    fps: float | None = None
    size: tuple[int, int] = (512, 512)
    camera: str = "auto"
    distance: float | None = None
    elevation: float | None = None
    azimuth: float = 0.0
    fovy: float = 30.0
    background: Tensor = field(default_factory=lambda: torch.ones(3))
    start: float | None = None
    end: float | None = None
    batch: int = 8


@dataclass
class FramePlan:
    """Everything needed to render a clip: a pose and a camera per frame, which kind of
    camera that is ("front", "follow" or "orbit"; ``auto`` resolved) and the points (T, 3)
    the cameras look at."""

    poses: Pose
    cameras: Cameras
    fps: float
    retarget: Retarget
    camera: str = "front"
    targets: Tensor | None = None

    def __len__(self) -> int:
        return self.poses.batch


def _smooth(x: Tensor, frames: int) -> Tensor:
    """Moving average over ``frames`` (odd) along time, edges held."""
    if frames <= 1 or len(x) < 2:
        return x
    pad = frames // 2
    padded = torch.cat([x[:1].expand(pad, -1), x, x[-1:].expand(pad, -1)])
    kernel = torch.ones(1, 1, frames, dtype=x.dtype) / frames
    return torch.nn.functional.conv1d(padded.T[:, None], kernel)[:, 0].T


def choose_camera(camera: str, translation: Tensor, rest_means: Tensor) -> str:
    """The camera for a clip: ``camera`` itself, or for "auto", "follow" when the root
    translation (T, 3) goes further from its start than ``FOLLOW_TRAVEL`` times the height of
    the rest-pose Gaussians (N, 3), and "front" otherwise. A fixed camera that frames a whole
    walk leaves the walker a fraction of the frame; one that follows a subject swaying on
    the spot would only add motion to the picture."""
    if camera != "auto":
        return camera
    y = rest_means[:, 1].detach().float()
    height = float(torch.quantile(y, 0.998) - torch.quantile(y, 0.002)) if len(y) < 16_000_000 else float(y.max() - y.min())
    travel = float((translation - translation[:1]).norm(dim=-1).max())
    return "follow" if travel > FOLLOW_TRAVEL * height else "front"


def plan_frames(avatar: Avatar, template: Template, motion: Motion, opts: AnimateOptions) -> FramePlan:
    """Fit, resample and slice the motion, and place a camera for every frame."""
    if opts.camera not in CAMERAS:
        raise AvatarError(f"unknown camera {opts.camera!r}: choose {', '.join(CAMERAS)}")
    clip = motion.slice_seconds(opts.start, opts.end) if (opts.start is not None or opts.end is not None) else motion
    fps = float(opts.fps) if opts.fps is not None else clip.fps
    clip = resample(clip, fps)
    poses, retarget = to_template_poses(clip, template)
    poses.translation = poses.translation - poses.translation[:1]  # the clip starts where the avatar stands
    device = template.device
    with torch.no_grad():
        rest_means = avatar.posed(template).means[0]
        center, radius = framing(rest_means)
    w, h = opts.size
    t = len(clip)
    trans = poses.translation.cpu()
    camera = choose_camera(opts.camera, trans, rest_means)
    elevation = opts.elevation if opts.elevation is not None else (0.0 if template.kind == "head" else 8.0)
    if camera == "follow":
        targets = center.cpu() + _smooth(trans, max(1, int(fps * 0.5)) | 1)
        reach = radius
    else:
        mean = trans.mean(0)
        targets = (center.cpu() + mean).expand(t, 3)
        reach = radius + float((trans - mean).norm(dim=-1).max())
    distance = opts.distance if opts.distance is not None else framing_distance(reach, opts.fovy, fill=0.9)
    azimuth = torch.full((t,), float(opts.azimuth))
    if camera == "orbit":
        azimuth = azimuth + 360.0 * torch.arange(t, dtype=torch.float32) / max(t, 1)
    eyes = orbit_positions(targets, torch.full((t,), float(distance)), azimuth, torch.full((t,), float(elevation)))
    cams = Cameras(look_at(eyes, targets), intrinsics(torch.full((t,), float(opts.fovy)), w, h), w, h).to(device)
    return FramePlan(poses, cams, fps, retarget, camera, targets)


@torch.no_grad()
def render_frames(
    avatar: Avatar,
    template: Template,
    plan: FramePlan,
    background: Tensor,
    batch: int = 8,
    light: EnvironmentLight | None = None,
    light_rotate: float = 0.0,
) -> Iterator[np.ndarray]:
    """Frames (b, H, W, 3) uint8, ``batch`` at a time, in order.

    An avatar with materials is lit by ``light`` (default: its own, :func:`~avatarcli.render.shading.own_light`),
    turned ``light_rotate`` degrees a second about the vertical; one of colours shows them as they are.
    """
    av = avatar.to(template.device)
    bg = background.to(template.device)
    lit = light or own_light(av)
    lighting = None if lit is None or av.material is None else Lighting.of(lit, template.device, clip_light_angles(plan, light_rotate))
    for s in range(0, len(plan), batch):
        idx = slice(s, min(s + batch, len(plan)))
        pg = av.posed(template, plan.poses.index(idx))
        cams = plan.cameras.index(idx)
        colors = None if lighting is None else avatar_colors(av, template, pg, cams, lighting.index(idx))
        images, _, _ = render_gaussians(pg, cams, bg, colors=colors)
        yield to_uint8(images)


def clip_light_angles(plan: FramePlan, degrees_per_second: float) -> Tensor | None:
    """The light's turn (T,) in radians at each frame of a clip, or None when it does not turn."""
    if not degrees_per_second:
        return None
    return torch.arange(len(plan), dtype=torch.float32) / plan.fps * math.radians(degrees_per_second)


def expression_notice(retarget: Retarget) -> str | None:
    """The one-time message about expression length, or None when nothing was changed."""
    a, b = retarget.expression_from, retarget.expression_to
    if a == b or a == 0:
        return None
    if a > b:
        return f"the motion has {a} expression coefficients and the template {b}: the first {b} are used"
    return f"the motion has {a} expression coefficients and the template {b}: the rest are zero"


def duration_text(frames: int, fps: float) -> str:
    return f"{frames} frames, {frames / fps:.2f} s at {fps:g} fps" if math.isfinite(fps) else f"{frames} frames"
