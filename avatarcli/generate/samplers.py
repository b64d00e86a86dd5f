"""What each training view sees: a random pose, a random camera and its prompt.

Poses: every view of every step sees the avatar in a different pose. Heads (HeadStudio):
jaw, neck, eye pose and expression from talking motions, plus noise. Bodies: the star pose
in the canonical stage; afterwards a mix of poses around the star pose (GaussianMotion),
"canonical-R" poses with shoulders in +-45 degrees and hips in 6-45 degrees (DreamWaltz-G),
and frames of the built-in motions.

Cameras: uniform in the recipe's ranges around each posed view; a fraction of body views
are face close-ups. Prompts get a view-dependent suffix (front / side / back / overhead).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from avatarcli.devices import to_device
from avatarcli.generate.guidance.scores import view_suffix
from avatarcli.motion.builtin import BUILTINS, builtin_motion
from avatarcli.motion.motion import to_template_poses
from avatarcli.render.cameras import CameraRanges, Cameras, sample_cameras, subject_size
from avatarcli.templates.skeletons import SMPLX_JOINT_NAMES
from avatarcli.templates.template import Pose, Posed, Template

B = {name: i for i, name in enumerate(SMPLX_JOINT_NAMES)}
BODY_JOINTS = list(range(1, 22))
HAND_JOINTS = list(range(25, 55))


def star_pose(batch: int) -> Tensor:
    """The canonical star pose (B, 55, 3): legs apart, arms down 45 degrees."""
    rot = torch.zeros(batch, 55, 3)
    rot[:, B["left_hip"], 2] = 0.3
    rot[:, B["right_hip"], 2] = -0.3
    rot[:, B["left_shoulder"], 2] = -0.75
    rot[:, B["right_shoulder"], 2] = 0.75
    return rot


class PoseSampler:
    """Draws training poses for one template.

    Args:
        template: the template to pose.
        generator: CPU generator (for reproducibility).
        motions: built-in motions of the template's kind whose frames are drawn (default: all).
        animated: False keeps every view in the rest pose (heads) or star pose (bodies).
    """

    def __init__(self, template: Template, generator: torch.Generator, motions: tuple[str, ...] = (), animated: bool = True) -> None:
        self.template = template
        self.g = generator
        self.animated = animated
        kind = template.kind
        clips = [to_template_poses(builtin_motion(n, kind, fps=15), template)[0] for n in (motions or tuple(BUILTINS[kind]))]
        self._pool_rot = torch.cat([c.rotations.cpu() for c in clips])
        self._pool_expr = torch.cat([c.expression.cpu() for c in clips])

    def _uniform(self, n: int, lo: float, hi: float) -> Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=self.g)

    def _pool(self, n: int) -> tuple[Tensor, Tensor]:
        idx = torch.randint(0, len(self._pool_rot), (n,), generator=self.g)
        return self._pool_rot[idx].clone(), self._pool_expr[idx].clone()

    def head(self, n: int) -> Pose:
        """Talking-motion frames with noise on neck, jaw, eyes and expression."""
        rot, expr = self._pool(n)
        rot[:, 0] = 0.0  # the camera moves, not the head
        rot[:, 1] += torch.randn(n, 3, generator=self.g) * 0.08
        rot[:, 2, 0] = (rot[:, 2, 0] + torch.rand(n, generator=self.g) * 0.15).clamp(0.0, 0.5)
        rot[:, 3:5] += (torch.randn(n, 1, 3, generator=self.g) * 0.12).expand(-1, 2, -1)
        expr += torch.randn(expr.shape, generator=self.g) * 0.3
        return Pose(rot, expr, torch.zeros(n, 3)).to(self.template.device)

    def body(self, n: int, stage: str) -> Pose:
        """Star pose (canonical stage) or a mix of random poses (animation stage)."""
        e = self.template.num_expression
        if stage == "canonical":
            return Pose(star_pose(n), torch.zeros(n, e), torch.zeros(n, 3)).to(self.template.device)
        rot = star_pose(n)
        kind = torch.randint(0, 3, (n,), generator=self.g)
        # around the star pose
        noise = torch.randn(n, 55, 3, generator=self.g)
        noise[:, BODY_JOINTS] *= 0.2
        noise[:, HAND_JOINTS] *= 0.1
        noise[:, 0] = 0.0
        noise[:, 22:25] *= 0.1
        rot = torch.where((kind == 0)[:, None, None], rot + noise, rot)
        # canonical-R: shoulders in +-45 degrees, hips spread 6-45 degrees
        r = torch.zeros(n, 55, 3)
        deg = math.pi / 180.0
        r[:, B["left_shoulder"], 2] = self._uniform(n, -45 * deg, 45 * deg)
        r[:, B["right_shoulder"], 2] = self._uniform(n, -45 * deg, 45 * deg)
        r[:, B["left_hip"], 2] = self._uniform(n, 6 * deg, 45 * deg)
        r[:, B["right_hip"], 2] = -self._uniform(n, 6 * deg, 45 * deg)
        rot = torch.where((kind == 1)[:, None, None], r, rot)
        # frames of real(istic) motion
        pool_rot, pool_expr = self._pool(n)
        pool_rot[:, 0] = 0.0
        rot = torch.where((kind == 2)[:, None, None], pool_rot, rot)
        expr = torch.where((kind == 2)[:, None], pool_expr, torch.zeros(n, e))
        return Pose(rot, expr, torch.zeros(n, 3)).to(self.template.device)

    def independent(self, seed: int) -> PoseSampler:
        """The same sampler drawing from a generator of its own (``seed``): draws from it leave
        this one's sequence alone."""
        other = copy.copy(self)
        other.g = torch.Generator().manual_seed(seed)
        return other

    def __call__(self, n: int, stage: str) -> Pose:
        if not self.animated:
            if self.template.kind == "head":
                return self.template.zero_pose(n)
            return self.body(n, "canonical")
        return self.head(n) if self.template.kind == "head" else self.body(n, stage)


