"""Videos with ground truth for the capture gauge: a reference person, a motion, a camera and a
moving background, rendered, and everything that made the video saved beside it.

* the person: :func:`avatarcli.evaluation.capture_reference.capture_reference`.
* the motion: heads talk (the built-in talk's jaw and lips) while looking around (the head
  sweeping up to about 40 degrees each way, nodding and tilting, eyes back on the camera),
  with smiles, blinks and raised brows at seeded times; bodies follow a 12 s routine,
  repeated with variations: standing, turning right round on the spot with the arms away
  from the body, waving (right hand, then left on the next round), lifting both arms to the
  side twice with the knees bending (:func:`talking_head`, :func:`moving_body`).
* the camera: exactly the tracker's model (:class:`avatarcli.motion.fitting.Camera`): a level
  pinhole at the world origin looking along -z, vertical field of view
  :data:`avatarcli.motion.fitting.DEFAULT_FOV`; the person stands in front of it, the middle
  of the space their motion sweeps on the optical axis, as far away as frames it the way a
  phone video frames a head (75 % of the height) or a whole body (85 %), so that the person
  never leaves the picture (:class:`GaugeCamera`).
* the background: a seeded procedural picture (noise in skin, hair and cloth colours, posters
  and thin lines) that pans along a smooth path, with a skin-coloured blob drifting across
  it, so colours alone do not tell the person from the room and a still background model
  does not fit (:class:`Backdrop`).

:func:`make_capture_video` writes a folder (all at once, atomically) holding ``video.mp4``
(H.264, as the person would record it), ``reference.avatar``, ``motion.npz`` (the world-space
motion rendered, one frame per video frame, ``motion.readers`` layout), ``camera.json`` (the
camera, the background's settings, sizes, rates), ``masks.npz`` (the true alpha, uint8 (T, H,
W)) and ``foreground.npz`` (the person's clean render over black, premultiplied, uint8
(T, H, W, 3)); :func:`load_capture_video` reads it back and :func:`truth_frames` gives the
clean frames, masks and backgrounds of any frames.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from avatarcli.errors import AvatarError
from avatarcli.evaluation.capture_reference import CAPTURE_SEED, capture_reference
from avatarcli.fileio import atomic_folder, check_output, read_arrays, read_bytes, write_bytes
from avatarcli.formats.frames import FrameWriter
from avatarcli.model import avatar_file
from avatarcli.model.avatar import Avatar
from avatarcli.motion.builtin import head_talk, soft_hands
from avatarcli.motion.fitting import DEFAULT_FOV, Camera
from avatarcli.motion.motion import Motion, to_template_poses
from avatarcli.motion.readers import read_motion, write_motion
from avatarcli.render.cameras import Cameras
from avatarcli.render.rasterize import render_gaussians
from avatarcli.templates.loading import load_template
from avatarcli.templates.mannequin.head_shape import EXPRESSION_NAMES
from avatarcli.templates.skeletons import SMPLX_JOINT_NAMES
from avatarcli.templates.template import Pose, Template

E = {name: i for i, name in enumerate(EXPRESSION_NAMES)}
B = {name: i for i, name in enumerate(SMPLX_JOINT_NAMES)}
FILL = {"head": 0.75, "body": 0.85}  # share of the image height (or width) the motion's sweep fills
ROUTINE = 12.0  # seconds of one round of the body's routine
FILES = ("video.mp4", "reference.avatar", "motion.npz", "camera.json", "masks.npz", "foreground.npz")


# -- timing curves --------------------------------------------------------------------------
def _ease(x: Tensor) -> Tensor:
    """0 before 0, 1 after 1, a cosine in between."""
    return 0.5 - 0.5 * torch.cos(math.pi * x.clamp(0.0, 1.0))


def keyframes(t: Tensor, keys: Sequence[tuple[float, float]]) -> Tensor:
    """Values (T,) at times ``t`` (T,) eased between ``keys`` ((time, value), times ascending),
    held before the first and after the last."""
    out = torch.full_like(t, keys[0][1])
    for (t0, v0), (t1, v1) in itertools.pairwise(keys):
        out = out + (v1 - v0) * _ease((t - t0) / max(t1 - t0, 1e-6))
    return out


def events(seconds: float, every: tuple[float, float], generator: torch.Generator, start: float = 0.5) -> list[float]:
    """Seeded times in [start, seconds) at gaps drawn uniformly from ``every`` (seconds)."""
    out, at = [], start
    while at < seconds:
        out.append(at)
        at += every[0] + (every[1] - every[0]) * float(torch.rand((), generator=generator))
    return out


def bumps(t: Tensor, times: Iterable[float], width: float) -> Tensor:
    """The highest of Gaussian bumps of ``width`` seconds centred at ``times``, (T,) in [0, 1]."""
    out = torch.zeros_like(t)
    for c in times:
        out = torch.maximum(out, torch.exp(-(((t - c) / width) ** 2)))
    return out


def frame_times(seconds: float, fps: float) -> Tensor:
    """The times (T,) of a clip's frames, T = round(seconds * fps) + 1, as the built-in motions have them."""
    return torch.arange(round(seconds * fps) + 1, dtype=torch.float32) / fps


