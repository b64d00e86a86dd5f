"""The relighting gauge: how well a captured avatar looks under lights its video never had.

1. A reference head with known materials: the built-in template's Gaussians flattened onto its
   surface (so their normals are the surface's), with a procedural albedo (patches of colour,
   hard stripes), roughness and F0.
2. Its video: the reference turning, nodding and talking in front of a fixed camera, lit by
   light A (a preset), the frames over black and its opacity as the person mask.
3. Two captures of that video, through capture's own trainer (frame source, photometric
   loss, densification, per-frame pose corrections): one relightable (materials and the
   video's light learnt), one of colours (what capture makes without ``--relightable``).
   The poses are the ones that made the video (tracking is measured elsewhere), so what the
   gauge sees is the appearance alone.
4. The held-out frames (the last part of the clip, poses training never saw) rendered by
   each capture and by the reference, under light A (the relightable capture under its own,
   learnt light) and under lights B and C (the capture of colours cannot change: it shows
   its colours under every light). PSNR and SSIM over the whole frame and inside the
   reference's silhouette. Two diagnostics besides: the same frames under a uniform white
   light ("uniform": the albedo, plus a little specular), which shows how much shading each
   capture kept in its colours, and how far the learnt light's irradiance is from light A's
   (``light_error``: RMS over all normals, relative to A's).

The relit PSNR under B and C against the same-light PSNR says how much of the light the
albedo kept; the relit against the capture of colours under B and C says what relighting
is worth. ``bench/relight.py`` runs it at 512 px on a GPU; a test runs it tiny on the CPU.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor

from avatarcli.capture.fit import CaptureSettings, capture_config
from avatarcli.capture.frames import FrameSource, PriorWeights
from avatarcli.capture.lighting import VideoLight, facing_camera
from avatarcli.capture.photometric import LossWeights, PhotometricLoss, masked_psnr, masked_ssim
from avatarcli.evaluation.reference import procedural_colors
from avatarcli.generate.trainer import Trainer
from avatarcli.model.avatar import Avatar
from avatarcli.model.binding import deform, rest_posed
from avatarcli.model.initialize import init_avatar
from avatarcli.model.material import Material, srgb_to_linear, with_material
from avatarcli.render.cameras import Cameras, framing, intrinsics, look_at
from avatarcli.render.lights import (
    PREFILTER_SIZE,
    EnvironmentLight,
    equirect_directions,
    evaluate_irradiance,
    irradiance_coefficients,
    preset_light,
)  # fmt: skip
from avatarcli.render.rasterize import render_gaussians
from avatarcli.render.shading import Lighting, avatar_colors, own_light
from avatarcli.templates.template import Pose, Template


@dataclass
class GaugeSettings:
    """The gauge's sizes and lights.

    Attributes:
        size: frame width and height, pixels.
        frames: frames of the clip; holdout: its last fraction, scored.
        fps: the clip's frame rate (sets how fast the head moves).
        steps, batch: each capture's training.
        reference_points, capture_points: Gaussians per template triangle of the reference
            and of the captures' start.
        video_light: light A; relights: lights B and C.
        seed: the reference's materials, the captures' draws.
    """

    size: int = 512
    frames: int = 120
    holdout: float = 0.2
    fps: float = 30.0
    steps: int = 3000
    batch: int = 4
    reference_points: int = 6
    capture_points: int = 4
    video_light: str = "studio"
    relights: tuple[str, ...] = ("sunset", "daylight")
    seed: int = 0


def reference_head(template: Template, points_per_triangle: int, seed: int = 0) -> Avatar:
    """The reference: the template's Gaussians flat on its surface, with procedural materials."""
    tpl = template.to("cpu")
    base = with_material(init_avatar(tpl, points_per_triangle, seed), tpl, thickness=0.05)
    world = deform(base.gaussians, base.binding, tpl, rest_posed(tpl)).means[0]
    rgb = procedural_colors(world, seed + 11, cell=0.03, stripe=0.02)
    albedo = srgb_to_linear(0.15 + 0.8 * rgb).clamp(0.02, 0.95)
    cells = torch.floor(world / 0.05).long()
    h = ((cells[:, 0] * 73856093) ^ (cells[:, 1] * 19349663) ^ (cells[:, 2] * 83492791)) % 1000
    roughness = 0.35 + 0.45 * h.float() / 1000.0
    specular = 0.03 + 0.03 * ((h * 7) % 1000).float() / 1000.0
    base.material = Material.from_values(albedo, roughness, specular)
    base.meta.update(stage="reference", prompt=None, seed=seed)
    return base


