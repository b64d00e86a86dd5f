"""Appearance and geometry that change with the pose: per-Gaussian offsets of position,
colour, scale and opacity as a function of the body pose (bodies) or of the jaw and the
expression (heads).

A pose is first reduced to a feature vector (:func:`pose_features`): for bodies the
rotations of the 21 body joints as ``R - I`` (189 values, SMPL's pose-corrective feature),
for heads the jaw's ``R - I`` and the expression coefficients. The feature is projected onto
the principal directions of the poses seen in training (Animatable Gaussians' pose
projection): K coefficients, each in units of its direction's standard deviation and
clipped to +-2, so that a pose never seen lands inside what training covered, and the part
of a pose that training never varied is dropped.

A small shared network turns the K coefficients into R offset *fields*, each a 10-vector of
position (3, in the binding's local space: triangle-local for heads, rest space for bodies),
SH DC colour (3), log-scale (3) and opacity logit (1); each Gaussian mixes them with its own
latent code ``z`` (R):

    offsets_i(pose) = sum_r z_ir * field_r(c(pose))

These are SMPL's pose-corrective blend shapes for every Gaussian attribute, with the
per-Gaussian bases factored through R shared nonlinear fields. A pose costs the network once
(a few thousand multiply-adds) and N x R x 10 multiply-adds for the mix, so animation stays
real-time. The network's last layer starts at zero (a new model changes nothing); the
latents start as random Fourier features of the rest positions, so each field starts by
acting on whole regions of the body rather than on scattered Gaussians. Latents live with
the Gaussians (densification carries them along); the network and the basis are shared.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from avatarcli.model.gaussians import GaussianOffsets
from avatarcli.rotations import axis_angle_to_matrix
from avatarcli.templates.template import Pose

FEATURES = ("body", "head")  # the feature layouts (bodies: SMPL-X body joints; heads: FLAME jaw + expression)
BODY_JOINTS = slice(1, 22)  # SMPL-X joints 1..21: hips to wrists (not the root, jaw, eyes or hands)
JAW = 2  # the jaw in FLAME's joint order (global, neck, jaw, left eye, right eye)
CLIP = 2.0  # coefficients beyond this many standard deviations are clipped (Animatable Gaussians)
CHANNELS = 10  # position 3, colour 3, log-scale 3, opacity 1
MIN_SPREAD = 0.02  # directions whose spread is under this fraction of the largest are dropped (noise, not pose)
GROUPS = ("position", "color", "scale", "opacity")
# what one unit of the network's output is worth, per group: body positions are metres, head
# positions triangle-local units (a triangle's edge); colours SH DC units; log-scales; logits
DEFAULT_SCALES = {
    "body": {"position": 0.01, "color": 0.5, "scale": 0.2, "opacity": 0.5},
    "head": {"position": 0.3, "color": 0.5, "scale": 0.2, "opacity": 0.5},
}


def feature_size(features: str, expression: int) -> int:
    """The length of a pose's feature vector for a layout and ``expression`` coefficients."""
    return 21 * 9 if features == "body" else 9 + expression


def pose_features(features: str, pose: Pose) -> Tensor:
    """The pose's feature vectors (B, D) (see the module docstring).

    Args:
        features: "body" (rotations (B, 55, 3) of an SMPL-X layout) or "head" (FLAME layout).
        pose: a batch of B template poses.
    """
    eye = torch.eye(3, dtype=pose.rotations.dtype, device=pose.rotations.device)
    b = pose.batch
    if features == "body":
        return (axis_angle_to_matrix(pose.rotations[:, BODY_JOINTS]) - eye).reshape(b, -1)
    jaw = (axis_angle_to_matrix(pose.rotations[:, JAW]) - eye).reshape(b, 9)
    return torch.cat([jaw, pose.expression.to(jaw.dtype)], dim=-1)


