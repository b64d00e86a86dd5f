"""The stage plan of a run, and what happens between stages.

Heads train in one animation-aware stage. Bodies train a static canonical avatar in a star
pose first (DreamWaltz-G), are then re-rigged from where their Gaussians have moved, and
train on in random poses with residual skinning weights (GaussianMotion). A run with a
pose-dependent appearance gets its model at the start of the animation stage, its basis
fitted to the poses that stage shows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from avatarcli.generate.config import GenerateConfig
from avatarcli.generate.parameters import AvatarParameters
from avatarcli.model.binding import ResidualWeights, deform, rest_posed
from avatarcli.model.pose_dependent import new_pose_dependent
from avatarcli.model.rigging import rig_gaussians
from avatarcli.templates.template import Pose, Template


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
    canonical stage moved them off the surface points they were bound to). Every Gaussian
    is kept, in order, so a pose-dependent model keeps its latents (body positions are
    offsets in the rest space, which re-rigging does not change)."""
    world = deform(model.gaussians(), model.binding(), template, rest_posed(template, model.betas))
    rigged, _ = rig_gaussians(world.gaussians().to("cpu"), template.to("cpu"), model.betas.detach().cpu(), meta=meta)
    rigged = rigged.to(model.device)
    model.load(rigged.gaussians, rigged.binding, model.material(), model.pose_dependent())  # rigging keeps every Gaussian, in order


def add_residual(model: AvatarParameters, template: Template, radius: float) -> None:
    """Give a body the residual skinning network (starting as the template's weights)."""
    model.residual = ResidualWeights(template.num_joints, radius).to(model.device)


def wants_pose_dependent(config: GenerateConfig, stage: str) -> bool:
    """A pose-dependent appearance trains in the animation stage (when the run asks for one)."""
    return config.pose_dependent.enabled and stage == "animate"


@torch.no_grad()
def add_pose_dependent(model: AvatarParameters, template: Template, poses: Pose, config: GenerateConfig, radius: float) -> None:
    """Give the avatar a pose-dependent model that changes nothing yet, its basis the
    principal directions of ``poses`` (what training shows)."""
    c = config.pose_dependent
    rest = deform(model.gaussians(), model.binding(), template, rest_posed(template, model.betas)).means[0]
    model.add_pose_dependent(
        new_pose_dependent(template.kind, template.num_expression, poses, rest, radius, c.components, c.rank, c.width, seed=config.seed)
    )