def head_motion(template: Template, frames: int, fps: float) -> Pose:
    """A clip of the head turning (yaw to 40 degrees either way), nodding, tilting and talking."""
    t = torch.arange(frames, dtype=torch.float32) / fps
    rot = torch.zeros(frames, template.num_joints, 3)
    rot[:, 1, 1] = math.radians(40) * torch.sin(2 * math.pi * 0.23 * t)  # neck yaw
    rot[:, 1, 0] = math.radians(15) * torch.sin(2 * math.pi * 0.37 * t + 1.0)  # nod
    rot[:, 1, 2] = math.radians(8) * torch.sin(2 * math.pi * 0.29 * t + 2.0)  # tilt
    rot[:, 2, 0] = 0.12 * (1 + torch.sin(2 * math.pi * 1.3 * t)).clamp_min(0)  # jaw
    expr = torch.zeros(frames, template.num_expression)
    for k in range(template.num_expression):
        expr[:, k] = 0.4 * (1 + torch.sin(2 * math.pi * (0.4 + 0.13 * k) * t + k)) / 2
    return Pose(rot, expr, torch.zeros(frames, 3))


def front_camera(template: Template, reference: Avatar, size: int, count: int, fovy: float = 30.0) -> Cameras:
    """A fixed camera in front of the head, framing it with some room to turn."""
    with torch.no_grad():
        center, radius = framing(reference.posed(template.to("cpu")).means[0])
    distance = 1.15 * radius / math.tan(math.radians(fovy / 2))
    eye = (center + torch.tensor([0.0, 0.0, distance]))[None].expand(count, 3)
    return Cameras(look_at(eye, center[None].expand(count, 3)), intrinsics(torch.full((count,), fovy), size, size), size, size)


@torch.no_grad()
def render_lit(
    avatar: Avatar, template: Template, poses: Pose, cameras: Cameras, light: EnvironmentLight | None, batch: int = 8
) -> tuple[Tensor, Tensor]:
    """Renders (T, H, W, 3) over black and opacities (T, H, W) of ``avatar`` at ``poses``: one
    with materials under ``light`` (None: its own), one of colours as it is."""
    dev = template.device
    av = avatar.to(dev)
    lit = light or own_light(av)
    lighting = None if av.material is None or lit is None else Lighting.of(lit, dev)
    images, alphas = [], []
    for s in range(0, poses.batch, batch):
        idx = list(range(s, min(s + batch, poses.batch)))
        pg = av.posed(template, poses.index(idx).to(dev))
        cams = cameras.index(idx).to(dev)
        colors = None if lighting is None else avatar_colors(av, template, pg, cams, lighting)
        img, alpha, _ = render_gaussians(pg, cams, torch.zeros(3, device=dev), colors=colors)
        images.append(img.clamp(0, 1).cpu())
        alphas.append(alpha[..., 0].cpu())
    return torch.cat(images), torch.cat(alphas)


@dataclass
class GaugeResult:
    """The scores: ``scores[capture][light]`` is {psnr, ssim, psnr_masked, ssim_masked} of the
    held-out frames, capture "relightable" or "colours", light "video" (A) or a relight's name."""

    settings: GaugeSettings
    scores: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    gaussians: dict[str, int] = field(default_factory=dict)
    avatars: dict[str, Avatar] = field(default_factory=dict)
    light_error: float | None = None

    def summary(self) -> dict[str, float]:
        """The numbers the targets are set on (PSNR inside the silhouette, dB): same light, the
        relights' mean, the colours' capture under the relights, and the two differences."""
        r, c = self.scores["relightable"], self.scores["colours"]
        relit = sum(r[n]["psnr_masked"] for n in self.settings.relights) / len(self.settings.relights)
        baked = sum(c[n]["psnr_masked"] for n in self.settings.relights) / len(self.settings.relights)
        same = r["video"]["psnr_masked"]
        return {
            "same_light": same,
            "relit": relit,
            "colours_relit": baked,
            "relit_below_same": same - relit,
            "relit_above_colours": relit - baked,
        }

    def record(self) -> dict:
        return {"settings": asdict(self.settings), "scores": self.scores, "seconds": self.seconds, "gaussians": self.gaussians,
                "light_error": self.light_error, "summary": self.summary()}  # fmt: skip


