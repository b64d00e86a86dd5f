"""The machinery the tracking fits share: the camera, the template posed at a few points, the
optimiser, temporal smoothness, frames without detections.

The points a fit compares are posed by the same blend shapes, joint regression and skinning
as :meth:`Template.pose`, on only the vertices they sit on (:class:`PointModel`). The camera
is a pinhole at the world origin, level or tilted down by ``elevation``, looking along -z at
the subject, who faces it (+z). Fits minimise robust reprojection errors (metres at the
subject) plus priors and a temporal smoothness term (squared acceleration, in physical units
so any frame rate smooths alike) with Adam over every frame at once, in chunks of frames so
memory stays bounded. See :mod:`avatarcli.motion.fit_head` and :mod:`avatarcli.motion.fit_body`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from smplx.lbs import batch_rodrigues
from torch import Tensor

from avatarcli.errors import AvatarError
from avatarcli.motion.motion import Motion, to_template_poses
from avatarcli.templates.template import Pose, Template, rigid_transforms

DEFAULT_FOV = 40.0
MAX_GAP_SECONDS = 0.5  # frames without detections are bridged up to this long
CHUNK = 256  # frames posed at once while fitting


@dataclass(frozen=True)
class Camera:
    """The video's camera: a pinhole at the world origin looking along -z.

    Attributes:
        width, height: frame size in pixels.
        fov: vertical field of view in degrees.
        elevation: degrees the camera looks down at the subject (0: level).
    """

    width: int
    height: int
    fov: float = DEFAULT_FOV
    elevation: float = 0.0

    @property
    def focal(self) -> float:
        return 0.5 * self.height / math.tan(math.radians(self.fov) * 0.5)

    @property
    def center(self) -> Tensor:
        return torch.tensor([0.5 * self.width, 0.5 * self.height])

    def rotation(self) -> Tensor:
        """World-to-camera rotation (3, 3): rows are the camera's right, down and forward axes."""
        e = math.radians(self.elevation)
        return torch.tensor([[1.0, 0.0, 0.0], [0.0, -math.cos(e), math.sin(e)], [0.0, -math.sin(e), -math.cos(e)]])

    def project(self, camera_points: Tensor) -> Tensor:
        """Pixels (..., 2) of camera-space points (..., 3) (z forward, in front of the camera)."""
        z = camera_points[..., 2:3].clamp_min(1e-3)
        return self.focal * camera_points[..., :2] / z + self.center.to(camera_points)

    def ray(self, pixels: Tensor, depth: Tensor) -> Tensor:
        """Camera-space points (..., 3) at ``depth`` (...) along the rays through ``pixels`` (..., 2)."""
        xy = (pixels - self.center.to(pixels)) / self.focal * depth[..., None]
        return torch.cat([xy, depth[..., None]], dim=-1)