# -- the motions the videos show --------------------------------------------------------------
def talking_head(seconds: float, fps: float, seed: int = CAPTURE_SEED) -> Motion:
    """A person talking to the camera and looking around (see the module docstring); a head
    motion at the template's origin (translation: a sway of about a centimetre)."""
    t = frame_times(seconds, fps)
    g = torch.Generator().manual_seed(seed)
    phase = (2 * math.pi * torch.rand(6, generator=g)).tolist()
    rot, expr, _ = head_talk(t)
    yaw = 0.62 * torch.sin(2 * math.pi * t / 8.0 + phase[0]) + 0.08 * torch.sin(2 * math.pi * t / 2.9 + phase[1])
    pitch = 0.16 * torch.sin(2 * math.pi * t / 5.3 + phase[2]) + 0.04 * torch.sin(2 * math.pi * t / 1.7 + phase[3])
    roll = 0.07 * torch.sin(2 * math.pi * t / 6.7 + phase[4])
    rot[:, 1] = rot[:, 1] + torch.stack([pitch, yaw, roll], -1)
    rot[:, 3, 1] = rot[:, 4, 1] = -0.35 * yaw  # eyes back on the camera
    rot[:, 3, 0] = rot[:, 4, 0] = -0.3 * pitch
    expr[:, E["blink"]] = bumps(t, events(seconds, (2.0, 4.5), g), 0.06)
    expr[:, E["brow_raise"]] = 0.6 * bumps(t, events(seconds, (3.0, 7.0), g, start=1.5), 0.35)
    expr[:, E["smile"]] = 0.2 + 0.5 * bumps(t, events(seconds, (4.0, 9.0), g, start=2.5), 1.0)
    sway = torch.stack([0.010 * torch.sin(2 * math.pi * t / 4.1 + phase[5]), 0.006 * torch.sin(2 * math.pi * t / 3.3),
                        0.012 * torch.sin(2 * math.pi * t / 6.1)], -1)  # fmt: skip
    return Motion("head", rot.float(), expr.float(), sway.float(), float(fps), "capture gauge: talking head").validate()