def view_size(ranges: CameraRanges, template: Template, rest_means: Tensor) -> float:
    """The subject's size in metres that ``ranges`` scale their distances by: the template's
    rest mesh measured for ``"extent"`` (as HeadStudio measures FLAME), the avatar's
    Gaussians at rest (``rest_means`` (N, 3)) for ``"radius"``."""
    points = template.v_template if ranges.measure == "extent" else rest_means
    return subject_size(points, ranges.measure)


FACE_RANGES = CameraRanges(distance=(0.9, 1.4), fovy_deg=(40.0, 60.0), elevation_deg=(-15.0, 25.0), azimuth_deg=(-70.0, 70.0))


@dataclass
class Views:
    """A batch of training views.

    Attributes:
        cameras: one camera per view (on the training device).
        azimuth, elevation: (B,) degrees, on the CPU (for the prompts).
        face: (B,) bool, which views are face close-ups.
    """

    cameras: Cameras
    azimuth: Tensor
    elevation: Tensor
    face: Tensor

    def prompts(self, prompt: str, view_prompts: bool = True) -> list[str]:
        """The prompt of every view: "the face of ..." for close-ups, plus the view suffix."""
        out = []
        for a, e, f in zip(self.azimuth.tolist(), self.elevation.tolist(), self.face.tolist(), strict=True):
            base = f"the face of {prompt}" if f else prompt
            out.append(base + (view_suffix(a, e) if view_prompts else ""))
        return out