class PointModel:
    """The template posed only where a fit looks: surface points, vertices, joints and irises.

    The arithmetic is :meth:`Template.pose` restricted to the vertices the points sit on
    (joints still come from the whole mesh through a precomputed regression of the blend
    shapes), so a fit over thousands of frames poses a few hundred vertices per frame.

    Args:
        template: the body model.
        faces, bary: (L,) triangle index and (L, 3) barycentric coordinates of surface points.
        vertices: (K,) vertex indices used as points (smplx's extra joints).
        joints: (M,) joint indices used as points.
        eyes: (I,) eye-joint indices whose iris centres are points.
    """

    def __init__(
        self,
        template: Template,
        faces: Tensor | None = None,
        bary: Tensor | None = None,
        vertices: Tensor | None = None,
        joints: Tensor | None = None,
        eyes: Tensor | None = None,
    ) -> None:
        t = template.to("cpu")
        empty = torch.zeros(0, dtype=torch.long)
        faces = empty if faces is None else faces.long()
        bary = torch.zeros(0, 3) if bary is None else bary.float()
        vertices = empty if vertices is None else vertices.long()
        self.joint_idx = empty if joints is None else joints.long()
        self.eye_idx = empty if eyes is None else eyes.long()
        corners = t.faces[faces]  # (L, 3)
        sub, inverse = torch.unique(torch.cat([corners.reshape(-1), vertices]), return_inverse=True)
        # each surface point and vertex point as a mix of the posed vertices (L + K, n)
        self.mix = torch.zeros(len(faces) + len(vertices), len(sub))
        rows = torch.arange(len(faces))[:, None].expand(-1, 3)
        self.mix.index_put_((rows.reshape(-1), inverse[: corners.numel()]), bary.reshape(-1), accumulate=True)
        self.mix[torch.arange(len(vertices)) + len(faces), inverse[corners.numel() :]] = 1.0
        dirs = torch.cat([t.shapedirs, t.exprdirs], dim=-1)  # (V, 3, S + E)
        self.num_betas = t.num_betas
        self.v_template = t.v_template[sub]
        self.dirs = dirs[sub]
        self.j_template = t.j_regressor @ t.v_template
        self.j_dirs = torch.einsum("jv,vkl->jkl", t.j_regressor, dirs)
        p = t.posedirs.shape[0]
        self.posedirs = t.posedirs.reshape(p, -1, 3)[:, sub].reshape(p, -1)
        self.weights = t.weights[sub]
        # how each point (surface, vertex, joint) follows the joints, to turn its offset (P, J)
        self.point_weights = torch.cat([self.mix @ self.weights, torch.eye(t.num_joints)[self.joint_idx]])
        self.levels = t.levels
        self.eye_radius = t.eye_radius
        self.num_joints = t.num_joints
        self.sizes = (len(faces), len(vertices), len(self.joint_idx), len(self.eye_idx))

    def to(self, device: torch.device | str) -> PointModel:
        """This model with its tensors on ``device`` (in place; returns itself)."""
        for name, value in vars(self).items():
            if isinstance(value, Tensor):
                setattr(self, name, value.to(device))
        self.levels = [(idx.to(device), par.to(device)) for idx, par in self.levels]
        return self

    def __call__(self, rotations: Tensor, expression: Tensor, translation: Tensor, betas: Tensor, offsets: Tensor | None = None) -> Tensor:
        """Posed points (B, L + K + M + I, 3): surface points, vertices, joints, irises.

        Args:
            rotations: (B, J, 3) axis-angle per joint; expression: (B, E); translation: (B, 3);
            betas: (S,) shape coefficients shared by the batch.
            offsets: (L + K + M, 3) rest-pose displacements of the surface points, vertices
                and joints (moving where they are embedded), turned with them.
        """
        b = rotations.shape[0]
        coeffs = torch.cat([betas[None].expand(b, -1), expression], dim=-1)
        v = self.v_template + torch.einsum("bl,nkl->bnk", coeffs, self.dirs)
        j = self.j_template + torch.einsum("bl,jkl->bjk", coeffs, self.j_dirs)
        rot = batch_rodrigues(rotations.reshape(-1, 3)).view(b, -1, 3, 3)
        feature = (rot[:, 1:] - torch.eye(3, device=rot.device)).reshape(b, -1)
        v = v + (feature @ self.posedirs).view(b, -1, 3)
        posed_joints, transforms = rigid_transforms(rot, j, self.levels)
        # linear blend skinning (skin_points' arithmetic), a column of the blended transforms
        # at a time: on the CPU, products of many 3x3 matrices and sums over a last axis of
        # 3 are several times slower than these whole-array operations
        columns = transforms[:, :, :3].transpose(1, 3)  # (B, 4, 3, J): column c of each joint's transform
        blend = columns @ self.weights.T  # (B, 4, 3, n)
        c0, c1, c2, c3 = blend.unbind(1)
        x, y, z = v[:, None].unbind(-1)
        verts = c3 + c0 * x + c1 * y + c2 * z  # (B, 3, n)
        points = torch.cat([(verts @ self.mix.T).transpose(1, 2), posed_joints[:, self.joint_idx]], dim=1)
        if offsets is not None:
            turns = columns[:, :3] @ self.point_weights.T  # (B, 3, 3, P): column c of each point's turn
            t0, t1, t2 = turns.unbind(1)
            ox, oy, oz = offsets.unbind(-1)
            moved = t0 * ox + t1 * oy + t2 * oz  # (B, 3, P)
            points = points + moved.transpose(1, 2)
        irises = posed_joints[:, self.eye_idx] + transforms[:, self.eye_idx, :3, 2] * self.eye_radius
        return torch.cat([points, irises], dim=1) + translation[:, None]


@dataclass
class Fitted:
    """A clip fitted to its video.

    Attributes:
        motion: the motion, its translation relative to the first frame (what ``avatar
            track`` writes: the clip starts where the avatar stands).
        origin: (3,) where the template stood at the first frame, in the camera's world
            (the camera at the origin looking along -z).
        betas: (S,) the subject's shape.
    """

    motion: Motion
    origin: Tensor
    betas: Tensor

    def world_poses(self, template: Template) -> Pose:
        """Every frame's pose (T) for ``template`` in the camera's world, as the video shows it,
        on the CPU (expressions cut or zero-padded to the template's, as for any motion: a
        body's tracking fits no face)."""
        pose = to_template_poses(self.motion, template)[0].to("cpu")
        return Pose(pose.rotations, pose.expression, pose.translation + self.origin)


def fit_device(device: torch.device | str | None) -> torch.device:
    """Where a fit runs: the CPU unless a device is given."""
    return torch.device("cpu") if device is None else torch.device(device)


@contextlib.contextmanager
def fitting_on(device: torch.device) -> Iterator[None]:
    """One thread on the CPU (see :func:`single_thread`); nothing to change elsewhere."""
    if device.type == "cpu":
        with single_thread():
            yield
    else:
        yield