def moving_body(seconds: float, fps: float, seed: int = CAPTURE_SEED) -> Motion:
    """A person turning round and moving their arms (see the module docstring); a body motion
    with the pelvis at the template's origin."""
    t = frame_times(seconds, fps)
    g = torch.Generator().manual_seed(seed)
    rounds = torch.floor(t / ROUTINE)
    tau = t - rounds * ROUTINE
    odd = (rounds % 2).bool()
    rot = torch.zeros(len(t), 55, 3)
    # turning round: a full turn in 6 s, the other way on the next round
    turn = _ease((tau - 1.5) / 6.0)
    rot[:, 0, 1] = 2 * math.pi * torch.where(odd, 1.0 - turn, turn)
    # both arms: away from the body while turning, then lifted sideways twice
    keys = [(0.0, 1.1), (1.5, 1.1), (2.2, 0.8), (7.0, 0.8), (7.5, 1.1), (9.5, 1.1), (10.1, 0.05), (10.7, 1.15), (11.3, 0.05), (12.0, 1.1)]
    down = keyframes(tau, keys)
    # the waving arm (right, then left on the next round) goes up instead, the elbow swinging
    raise_ = keyframes(tau, [(7.5, 0.0), (8.1, 1.0), (9.1, 1.0), (9.5, 0.0)])
    swing = raise_ * (0.65 + 0.35 * torch.sin(2 * math.pi * 1.8 * tau))
    waving = down * (1 - raise_) + (-1.0) * raise_
    for side, sign in (("left", -1.0), ("right", 1.0)):
        mine = odd if side == "left" else ~odd
        rot[:, B[f"{side}_shoulder"], 2] = sign * torch.where(mine, waving, down)
        rot[:, B[f"{side}_elbow"], 1] = sign * 0.25
        rot[:, B[f"{side}_elbow"], 2] = -sign * torch.where(mine, swing, torch.zeros_like(swing))
        flick = 0.2 * raise_ * torch.sin(2 * math.pi * 1.8 * tau + 0.6)
        rot[:, B[f"{side}_wrist"], 2] = -sign * torch.where(mine, flick, torch.zeros_like(flick))
    bend = keyframes(tau, [(9.5, 0.0), (10.1, 1.0), (10.7, 0.0), (11.3, 1.0), (12.0, 0.0)])
    for side in ("left", "right"):
        rot[:, B[f"{side}_hip"], 0] = -0.22 * bend
        rot[:, B[f"{side}_knee"], 0] = 0.45 * bend
        rot[:, B[f"{side}_ankle"], 0] = -0.22 * bend
    phase = (2 * math.pi * torch.rand(3, generator=g)).tolist()
    breath = torch.sin(2 * math.pi * 0.25 * t)
    rot[:, B["spine3"], 0] = -0.025 * breath
    rot[:, B["spine1"], 2] = 0.04 * torch.sin(2 * math.pi * t / 7.7 + phase[0])
    rot[:, B["head"], 1] = 0.25 * torch.sin(2 * math.pi * t / 6.3 + phase[1])
    rot[:, B["neck"], 0] = 0.06 * torch.sin(2 * math.pi * t / 4.9 + phase[2])
    soft_hands(rot)
    expr = torch.zeros(len(t), len(EXPRESSION_NAMES))
    expr[:, E["blink"]] = bumps(t, events(seconds, (2.5, 5.0), g), 0.06)
    expr[:, E["smile"]] = 0.3 + 0.5 * raise_
    trans = torch.stack([0.015 * torch.sin(2 * math.pi * t / 5.1), -0.035 * bend, torch.zeros_like(t)], -1)
    return Motion("body", rot.float(), expr.float(), trans.float(), float(fps), "capture gauge: moving body").validate()


def video_motion(kind: str, seconds: float, fps: float, seed: int = CAPTURE_SEED) -> Motion:
    """The motion a gauge video of ``kind`` shows, at the template's origin."""
    if kind not in ("head", "body"):
        raise AvatarError(f"unknown model kind {kind!r}: choose head or body")
    return (talking_head if kind == "head" else moving_body)(seconds, fps, seed)