class ViewSampler:
    """Draws training cameras around posed templates.

    Args:
        template: the template being posed (the head joint aims face close-ups).
        ranges: the recipe's camera ranges.
        size: the subject's size in metres, measured as ``ranges.measure`` says (:func:`view_size`).
        face_closeups: fraction of views that look at the face.
        generator: CPU generator (for reproducibility).
    """

    def __init__(self, template: Template, ranges: CameraRanges, size: float, face_closeups: float, generator: torch.Generator) -> None:
        self.ranges, self.size, self.face_closeups, self.g = ranges, size, face_closeups, generator
        self._head_joint = template.joint_names.index("head") if "head" in template.joint_names else 0
        # made once: creating it on the GPU every step would stall it
        self._face_offset = torch.tensor([0.0, 0.05, 0.0], device=template.device)

    def __call__(self, posed: Posed, size: int) -> Views:
        """A camera (size x size pixels) for each of the B posed templates."""
        n = posed.vertices.shape[0]
        verts = posed.vertices.detach()
        centers = (verts.max(1).values + verts.min(1).values) / 2
        face = torch.zeros(n, dtype=torch.bool)
        if self.face_closeups > 0:
            face = torch.rand(n, generator=self.g) < self.face_closeups
        sample = sample_cameras(n, centers, self.size, self.ranges, size, size, self.g)
        viewmats, ks = sample.cameras.viewmats, sample.cameras.Ks
        az, el = sample.azimuth_deg.clone(), sample.elevation_deg.clone()
        if bool(face.any()):
            idx = torch.nonzero(face)[:, 0]
            idx_dev = to_device(idx, centers.device)
            targets = posed.joints[:, self._head_joint].detach()[idx_dev] + self._face_offset
            close = sample_cameras(len(idx), targets, 0.15, FACE_RANGES, size, size, self.g)
            viewmats[idx_dev] = close.cameras.viewmats
            ks[idx_dev] = close.cameras.Ks
            az[idx], el[idx] = close.azimuth_deg, close.elevation_deg
        return Views(Cameras(viewmats, ks, size, size), az, el, face)


# -- where a step's views come from -------------------------------------------------------------
@dataclass
class Draw:
    """A step's draw from a :class:`ViewSource`.

    Attributes:
        pose: the whole step's poses (B), without gradients.
        frames: (B,) int64, the video frame each view shows (capture), or None.
    """

    pose: Pose
    frames: Tensor | None = None


class ViewSource(Protocol):
    """What the trainer asks for each step: poses, cameras, prompts, and any per-view
    parameters that train with the avatar (a video's per-frame pose corrections)."""

    def draw(self, batch: int, stage: str) -> Draw:
        """The step's ``batch`` poses."""
        ...

    def pose(self, draw: Draw, views: slice) -> Pose:
        """The poses of ``views`` of ``draw``, with gradients into :meth:`trainables`."""
        ...

    def views(self, posed: Posed, draw: Draw, size: int) -> Views:
        """Cameras (and prompt facts) for the step's posed templates (B)."""
        ...

    def trainables(self) -> dict[str, tuple[list[Tensor], float]]:
        """Tensors that train with the avatar, by name, with their learning rates."""
        ...

    def basis_poses(self, seed: int) -> Pose:
        """Poses that span what training shows (the pose-dependent model's basis is fitted to
        them); ``seed`` for sources that draw them."""
        ...

    def prior(self) -> Tensor | None:
        """A penalty on those tensors (added once a step), or None."""
        ...

    def state(self) -> dict[str, Tensor]:
        """Tensors a checkpoint keeps (restored with :meth:`load_state`)."""
        ...

    def load_state(self, tensors: dict[str, Tensor]) -> None: ...


BASIS_POSES = 2048  # generation's poses drawn for the pose-dependent model's basis


class GeneratedViews:
    """Generation's views: random poses (:class:`PoseSampler`) and random cameras in the
    recipe's ranges (:class:`ViewSampler`); nothing trains besides the avatar."""

    def __init__(self, poses: PoseSampler, views: ViewSampler) -> None:
        self.poses, self.sampler = poses, views

    def draw(self, batch: int, stage: str) -> Draw:
        return Draw(self.poses(batch, stage))

    def pose(self, draw: Draw, views: slice) -> Pose:
        return draw.pose.index(views)

    def views(self, posed: Posed, draw: Draw, size: int) -> Views:
        return self.sampler(posed, size)

    def trainables(self) -> dict[str, tuple[list[Tensor], float]]:
        return {}

    def basis_poses(self, seed: int) -> Pose:
        """:data:`BASIS_POSES` animation-stage poses, drawn as training draws them."""
        return self.poses.independent(seed)(BASIS_POSES, "animate")

    def prior(self) -> Tensor | None:
        return None

    def state(self) -> dict[str, Tensor]:
        return {}

    def load_state(self, tensors: dict[str, Tensor]) -> None:
        return None
