"""The avatar as it trains: a gsplat-style parameter dict, the template shape and the
residual skinning network, held in one place.

gsplat's densification operations work on a dict of parameters named ``means``, ``scales``,
``quats``, ``opacities`` and ``sh``; the binding tensors ride along in the same dict as
non-trainable entries (``binding_face_idx``, ...) so that a clone or a split inherits its
parent's binding and a removal drops it.
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

# gsplat's parameter names -> the Gaussians fields they hold
PARAM_NAMES = {"means": "means", "scales": "log_scales", "quats": "quats", "opacities": "opacity_logits", "sh": "sh"}
assert set(PARAM_NAMES.values()) == {f.name for f in fields(Gaussians)}


class AvatarParameters:
    """The trainable state of one avatar on the training device.

    Args:
        avatar: the avatar to train (copied; the original is not touched).
        device: the training device.
        learn_shape: whether the template shape (betas) trains.
        num_betas: the template's shape components (used when the avatar stores none).

    Attributes:
        params: gsplat-style dict: the five Gaussian fields (trainable) and ``binding_*``.
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
        self.load(av.gaussians, av.binding)

    def __len__(self) -> int:
        return int(self.params["means"].shape[0])

    @property
    def device(self) -> torch.device:
        return self.params["means"].device

    def load(self, gaussians: Gaussians, binding: Binding) -> None:
        """Replace the Gaussians and binding tensors (the residual network is kept)."""
        self.params = {k: torch.nn.Parameter(getattr(gaussians, f).detach().clone().float()) for k, f in PARAM_NAMES.items()}
        for name, t in binding.tensors().items():
            self.params[f"binding_{name}"] = torch.nn.Parameter(t.detach().clone(), requires_grad=False)

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
        return Avatar(self.kind, g, binding, snap(self.betas), copy.deepcopy(meta))
