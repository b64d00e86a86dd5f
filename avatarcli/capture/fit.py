"""``avatar capture``'s work: a video to an avatar.

1. The span is decoded once: MediaPipe tracks the face or the body (``avatar track``'s fit,
   on the training device), the selfie segmenter finds the person, and the frames are kept
   at the training size (:mod:`~avatarcli.capture.footage`).
2. Gaussians are sampled on the template with the tracked shape (``avatar init``).
3. The generation trainer fits them, its views being the video's frames at their tracked
   poses and camera (:class:`~avatarcli.capture.frames.FrameSource`, whose per-frame pose
   corrections train too), its guidance the photometric loss
   (:class:`~avatarcli.capture.photometric.PhotometricLoss`), with its densification,
   regularisers, checkpoints and interruption handling.
4. The last ``holdout`` fraction of the span is kept out of training and scored: their
   poses are refined against their frames with the avatar frozen (the tracker saw those
   frames too), then the renders are compared with the frames.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor

from avatarcli.capture.footage import Footage, FootageRecorder, training_size
from avatarcli.capture.frames import FrameSource, PriorWeights, video_cameras
from avatarcli.capture.lighting import VideoLight, facing_camera
from avatarcli.capture.photometric import LossWeights, PhotometricLoss, masked_psnr, masked_ssim
from avatarcli.capture.regions import PERSON, head_weights
from avatarcli.errors import AvatarError
from avatarcli.generate.config import DensifyConfig, GenerateConfig, LearningRates, recipe
from avatarcli.generate.distributed import whole
from avatarcli.generate.guidance.protocol import Scene
from avatarcli.generate.trainer import Trainer
from avatarcli.model.initialize import init_avatar
from avatarcli.model.material import with_material
from avatarcli.motion.segmentation import PersonSegmenter
from avatarcli.motion.tracking import Progress, Tracked, TrackSettings, span_seconds, track_video
from avatarcli.motion.video import VideoInfo
from avatarcli.render.cameras import Cameras
from avatarcli.templates.template import Pose, Template

MIN_SECONDS = 1.0  # the shortest span capture fits
MIN_TRAIN_FRAMES = 8
MIN_PERSON = 0.01  # fraction of a frame the person must cover, in most frames


@dataclass
class CaptureSettings:
    """How a video is captured.

    Attributes:
        track: the span, camera and smoothing of the tracking (as ``avatar track``).
        holdout: the last fraction of the span kept out of training and scored.
        steps, batch: training steps and frames per step (None: the kind's default).
        resolution: the long side of the frames trained on, pixels.
        points_per_triangle: Gaussians sampled per template triangle to start.
        seed: seeds the sampling, frame draws and background colours.
        refine_steps: steps refining the held-out frames' poses before they are scored.
        loss: the photometric loss's weights; prior: what pose corrections cost.
        relightable: learn materials and the video's light instead of colours
            (:mod:`~avatarcli.capture.lighting`).
        pose_dependent: fit offsets that follow the pose (:mod:`avatarcli.model.pose_dependent`).
    """

    track: TrackSettings = field(default_factory=TrackSettings)
    holdout: float = 0.0
    steps: int | None = None
    batch: int | None = None
    resolution: int = 512
    points_per_triangle: int | None = None
    seed: int = 0
    refine_steps: int = 100
    loss: LossWeights = field(default_factory=LossWeights)
    prior: PriorWeights = field(default_factory=PriorWeights)
    relightable: bool = False
    pose_dependent: bool = False

    def check(self) -> None:
        """Raise AvatarError for settings out of range."""
        self.track.check()
        if not (math.isfinite(self.holdout) and 0.0 <= self.holdout <= 0.5):
            raise AvatarError(f"the held-out fraction must be between 0 and 0.5 (got {self.holdout:g})")
        for name, value, low, high in (("steps", self.steps, 1, 1_000_000), ("the batch", self.batch, 1, 64),
                                       ("the resolution", self.resolution, 32, 2048),
                                       ("points per triangle", self.points_per_triangle, 1, 100),
                                       ("the refinement steps", self.refine_steps, 0, 100_000)):  # fmt: skip
            if value is not None and not low <= value <= high:
                raise AvatarError(f"{name} must be {low} to {high} (got {value})")


DEFAULTS = {  # per kind: steps, batch, points per triangle
    "head": (3000, 4, 4),
    "body": (3000, 4, 2),
}


def capture_config(kind: str, label: str, settings: CaptureSettings, checkpoint_every: int = 500) -> GenerateConfig:
    """The trainer's settings for a capture: one stage over the video's frames, the recipe's
    regularisers and densification (scheduled over the run), learning rates for a
    photometric fit, a black background (each view is recomposited over a colour of its own)."""
    steps, batch, _ = DEFAULTS[kind]
    steps = settings.steps or steps
    cfg = recipe(kind, label, stages=("animate",), steps=steps, batch=settings.batch or batch, seed=settings.seed,
                 resolution=max(8, settings.resolution // 8 * 8), checkpoint_every=checkpoint_every)  # fmt: skip
    cfg.view_prompts, cfg.face_closeups, cfg.background = False, 0.0, (0.0, 0.0, 0.0)
    if kind == "head":
        # triangle-local positions (a triangle's edges are a few millimetres): HeadStudio's units
        # the shape learns faster than in generation: the tracked shape fits the face's landmarks,
        # not the skull's outline, which the silhouette then corrects
        cfg.lr = LearningRates(position=2e-3, scale=5e-3, rotation=1e-3, color=1e-2, opacity=2.5e-2, shape=5e-3, residual=0.0)
    else:
        cfg.lr = LearningRates(position=1.6e-4, scale=5e-3, rotation=1e-3, color=1e-2, opacity=2.5e-2, shape=0.0, residual=1e-3)
    # grown and pruned in the first 60 % of the run, never in the first 250 steps: early
    # gradients are from a few frames each and would clone noise (short runs do not densify)
    cfg.densify = DensifyConfig(start=max(250, steps // 10), stop=steps * 6 // 10, every=max(100, steps // 30), max_gaussians=400_000)
    cfg.pose_dependent.enabled = settings.pose_dependent
    return cfg.validate()


@dataclass
class Prepared:
    """A tracked, segmented span, ready to train on."""

    footage: Footage
    tracked: Tracked
    poses: Pose  # (T) the kept frames' tracked poses in the camera's world
    weights: Tensor | None  # (T, H, W) uint8 pixel weights (heads), or None
    cameras: Cameras  # the video camera at the training size (one)
    train: Tensor  # (N,) kept frames trained on
    holdout: Tensor  # (M,) kept frames held out


def prepare(
    info: VideoInfo, template: Template, settings: CaptureSettings, on_progress: Progress | None = None, device: torch.device | None = None
) -> Prepared:
    """Track and segment the span of ``info`` that ``settings`` choose; AvatarError when the
    span is too short, or the face or person is missing."""
    span = span_seconds(info, settings.track)
    if math.isfinite(span) and span < MIN_SECONDS:
        raise AvatarError(f"{info.name}: the span is {span:.2f} s; capture needs at least {MIN_SECONDS:g} s of video")
    size = training_size(info.width, info.height, settings.resolution)
    expected = round(span * info.fps) + 1 if math.isfinite(span) else None
    recorder = FootageRecorder((info.width, info.height), size, expected, PersonSegmenter(quiet=False))
    try:
        tracked = track_video(info, template, settings.track, on_progress, tap=recorder, device=device)
    finally:
        footage = recorder.finish(info.fps)
    kept = footage.index
    poses = tracked.fitted.world_poses(template).index(kept)
    n = len(footage)
    held = math.floor(n * settings.holdout)
    train = torch.arange(n - held)
    if len(train) < MIN_TRAIN_FRAMES:
        raise AvatarError(
            f"{info.name}: {len(train)} frames are left to train on; capture needs at least {MIN_TRAIN_FRAMES} "
            f"(a longer span, or a smaller --holdout)"
        )
    covered = (footage.person > round(PERSON * 255)).float().mean((1, 2))
    if float((covered >= MIN_PERSON).float().mean()) < 0.5:
        raise AvatarError(
            f"{info.name}: the segmenter finds nobody in most frames (the person covers under {MIN_PERSON:.0%} of the frame); "
            "capture needs the person in view and not too small"
        )
    cameras = video_cameras(tracked.camera, footage.width, footage.height)
    betas = tracked.fitted.betas
    weights = None
    if template.kind == "head":
        weights = head_weights(template, poses, betas.to(template.device), cameras, footage.person)
    return Prepared(footage, tracked, poses, weights, cameras, train, torch.arange(n - held, n))


def make_trainer(prepared: Prepared, template: Template, settings: CaptureSettings, config: GenerateConfig) -> Trainer:
    """The trainer of a capture (its avatar sampled on the template with the tracked shape)."""
    kind = template.kind
    k = settings.points_per_triangle or DEFAULTS[kind][2]
    start = init_avatar(template, k, settings.seed)
    start.betas = prepared.tracked.fitted.betas.clone()
    if settings.relightable:
        start = with_material(start, template)
    device = template.device
    fp = prepared.footage
    source = FrameSource(prepared.poses, prepared.cameras, prepared.train, settings.seed, settings.prior, device=device)
    loss = PhotometricLoss(fp.frames, fp.person, prepared.weights, device, settings.loss, settings.seed)
    lights = VideoLight(device, facing_camera(prepared.cameras)) if settings.relightable else None
    return Trainer(start, template, loss, config, source=source, lights=lights)


def score_holdout(trainer: Trainer, prepared: Prepared, settings: CaptureSettings) -> dict[str, float]:
    """Refine the held-out frames' poses against their frames (the avatar frozen), then
    PSNR and SSIM of the renders against the frames: over the whole frame (the frame's
    background replaced by black through the person mask, the render over black) and
    inside the mask (pixels where the person's probability is over one half). Pixels a head
    avatar does not answer for count in neither."""
    frames = prepared.holdout
    if len(frames) == 0:
        return {}
    source = trainer.source
    assert isinstance(source, FrameSource) and isinstance(trainer.guidance, PhotometricLoss)
    avatar = trainer.model
    with torch.no_grad():
        g, binding = avatar.gaussians().detach(), avatar.binding()
    betas = avatar.betas.detach()
    params = [source.rotations, source.translation] + ([source.expression] if source.expression.shape[1] else [])
    if settings.refine_steps:
        opt = torch.optim.Adam(params, lr=source.lr.rotation, betas=(0.9, 0.99))
        gen = torch.Generator().manual_seed(settings.seed + 1)
        batch = trainer.cfg.batch
        for _ in range(settings.refine_steps):
            trainer.interrupt.check()
            pick = frames[torch.randperm(len(frames), generator=gen)[:batch]]
            loss = _frame_loss(trainer, g, binding, betas, pick, gen)
            prior = source.weights.rotation * source.rotations[pick.to(source.device)].pow(2).sum((1, 2)).mean()
            opt.zero_grad(set_to_none=True)
            (loss + prior).backward()
            opt.step()
            for p in params:
                p.grad = None
    return _scores(trainer, g, binding, betas, frames)


def _render(trainer: Trainer, g, binding, betas: Tensor, frames: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[no-untyped-def]
    from avatarcli.model.binding import deform

    source = trainer.source
    assert isinstance(source, FrameSource)
    pose = source.frame_poses(frames.to(source.device))
    posed = trainer.tpl.pose(pose, betas)
    cams = source.views(posed, None, 0).cameras  # type: ignore[arg-type]
    with torch.no_grad():  # the offsets take no gradient from the pose: refining poses leaves the model alone
        offsets = trainer.model.offsets(pose)
    images, alphas, _ = trainer.render(deform(g, binding, trainer.tpl, posed, offsets), cams)
    return images, alphas


def _frame_loss(trainer: Trainer, g, binding, betas: Tensor, frames: Tensor, gen: torch.Generator) -> Tensor:  # type: ignore[no-untyped-def]
    images, alphas = _render(trainer, g, binding, betas, frames)
    scene = Scene(None, None, None, trainer._background, whole(len(frames)), frames, alphas)  # type: ignore[arg-type]
    loss, _ = trainer.guidance.loss(images, None, [], 1.0, gen, scene)
    return loss


@torch.no_grad()
def _scores(trainer: Trainer, g, binding, betas: Tensor, frames: Tensor, batch: int = 8) -> dict[str, float]:  # type: ignore[no-untyped-def]
    loss = trainer.guidance
    assert isinstance(loss, PhotometricLoss)
    renders, goals, inside, counted = [], [], [], []
    for s in range(0, len(frames), batch):
        f = frames[s : s + batch]
        images, _ = _render(trainer, g, binding, betas, f)
        target, mask, weight = loss.targets(f)
        renders.append(images.clamp(0, 1).cpu())
        goals.append((target * mask).cpu())
        inside.append(((mask > 0.5) & (weight > 0))[..., 0].cpu())
        counted.append((weight > 0)[..., 0].cpu())
    r, gl, m, c = torch.cat(renders), torch.cat(goals), torch.cat(inside), torch.cat(counted)
    return {
        "psnr": masked_psnr(r, gl, c), "ssim": masked_ssim(r, gl, c),
        "psnr_masked": masked_psnr(r, gl, m), "ssim_masked": masked_ssim(r, gl, m),
        "frames": float(len(frames)),
    }  # fmt: skip


def settings_record(settings: CaptureSettings) -> dict:
    """The settings as JSON-ready values (for the avatar's metadata)."""
    return asdict(settings)
