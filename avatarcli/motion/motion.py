"""Motion: per-frame joint rotations, expression and root translation, from the files users have.

One :class:`Motion` type holds any of them in the template family's joint layout (the 55
SMPL-X joints for bodies, the 5 FLAME joints for heads), y-up, metres. Readers live in
:mod:`avatarcli.motion.readers`, generated motions in :mod:`avatarcli.motion.builtin`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from avatarcli.errors import AvatarError
from avatarcli.rotations import axis_angle_to_matrix, axis_angle_to_quat, matrix_to_axis_angle, quat_to_axis_angle, slerp
from avatarcli.templates.skeletons import SMPLX_JOINT_NAMES
from avatarcli.templates.template import Pose, Template

JOINTS = {"body": 55, "head": 5}
_B = {name: i for i, name in enumerate(SMPLX_JOINT_NAMES)}
MIN_FPS, MAX_FPS = 1.0, 1000.0  # frame rates a motion or an output may have
MAX_FRAMES = 100_000  # frames in a clip (55 minutes at 30 fps), checked before any is made


def check_fps(fps: float, what: str = "the frame rate") -> None:
    """Raise AvatarError unless ``fps`` is a number within [MIN_FPS, MAX_FPS]."""
    if not (math.isfinite(fps) and MIN_FPS <= fps <= MAX_FPS):
        raise AvatarError(f"{what} must be between {MIN_FPS:g} and {MAX_FPS:g} fps (got {fps:g})")


def check_frames(frames: float, seconds: float, fps: float) -> int:
    """``frames`` (of a clip of ``seconds`` at ``fps``) as an int, refused beyond MAX_FRAMES."""
    if not frames <= MAX_FRAMES:
        raise AvatarError(f"{seconds:g} s at {fps:g} fps would be {frames:.0f} frames; the most a clip may have is {MAX_FRAMES:,}")
    return int(frames)


@dataclass
class Motion:
    """A motion clip.

    Attributes:
        kind: "body" (55 SMPL-X joints) or "head" (5 FLAME joints).
        rotations: (T, J, 3) axis-angle rotation of every joint, relative to its parent.
        expression: (T, E) expression coefficients (E may be 0).
        translation: (T, 3) root translation, metres, y-up.
        fps: frames per second (> 0).
        source: where it came from, for messages.
    """

    kind: str
    rotations: Tensor
    expression: Tensor
    translation: Tensor
    fps: float
    source: str = ""

    def __len__(self) -> int:
        return int(self.rotations.shape[0])

    @property
    def duration(self) -> float:
        """Seconds from the first to the last frame."""
        return (len(self) - 1) / self.fps

    def validate(self) -> Motion:
        """Raise AvatarError unless shapes, values and rate make sense; returns self."""
        name = self.source or "motion"
        t = len(self)
        if t == 0:
            raise AvatarError(f"{name} has no frames")
        if t > MAX_FRAMES:
            raise AvatarError(f"{name} has {t:,} frames; the most a clip may have is {MAX_FRAMES:,}")
        if self.kind not in JOINTS:
            raise AvatarError(f"{name}: unknown motion kind {self.kind!r}")
        j = JOINTS[self.kind]
        if tuple(self.rotations.shape) != (t, j, 3):
            raise AvatarError(f"{name}: rotations have shape {tuple(self.rotations.shape)}, expected ({t}, {j}, 3)")
        if self.expression.dim() != 2 or self.expression.shape[0] != t:
            raise AvatarError(f"{name}: expression has shape {tuple(self.expression.shape)}, expected ({t}, E)")
        if tuple(self.translation.shape) != (t, 3):
            raise AvatarError(f"{name}: translation has shape {tuple(self.translation.shape)}, expected ({t}, 3)")
        check_fps(self.fps, f"{name}: the frame rate")
        for label, tensor in (("rotations", self.rotations), ("expression", self.expression), ("translation", self.translation)):
            if not bool(torch.isfinite(tensor).all()):
                raise AvatarError(f"{name}: {label} hold NaN or infinite values")
        return self

    def slice_seconds(self, start: float | None, end: float | None) -> Motion:
        """Frames between ``start`` and ``end`` seconds (inclusive)."""
        t = torch.arange(len(self), dtype=torch.float64) / self.fps
        keep = torch.ones(len(self), dtype=torch.bool)
        if start is not None:
            keep &= t >= start - 1e-9
        if end is not None:
            keep &= t <= end + 1e-9
        if not bool(keep.any()):
            span = f"after {start:g} s" if end is None else f"before {end:g} s" if start is None else f"between {start:g} s and {end:g} s"
            raise AvatarError(f"no frames {span} (the motion lasts {self.duration:.2f} s)")
        idx = torch.nonzero(keep)[:, 0]
        return replace(self, rotations=self.rotations[idx], expression=self.expression[idx], translation=self.translation[idx])


def resample(motion: Motion, fps: float) -> Motion:
    """The motion at ``fps``: rotations by slerp, expression and translation linearly.

    Frames are placed at k / fps for k = 0 .. floor(duration * fps); the first frame is the
    motion's first frame.
    """
    check_fps(fps, "the output frame rate")
    if abs(fps - motion.fps) < 1e-9 or len(motion) == 1:
        return replace(motion, fps=float(fps))
    count = check_frames(math.floor(motion.duration * fps + 1e-9) + 1, motion.duration, fps)
    t = torch.arange(count, dtype=torch.float64) * (motion.fps / fps)  # in source frames
    i0 = t.floor().long().clamp(max=len(motion) - 1)
    i1 = (i0 + 1).clamp(max=len(motion) - 1)
    frac = (t - i0.double()).float()
    q = axis_angle_to_quat(motion.rotations.double())
    rot = quat_to_axis_angle(slerp(q[i0], q[i1], frac.double()[:, None].expand(-1, q.shape[1]))).float()

    def lerp(x: Tensor) -> Tensor:
        return x[i0] + (x[i1] - x[i0]) * frac[:, None]

    return Motion(motion.kind, rot, lerp(motion.expression), lerp(motion.translation), float(fps), motion.source)


def _compose(a: Tensor, b: Tensor) -> Tensor:
    """Axis-angle of R(a) R(b), (T, 3)."""
    return matrix_to_axis_angle(axis_angle_to_matrix(a) @ axis_angle_to_matrix(b))


def relaxed_body_pose(frames: int) -> Tensor:
    """A standing rest for bodies driven by head-only motion: arms down, hands soft. (T, 55, 3)."""
    rot = torch.zeros(frames, 55, 3)
    rot[:, _B["left_shoulder"]] = torch.tensor([0.0, 0.0, -1.2])
    rot[:, _B["right_shoulder"]] = torch.tensor([0.0, 0.0, 1.2])
    rot[:, _B["left_elbow"]] = torch.tensor([0.0, -0.15, 0.0])
    rot[:, _B["right_elbow"]] = torch.tensor([0.0, 0.15, 0.0])
    return rot


@dataclass
class Retarget:
    """What changed when a motion was fitted to a template (for a one-time notice)."""

    expression_from: int
    expression_to: int
    converted_from: str | None = None


def to_template_poses(motion: Motion, template: Template) -> tuple[Pose, Retarget]:
    """Poses (T) for ``template`` from ``motion``.

    A body motion drives a head template through its neck, head, jaw, eyes and expression; a
    head motion drives a body template's neck, head, jaw, eyes and face (the body stands
    relaxed). Expression vectors are cut or zero-padded to the template's length.
    """
    t = len(motion)
    rot = motion.rotations
    converted = None
    if motion.kind == template.kind:
        rotations = rot.clone()
        translation = motion.translation.clone()
    elif template.kind == "head":  # body motion on a head
        converted = "body motion on a head: neck, head, jaw, eyes and expression are used"
        rotations = torch.zeros(t, 5, 3)
        rotations[:, 1] = _compose(rot[:, _B["neck"]], rot[:, _B["head"]])
        rotations[:, 2] = rot[:, _B["jaw"]]
        rotations[:, 3] = rot[:, _B["left_eye_smplhf"]]
        rotations[:, 4] = rot[:, _B["right_eye_smplhf"]]
        translation = torch.zeros(t, 3)
    else:  # head motion on a body
        converted = "head motion on a body: it drives the neck, head, jaw, eyes and face"
        rotations = relaxed_body_pose(t)
        rotations[:, _B["neck"]] = rot[:, 0]
        rotations[:, _B["head"]] = rot[:, 1]
        rotations[:, _B["jaw"]] = rot[:, 2]
        rotations[:, _B["left_eye_smplhf"]] = rot[:, 3]
        rotations[:, _B["right_eye_smplhf"]] = rot[:, 4]
        translation = torch.zeros(t, 3)
    e_in, e_out = motion.expression.shape[1], template.num_expression
    expr = motion.expression[:, :e_out]
    if e_in < e_out:
        expr = torch.cat([expr, torch.zeros(t, e_out - e_in)], dim=1)
    pose = Pose(rotations.float(), expr.float(), translation.float())
    return pose.to(template.device), Retarget(e_in, e_out, converted)