# -- the camera -------------------------------------------------------------------------------
@dataclass(frozen=True)
class GaugeCamera:
    """The video's camera and where the person stands in front of it.

    Attributes:
        width, height: frame size in pixels.
        fov: vertical field of view, degrees (the tracker's :class:`Camera` model, level).
        distance: metres from the camera to the middle of the person's sweep.
        centre: the middle of the space the person sweeps (x, y, z) in template space (the
            motion at the template's origin); a pose's translation gains ``placement`` so that
            this point lies at (0, 0, -distance).
    """

    width: int
    height: int
    fov: float
    distance: float
    centre: tuple[float, float, float]

    def tracker(self) -> Camera:
        """The same camera as :class:`avatarcli.motion.fitting.Camera` (what ``avatar track`` fits with)."""
        return Camera(self.width, self.height, self.fov, 0.0)

    @property
    def placement(self) -> Tensor:
        """(3,) added to every pose's translation: the sweep's middle on the optical axis."""
        return torch.tensor([0.0, 0.0, -self.distance]) - torch.tensor(self.centre)

    @property
    def target(self) -> Tensor:
        """(3,) the point the camera looks at, in the world: where the sweep's middle is placed."""
        return torch.tensor([0.0, 0.0, -self.distance])

    def cameras(self, count: int) -> Cameras:
        """``count`` copies of the camera as renderer cameras (world to OpenCV camera)."""
        cam = self.tracker()
        view = torch.eye(4)
        view[:3, :3] = cam.rotation()
        k = torch.tensor([[cam.focal, 0.0, cam.center[0]], [0.0, cam.focal, cam.center[1]], [0.0, 0.0, 1.0]])
        return Cameras(view.expand(count, 4, 4).clone(), k.expand(count, 3, 3).clone(), self.width, self.height)


def gauge_camera(
    kind: str, reference: Avatar, template: Template, motion: Motion, width: int, height: int, fov: float = DEFAULT_FOV, samples: int = 48
) -> GaugeCamera:
    """The camera framing ``reference`` driven by ``motion`` (at the template's origin) as a
    phone video of a ``kind`` would: the box its Gaussians sweep over ``samples`` frames fills
    :data:`FILL` of the image's height or width, whichever is tighter."""
    pose, _ = to_template_poses(motion, template)
    idx = torch.linspace(0, pose.batch - 1, min(samples, pose.batch)).round().long().unique().tolist()
    lo, hi = torch.full((3,), math.inf), torch.full((3,), -math.inf)
    with torch.no_grad():
        for s in range(0, len(idx), 8):
            means = reference.posed(template, pose.index(idx[s : s + 8])).means.float().cpu()
            for m in means:
                lo = torch.minimum(lo, torch.quantile(m, 0.002, dim=0))
                hi = torch.maximum(hi, torch.quantile(m, 0.998, dim=0))
    centre = (lo + hi) / 2
    tan_y = math.tan(math.radians(fov) / 2)
    tan_x = tan_y * width / height
    distance = max(float(hi[1] - lo[1]) / 2 / (FILL[kind] * tan_y), float(hi[0] - lo[0]) / 2 / (FILL[kind] * tan_x))
    return GaugeCamera(width, height, float(fov), distance, tuple(float(c) for c in centre))  # type: ignore[arg-type]


def in_front(motion: Motion, camera: GaugeCamera) -> Motion:
    """``motion`` moved in front of ``camera`` (its translation plus the placement): world space."""
    return Motion(motion.kind, motion.rotations, motion.expression, motion.translation + camera.placement, motion.fps, motion.source)


# -- the background ---------------------------------------------------------------------------
PALETTE = ((0.80, 0.62, 0.50), (0.55, 0.38, 0.28), (0.22, 0.14, 0.10), (0.18, 0.30, 0.55), (0.70, 0.15, 0.15),
           (0.85, 0.82, 0.74), (0.25, 0.40, 0.22), (0.78, 0.60, 0.15), (0.35, 0.35, 0.38))  # fmt: skip


