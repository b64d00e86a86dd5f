"""The avatar as it trains: a gsplat-style parameter dict, the template shape and the
residual skinning network, held in one place.

gsplat's densification operations work on a dict of parameters named ``means``, ``scales``,
``quats``, ``opacities`` and ``sh``; the binding tensors ride along in the same dict as
non-trainable entries (``binding_face_idx``, ...) so that a clone or a split inherits its
parent's binding and a removal drops it. An avatar with materials adds them as trainable
entries (``albedo``, ``roughness``, ``specular``: :data:`MATERIAL_NAMES`), grown and pruned
with their Gaussians alike.
"""

from __future__ import annotations

import copy
from dataclasses import fields

import torch
from torch import Tensor

from avatarcli.generate.config import LearningRates
from avatarcli.model.avatar import Avatar
from avatarcli.model.binding import Binding, ResidualWeights, SkinningBinding, TriangleBinding
from avatarcli.model.gaussians import Gaussians
from avatarcli.model.material import Material

# gsplat's parameter names -> the Gaussians fields they hold
PARAM_NAMES = {"means": "means", "scales": "log_scales", "quats": "quats", "opacities": "opacity_logits", "sh": "sh"}
assert set(PARAM_NAMES.values()) == {f.name for f in fields(Gaussians)}
# the trainer's parameter names -> the Material fields they hold
MATERIAL_NAMES = {"albedo": "albedo_logits", "roughness": "roughness_logits", "specular": "specular_logits"}
TRAINABLE = (*PARAM_NAMES, *MATERIAL_NAMES)


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
    """

    def __init__(self, avatar: Avatar, device: torch.device, learn_shape: bool, num_betas: int) -> None:
        self.kind = avatar.kind
        av = avatar.to(device)
        self.betas = torch.nn.Parameter(
            av.betas.clone() if av.betas.numel() else torch.zeros(num_betas, device=device), requires_grad=learn_shape
        )
        self.residual: ResidualWeights | None = getattr(av.binding, "residual", None)
        self.params: dict[str, torch.nn.Parameter] = {}
        # the materials' ranges (the trainer keeps its light apart); None without materials
        self.material_ranges = None if av.material is None else (av.material.roughness_range, av.material.specular_range)
        self.load(av.gaussians, av.binding, av.material)

    def __len__(self) -> int:
        return int(self.params["means"].shape[0])

    @property
    def device(self) -> torch.device:
        return self.params["means"].device

    def load(self, gaussians: Gaussians, binding: Binding, material: Material | None = None) -> None:
        """Replace the Gaussians, binding tensors and materials (the residual network is kept)."""
        self.params = {k: torch.nn.Parameter(getattr(gaussians, f).detach().clone().float()) for k, f in PARAM_NAMES.items()}
        for name, t in binding.tensors().items():
            self.params[f"binding_{name}"] = torch.nn.Parameter(t.detach().clone(), requires_grad=False)
        if material is not None:
            for k, f in MATERIAL_NAMES.items():
                self.params[k] = torch.nn.Parameter(getattr(material, f).detach().clone().float().to(self.params["means"].device))

    @property
    def has_material(self) -> bool:
        return "albedo" in self.params

    def material(self) -> Material | None:
        """The materials, as views of the parameters (gradients flow into them), or None."""
        if not self.has_material or self.material_ranges is None:
            return None
        rough, spec = self.material_ranges
        return Material(**{f: self.params[k] for k, f in MATERIAL_NAMES.items()}, roughness_range=rough, specular_range=spec)

    def gaussians(self) -> Gaussians:
        """The Gaussians, as views of the parameters (gradients flow into them)."""
        return Gaussians(**{f: self.params[k] for k, f in PARAM_NAMES.items()})

    def binding(self) -> Binding:
        """The binding, on the parameters' tensors and the live residual network."""
        if self.kind == "head":
            return TriangleBinding(self.params["binding_face_idx"])
        return SkinningBinding(self.params["binding_weights"], self.params["binding_face_idx"], self.params["binding_bary"], self.residual)

    def optimizers(self, lr: LearningRates) -> tuple[dict[str, torch.optim.Optimizer], dict[str, torch.optim.Optimizer]]:
        """One Adam per Gaussian field (what gsplat's operations expect), and one each for
        the shape and the residual network when they train."""
        rates = {"means": lr.position, "scales": lr.scale, "quats": lr.rotation, "opacities": lr.opacity, "sh": lr.color}
        gaussian = {k: torch.optim.Adam([self.params[k]], lr=rates[k], betas=(0.9, 0.99), eps=1e-15) for k in PARAM_NAMES}
        for k in MATERIAL_NAMES if self.has_material else ():  # materials learn at the colours' rate
            gaussian[k] = torch.optim.Adam([self.params[k]], lr=lr.color, betas=(0.9, 0.99), eps=1e-15)
        extra: dict[str, torch.optim.Optimizer] = {}
        if self.betas.requires_grad and lr.shape > 0:
            extra["betas"] = torch.optim.Adam([self.betas], lr=lr.shape, betas=(0.9, 0.99))
        if self.residual is not None:
            extra["residual"] = torch.optim.Adam(self.residual.parameters(), lr=lr.residual, betas=(0.9, 0.99))
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
        return Avatar(self.kind, g, binding, snap(self.betas), copy.deepcopy(meta), material=material)
