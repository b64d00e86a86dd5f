"""The avatar as it trains: a gsplat-style parameter dict, the template shape, the
residual skinning network and the pose-dependent model's network, held in one place.

gsplat's densification operations work on a dict of parameters named ``means``, ``scales``,
``quats``, ``opacities`` and ``sh``; the binding tensors ride along in the same dict as
non-trainable entries (``binding_face_idx``, ...) so that a clone or a split inherits its
parent's binding and a removal drops it. An avatar with materials adds them as trainable
entries (``albedo``, ``roughness``, ``specular``: :data:`MATERIAL_NAMES`), grown and pruned
with their Gaussians alike. The pose-dependent model's per-Gaussian latent codes are a
trainable entry of the same dict (``pose_latents``), carried alike.
"""

from __future__ import annotations

import copy
from dataclasses import fields

import torch
from torch import Tensor

from avatarcli.generate.config import LearningRates, PoseDependentConfig
from avatarcli.model.avatar import Avatar
from avatarcli.model.binding import Binding, ResidualWeights, SkinningBinding, TriangleBinding
from avatarcli.model.gaussians import GaussianOffsets, Gaussians
from avatarcli.model.material import Material
from avatarcli.model.pose_dependent import PoseDependent, PoseNetwork, pose_offsets
from avatarcli.templates.template import Pose

# gsplat's parameter names -> the Gaussians fields they hold
PARAM_NAMES = {"means": "means", "scales": "log_scales", "quats": "quats", "opacities": "opacity_logits", "sh": "sh"}
assert set(PARAM_NAMES.values()) == {f.name for f in fields(Gaussians)}
# the trainer's parameter names -> the Material fields they hold
MATERIAL_NAMES = {"albedo": "albedo_logits", "roughness": "roughness_logits", "specular": "specular_logits"}
POSE_LATENTS = "pose_latents"  # the pose-dependent model's latent codes (N, R), when there is one
TRAINABLE = (*PARAM_NAMES, *MATERIAL_NAMES, POSE_LATENTS)


def trainable(name: str) -> bool:
    """Whether the parameter-dict entry ``name`` trains (the binding tensors do not)."""
    return name in TRAINABLE