@dataclass(frozen=True)
class Backdrop:
    """A moving textured background (see the module docstring).

    Attributes:
        width, height: frame size in pixels.
        fps: frames per second (the motion is in seconds).
        seed: the picture and its path.
        pan: how far the view travels, as a share of the frame size.

    The noise and the posters scale with the frame; the thin lines and the posters' frames are
    a few pixels wide at any size.
    """

    width: int
    height: int
    fps: float
    seed: int = CAPTURE_SEED
    pan: float = 0.35

    def texture(self) -> Tensor:
        """The whole picture (3, Hc, Wc) the frames are cut from, ``1 + 2 * pan`` times the frame."""
        g = torch.Generator().manual_seed(self.seed)
        hc, wc = (round(s * (1 + 2 * self.pan)) + 4 for s in (self.height, self.width))
        palette = torch.tensor(PALETTE)
        field = torch.zeros(1, 1, hc, wc)
        for octave, cells in enumerate((4, 9, 21, 47)):
            noise = torch.rand(1, 1, cells, cells, generator=g)
            field = field + 0.5**octave * F.interpolate(noise, size=(hc, wc), mode="bicubic", align_corners=True)
        field = (field - field.min()) / (field.max() - field.min() + 1e-9)
        idx = field[0, 0] * (len(palette) - 1)
        lo = idx.floor().long().clamp(max=len(palette) - 2)
        w = (idx - lo.float())[..., None]
        img = (palette[lo] * (1 - w) + palette[lo + 1] * w).permute(2, 0, 1)
        ys, xs = torch.meshgrid(torch.arange(hc, dtype=torch.float32), torch.arange(wc, dtype=torch.float32), indexing="ij")
        for _ in range(10):  # posters: rectangles of one colour with a darker frame
            cx, cy = float(torch.rand((), generator=g)) * wc, float(torch.rand((), generator=g)) * hc
            rw, rh = (0.05 + 0.12 * float(torch.rand((), generator=g))) * wc, (0.05 + 0.15 * float(torch.rand((), generator=g))) * hc
            colour = palette[int(torch.randint(len(palette), (), generator=g))]
            inside = ((xs - cx).abs() < rw / 2) & ((ys - cy).abs() < rh / 2)
            edge = inside & (((xs - cx).abs() > rw / 2 - 3) | ((ys - cy).abs() > rh / 2 - 3))
            img = torch.where(inside, colour[:, None, None], img)
            img = torch.where(edge, colour[:, None, None] * 0.4, img)
        lines = (torch.sin(xs * 0.9 + 0.3 * ys) > 0.97) | (torch.sin(ys * 0.55 - 0.2 * xs) > 0.985)
        img = torch.where(lines, img * 0.55, img)
        return img.clamp(0.0, 1.0)

    def offsets(self, frames: Tensor) -> Tensor:
        """(T, 2) where each frame's view sits in the picture, in [-1, 1] (a Lissajous path)."""
        t = frames.float() / self.fps
        return torch.stack([torch.sin(2 * math.pi * t / 9.0), torch.sin(2 * math.pi * t / 6.5 + 1.0)], -1)

    def frames(self, indices: Sequence[int] | Tensor, texture: Tensor | None = None) -> Tensor:
        """The backgrounds (T, H, W, 3) in [0, 1] of frames ``indices``."""
        tex = self.texture() if texture is None else texture
        idx = torch.as_tensor(indices)
        _, hc, wc = tex.shape
        off = self.offsets(idx)
        ys = torch.linspace(-1, 1, self.height) * (self.height / hc)
        xs = torch.linspace(-1, 1, self.width) * (self.width / wc)
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        reach = torch.tensor([1 - self.width / wc, 1 - self.height / hc]) * 0.98
        grid = torch.stack([gx, gy], -1)[None] + (off * reach)[:, None, None]
        out = F.grid_sample(tex[None].expand(len(idx), -1, -1, -1), grid, mode="bilinear", align_corners=True)
        # a skin-coloured blob drifting across, like someone passing behind
        t = idx.float()[:, None, None] / self.fps
        bx = torch.sin(2 * math.pi * t / 11.0) * 0.8
        by = 0.5 * torch.cos(2 * math.pi * t / 7.0)
        d2 = ((gx / xs[-1] - bx) ** 2 + (gy / ys[-1] - by) ** 2)[:, None]
        blob = torch.exp(-d2 / 0.04)
        out = out * (1 - 0.8 * blob) + 0.8 * blob * torch.tensor(PALETTE[0])[None, :, None, None]
        return out.permute(0, 2, 3, 1).clamp(0.0, 1.0).contiguous()