def principal_directions(features: Tensor, components: int) -> tuple[Tensor, Tensor, Tensor]:
    """The mean (D,), the top ``components`` principal directions (K, D) and their standard
    deviations (K,) of feature vectors (T, D), computed in float64 on the CPU (the same on
    every device). Directions beyond the data's rank, or spread less than :data:`MIN_SPREAD`
    of the largest (a tracker's jitter, not a pose), are zero with a standard deviation of
    one: their coefficient is always zero. Each direction's sign is
    fixed (its largest entry positive) so that the basis does not depend on the solver."""
    x = features.detach().double().cpu()
    mean = x.mean(0)
    centered = x - mean
    d = x.shape[1]
    directions = torch.zeros(components, d, dtype=torch.float64)
    std = torch.ones(components, dtype=torch.float64)
    if len(x) >= 2:
        _, s, vh = torch.linalg.svd(centered, full_matrices=False)
        spread = s / math.sqrt(len(x) - 1)
        keep = min(components, len(s))
        good = spread[:keep] > MIN_SPREAD * float(spread[0]) if float(spread[0]) > 1e-9 else torch.zeros(keep, dtype=torch.bool)
        k = int(good.sum())
        v = vh[:k]
        signs = torch.sign(v.gather(1, v.abs().argmax(1, keepdim=True)))
        directions[:k] = v * signs
        std[:k] = spread[:k]
    return mean.float(), directions.float(), std.float()


class PoseNetwork(torch.nn.Module):
    """The shared part of the model: the training poses' basis and the fields' network.

    Args:
        features: "body" or "head" (:func:`pose_features`).
        dims: the feature length D.
        components: K, the principal directions kept.
        rank: R, the offset fields each Gaussian mixes.
        width: hidden units of the network.
        scales: what one unit of output is worth per group (:data:`GROUPS`).
        clip: coefficients are clipped to +-``clip`` standard deviations.
    """

    def __init__(
        self, features: str, dims: int, components: int, rank: int, width: int, scales: dict[str, float], clip: float = CLIP
    ) -> None:
        super().__init__()
        self.config: dict[str, Any] = {
            "features": features, "dims": dims, "components": components, "rank": rank, "width": width,
            "scales": {g: float(scales[g]) for g in GROUPS}, "clip": float(clip),
        }  # fmt: skip
        self.register_buffer("mean", torch.zeros(dims))
        self.register_buffer("directions", torch.zeros(components, dims))
        self.register_buffer("std", torch.ones(components))
        self.net = torch.nn.Sequential(
            torch.nn.Linear(components, width),
            torch.nn.SiLU(),
            torch.nn.Linear(width, width),
            torch.nn.SiLU(),
            torch.nn.Linear(width, rank * CHANNELS),
        )
        torch.nn.init.zeros_(self.net[-1].weight)  # a new model changes nothing
        torch.nn.init.zeros_(self.net[-1].bias)
        unit = [self.config["scales"][g] for g, n in zip(GROUPS, (3, 3, 3, 1), strict=True) for _ in range(n)]
        self.register_buffer("unit", torch.tensor(unit), persistent=False)

    @property
    def rank(self) -> int:
        return int(self.config["rank"])

    @torch.no_grad()
    def fit_basis(self, poses: Pose) -> None:
        """Set the basis to the principal directions of ``poses`` (the poses training shows)."""
        mean, directions, std = principal_directions(pose_features(self.config["features"], poses), self.config["components"])
        self.mean.copy_(mean)
        self.directions.copy_(directions)
        self.std.copy_(std)

    def coefficients(self, pose: Pose) -> Tensor:
        """(B, K) the poses' clipped coefficients in units of standard deviation. No gradient
        flows back to the pose: a capture's per-frame pose corrections must not become
        per-frame appearance codes."""
        f = pose_features(self.config["features"], pose).detach().to(self.mean.dtype)
        c = ((f - self.mean) @ self.directions.T) / self.std
        clip = self.config["clip"]
        return c.clamp(-clip, clip)

    def forward(self, coefficients: Tensor) -> Tensor:
        """The offset fields (B, R, 10) at coefficients (B, K), in the attributes' own units."""
        return self.net(coefficients).reshape(-1, self.rank, CHANNELS) * self.unit


