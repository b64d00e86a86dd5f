"""The stage plan of a run, and what happens between stages.

Heads train in one animation-aware stage. Bodies train a static canonical avatar in a star
pose first (DreamWaltz-G), are then re-rigged from where their Gaussians have moved, and
train on in random poses with residual skinning weights (GaussianMotion).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from avatarcli.generate.config import GenerateConfig
from avatarcli.generate.parameters import AvatarParameters
from avatarcli.model.binding import ResidualWeights, deform, rest_posed
from avatarcli.model.rigging import rig_gaussians
from avatarcli.templates.template import Template


@dataclass(frozen=True)
class Stage:
    """Steps ``start`` (inclusive) to ``end`` (exclusive) of a run train in stage ``name``."""

    name: str
    start: int
    end: int


def plan(config: GenerateConfig) -> list[Stage]:
    """The run's stages in order; with two, the first takes ``canonical_fraction`` of the steps."""
    names = config.stages
    if len(names) == 1:
        return [Stage(names[0], 0, config.steps)]
    first = max(1, round(config.steps * config.canonical_fraction))
    return [Stage(names[0], 0, first), Stage(names[1], first, first + max(1, config.steps - first))]


def wants_residual(config: GenerateConfig, kind: str, stage: str) -> bool:
    """Residual skinning weights train in a body's animation stage (when the recipe has them)."""
    return config.residual_weights and kind == "body" and stage == "animate"


@torch.no_grad()
def rerig(model: AvatarParameters, template: Template, meta: dict) -> None:
    """Bind the Gaussians afresh from where they now are in the rest pose (after the
    canonical stage moved them off the surface points they were bound to)."""
    world = deform(model.gaussians(), model.binding(), template, rest_posed(template, model.betas))
    rigged, _ = rig_gaussians(world.gaussians().to("cpu"), template.to("cpu"), model.betas.detach().cpu(), meta=meta)
    rigged = rigged.to(model.device)
    model.load(rigged.gaussians, rigged.binding, model.material())  # rigging keeps every Gaussian, in order


def add_residual(model: AvatarParameters, template: Template, radius: float) -> None:
    """Give a body the residual skinning network (starting as the template's weights)."""
    model.residual = ResidualWeights(template.num_joints, radius).to(model.device)
