"""An avatar: Gaussians bound to a template, its shape, and what made it.

:meth:`Avatar.posed` is the one way to pose an avatar; :mod:`avatarcli.model.avatar_file`
reads and writes it as a ``.avatar`` file.
"""

from __future__ import annotations

import copy
import datetime as _dt
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from avatarcli import __version__
from avatarcli.errors import AvatarError
from avatarcli.model.binding import Binding, deform
from avatarcli.model.gaussians import Gaussians, PosedGaussians
from avatarcli.model.material import Material
from avatarcli.model.pose_dependent import PoseDependent, feature_size
from avatarcli.templates.template import Pose, Template


@dataclass
class Avatar:
    """A rigged Gaussian avatar.

    Attributes:
        kind: "head" or "body".
        gaussians: the Gaussians, in the binding's local space.
        binding: how they hang on the template.
        betas: (S,) template shape.
        meta: the JSON metadata (template, stage, prompt, seed, history, ...).
        extra: other tensors stored with the avatar (e.g. ``binding.residual.*``).
        material: the Gaussians' materials (albedo, roughness, F0), when it can be relit; None
            for an avatar of colours (those still show the light they were made under).
        pose_dependent: offsets of the Gaussians that follow the pose, or None
            (:mod:`avatarcli.model.pose_dependent`).
    """

    kind: str
    gaussians: Gaussians
    binding: Binding
    betas: Tensor
    meta: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Tensor] = field(default_factory=dict)
    material: Material | None = None
    pose_dependent: PoseDependent | None = None

    def __len__(self) -> int:
        return len(self.gaussians)

    @property
    def device(self) -> torch.device:
        return self.gaussians.means.device

    @property
    def shape(self) -> Tensor | None:
        """The template shape (S,) to pose with, or None for the template's own (no betas stored)."""
        return self.betas if self.betas.numel() else None

    def posed(self, template: Template, pose: Pose | None = None) -> PosedGaussians:
        """World-space Gaussians for a batch of poses (the rest pose when ``pose`` is None).

        Checks the template is the one the avatar was bound to. Runs on the template's device;
        an avatar elsewhere is copied there first, so callers that pose many times move it
        once with :meth:`to`. With a pose-dependent model the Gaussians get each pose's
        offsets, and opacities and colours come per pose (see :class:`PosedGaussians`).
        """
        check_template(self, template)
        av = self if self.device == template.device else self.to(template.device)
        pose = pose if pose is not None else template.zero_pose(1)
        offsets = av.pose_dependent.offsets(pose) if av.pose_dependent is not None else None
        return deform(av.gaussians, av.binding, template, template.pose(pose, av.shape), offsets)

    def static(self, template: Template, pose: Pose | None = None) -> Avatar:
        """A copy without the pose-dependent model, the offsets of ``pose`` (one pose; the
        rest pose when None) folded into its Gaussians: for what cannot carry the model (the
        skinned .glb, the web player, re-rigging). The avatar itself when it has no model."""
        if self.pose_dependent is None:
            return self
        check_template(self, template)
        av = self.to(template.device)
        assert av.pose_dependent is not None
        with torch.no_grad():
            offsets = av.pose_dependent.offsets(pose if pose is not None else template.zero_pose(1))
            means, log_scales, logits, sh = offsets.applied(av.gaussians)
        g = Gaussians(means[0], log_scales[0], av.gaussians.quats, logits[0], sh[0]).to(self.device)
        av.meta.pop("pose_dependent", None)
        material = None if av.material is None else av.material.to(self.device)
        return Avatar(self.kind, g, av.binding.to(self.device), av.betas.to(self.device), av.meta,
                      {k: v.to(self.device) for k, v in av.extra.items()}, material=material)  # fmt: skip

    def to(self, device: torch.device | str) -> Avatar:
        """A copy on ``device``. The avatar it was called on is left as it was: nothing
        mutable (metadata, the residual network) is shared between the two."""
        return Avatar(
            self.kind,
            self.gaussians.to(device),
            self.binding.to(device),
            self.betas.to(device),
            copy.deepcopy(self.meta),
            {k: v.to(device) for k, v in self.extra.items()},
            material=None if self.material is None else self.material.to(device),
            pose_dependent=self.pose_dependent.to(device) if self.pose_dependent is not None else None,
        )

    def select(self, idx: Tensor) -> Avatar:
        """A copy with only the Gaussians at ``idx``."""
        pose = self.pose_dependent.select(idx) if self.pose_dependent is not None else None
        return Avatar(
            self.kind, self.gaussians.select(idx), self.binding.select(idx), self.betas.clone(), copy.deepcopy(self.meta), dict(self.extra),
            material=None if self.material is None else self.material.select(idx),
            pose_dependent=pose,
        )  # fmt: skip

    def add_history(self, command: str) -> None:
        """Record a command that produced or changed this avatar."""
        self.meta.setdefault("history", []).append(history_entry(command))


def history_entry(command: str) -> dict[str, str]:
    """One entry of an avatar's history: the command, when (UTC) and by which version."""
    return {"command": command, "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "version": __version__}


def template_meta(template: Template) -> dict[str, Any]:
    return {
        "name": template.name,
        "file": str(template.source),
        "sha256": template.sha256,
        "vertices": template.num_vertices,
        "faces": int(template.faces.shape[0]),
        "joints": template.num_joints,
    }


def check_template(avatar: Avatar, template: Template) -> None:
    """Raise AvatarError unless ``template`` has the topology the avatar was bound to (and as
    many shape coefficients as the avatar stores, if it stores any)."""
    if template.kind != avatar.kind:
        raise AvatarError(f"the avatar is a {avatar.kind} but the template is a {template.kind}")
    t = avatar.meta.get("template", {})
    want = (t.get("vertices"), t.get("faces"), t.get("joints"))
    have = (template.num_vertices, int(template.faces.shape[0]), template.num_joints)
    if want != have:
        raise AvatarError(
            f"the avatar was bound to template {t.get('name')} ({want[0]} vertices, {want[1]} faces) "
            f"but {template.name} has {have[0]} vertices and {have[1]} faces: pass the same --template"
        )
    pd = avatar.pose_dependent
    if pd is not None and pd.network.config["dims"] != feature_size(pd.network.config["features"], template.num_expression):
        raise AvatarError(
            f"the avatar's pose-dependent model was made for a template with other expression coefficients than "
            f"{template.name}'s {template.num_expression}: pass the template it was made with"
        )
    if avatar.betas.numel() not in (0, template.num_betas):
        raise AvatarError(
            f"the avatar's shape has {avatar.betas.numel()} coefficients but template {template.name} has {template.num_betas}: "
            "pass the template it was made with"
        )