# -- the video and its truth ------------------------------------------------------------------
@dataclass
class CaptureVideo:
    """A gauge video and its ground truth.

    Attributes:
        folder: where the files are (:data:`FILES`).
        kind: "head" or "body".
        fps: frames per second; frames: how many.
        camera: the camera and the placement.
        backdrop: the background's settings.
        motion: the world-space motion rendered, one frame per video frame.
        reference: the avatar rendered.
        seed: the seed the reference, motion and background were made with.
    """

    folder: Path
    kind: str
    fps: float
    frames: int
    camera: GaugeCamera
    backdrop: Backdrop
    motion: Motion
    reference: Avatar
    seed: int

    @property
    def video(self) -> Path:
        return self.folder / "video.mp4"

    def poses(self, template: Template, indices: Sequence[int] | None = None) -> Pose:
        """The true poses of frames ``indices`` (all when None), world space, on ``template``'s device."""
        pose, _ = to_template_poses(self.motion, template)
        return pose if indices is None else pose.index(list(indices))


@torch.no_grad()
def render_layers(avatar: Avatar, template: Template, poses: Pose, cameras: Cameras, batch: int = 8) -> tuple[Tensor, Tensor]:
    """The avatar's renders over black (premultiplied) (T, H, W, 3) and alphas (T, H, W), on the CPU,
    pose t seen by camera t, ``batch`` at a time on ``template``'s device."""
    av = avatar.to(template.device)
    images, alphas = [], []
    for s in range(0, poses.batch, batch):
        idx = list(range(s, min(s + batch, poses.batch)))
        img, alpha, _ = render_gaussians(av.posed(template, poses.index(idx)), cameras.index(idx).to(template.device), None)
        images.append(img.clamp(0, 1).cpu())
        alphas.append(alpha[..., 0].clamp(0, 1).cpu())
    return torch.cat(images), torch.cat(alphas)


def _uint8(x: Tensor) -> np.ndarray:
    return (x.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).numpy()


def make_capture_video(
    kind: str,
    folder: str | Path,
    size: int | tuple[int, int] = 512,
    fps: float = 30.0,
    seconds: float = 10.0,
    seed: int = CAPTURE_SEED,
    template: Template | None = None,
    reference: Avatar | None = None,
    points_per_triangle: int = 6,
    fov: float = DEFAULT_FOV,
    batch: int = 8,
    crf: int = 18,
    force: bool = False,
) -> CaptureVideo:
    """Render a gauge video of ``kind`` into ``folder`` with its ground truth (module docstring).

    Args:
        kind: "head" or "body".
        folder: the output folder (created whole when done; an existing one needs ``force``).
        size: frame size, pixels (one side, or (width, height); even sides).
        fps, seconds: frame rate and length; the video has ``round(seconds * fps) + 1`` frames.
        seed: the reference's patterns, the motion's events and the background.
        template: the template to render on (its device renders); the built-in one when None.
        reference: the avatar to film; :func:`capture_reference` of ``seed`` when None.
        points_per_triangle: the reference's density when it is made here.
        fov: the camera's vertical field of view, degrees.
        batch: frames rendered at once.
        crf: the H.264 quality (18: visually lossless, as phones record).
    """
    check_output(folder, "folder", force)
    tpl = template if template is not None else load_template(kind)
    if tpl.kind != kind:
        raise AvatarError(f"a {kind} video needs a {kind} template (got {tpl.kind})")
    width, height = (size, size) if isinstance(size, int) else size
    ref = reference if reference is not None else capture_reference(tpl, seed, points_per_triangle)
    local = video_motion(kind, seconds, fps, seed)
    camera = gauge_camera(kind, ref, tpl, local, width, height, fov)
    motion = in_front(local, camera)
    backdrop = Backdrop(width, height, float(fps), seed)
    count = len(motion)
    video = CaptureVideo(Path(folder), kind, float(fps), count, camera, backdrop, motion, ref, seed)
    masks = np.zeros((count, height, width), np.uint8)
    foreground = np.zeros((count, height, width, 3), np.uint8)
    texture = backdrop.texture()
    poses = video.poses(tpl)
    cams = camera.cameras(count)
    with atomic_folder(folder, force) as tmp:
        with FrameWriter(tmp / "video.mp4", fps, (width, height), crf=crf) as writer:
            for s in range(0, count, batch):
                idx = list(range(s, min(s + batch, count)))
                fg, alpha = render_layers(ref, tpl, poses.index(idx), cams.index(idx), batch)
                bg = backdrop.frames(idx, texture)
                for frame in _uint8(fg + (1 - alpha[..., None]) * bg):
                    writer.add(frame)
                masks[idx] = _uint8(alpha)
                foreground[idx] = _uint8(fg)
        avatar_file.save(ref, tmp / "reference.avatar")
        write_motion(motion, tmp / "motion.npz")
        np.savez_compressed(tmp / "masks.npz", masks=masks)
        np.savez_compressed(tmp / "foreground.npz", foreground=foreground)
        spec = {"avatarcli_capture_gauge": 1, "kind": kind, "fps": float(fps), "frames": count, "seconds": float(seconds),
                "seed": seed, "camera": asdict(camera), "backdrop": asdict(backdrop), "crf": crf,
                "tracker_camera": {"width": width, "height": height, "fov": float(fov), "elevation": 0.0},
                "reference_gaussians": len(ref)}  # fmt: skip
        write_bytes(tmp / "camera.json", json.dumps(spec, indent=2).encode())
    return video