class AvatarParameters:
    """The trainable state of one avatar on the training device.

    Args:
        avatar: the avatar to train (copied; the original is not touched).
        device: the training device.
        learn_shape: whether the template shape (betas) trains.
        num_betas: the template's shape components (used when the avatar stores none).

    Attributes:
        params: gsplat-style dict: the five Gaussian fields (trainable), the materials
            (trainable, when the avatar has them) and ``binding_*``.
        betas: (S,) template shape, a parameter that trains when ``learn_shape``.
        residual: the residual skinning network of a body, or None.
        pose_network: the pose-dependent model's network (its latents are
            ``params["pose_latents"]``), or None.
    """

    def __init__(self, avatar: Avatar, device: torch.device, learn_shape: bool, num_betas: int) -> None:
        self.kind = avatar.kind
        av = avatar.to(device)
        self.betas = torch.nn.Parameter(
            av.betas.clone() if av.betas.numel() else torch.zeros(num_betas, device=device), requires_grad=learn_shape
        )
        self.residual: ResidualWeights | None = getattr(av.binding, "residual", None)
        self.pose_network: PoseNetwork | None = None
        self.params: dict[str, torch.nn.Parameter] = {}
        # the materials' ranges (the trainer keeps its light apart); None without materials
        self.material_ranges = None if av.material is None else (av.material.roughness_range, av.material.specular_range)
        self.load(av.gaussians, av.binding, av.material, av.pose_dependent)

    def __len__(self) -> int:
        return int(self.params["means"].shape[0])

    @property
    def device(self) -> torch.device:
        return self.params["means"].device

    def load(self, gaussians: Gaussians, binding: Binding, material: Material | None = None, pose: PoseDependent | None = None) -> None:
        """Replace the Gaussians, the binding tensors, the materials and the pose-dependent model
        (none when ``material`` / ``pose`` is None; the pose model's latents must be as many as
        the Gaussians). The residual network is kept."""
        self.params = {k: torch.nn.Parameter(getattr(gaussians, f).detach().clone().float()) for k, f in PARAM_NAMES.items()}
        for name, t in binding.tensors().items():
            self.params[f"binding_{name}"] = torch.nn.Parameter(t.detach().clone(), requires_grad=False)
        if material is not None:
            for k, f in MATERIAL_NAMES.items():
                self.params[k] = torch.nn.Parameter(getattr(material, f).detach().clone().float().to(self.params["means"].device))
        self.pose_network = None
        if pose is not None:
            self.add_pose_dependent(pose)

    @property
    def has_material(self) -> bool:
        return "albedo" in self.params

    def material(self) -> Material | None:
        """The materials, as views of the parameters (gradients flow into them), or None."""
        if not self.has_material or self.material_ranges is None:
            return None
        rough, spec = self.material_ranges
        return Material(**{f: self.params[k] for k, f in MATERIAL_NAMES.items()}, roughness_range=rough, specular_range=spec)

    def add_pose_dependent(self, pose: PoseDependent) -> None:
        """Train ``pose`` with the avatar: its network here, its latents in :attr:`params`."""
        if pose.latents.shape[0] != len(self):
            raise ValueError(f"{pose.latents.shape[0]} latent codes for {len(self)} Gaussians")
        self.pose_network = pose.network.to(self.device)
        self.params[POSE_LATENTS] = torch.nn.Parameter(pose.latents.detach().clone().float().to(self.device))

    def pose_dependent(self) -> PoseDependent | None:
        """The live pose-dependent model (the network and the latents' parameter), or None."""
        if self.pose_network is None:
            return None
        return PoseDependent(self.pose_network, self.params[POSE_LATENTS])

    def offsets(self, pose: Pose) -> GaussianOffsets | None:
        """The pose-dependent offsets of a batch of poses (gradients flow), or None without a model."""
        if self.pose_network is None:
            return None
        return pose_offsets(self.pose_network, self.params[POSE_LATENTS], pose)

    def gaussians(self) -> Gaussians:
        """The Gaussians, as views of the parameters (gradients flow into them)."""
        return Gaussians(**{f: self.params[k] for k, f in PARAM_NAMES.items()})

    def binding(self) -> Binding:
        """The binding, on the parameters' tensors and the live residual network."""
        if self.kind == "head":
            return TriangleBinding(self.params["binding_face_idx"])
        return SkinningBinding(self.params["binding_weights"], self.params["binding_face_idx"], self.params["binding_bary"], self.residual)

    def optimizers(
        self, lr: LearningRates, pose: PoseDependentConfig | None = None
    ) -> tuple[dict[str, torch.optim.Optimizer], dict[str, torch.optim.Optimizer]]:
        """One Adam per per-Gaussian tensor (the Gaussian fields and the pose latents: what
        gsplat's operations expect), and one each for the shape, the residual network and the
        pose-dependent network when they train."""
        rates = {"means": lr.position, "scales": lr.scale, "quats": lr.rotation, "opacities": lr.opacity, "sh": lr.color}
        gaussian = {k: torch.optim.Adam([self.params[k]], lr=rates[k], betas=(0.9, 0.99), eps=1e-15) for k in PARAM_NAMES}
        for k in MATERIAL_NAMES if self.has_material else ():  # materials learn at the colours' rate
            gaussian[k] = torch.optim.Adam([self.params[k]], lr=lr.color, betas=(0.9, 0.99), eps=1e-15)
        p = pose or PoseDependentConfig()
        extra: dict[str, torch.optim.Optimizer] = {}
        if self.betas.requires_grad and lr.shape > 0:
            extra["betas"] = torch.optim.Adam([self.betas], lr=lr.shape, betas=(0.9, 0.99))
        if self.residual is not None:
            extra["residual"] = torch.optim.Adam(self.residual.parameters(), lr=lr.residual, betas=(0.9, 0.99))
        if self.pose_network is not None:
            gaussian[POSE_LATENTS] = torch.optim.Adam([self.params[POSE_LATENTS]], lr=p.lr_latents, betas=(0.9, 0.99), eps=1e-15)
            extra["pose_dependent"] = torch.optim.Adam(self.pose_network.parameters(), lr=p.lr_network, betas=(0.9, 0.99))
        return gaussian, extra

    def snapshot(self, meta: dict) -> Avatar:
        """The avatar on the CPU. It shares no tensor or module with the training state, so
        writing, moving or editing it never touches what trains."""

        def snap(t: Tensor) -> Tensor:
            return t.detach().to("cpu", copy=True)

        g = Gaussians(**{f: snap(self.params[k]) for k, f in PARAM_NAMES.items()})
        binding: Binding
        if self.kind == "head":
            binding = TriangleBinding(snap(self.params["binding_face_idx"]))
        else:
            residual = copy.deepcopy(self.residual).to("cpu") if self.residual is not None else None
            p = self.params
            binding = SkinningBinding(snap(p["binding_weights"]), snap(p["binding_face_idx"]), snap(p["binding_bary"]), residual)
        material = self.material()
        if material is not None:
            material = Material(**{f: snap(t) for f, t in material.tensors().items()}, roughness_range=material.roughness_range,
                                specular_range=material.specular_range)  # fmt: skip
        pose = None
        if self.pose_network is not None:
            pose = PoseDependent(copy.deepcopy(self.pose_network).to("cpu"), snap(self.params[POSE_LATENTS]))
        return Avatar(self.kind, g, binding, snap(self.betas), copy.deepcopy(meta), material=material, pose_dependent=pose)