def pose_offsets(network: PoseNetwork, latents: Tensor, pose: Pose) -> GaussianOffsets:
    """The offsets of N Gaussians with latent codes ``latents`` (N, R) for a batch of poses."""
    fields = network(network.coefficients(pose))  # (B, R, 10)
    out = torch.einsum("nr,brc->bnc", latents, fields)
    return GaussianOffsets(means=out[..., 0:3], sh0=out[..., 3:6], log_scales=out[..., 6:9], opacity_logits=out[..., 9])


def offset_penalty(offsets: GaussianOffsets, network: PoseNetwork) -> Tensor:
    """Mean squared offset in units of the network's output (each group divided by its
    scale), over poses and Gaussians: the L2 regulariser that keeps offsets small where
    nothing asks for them."""
    s = network.config["scales"]
    terms = (
        (offsets.means / s["position"]).pow(2).sum(-1),
        (offsets.sh0 / s["color"]).pow(2).sum(-1),
        (offsets.log_scales / s["scale"]).pow(2).sum(-1),
        (offsets.opacity_logits / s["opacity"]).pow(2),
    )
    return sum(terms).mean() / CHANNELS  # type: ignore[return-value]


def fourier_latents(points: Tensor, rank: int, radius: float, seed: int = 0) -> Tensor:
    """Starting latent codes (N, R) for Gaussians at rest positions ``points`` (N, 3): random
    Fourier features, wavelengths from a quarter of ``radius`` to twice it, so that nearby
    Gaussians start alike."""
    g = torch.Generator().manual_seed(seed)
    direction = torch.nn.functional.normalize(torch.randn(rank, 3, generator=g), dim=-1)
    cycles = torch.exp(math.log(0.5) + (math.log(4.0) - math.log(0.5)) * torch.rand(rank, 1, generator=g))
    freq = 2 * math.pi * cycles * direction / max(radius, 1e-6)
    phase = 2 * math.pi * torch.rand(rank, generator=g)
    p = points.detach().float().cpu()
    centre = p.mean(0) if len(p) else torch.zeros(3)
    return torch.sin((p - centre) @ freq.T + phase).to(points.device)


@dataclass
class PoseDependent:
    """An avatar's pose-dependent model.

    Attributes:
        network: the basis and the fields' network (shared by all Gaussians).
        latents: (N, R) each Gaussian's mix of the fields.
    """

    network: PoseNetwork
    latents: Tensor

    def offsets(self, pose: Pose) -> GaussianOffsets:
        """The Gaussians' offsets (B poses) for ``pose``."""
        return pose_offsets(self.network, self.latents, pose)

    def select(self, idx: Tensor) -> PoseDependent:
        """A copy for the Gaussians at ``idx`` (the network copied, not shared)."""
        return PoseDependent(copy.deepcopy(self.network), self.latents[idx])

    def to(self, device: torch.device | str) -> PoseDependent:
        """A copy on ``device``; this one and its network stay where they are."""
        return PoseDependent(copy.deepcopy(self.network).to(device), self.latents.to(device))


def new_pose_dependent(
    features: str,
    expression: int,
    poses: Pose,
    rest_points: Tensor,
    radius: float,
    components: int = 16,
    rank: int = 32,
    width: int = 64,
    scales: dict[str, float] | None = None,
    seed: int = 0,
) -> PoseDependent:
    """A model that changes nothing yet, its basis fitted to ``poses`` (what training shows).

    Args:
        features: "body" or "head"; expression: the template's expression coefficients.
        rest_points: (N, 3) the Gaussians' rest positions (world), for the latents' start.
        radius: the subject's radius, metres.
        components, rank, width: K, R and the network's hidden units.
        scales: per output group (default :data:`DEFAULT_SCALES` of ``features``).
    """
    dims = feature_size(features, expression)
    with torch.random.fork_rng(devices=[]):  # the hidden layers' draws leave the caller's generator alone
        torch.manual_seed(seed)
        network = PoseNetwork(features, dims, min(components, dims), rank, width, scales or DEFAULT_SCALES[features])
    network.fit_basis(poses.to("cpu"))
    network = network.to(rest_points.device)
    return PoseDependent(network, fourier_latents(rest_points, rank, radius, seed))