def irradiance_error(learnt: Tensor, truth: Tensor) -> float:
    """RMS difference of two panoramas' irradiance ``E(n) / pi`` over normals on a grid, relative
    to the second's RMS (both as normalised lights are: their scale is not the error)."""
    dirs = equirect_directions(*PREFILTER_SIZE).reshape(1, -1, 3)
    a, b = (evaluate_irradiance(irradiance_coefficients(r.float().cpu())[None], dirs)[0] for r in (learnt, truth))
    return float((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt())


def _capture(template: Template, frames: Tensor, person: Tensor, poses: Pose, cameras: Cameras, train: Tensor, relightable: bool,
             s: GaugeSettings, on_step: object = None) -> Trainer:  # fmt: skip
    """One capture of the gauge's video (as ``capture.fit.make_trainer`` builds it, from the known poses)."""
    dev = template.device
    settings = CaptureSettings(steps=s.steps, batch=s.batch, resolution=s.size, seed=s.seed, relightable=relightable)
    cfg = capture_config("head", "relighting gauge", settings, checkpoint_every=0)
    start = init_avatar(template.to("cpu"), s.capture_points, s.seed)
    if relightable:
        start = with_material(start, template.to("cpu"))
    source = FrameSource(poses, cameras.index([0]), train, s.seed, PriorWeights(), device=dev)
    loss = PhotometricLoss(frames, person, None, dev, LossWeights(), s.seed)
    lights = VideoLight(dev, facing_camera(cameras)) if relightable else None
    trainer = Trainer(start, template, loss, cfg, source=source, lights=lights)
    trainer.train(on_step)  # type: ignore[arg-type]
    return trainer


def run_gauge(template: Template, settings: GaugeSettings | None = None, on_step: object = None) -> GaugeResult:
    """Make the reference and its video, capture it both ways and score the held-out frames."""
    s = settings or GaugeSettings()
    out = GaugeResult(s)
    ref = reference_head(template, s.reference_points, s.seed)
    poses = head_motion(template, s.frames, s.fps)
    cams = front_camera(template, ref, s.size, s.frames)
    video_light = preset_light(s.video_light)
    frames, alpha = render_lit(ref, template, poses, cams, video_light)
    video = (frames * 255 + 0.5).to(torch.uint8)
    person = (alpha * 255 + 0.5).to(torch.uint8)
    held = max(1, math.floor(s.frames * s.holdout))
    train, test = torch.arange(s.frames - held), torch.arange(s.frames - held, s.frames)
    test_poses, test_cams = poses.index(test), cams.index(test)
    lights = {n: preset_light(n) for n in s.relights} | {"uniform": EnvironmentLight.from_image(torch.ones(8, 16, 3), "uniform")}
    targets = {"video": frames[test]} | {n: render_lit(ref, template, test_poses, test_cams, light)[0] for n, light in lights.items()}
    inside = alpha[test] > 0.5
    for name, relightable in (("relightable", True), ("colours", False)):
        t0 = time.perf_counter()
        trainer = _capture(template, video, person, poses, cams, train, relightable, s, on_step)
        if template.device.type == "cuda":
            torch.cuda.synchronize()
        out.seconds[name] = round(time.perf_counter() - t0, 2)
        avatar = trainer.avatar(final=True)
        out.avatars[name], out.gaussians[name] = avatar, len(avatar)
        out.scores[name] = {}
        if avatar.material is not None and avatar.material.light is not None:
            out.light_error = irradiance_error(avatar.material.light, video_light.radiance)
        for light_name, target in targets.items():
            render, _ = render_lit(avatar, template, test_poses, test_cams, lights.get(light_name))
            out.scores[name][light_name] = {
                "psnr": masked_psnr(render, target), "ssim": masked_ssim(render, target),
                "psnr_masked": masked_psnr(render, target, inside), "ssim_masked": masked_ssim(render, target, inside),
            }  # fmt: skip
    return out
