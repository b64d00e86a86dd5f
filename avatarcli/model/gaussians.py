"""The Gaussian set: parameters before activation, as they are trained and stored, and
posed world-space Gaussians, activated, as they are rendered."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor

SH_C0 = 0.28209479177387814  # the constant degree-0 spherical harmonic
MAX_SH_DEGREE = 3


def rgb_to_sh0(rgb: Tensor) -> Tensor:
    """DC spherical-harmonic coefficients for colours in [0, 1] (the 3DGS convention)."""
    return (rgb - 0.5) / SH_C0


def sh0_to_rgb(sh0: Tensor) -> Tensor:
    return sh0 * SH_C0 + 0.5


@dataclass
class Gaussians:
    """N Gaussians, pre-activation.

    Attributes:
        means: (N, 3) positions; in the binding's local space (triangle frames for heads,
            the template's rest pose for bodies).
        log_scales: (N, 3) log standard deviations along the Gaussian's axes (same space).
        quats: (N, 4) rotations (w, x, y, z), not necessarily normalised (same space).
        opacity_logits: (N,) opacity before the sigmoid.
        sh: (N, K, 3) spherical-harmonic colour coefficients, K = (degree + 1)^2.
    """

    means: Tensor
    log_scales: Tensor
    quats: Tensor
    opacity_logits: Tensor
    sh: Tensor

    def __len__(self) -> int:
        return int(self.means.shape[0])

    @property
    def sh_degree(self) -> int:
        return math.isqrt(self.sh.shape[1]) - 1

    @property
    def opacities(self) -> Tensor:
        return torch.sigmoid(self.opacity_logits)

    @property
    def colors(self) -> Tensor:
        """(N, 3) view-independent colour: the DC term."""
        return sh0_to_rgb(self.sh[:, 0]).clamp(0.0, 1.0)

    def select(self, idx: Tensor) -> Gaussians:
        """The Gaussians at ``idx`` (a boolean mask or index tensor)."""
        return Gaussians(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    def to(self, device: torch.device | str) -> Gaussians:
        return Gaussians(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def detach(self) -> Gaussians:
        return Gaussians(**{f.name: getattr(self, f.name).detach() for f in fields(self)})

    def with_sh_degree(self, degree: int) -> Gaussians:
        """Same Gaussians with ``degree`` SH bands (new bands zero, extra bands dropped)."""
        k = (degree + 1) ** 2
        sh = self.sh[:, :k]
        if sh.shape[1] < k:
            sh = torch.cat([sh, sh.new_zeros(len(self), k - sh.shape[1], 3)], dim=1)
        return replace(self, sh=sh)

    def check(self) -> None:
        """Raises ValueError when shapes disagree, the SH degree is above MAX_SH_DEGREE,
        values are not finite or a rotation is all zero."""
        if self.means.dim() != 2:
            raise ValueError(f"means has shape {tuple(self.means.shape)}, expected (N, 3)")
        n = len(self)
        want = {"means": (n, 3), "log_scales": (n, 3), "quats": (n, 4), "opacity_logits": (n,)}
        for name, shape in want.items():
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(f"{name} has shape {tuple(getattr(self, name).shape)}, expected {shape}")
        k = self.sh.shape[1] if self.sh.dim() == 3 else -1
        if self.sh.dim() != 3 or self.sh.shape[0] != n or self.sh.shape[2] != 3 or k < 1 or math.isqrt(k) ** 2 != k:
            raise ValueError(f"sh has shape {tuple(self.sh.shape)}, expected ({n}, (degree+1)^2, 3)")
        if k > (MAX_SH_DEGREE + 1) ** 2:
            raise ValueError(f"sh has degree {math.isqrt(k) - 1}; the most the renderers draw is {MAX_SH_DEGREE}")
        for f in fields(self):
            if not bool(torch.isfinite(getattr(self, f.name)).all()):
                raise ValueError(f"{f.name} holds NaN or infinite values")
        zero = int((self.quats.norm(dim=-1) < 1e-12).sum())
        if zero:
            raise ValueError(f"{zero} of the rotations are all zero (no orientation)")


def cat(parts: list[Gaussians]) -> Gaussians:
    """Concatenate Gaussian sets of the same SH degree."""
    return Gaussians(**{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(Gaussians)})


@dataclass
class PosedGaussians:
    """World-space Gaussians for a batch of B poses (activated values).

    Attributes:
        means: (B, N, 3); quats: (B, N, 4) unit (w, x, y, z); scales: (B, N, 3) metres;
        opacities: (N,) in [0, 1], shared by every pose, or (B, N) when they differ per pose
            (an avatar whose appearance depends on its pose);
        sh: (N, K, 3), or (B, N, K, 3) per pose (alike with ``opacities``).
    """

    means: Tensor
    quats: Tensor
    scales: Tensor
    opacities: Tensor
    sh: Tensor

    @property
    def per_pose(self) -> bool:
        """Whether opacities and colours differ per pose (batched as (B, N) and (B, N, K, 3))."""
        return self.opacities.dim() == 2

    def opacities_of(self, b: int) -> Tensor:
        """(N,) the opacities of pose b."""
        return self.opacities[b] if self.per_pose else self.opacities

    def sh_of(self, b: int) -> Tensor:
        """(N, K, 3) the SH colour of pose b."""
        return self.sh[b] if self.per_pose else self.sh

    def frame(self, b: int) -> PosedGaussians:
        """The b-th pose as a batch of one."""
        one = slice(b, b + 1)
        if self.per_pose:
            return PosedGaussians(self.means[one], self.quats[one], self.scales[one], self.opacities[one], self.sh[one])
        return replace(self, means=self.means[one], quats=self.quats[one], scales=self.scales[one])

    def gaussians(self, b: int = 0) -> Gaussians:
        """Pose b as pre-activation Gaussians (world space): what a 3DGS file stores."""
        op = self.opacities_of(b).clamp(1e-6, 1 - 1e-6)
        return Gaussians(
            means=self.means[b],
            log_scales=torch.log(self.scales[b].clamp_min(1e-12)),
            quats=self.quats[b] / self.quats[b].norm(dim=-1, keepdim=True),
            opacity_logits=torch.log(op / (1 - op)),
            sh=self.sh_of(b),
        )


@dataclass
class GaussianOffsets:
    """Changes to N Gaussians' pre-activation values for a batch of B poses (a pose-dependent
    appearance, :mod:`avatarcli.model.pose_dependent`), added before they are posed.

    Attributes:
        means: (B, N, 3) in the binding's local space (triangle-local for heads, rest space
            for bodies).
        log_scales: (B, N, 3) in the same space.
        opacity_logits: (B, N).
        sh0: (B, N, 3) added to the DC spherical-harmonic coefficient.
    """

    means: Tensor
    log_scales: Tensor
    opacity_logits: Tensor
    sh0: Tensor

    def applied(self, gaussians: Gaussians) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``gaussians`` with these offsets: means (B, N, 3), log-scales (B, N, 3), opacity
        logits (B, N) and SH (B, N, K, 3)."""
        sh = gaussians.sh[None].expand(self.sh0.shape[0], -1, -1, -1)
        sh = torch.cat([sh[:, :, :1] + self.sh0[:, :, None], sh[:, :, 1:]], dim=2)
        return (gaussians.means + self.means, gaussians.log_scales + self.log_scales,
                gaussians.opacity_logits + self.opacity_logits, sh)  # fmt: skip