# -- frames without detections -------------------------------------------------------------------
def frame_ranges(frames: np.ndarray) -> str:
    """'0-12, 40, 97-120' for sorted frame numbers (N,)."""
    parts: list[str] = []
    start = prev = None
    for f in [int(x) for x in frames] + [None]:
        if f is not None and prev is not None and f == prev + 1:
            prev = f
            continue
        if start is not None:
            parts.append(f"{start}" if start == prev else f"{start}-{prev}")
        start = prev = f
    return ", ".join(parts)


def check_found(found: np.ndarray, fps: float, what: str, name: str) -> None:
    """Raise AvatarError unless ``what`` was found in every frame but short gaps.

    Gaps up to :data:`MAX_GAP_SECONDS` are bridged by the fit's smoothness; the message names
    the frames that were missed.
    """
    t = len(found)
    if t == 0:
        raise AvatarError(f"{name} has no frames in the chosen span")
    missed = np.flatnonzero(~found)
    if len(missed) == t:
        raise AvatarError(f"no {what} found in any of the {t} frames of {name}")
    longest = run = 0
    for ok in found:
        run = 0 if ok else run + 1
        longest = max(longest, run)
    if longest > max(1, round(MAX_GAP_SECONDS * fps)):
        raise AvatarError(
            f"no {what} found in frames {frame_ranges(missed)} of {name} ({t} frames; gaps up to {MAX_GAP_SECONDS:g} s are "
            "bridged): the whole clip must show it, trim it with --start/--end"
        )


def fill_missing(values: Tensor, found: Tensor) -> Tensor:
    """Per-frame values (T, ...) with frames not ``found`` (T,) taken from the nearest found frame."""
    idx = torch.arange(len(found))
    ok = idx[found]
    after = torch.searchsorted(ok, idx).clamp(max=len(ok) - 1)  # the first found frame at or after each
    before = (after - 1).clamp(min=0)
    nearest = torch.where((idx - ok[before]).abs() <= (ok[after] - idx).abs(), ok[before], ok[after])  # ties: the earlier
    return values[nearest]


# -- fitting ---------------------------------------------------------------------------------------
def roughness(x: Tensor, fps: float) -> Tensor:
    """Squared acceleration of per-frame values (T, ...) summed over frames, in units where
    30 fps counts one frame as one: the same motion costs the same at any frame rate, and
    frames without data between or beyond found ones follow a smooth path."""
    if len(x) < 3:
        return x.sum() * 0.0
    acc = x[2:] - 2 * x[1:-1] + x[:-2]
    vel = x[1:] - x[:-1]
    k = fps / 30.0
    return k**4 * acc.pow(2).sum() + 0.01 * k**2 * vel.pow(2).sum()


def robust(squared: Tensor, scale: float) -> Tensor:
    """Charbonnier loss of squared residuals: quadratic below ``scale``, linear far above it."""
    return scale**2 * (torch.sqrt(1.0 + squared / scale**2) - 1.0)


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread: a fit's tensors are small, and on a machine whose cores are
    all busy, threads waiting for each other make it many times slower, never faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def minimise(
    groups: list[tuple[list[Tensor], float]],
    frames: int,
    data: Callable[[slice], Tensor],
    whole: Callable[[], Tensor],
    steps: int,
    on_step: Callable[[], None] | None = None,
    chunk: int = CHUNK,
) -> None:
    """Adam on parameter ``groups`` ((tensors, learning rate) each) for ``steps`` steps.

    Each step sums ``data`` over chunks of frames (gradients accumulate, so memory stays
    that of a chunk) and adds ``whole`` (terms over every frame: smoothness, priors on
    shared parameters). The learning rates fall along a half cosine to a tenth.
    """
    opt = torch.optim.Adam([{"params": p, "lr": lr} for p, lr in groups])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / max(steps, 1))))
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        for s in range(0, frames, chunk):
            data(slice(s, min(s + chunk, frames))).backward()
        whole().backward()
        opt.step()
        sched.step()
        if on_step is not None:
            on_step()


def similarity(source: Tensor, target: Tensor, weights: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Weighted similarity transforms target ≈ s R source + t, per frame (Umeyama).

    Args:
        source: (L, 3) points; target: (T, L, 3); weights: (L,) non-negative.

    Returns:
        rotation (T, 3, 3), scale (T,), translation (T, 3).
    """
    w = (weights / weights.sum())[None, :, None]
    mu_s = (source[None] * w).sum(1)
    mu_t = (target * w).sum(1)
    xs = source[None] - mu_s[:, None]
    xt = target - mu_t[:, None]
    cov = (xt * w).transpose(1, 2) @ xs  # (T, 3, 3)
    u, sv, vh = torch.linalg.svd(cov)
    d = torch.ones_like(sv)
    d[:, 2] = torch.sign(torch.linalg.det(u @ vh))
    rot = u @ torch.diag_embed(d) @ vh
    var = ((xs**2) * w).sum((1, 2))
    scale = (sv * d).sum(1) / var
    trans = mu_t - scale[:, None] * (rot @ mu_s[..., None])[..., 0]
    return rot, scale, trans
