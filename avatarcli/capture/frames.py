"""The video's frames as the trainer's views: each view a frame at its tracked pose, seen by
the video's camera, with a per-frame correction of the pose that trains with the avatar.

Tracking is never exact (landmarks are a few pixels off, and a landmark fit cannot see a
cheek's bulge or how far the jaw drops behind the lips), so every frame's joint rotations,
expression and placement get a correction that the photometric loss moves and a prior pulls
back towards the tracked values. The rotation of the template's root joint and its
translation together are a rigid motion of the subject against the camera: correcting them
is correcting the camera of that frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from avatarcli.generate.samplers import Draw, Views
from avatarcli.motion.fitting import Camera
from avatarcli.render.cameras import Cameras
from avatarcli.templates.template import Pose, Posed


def video_cameras(camera: Camera, width: int, height: int, count: int = 1, device: torch.device | str = "cpu") -> Cameras:
    """The tracker's camera (a pinhole at the origin looking along -z, tilted by its
    elevation) for images of ``width`` x ``height`` pixels (the video's frame scaled)."""
    s = width / camera.width
    viewmat = torch.eye(4)
    viewmat[:3, :3] = camera.rotation()
    k = torch.tensor([[camera.focal * s, 0.0, 0.5 * width], [0.0, camera.focal * s, 0.5 * height], [0.0, 0.0, 1.0]])
    return Cameras(viewmat.expand(count, 4, 4).clone(), k.expand(count, 3, 3).clone(), width, height).to(device)


@dataclass
class PriorWeights:
    """What a correction of a frame's tracked pose costs (per frame, squared).

    Attributes:
        rotation: per radian squared of every joint's rotation.
        translation: per metre squared.
        expression: per coefficient squared.
    """

    rotation: float = 0.3
    translation: float = 30.0
    expression: float = 0.03


@dataclass
class LearningRates:
    """Adam learning rates of the per-frame corrections."""

    rotation: float = 1e-3
    translation: float = 1e-4
    expression: float = 1e-2


class FrameSource:
    """Views of the video's frames (a :class:`~avatarcli.generate.samplers.ViewSource`).

    Args:
        poses: (T) every kept frame's tracked pose in the camera's world.
        cameras: the video camera at the training size (one).
        train: (N,) the frames (indices into ``poses``) that training draws from.
        seed: seeds the draws of frames.
        prior, lr: the corrections' prior weights and learning rates.
        device: the training device.
    """

    def __init__(
        self,
        poses: Pose,
        cameras: Cameras,
        train: Tensor,
        seed: int,
        prior: PriorWeights | None = None,
        lr: LearningRates | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.tracked = poses.to(self.device)
        t = poses.batch
        self.rotations = torch.zeros_like(self.tracked.rotations, requires_grad=True)
        self.expression = torch.zeros_like(self.tracked.expression, requires_grad=True)
        self.translation = torch.zeros_like(self.tracked.translation, requires_grad=True)
        self.cameras = cameras.to(self.device)
        self.train = train.long().cpu()
        if len(self.train) == 0 or int(self.train.min()) < 0 or int(self.train.max()) >= t:
            raise ValueError(f"training frames must index the {t} frames")
        self.gen = torch.Generator().manual_seed(seed)
        self.weights = prior or PriorWeights()
        self.lr = lr or LearningRates()
        self._last: Tensor | None = None

    def __len__(self) -> int:
        return self.tracked.batch

    # -- the ViewSource protocol ---------------------------------------------------------------
    def draw(self, batch: int, stage: str) -> Draw:
        """``batch`` different training frames (all of them, repeated, when there are fewer)."""
        n = len(self.train)
        picks = torch.cat([torch.randperm(n, generator=self.gen) for _ in range(-(-batch // n))])[:batch]
        frames = self.train[picks]
        self._last = frames.to(self.device)
        with torch.no_grad():
            pose = self.frame_poses(self._last)
        return Draw(pose, frames)

    def pose(self, draw: Draw, views: slice) -> Pose:
        assert draw.frames is not None
        return self.frame_poses(draw.frames[views].to(self.device))

    def views(self, posed: Posed, draw: Draw, size: int) -> Views:
        b = posed.vertices.shape[0]
        cams = Cameras(
            self.cameras.viewmats.expand(b, 4, 4), self.cameras.Ks.expand(b, 3, 3), self.cameras.width, self.cameras.height
        )  # fmt: skip
        return Views(cams, torch.zeros(b), torch.zeros(b), torch.zeros(b, dtype=torch.bool))

    def trainables(self) -> dict[str, tuple[list[Tensor], float]]:
        out = {"rotations": ([self.rotations], self.lr.rotation), "translation": ([self.translation], self.lr.translation)}
        if self.expression.shape[1]:
            out["expression"] = ([self.expression], self.lr.expression)
        return out

    def basis_poses(self, seed: int) -> Pose:
        """The training frames' tracked poses (what the pose-dependent model's basis spans)."""
        return self.tracked.index(self.train.to(self.device))

    def prior(self) -> Tensor | None:
        """The corrections of the last draw's frames, weighted (mean over those frames)."""
        if self._last is None:
            return None
        f = self._last
        w = self.weights
        cost = w.rotation * self.rotations[f].pow(2).sum((1, 2)) + w.translation * self.translation[f].pow(2).sum(-1)
        if self.expression.shape[1]:
            cost = cost + w.expression * self.expression[f].pow(2).sum(-1)
        return cost.mean()

    def state(self) -> dict[str, Tensor]:
        return {
            "tracked.rotations": self.tracked.rotations, "tracked.expression": self.tracked.expression,
            "tracked.translation": self.tracked.translation, "rotations": self.rotations, "expression": self.expression,
            "translation": self.translation, "train": self.train, "rng": self.gen.get_state(),
        }  # fmt: skip

    def load_state(self, tensors: dict[str, Tensor]) -> None:
        want = self.state()
        missing = sorted(set(want) - set(tensors))
        if missing:
            raise KeyError(f"no {missing[0]} in the checkpoint")
        for name, value in tensors.items():
            if name in want and value.shape != want[name].shape:
                raise ValueError(f"{name} has shape {tuple(value.shape)}, expected {tuple(want[name].shape)}")
        with torch.no_grad():
            self.tracked = Pose(*(tensors[f"tracked.{k}"].to(self.device) for k in ("rotations", "expression", "translation")))
            for k in ("rotations", "expression", "translation"):
                getattr(self, k).copy_(tensors[k].to(self.device))
        self.train = tensors["train"].long().cpu()
        self.gen.set_state(tensors["rng"])

    # -- the frames' poses ------------------------------------------------------------------------
    def frame_poses(self, frames: Tensor) -> Pose:
        """Corrected poses of ``frames`` (B,) (indices on the training device), with gradients
        into the corrections."""
        t = self.tracked
        return Pose(
            t.rotations[frames] + self.rotations[frames],
            t.expression[frames] + self.expression[frames],
            t.translation[frames] + self.translation[frames],
        )

    @torch.no_grad()
    def corrected(self) -> Pose:
        """Every frame's corrected pose (T), detached, on the CPU."""
        return self.frame_poses(torch.arange(len(self), device=self.device)).to("cpu")