def load_capture_video(folder: str | Path) -> CaptureVideo:
    """A gauge video written by :func:`make_capture_video`, read back (no pickles anywhere)."""
    path = Path(folder)
    missing = [f for f in FILES if not (path / f).is_file()]
    if missing:
        raise AvatarError(f"{path} is not a capture gauge folder: {', '.join(missing)} missing")
    spec = json.loads(read_bytes(path / "camera.json", "gauge camera"))
    cam = spec["camera"]
    camera = GaugeCamera(int(cam["width"]), int(cam["height"]), float(cam["fov"]), float(cam["distance"]), tuple(cam["centre"]))
    backdrop = Backdrop(**spec["backdrop"])
    motion = read_motion(path / "motion.npz")
    ref = avatar_file.load(path / "reference.avatar")
    return CaptureVideo(path, spec["kind"], float(spec["fps"]), int(spec["frames"]), camera, backdrop, motion, ref, int(spec["seed"]))


def truth_frames(video: CaptureVideo, indices: Sequence[int]) -> tuple[Tensor, Tensor, Tensor]:
    """The clean frames (T, H, W, 3), true alphas (T, H, W) and backgrounds (T, H, W, 3) of
    frames ``indices``, in [0, 1]: the person's render over the background, before encoding."""
    idx = np.asarray(list(indices), dtype=np.int64)
    masks = read_arrays(video.folder / "masks.npz", "gauge masks")
    fg = read_arrays(video.folder / "foreground.npz", "gauge foreground")
    assert isinstance(masks, dict) and isinstance(fg, dict)
    alpha = torch.from_numpy(masks["masks"][idx]).float() / 255.0
    front = torch.from_numpy(fg["foreground"][idx]).float() / 255.0
    bg = video.backdrop.frames(idx.tolist())
    return (front + (1 - alpha[..., None]) * bg).clamp(0, 1), alpha, bg


def detection_rate(kind: str, frames: Iterable[np.ndarray], width: int, height: int) -> dict[str, object]:
    """What share of ``frames`` (H, W, 3) uint8 MediaPipe finds a face (heads) or a person with
    a shoulder and a hip in view (bodies) in, as ``avatar track`` counts them."""
    from avatarcli.motion.landmarks import detect_bodies, detect_faces, with_torso_in_view

    if kind == "head":
        found = detect_faces(frames, width, height).found
    else:
        found = with_torso_in_view(detect_bodies(frames, width, height, False)).found
    return {"frames": len(found), "found": float(found.mean()) if len(found) else 0.0, "missed": np.flatnonzero(~found).tolist()}
