"""Generation settings and the recipes' defaults (the papers' numbers; README.md names the recipes).

Heads follow HeadStudio: one animation-aware stage, NFSD, MediaPipe-face ControlNet, 10 000
steps at batch 8, renders at 1024, shape learnt and frozen at 80 %. Bodies follow
DreamWaltz-G and GaussianMotion: a canonical stage in a star pose, rigging, then an
animation stage with random poses, ASD, residual skinning weights and scale regularisation.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from avatarcli.errors import AvatarError
from avatarcli.generate.guidance.scores import BODY_TIMESTEPS, HEAD_TIMESTEPS, TimestepSchedule
from avatarcli.render.cameras import BODY_RANGES, HEAD_RANGES, CameraRanges

STAGES = ("canonical", "animate")


@dataclass
class LearningRates:
    """Adam learning rates per parameter group; the defaults are the head recipe's.

    Heads take HeadStudio's code (gaussiansplatting/arguments/__init__.py OptimizationParams,
    gaussiansplatting/scene/gaussian_flame_model.py training_setup): positions 5e-5 times
    ``spatial_lr_scale``, which threestudio/systems/Head3DGSLKs.py sets to cameras_extent = 4,
    so 2e-4, decaying exponentially to half that at step 30 000 (``get_expon_lr_func``; a
    10 000-step run ends at 1.6e-4); scales 5e-3, rotations 1e-3, colours 1.25e-2, opacities
    1e-2, shape 1e-3. (HeadStudio sec. 4.3 prints 5e-5, 1e-3 and 1e-2 for the first three:
    the code's factor of 4 and its scale and rotation rates are what its results were made
    with.) Head positions here are in triangle-local units as there (HeadStudio eq. 5 scales
    a local offset by sqrt(area); these frames scale it by the triangle's edges in its plane,
    about 1.6 sqrt(area), and by sqrt(area) along the normal). The built-in head has 11 465
    triangles of median sqrt(area) 3.5 mm; FLAME has 9 976 on a head of about its size.
    """

    position: float = 2e-4
    position_decay: float = 0.5  # the position rate is multiplied by this over ...
    position_decay_steps: int = 30_000  # ... this many steps, exponentially, then held
    scale: float = 5e-3
    rotation: float = 1e-3
    color: float = 1.25e-2
    opacity: float = 1e-2
    shape: float = 1e-3
    residual: float = 1e-3

    def position_at(self, step: int) -> float:
        """The position learning rate at ``step`` (counted from 0 over the whole run)."""
        if self.position_decay_steps <= 0 or self.position_decay == 1.0:
            return self.position
        return self.position * self.position_decay ** (min(step, self.position_decay_steps) / self.position_decay_steps)


@dataclass
class DensifyConfig:
    """When and how Gaussians are cloned, split and pruned."""

    start: int = 300
    stop: int = 2100
    every: int = 300
    grad_threshold: float = 0.0002  # mean screen-space gradient, gsplat's normalisation
    clone_scale: float = 0.01  # below this fraction of the subject radius: clone, above: split
    prune_opacity: float = 0.005
    prune_scale: float = 0.1  # fraction of the subject radius
    max_gaussians: int = 800_000


@dataclass
class PoseDependentConfig:
    """The pose-dependent appearance (:mod:`avatarcli.model.pose_dependent`): whether a run
    trains one (from its animation stage), its size and how it trains. An avatar that
    already has one trains it whatever ``enabled`` says."""

    enabled: bool = False
    components: int = 16  # principal directions of the training poses
    rank: int = 32  # offset fields each Gaussian mixes
    width: int = 64  # hidden units of the fields' network
    regularisation: float = 0.01  # weight of the mean squared offset (in the network's output units)
    lr_network: float = 1e-3
    lr_latents: float = 1e-2


@dataclass
class GenerateConfig:
    """Everything a generation run needs besides the avatar and the guidance."""

    prompt: str
    kind: str
    stages: tuple[str, ...] = ("animate",)
    steps: int = 10_000
    canonical_fraction: float = 0.4  # of the steps, when both stages run
    batch: int = 8
    resolution: int = 1024
    seed: int = 0
    lr: LearningRates = field(default_factory=LearningRates)
    densify: DensifyConfig = field(default_factory=DensifyConfig)
    cameras: CameraRanges = field(default_factory=lambda: HEAD_RANGES)
    timesteps: TimestepSchedule = field(default_factory=lambda: HEAD_TIMESTEPS)
    face_closeups: float = 0.0  # fraction of body views that look at the face
    shape_freeze: float = 0.8  # heads: the template shape stops learning here
    learn_shape: bool = True
    reg_position: float = 0.1  # HeadStudio eq. 9
    reg_scale: float = 0.1
    scale_limit: float = 0.01  # GaussianMotion eq. 7, metres
    reg_body_scale: float = 1.0
    reg_residual: float = 1.0
    residual_weights: bool = False
    view_prompts: bool = True
    train_motions: tuple[str, ...] = ()  # built-in motions whose frames training poses come from (empty: all)
    animated: bool = True  # False: train in the rest pose only (an ablation)
    # ControlNet strength (diffusers' conditioning_scale). Heads: HeadStudio's code conditions
    # every branch at 1.5 (threestudio/models/guidance/controlnet_guidance.py, condition_scale);
    # bodies: DreamWaltz-G's 1.0 (configs/__init__.py, GuideConfig.controlnet_scale).
    control_scale: float = 1.5
    checkpoint_every: int = 500
    preview_every: int = 0
    # what training renders see behind the avatar: heads on black as HeadStudio trains
    # (configs/headstudio.yaml bg_white: False); bodies on grey as DreamWaltz-G's Gaussian
    # stages train (scripts/train_wo_expr.sh --render.bg_color [0.5,0.5,0.5]; GaussianMotion
    # names none)
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)
    compile: bool = False  # torch.compile the condition drawing (the guidance compiles its networks itself)
    pose_dependent: PoseDependentConfig = field(default_factory=PoseDependentConfig)

    def validate(self) -> GenerateConfig:
        if not self.prompt.strip():
            raise AvatarError("the prompt is empty: say what the avatar should look like")
        if self.kind not in ("head", "body"):
            raise AvatarError(f"unknown model kind {self.kind!r}: choose head or body")
        if self.steps <= 0:
            raise AvatarError(f"steps must be positive (got {self.steps})")
        if self.batch <= 0:
            raise AvatarError(f"the batch must be positive (got {self.batch})")
        if self.resolution <= 0 or self.resolution % 8:
            raise AvatarError(f"the resolution must be a positive multiple of 8 (got {self.resolution})")
        if not math.isfinite(self.control_scale) or self.control_scale < 0:
            raise AvatarError(f"the ControlNet strength must be a finite number of at least 0 (got {self.control_scale})")
        bad = [s for s in self.stages if s not in STAGES]
        if bad or not self.stages:
            raise AvatarError(f"unknown stage {bad[0] if bad else '(none)'}: stages are {', '.join(STAGES)}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def recipe(kind: str, prompt: str, **overrides: Any) -> GenerateConfig:
    """The paper defaults for ``kind``, with ``overrides`` applied."""
    if kind == "head":
        cfg = GenerateConfig(prompt=prompt, kind="head")
    elif kind == "body":
        cfg = GenerateConfig(
            prompt=prompt,
            kind="body",
            stages=("canonical", "animate"),
            lr=LearningRates(position=1e-4, position_decay=1.0, scale=5e-3, rotation=1e-3, color=1e-2, opacity=5e-2, shape=0.0),
            densify=DensifyConfig(start=500, stop=6000, every=500),
            cameras=BODY_RANGES,
            timesteps=BODY_TIMESTEPS,
            face_closeups=0.2,
            control_scale=1.0,
            background=(0.5, 0.5, 0.5),
            learn_shape=False,
            residual_weights=True,
        )
    else:
        raise AvatarError(f"unknown model kind {kind!r}: choose head or body")
    for key, value in overrides.items():
        if value is None:
            continue
        if not hasattr(cfg, key):
            raise AvatarError(f"unknown setting {key}")
        setattr(cfg, key, value)
    return cfg.validate()
