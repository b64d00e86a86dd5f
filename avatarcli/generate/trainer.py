"""The training loop of ``avatar generate``.

Each step: draw a pose and a camera for each of ``batch`` views, pose the template, deform
the Gaussians, render, draw the ControlNet conditions from the same posed template, ask the
guidance for its loss, add the regularisers, step Adam, and every so often grow and prune
Gaussians. Between stages (bodies: canonical, then animate) the Gaussians are re-rigged.
The pieces live beside this module: the trainable state in ``parameters``, the stage plan
in ``stages``, poses and cameras in ``samplers``, growth in ``densify``, the checkpoint
schema in ``checkpoint``, preview images in ``previews``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from avatarcli.errors import AvatarError
from avatarcli.generate import losses, stages
from avatarcli.generate.checkpoint import checkpoint_path, restore_checkpoint, write_checkpoint
from avatarcli.generate.conditions.renderer import ConditionRenderer
from avatarcli.generate.config import GenerateConfig
from avatarcli.generate.densify import Densifier
from avatarcli.generate.guidance.protocol import Guidance, Scene
from avatarcli.generate.parameters import AvatarParameters
from avatarcli.generate.previews import write_preview
from avatarcli.generate.samplers import PoseSampler, ViewSampler
from avatarcli.model import avatar_file
from avatarcli.model.avatar import Avatar, check_template, template_meta
from avatarcli.model.binding import SkinningBinding, TriangleBinding, deform, rest_posed
from avatarcli.model.gaussians import Gaussians
from avatarcli.render.cameras import Cameras, framing
from avatarcli.render.rasterize import render_gaussians
from avatarcli.signals import deferred_interrupts
from avatarcli.templates.template import Template


@dataclass
class StepReport:
    """One finished step. ``loss_tensor`` stays on the device: reading ``loss`` waits for the
    GPU, so callers that do not need it every step let the CPU run ahead."""

    step: int
    total: int
    stage: str
    loss_tensor: Tensor
    gaussians: int

    @property
    def loss(self) -> float:
        return float(self.loss_tensor)


class Trainer:
    """Owns the trainable avatar, its optimizers and the schedule of one generation run.

    Args:
        avatar: the starting avatar (from ``avatar init`` or a previous run), of ``config.kind``.
        template: its template, on the training device.
        guidance: produces the distillation loss.
        config: the run's settings (validated).
    """

    def __init__(self, avatar: Avatar, template: Template, guidance: Guidance, config: GenerateConfig) -> None:
        check_template(avatar, template)
        self.tpl = template
        self.device = template.device
        self.cfg = config
        self.guidance = guidance
        self.meta = copy.deepcopy(avatar.meta)
        self.gen = torch.Generator().manual_seed(config.seed)
        torch.manual_seed(config.seed)  # splits draw from the global generator
        self.step = 0
        self.stage_index = 0
        self.plan = stages.plan(config)
        self.model = AvatarParameters(avatar, self.device, config.learn_shape and config.kind == "head", template.num_betas)
        with torch.no_grad():
            rest = deform(self.model.gaussians(), self.model.binding(), template, rest_posed(template, self.model.betas.detach()))
            _, self.radius = framing(rest.means[0])
        self.poses = PoseSampler(template, self.gen, config.train_motions, config.animated)
        self.views = ViewSampler(template, config.cameras, self.radius, config.face_closeups, self.gen)
        self.conditions = ConditionRenderer(template, compile=config.compile)
        self.densifier = Densifier(config.densify, self.radius)
        # made once: creating it on the GPU every step would stall it
        self._background = torch.tensor(config.background, device=self.device, dtype=torch.float32)
        if self.model.residual is None and stages.wants_residual(config, template.kind, self.stage):  # a body run that starts animated
            stages.add_residual(self.model, template, self.radius)
        self.make_optimizers()

    def make_optimizers(self) -> None:
        self.optimizers, self.extra_optimizers = self.model.optimizers(self.cfg.lr)

    # -- schedule ----------------------------------------------------------------------
    @property
    def total_steps(self) -> int:
        return self.plan[-1].end

    @property
    def stage(self) -> str:
        return self.plan[self.stage_index].name

    def _enter_next_stage(self) -> None:
        """Canonical -> animate: re-rig the Gaussians from where they now are, add residual weights."""
        self.stage_index += 1
        if self.tpl.kind == "body" and self.stage == "animate":
            stages.rerig(self.model, self.tpl, self.meta)
            if stages.wants_residual(self.cfg, self.tpl.kind, self.stage):
                stages.add_residual(self.model, self.tpl, self.radius)
            self.make_optimizers()
            self.densifier = Densifier(self.cfg.densify, self.radius, self.densifier.reduce)

    # -- one step ------------------------------------------------------------------------
    def train_step(self) -> StepReport:
        cfg = self.cfg
        progress = self.step / self.total_steps
        pose = self.poses(cfg.batch, self.stage)
        posed = self.tpl.pose(pose, self.model.betas)
        g = self.model.gaussians()
        binding = self.model.binding()
        pg = deform(g, binding, self.tpl, posed)
        views = self.views(posed, cfg.resolution)
        cams, bg = views.cameras, self._background
        images, _, meta = render_gaussians(pg, cams, bg)
        self.densifier.step_pre_backward(meta)
        conditions = None
        if self.guidance.wants_conditions():
            r = self.guidance.resolution
            ks = cams.Ks.clone()
            ks[:, :2] *= r / cfg.resolution  # focal lengths and principal point follow the image size
            with torch.no_grad():
                conditions = self.conditions(posed, Cameras(cams.viewmats, ks, r, r))
        scene = Scene(pose, posed, cams, bg)
        loss, info = self.guidance.loss(images, conditions, views.prompts(cfg.prompt, cfg.view_prompts), progress, self.gen, scene=scene)
        total = loss + self._regularisers(g, binding)
        for opt in (*self.optimizers.values(), *self.extra_optimizers.values()):
            opt.zero_grad(set_to_none=True)
        total.backward()
        for opt in self.optimizers.values():
            opt.step()
        if "betas" in self.extra_optimizers and progress < cfg.shape_freeze:
            self.extra_optimizers["betas"].step()
        if "residual" in self.extra_optimizers:
            self.extra_optimizers["residual"].step()
        self.step += 1
        in_stage = self.step - self.plan[self.stage_index].start
        self.densifier.step_post_backward(
            self.model.params, self.optimizers, meta, in_stage, int(info.get("elements", 1)), self._world_scale
        )
        return StepReport(self.step, self.total_steps, self.stage, total.detach(), len(self.model))

    def _regularisers(self, g: Gaussians, binding: TriangleBinding | SkinningBinding) -> Tensor:
        cfg = self.cfg
        if isinstance(binding, TriangleBinding):
            if cfg.reg_position == 0 and cfg.reg_scale == 0:
                return g.means.new_zeros(())
            rest = rest_posed(self.tpl, self.model.betas)
            return losses.head_geometry(g, binding, self.tpl, rest, cfg.reg_position, cfg.reg_scale)
        reg = cfg.reg_body_scale * losses.body_scale(g, cfg.scale_limit)
        if binding.residual is not None:
            reg = reg + cfg.reg_residual * losses.residual_penalty(binding, g.means)
        return reg

    @torch.no_grad()
    def _world_scale(self) -> Tensor:
        """(N,) the largest world-space standard deviation of each Gaussian at rest."""
        world = deform(self.model.gaussians(), self.model.binding(), self.tpl, rest_posed(self.tpl, self.model.betas))
        return world.scales[0].max(dim=-1).values

    # -- running ---------------------------------------------------------------------------
    def train(self, on_step: Callable[[StepReport], None] | None = None) -> None:
        """Run the remaining steps of all stages (no files written)."""
        while self.step < self.total_steps:
            if self.step >= self.plan[self.stage_index].end:
                self._enter_next_stage()
            report = self.train_step()
            if (self.step % 100 == 0 or self.step == self.total_steps) and not math.isfinite(report.loss):
                raise AvatarError(f"training diverged at step {self.step} (loss {report.loss}); try lower learning rates")
            if on_step is not None:
                on_step(report)

    def run(self, output: str | Path, on_step: Callable[[StepReport], None] | None = None, preview_dir: Path | None = None) -> Avatar:
        """Train to the end and write the avatar to ``output``, checkpointing beside it as
        configured. Ctrl-C or SIGTERM finishes the step under way, checkpoints, and raises
        :class:`~avatarcli.signals.Interrupted`; resuming from that checkpoint continues
        exactly as an uninterrupted run would."""
        cfg = self.cfg
        with deferred_interrupts() as interrupt:

            def after_step(report: StepReport) -> None:
                if on_step is not None:
                    on_step(report)
                if preview_dir is not None and cfg.preview_every and self.step % cfg.preview_every == 0:
                    self.write_preview(preview_dir / f"step_{self.step:06d}.png")
                if interrupt.requested or (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.step < self.total_steps):
                    self.save(output)
                interrupt.check()

            self.train(after_step)
            avatar = self.avatar(final=True)
            avatar_file.save(avatar, output)
            write_checkpoint(checkpoint_path(output), self)
        return avatar

    def avatar(self, final: bool = False) -> Avatar:
        """A snapshot of the avatar being trained, on the CPU (it shares nothing with the trainer)."""
        meta = copy.deepcopy(self.meta)
        meta.update(
            template=template_meta(self.tpl),
            stage="generated" if final else f"{self.stage}@{self.step}",
            prompt=self.cfg.prompt,
            seed=self.cfg.seed,
            steps=self.step,
            guidance=self.guidance.name,
        )
        return self.model.snapshot(meta)

    def save(self, output: str | Path) -> None:
        """The avatar so far and the checkpoint, both atomically."""
        avatar_file.save(self.avatar(), output)
        write_checkpoint(checkpoint_path(output), self)

    def restore(self, path: Path) -> None:
        """Continue from a checkpoint written by a run with the same prompt, kind and template."""
        restore_checkpoint(path, self)

    def write_preview(self, path: Path, size: int = 256) -> None:
        """Front, side and back renders in the rest pose, and the front view's condition image."""
        conditions = self.conditions if self.guidance.wants_conditions() else None
        write_preview(path, self.model, self.tpl, self._background, conditions, size)
