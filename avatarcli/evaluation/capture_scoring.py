"""Scoring a capture against the capture gauge's ground truth (PSNR and SSIM, :mod:`.metrics`).

(a) Held-out frames (:func:`score_heldout`): the capture's renders of frames it did not train
on, at its own fitted poses and cameras, against the video's frames. Whole frame: the render
over a solid colour against the frame with its background replaced by the same colour
through the true alpha (INSTA's protocol; exact when the true background is known, as in the
gauge: the frame's background share is taken out and the colour put in, and pixels the person
does not reach are the colour, whatever the encoder made of the room). Inside the mask:
the same images, only pixels whose true alpha is above 0.5 (SSIM: windows centred there).

(b) Novel poses (:func:`novel_pose_set`, :func:`score_novel`): the captured avatar and the
reference driven by motions the video never showed (heads: the built-in nod and turn and a
grimace of expressions the video has none of; bodies: the built-in dance and a stretch with
a squat), seen by the video's own camera (front) and from three-quarters and the side at the
same distance, both over the same solid colour; scored on the whole frame and inside the
reference's alpha.

Scores over a set are PSNR of the mean squared error of all its pixels (as the generation
gauge's) and the mean SSIM; ``frame_psnr`` lists each frame's whole-frame PSNR.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from avatarcli.errors import AvatarError
from avatarcli.evaluation.capture_video import GaugeCamera, bumps, frame_times, keyframes, render_layers
from avatarcli.evaluation.metrics import crop_to_ssim, psnr_of_mse, ssim_map
from avatarcli.model.avatar import Avatar
from avatarcli.motion.builtin import builtin_motion, soft_hands
from avatarcli.motion.motion import Motion, to_template_poses
from avatarcli.render.cameras import Cameras, intrinsics, look_at, orbit_positions
from avatarcli.templates.mannequin.head_shape import EXPRESSION_NAMES
from avatarcli.templates.skeletons import SMPLX_JOINT_NAMES
from avatarcli.templates.template import Pose, Template

BACKGROUND = (1.0, 1.0, 1.0)  # the solid colour renders and frames are compared over
MASK_THRESHOLD = 0.5
VIEWS = {"front": 0.0, "three_quarter": 45.0, "side": 90.0}  # camera azimuths, degrees (front: the video's camera)
NOVEL_MOTIONS = {"head": ("nod", "turn", "grimace"), "body": ("dance", "stretch")}
_E = {name: i for i, name in enumerate(EXPRESSION_NAMES)}
_B = {name: i for i, name in enumerate(SMPLX_JOINT_NAMES)}


# -- image scores ---------------------------------------------------------------------------
@dataclass
class ImageScores:
    """PSNR and SSIM over a set of images added a batch at a time, whole and inside masks."""

    sq: float = 0.0
    values: int = 0
    sq_mask: float = 0.0
    values_mask: int = 0
    ssim_sum: float = 0.0
    ssim_count: int = 0
    ssim_sum_mask: float = 0.0
    ssim_count_mask: int = 0
    frame_psnr: list[float] = field(default_factory=list)

    def add(self, pred: Tensor, truth: Tensor, mask: Tensor) -> None:
        """Add images ``pred`` and ``truth`` (N, H, W, 3) in [0, 1] with ``mask`` (N, H, W) bool."""
        if pred.shape != truth.shape or pred.shape[:3] != mask.shape:
            raise ValueError(f"images {tuple(pred.shape)} / {tuple(truth.shape)} and mask {tuple(mask.shape)} do not match")
        sq = (pred.float() - truth.float()) ** 2
        m = mask.bool()
        self.sq += float(sq.sum())
        self.values += sq.numel()
        self.sq_mask += float(sq[m].sum())
        self.values_mask += int(m.sum()) * sq.shape[-1]
        self.frame_psnr += [psnr_of_mse(float(v)) for v in sq.mean((1, 2, 3))]
        s = ssim_map(pred, truth)
        cm = crop_to_ssim(m)
        self.ssim_sum += float(s.sum())
        self.ssim_count += s.numel()
        self.ssim_sum_mask += float(s[cm].sum())
        self.ssim_count_mask += int(cm.sum())

    def result(self) -> dict[str, object]:
        """``psnr`` / ``ssim`` (whole frame), ``psnr_mask`` / ``ssim_mask`` (None where no pixel
        is inside), ``frames``, ``mask_share`` (of the pixels) and ``frame_psnr``."""
        if not self.values:
            raise ValueError("no images were scored")
        return {
            "psnr": psnr_of_mse(self.sq / self.values),
            "ssim": self.ssim_sum / self.ssim_count,
            "psnr_mask": psnr_of_mse(self.sq_mask / self.values_mask) if self.values_mask else None,
            "ssim_mask": self.ssim_sum_mask / self.ssim_count_mask if self.ssim_count_mask else None,
            "frames": len(self.frame_psnr),
            "mask_share": self.values_mask / self.values,
            "frame_psnr": list(self.frame_psnr),
        }


def over(premultiplied: Tensor, alpha: Tensor, color: Sequence[float] = BACKGROUND) -> Tensor:
    """Renders over black (N, H, W, 3) with their alphas (N, H, W) put over a solid ``color``."""
    return premultiplied + (1.0 - alpha[..., None]) * torch.tensor(color, dtype=premultiplied.dtype)


def replace_background(frames: Tensor, masks: Tensor, backgrounds: Tensor | None = None, color: Sequence[float] = BACKGROUND) -> Tensor:
    """Frames (N, H, W, 3) with their background replaced by ``color`` through the alphas
    ``masks`` (N, H, W): exactly (``frame - (1 - a) bg + (1 - a) colour``, and the colour
    itself where the alpha is 0, so an encoder's noise on the room does not count) when the
    backgrounds (N, H, W, 3) are known, else ``a frame + (1 - a) colour``."""
    a = masks[..., None].float()
    c = torch.tensor(color, dtype=torch.float32)
    if backgrounds is None:
        return frames.float() * a + (1.0 - a) * c
    exact = (frames.float() - (1.0 - a) * backgrounds.float() + (1.0 - a) * c).clamp(0.0, 1.0)
    return torch.where(a > 0, exact, c.expand_as(exact))


def score_heldout(
    renders: Tensor,
    alphas: Tensor,
    frames: Tensor,
    true_masks: Tensor,
    backgrounds: Tensor | None = None,
    color: Sequence[float] = BACKGROUND,
    chunk: int = 16,
) -> dict[str, object]:
    """(a): a capture's renders of held-out frames against the video's (module docstring).

    Args:
        renders: (N, H, W, 3) the captured avatar at its fitted poses and cameras, over black
            (premultiplied: what the renderer gives without a background), in [0, 1].
        alphas: (N, H, W) or (N, H, W, 1) their alphas.
        frames: (N, H, W, 3) the video's frames, in [0, 1].
        true_masks: (N, H, W) the person's true alpha in the frames, in [0, 1].
        backgrounds: (N, H, W, 3) the frames' true backgrounds, when known.
        color: the solid background colour both are compared over.
        chunk: frames scored at once (bounds the memory).
    """
    alphas = alphas[..., 0] if alphas.dim() == 4 else alphas
    n = len(renders)
    if not (len(alphas) == len(frames) == len(true_masks) == n) or (backgrounds is not None and len(backgrounds) != n):
        raise ValueError("renders, alphas, frames, masks (and backgrounds) must hold the same frames")
    scores = ImageScores()
    for s in range(0, n, chunk):
        sl = slice(s, min(s + chunk, n))
        pred = over(renders[sl].float(), alphas[sl].float(), color).clamp(0, 1)
        truth = replace_background(frames[sl], true_masks[sl], None if backgrounds is None else backgrounds[sl], color)
        scores.add(pred, truth, true_masks[sl] > MASK_THRESHOLD)
    return scores.result()


# -- motions neither avatar saw ---------------------------------------------------------------
def grimace(seconds: float = 3.0, fps: float = 30.0) -> Motion:
    """A head pulling faces the gauge's talking video never shows: frowning, furrowed brows,
    puffed cheeks, stretched lips, a sneer, the eyes glancing aside, a slight tilt."""
    t = frame_times(seconds, fps)
    rot = torch.zeros(len(t), 5, 3)
    expr = torch.zeros(len(t), len(EXPRESSION_NAMES))
    for name, at in (("brow_furrow", 0.5), ("frown", 1.0), ("cheek_puff", 1.6), ("lip_stretch", 2.1), ("sneer", 2.6)):
        expr[:, _E[name]] = 0.7 * bumps(t, [at * seconds / 3.0], 0.35 * seconds / 3.0)
    rot[:, 1, 2] = 0.12 * torch.sin(2 * math.pi * t / seconds)
    rot[:, 2, 0] = 0.05 * bumps(t, [2.1 * seconds / 3.0], 0.3)
    rot[:, 3, 1] = rot[:, 4, 1] = 0.3 * torch.sin(2 * math.pi * t / seconds + 1.0)
    return Motion("head", rot, expr, torch.zeros(len(t), 3), float(fps), "capture gauge: grimace").validate()


def stretch(seconds: float = 4.0, fps: float = 30.0) -> Motion:
    """A body stretching, which the gauge's video never shows: both arms overhead, a bend to
    each side, the arms reaching forward, then a squat."""
    t = frame_times(seconds, fps) * (4.0 / seconds)  # the keys below are for 4 s
    rot = torch.zeros(len(t), 55, 3)
    up = keyframes(t, [(0.0, 0.0), (0.8, 1.0), (1.9, 1.0), (2.4, 0.0)])
    forward = keyframes(t, [(1.9, 0.0), (2.4, 1.0), (4.0, 1.0)])
    squat = keyframes(t, [(2.4, 0.0), (3.3, 1.0), (4.0, 0.6)])
    bend = keyframes(t, [(0.8, 0.0), (1.15, 1.0), (1.55, -1.0), (1.9, 0.0)])
    for side, sign in (("left", -1.0), ("right", 1.0)):
        down = 1.1 * (1 - up - forward).clamp(min=0)
        rot[:, _B[f"{side}_shoulder"], 2] = sign * (down - 1.25 * up)
        rot[:, _B[f"{side}_shoulder"], 1] = sign * 1.4 * forward
        rot[:, _B[f"{side}_elbow"], 1] = sign * 0.2
        rot[:, _B[f"{side}_hip"], 0] = -0.8 * squat
        rot[:, _B[f"{side}_knee"], 0] = 1.3 * squat
        rot[:, _B[f"{side}_ankle"], 0] = -0.5 * squat
    for spine in ("spine1", "spine2", "spine3"):
        rot[:, _B[spine], 2] = 0.12 * bend
    rot[:, _B["spine1"], 0] = 0.25 * squat
    soft_hands(rot)
    expr = torch.zeros(len(t), len(EXPRESSION_NAMES))
    expr[:, _E["lips_apart"]] = 0.3 * up
    trans = torch.stack([torch.zeros_like(t), -0.18 * squat, -0.1 * squat], -1)
    return Motion("body", rot, expr, trans, float(fps), "capture gauge: stretch").validate()


def novel_motion(name: str, kind: str, fps: float = 30.0) -> Motion:
    """A motion of (b): ``grimace`` (heads), ``stretch`` (bodies) or a built-in one."""
    if name == "grimace":
        return grimace(fps=fps)
    if name == "stretch":
        return stretch(fps=fps)
    return builtin_motion(name, kind, fps=fps)


@dataclass
class NovelSet:
    """Poses and cameras of (b), one camera per pose, and what each frame is.

    Attributes:
        poses: the poses (world space: placed in front of the video's camera).
        cameras: one per pose.
        views: each frame's camera name (keys of :data:`VIEWS`).
        motions: each frame's motion name.
    """

    poses: Pose
    cameras: Cameras
    views: list[str]
    motions: list[str]

    def __len__(self) -> int:
        return self.poses.batch


def view_cameras(camera: GaugeCamera, azimuths: Sequence[float]) -> Cameras:
    """Cameras at the video camera's distance from the placed subject, level, at ``azimuths``
    (degrees; 0 is the video's own camera, positive towards the subject's left)."""
    az = torch.tensor(list(azimuths), dtype=torch.float32)
    target = camera.target.expand(len(az), 3)
    eye = orbit_positions(target, torch.full((len(az),), camera.distance), az, torch.zeros(len(az)))
    eye[az == 0.0] = 0.0  # exactly the video's camera, not a rounding of it
    ks = intrinsics(torch.full((len(az),), camera.fov), camera.width, camera.height)
    return Cameras(look_at(eye, target), ks, camera.width, camera.height)


def novel_pose_set(
    template: Template,
    camera: GaugeCamera,
    frames_per_motion: int = 6,
    motions: Sequence[str] | None = None,
    views: dict[str, float] | None = None,
) -> NovelSet:
    """(b)'s frames: ``frames_per_motion`` frames spread over each motion of
    :data:`NOVEL_MOTIONS` (or ``motions``), each seen from every one of ``views`` (name:
    azimuth; :data:`VIEWS` when None), the subject placed as in the video."""
    kind = template.kind
    names = tuple(motions) if motions is not None else NOVEL_MOTIONS[kind]
    views = dict(views) if views is not None else dict(VIEWS)
    cams = view_cameras(camera, list(views.values()))
    parts: list[Pose] = []
    view_names: list[str] = []
    motion_names: list[str] = []
    cam_idx: list[int] = []
    for name in names:
        motion = novel_motion(name, kind)
        pose, _ = to_template_poses(motion, template)
        pose = pose.to("cpu")
        idx = torch.linspace(0, pose.batch - 1, frames_per_motion).round().long().tolist()
        sel = pose.index(idx)
        sel.translation = sel.translation - pose.translation[:1] + camera.placement
        for k, view in enumerate(views):
            parts.append(sel)
            view_names += [view] * len(idx)
            motion_names += [name] * len(idx)
            cam_idx += [k] * len(idx)
    poses = Pose(*(torch.cat([getattr(p, a) for p in parts]) for a in ("rotations", "expression", "translation")))
    return NovelSet(poses.to(template.device), cams.index(cam_idx), view_names, motion_names)


def score_novel(
    captured: Avatar,
    reference: Avatar,
    template: Template,
    novel: NovelSet,
    color: Sequence[float] = BACKGROUND,
    batch: int = 8,
) -> dict[str, dict[str, object]]:
    """(b): the captured avatar against the reference on ``novel``'s poses and cameras.

    Returns scores (see :class:`ImageScores`) for ``all`` frames and for each view; masks are
    the reference's alpha above 0.5.
    """
    if captured.kind != template.kind or reference.kind != template.kind:
        raise AvatarError(f"both avatars must be {template.kind}s (got {captured.kind} and {reference.kind})")
    groups = {"all": ImageScores(), **{v: ImageScores() for v in dict.fromkeys(novel.views)}}
    for s in range(0, len(novel), batch):
        idx = list(range(s, min(s + batch, len(novel))))
        poses, cams = novel.poses.index(idx), novel.cameras.index(idx)
        ci, ca = render_layers(captured, template, poses, cams, batch)
        ri, ra = render_layers(reference, template, poses, cams, batch)
        pred, truth, mask = over(ci, ca, color).clamp(0, 1), over(ri, ra, color).clamp(0, 1), ra > MASK_THRESHOLD
        groups["all"].add(pred, truth, mask)
        for view in dict.fromkeys(novel.views[i] for i in idx):
            sel = [k for k, i in enumerate(idx) if novel.views[i] == view]
            groups[view].add(pred[sel], truth[sel], mask[sel])
    return {name: g.result() for name, g in groups.items()}
