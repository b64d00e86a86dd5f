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
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from avatarcli.devices import repeatable, to_device
from avatarcli.errors import AvatarError
from avatarcli.generate import losses, stages
from avatarcli.generate.checkpoint import checkpoint_path, restore_checkpoint, unfinished_path, write_checkpoint
from avatarcli.generate.conditions.renderer import ConditionRenderer
from avatarcli.generate.config import GenerateConfig
from avatarcli.generate.densify import Densifier
from avatarcli.generate.distributed import Group, Share, whole
from avatarcli.generate.guidance.protocol import Guidance, Scene
from avatarcli.generate.lighting import LightSource, MaterialShading, RandomLights
from avatarcli.generate.parameters import AvatarParameters
from avatarcli.generate.previews import write_preview
from avatarcli.generate.samplers import Draw, GeneratedViews, PoseSampler, Views, ViewSampler, ViewSource, view_size
from avatarcli.model import avatar_file
from avatarcli.model.avatar import Avatar, check_template, template_meta
from avatarcli.model.binding import SkinningBinding, TriangleBinding, deform, rest_posed
from avatarcli.model.gaussians import Gaussians, PosedGaussians
from avatarcli.model.pose_dependent import offset_penalty
from avatarcli.render.cameras import Cameras, framing
from avatarcli.render.rasterize import render_gaussians
from avatarcli.signals import Interrupted, InterruptFlag, deferred_interrupts
from avatarcli.templates.template import Posed, Template


@dataclass
class StepReport:
    """One finished step. ``loss_tensor`` stays on the device: reading ``loss`` waits for the
    GPU, so callers that do not need it every step let the CPU run ahead."""

    step: int
    total: int
    stage: str
    loss_tensor: Tensor
    gaussians: int
    stop: bool = False  # an interruption was asked for (in any process): stop after this step

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
        group: the processes training this avatar together (see
            :mod:`~avatarcli.generate.distributed`), or None for one process.
        passes: render and score this process's views of a step in this many passes,
            adding up their gradients (less memory; the same step up to float rounding).
        source: where each step's poses and cameras come from (default: generation's random
            poses and cameras; capture passes the video's frames).
        lights: what an avatar with materials is shaded under each step (default: a random
            light per view; capture passes the video's light, learnt); unused for an avatar of
            colours.

    Attributes set by callers that train something other than a text avatar:
        record: metadata entries the avatar is written with (over the defaults).
        final_stage: the stage a finished run's avatar is marked with.
    """

    def __init__(
        self,
        avatar: Avatar,
        template: Template,
        guidance: Guidance,
        config: GenerateConfig,
        group: Group | None = None,
        passes: int = 1,
        source: ViewSource | None = None,
        lights: LightSource | None = None,
    ) -> None:
        check_template(avatar, template)
        self.group = group
        share = group.share(config.batch) if group is not None else whole(config.batch)
        self.passes = share.split(passes)
        self.interrupt = InterruptFlag()
        self._stop_flag: Tensor | None = None
        self.first_step = 1
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
        self.shading: MaterialShading | None = None
        if self.model.has_material:
            self.shading = MaterialShading(self.model, template, lights or RandomLights(self.device))
        with torch.no_grad():
            rest = deform(self.model.gaussians(), self.model.binding(), template, rest_posed(template, self.model.betas.detach()))
            _, self.radius = framing(rest.means[0])
            size = view_size(config.cameras, template, rest.means[0])
        self.source: ViewSource = source or GeneratedViews(
            PoseSampler(template, self.gen, config.train_motions, config.animated),
            ViewSampler(template, config.cameras, size, config.face_closeups, self.gen),
        )
        self.record: dict = {}
        self.final_stage = "generated"
        self.conditions = ConditionRenderer(template, compile=config.compile)
        self.densifier = Densifier(config.densify, self.radius)
        # made once: creating it on the GPU every step would stall it
        self._background = torch.tensor(config.background, device=self.device, dtype=torch.float32)
        if self.model.residual is None and stages.wants_residual(config, template.kind, self.stage):  # a body run that starts animated
            stages.add_residual(self.model, template, self.radius)
        if self.model.pose_network is None and stages.wants_pose_dependent(config, self.stage):
            stages.add_pose_dependent(self.model, template, self.source.basis_poses(config.seed), config, self.radius)
        self.make_optimizers()

    def make_optimizers(self) -> None:
        self.optimizers, self.extra_optimizers = self.model.optimizers(self.cfg.lr, self.cfg.pose_dependent)
        for name, (tensors, lr) in self.source.trainables().items():
            self.extra_optimizers[f"source.{name}"] = torch.optim.Adam(tensors, lr=lr, betas=(0.9, 0.99))
        for name, (tensors, lr) in (self.shading.trainables() if self.shading is not None else {}).items():
            self.extra_optimizers[f"shading.{name}"] = torch.optim.Adam(tensors, lr=lr, betas=(0.9, 0.99))

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
            if self.model.pose_network is None and stages.wants_pose_dependent(self.cfg, self.stage):
                stages.add_pose_dependent(self.model, self.tpl, self.source.basis_poses(self.cfg.seed), self.cfg, self.radius)
            self.make_optimizers()
            self.densifier = Densifier(self.cfg.densify, self.radius)

    # -- one step ------------------------------------------------------------------------
    def train_step(self) -> StepReport:
        """One step of training; on the CPU it repeats exactly (see :func:`~avatarcli.devices.repeatable`)."""
        with repeatable(self.device):
            return self._step()

    def _step(self) -> StepReport:
        cfg = self.cfg
        progress = self.step / self.total_steps
        # the whole step's random draws, made in every process alike; each keeps its share
        draw = self.source.draw(cfg.batch, self.stage)
        one_pass = len(self.passes) == 1 and self.passes[0].whole
        with torch.set_grad_enabled(one_pass):  # one pass over every view: pose once, for both
            posed = self.tpl.pose(self.source.pose(draw, slice(None)) if one_pass else draw.pose, self.model.betas)
        views = self.source.views(posed, draw, cfg.resolution)
        prompts = views.prompts(cfg.prompt, cfg.view_prompts)
        # the guidance's timesteps and noise come from a generator made afresh from this seed
        # for every share, so that shares drawn in several passes or processes get one draw
        seed = int(torch.randint(0, 2**62, (1,), generator=self.gen))
        for opt in (*self.optimizers.values(), *self.extra_optimizers.values()):
            opt.zero_grad(set_to_none=True)
        stats: tuple[Tensor, Tensor] | None = None
        reported = torch.zeros((), device=self.device)
        for i, share in enumerate(self.passes):
            loss, pass_stats = self._pass(draw, views, prompts, share, progress, seed, i == 0 and self.main, posed if one_pass else None)
            reported = reported + loss
            stats = pass_stats if stats is None else (stats[0] + pass_stats[0], stats[1] + pass_stats[1])
        assert stats is not None
        stop = self.interrupt.requested
        if self.group is not None:
            # one all-reduce: gradients, densification statistics, the loss and whether any
            # process was interrupted (so that all stop after the same step)
            flags = torch.stack([reported.float(), to_device(torch.tensor(float(stop)), self.device)])
            self.group.sum_([*self._gradients(), *stats, flags])
            # the flag is read one step late: reading this step's would make the CPU wait for
            # the GPU to finish the step; every process reads the same one, so all stop together
            reported, stop = flags[0], self._stop_flag is not None and bool(self._stop_flag > 0)
            self._stop_flag = flags[1]
        for group in self.optimizers["means"].param_groups:
            group["lr"] = cfg.lr.position_at(self.step)
        for opt in self.optimizers.values():
            opt.step()
        for name, opt in self.extra_optimizers.items():  # the shape, the networks, the source's corrections, the light
            if name != "betas" or progress < cfg.shape_freeze:
                opt.step()
        self.step += 1
        in_stage = self.step - self.plan[self.stage_index].start
        self.densifier.step_post_backward(self.model.params, self.optimizers, stats, in_stage, self._world_scale)
        return StepReport(self.step, self.total_steps, self.stage, reported, len(self.model), stop)

    def _pass(
        self,
        draw: Draw,
        views: Views,
        prompts: list[str],
        share: Share,
        progress: float,
        seed: int,
        regularise: bool,
        posed: Posed | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Render and score the views of ``share`` and backpropagate (gradients accumulate).

        Args:
            draw, views, prompts: the whole step's.
            seed: the step's seed for the guidance's draws.
            regularise: add the regularisers (once per step, in one pass of one process).
            posed: the posed templates of these views, when already made (with gradients).

        Returns:
            the loss (detached) and the densification statistics of these views.
        """
        cfg = self.cfg
        pose = self.source.pose(draw, share.views)
        if posed is None:
            posed = self.tpl.pose(pose, self.model.betas)
        cams, bg = views.cameras.index(share.views), self._background
        g = self.model.gaussians()
        binding = self.model.binding()
        offsets = self.model.offsets(pose)
        images, alphas, meta = self.render(deform(g, binding, self.tpl, posed, offsets), cams, share, seed)
        self.densifier.step_pre_backward(meta)
        conditions = None
        if self.guidance.wants_conditions():
            r = self.guidance.resolution
            ks = cams.Ks.clone()
            ks[:, :2] *= r / cfg.resolution  # focal lengths and principal point follow the image size
            with torch.no_grad():
                conditions = self.conditions(posed, Cameras(cams.viewmats, ks, r, r))
        frames = None if draw.frames is None else draw.frames[share.views]
        scene = Scene(pose, posed, cams, bg, share, frames, alphas)
        loss, info = self.guidance.loss(
            images, conditions, prompts[share.views], progress, torch.Generator().manual_seed(seed), scene=scene
        )
        if regularise:
            prior = self.source.prior()
            total = loss + self._regularisers(g, binding) + (prior if prior is not None else 0.0)
            if self.shading is not None:
                total = total + self.shading.prior()
        else:
            total = loss
        if offsets is not None and self.model.pose_network is not None and cfg.pose_dependent.regularisation > 0:
            # per view, so that the shares of a step's passes and processes add up to its mean
            fraction = offsets.means.shape[0] / share.total
            total = total + cfg.pose_dependent.regularisation * fraction * offset_penalty(offsets, self.model.pose_network)
        total.backward()
        return total.detach(), self.densifier.statistics(meta, len(g), cfg.batch, int(info.get("elements", 1)))

    def render(self, posed: PosedGaussians, cameras: Cameras, share: Share | None = None, seed: int = 0) -> tuple[Tensor, Tensor, dict]:
        """Render posed Gaussians as training sees them: shaded under the views' lights (drawn
        from ``seed`` for the step's views, of which these are ``share``) when the avatar has
        materials, over the trainer's background."""
        colors = None
        if self.shading is not None:
            colors = self.shading.colors(posed, cameras, share or whole(len(cameras)), seed)
        return render_gaussians(posed, cameras, self._background, colors=colors)

    def _gradients(self) -> list[Tensor]:
        """Every trainable tensor's gradient, in a fixed order (zeros where none flowed)."""
        params = [*self.optimizers.values(), *self.extra_optimizers.values()]
        grads = []
        for opt in params:
            for group in opt.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
                    grads.append(p.grad)
        return grads

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

    @property
    def main(self) -> bool:
        """Whether this process writes files (the only one, or the first of several)."""
        return self.group is None or self.group.main

    def run(
        self,
        output: str | Path,
        on_step: Callable[[StepReport], None] | None = None,
        preview_dir: Path | None = None,
        finish: Callable[[Trainer], None] | None = None,
    ) -> Avatar:
        """Train to the end and write the avatar to ``output``, checkpointing beside it as
        configured (the first process only, when there are several). Ctrl-C or SIGTERM
        finishes the step under way, checkpoints, and raises
        :class:`~avatarcli.signals.Interrupted`; resuming from that checkpoint continues
        exactly as an uninterrupted run would, as does resuming from a periodic checkpoint
        (a run that was killed). Until the run ends, the avatar of the last checkpoint is at
        :func:`~avatarcli.generate.checkpoint.unfinished_path` and ``output`` is left as it
        was (a user's earlier avatar there survives an interrupted run); the finished run
        replaces ``output`` atomically and removes the unfinished avatar.

        ``finish`` is called after the last step, before the avatar is written (capture
        scores its held-out frames there and adds the scores to :attr:`record`); it may
        check ``self.interrupt``: an interruption then checkpoints the finished training, so
        that ``--resume`` goes straight back to ``finish``."""
        cfg = self.cfg
        self.first_step = self.step + 1
        started, first_done, first_at = time.perf_counter(), 0.0, 0.0
        with deferred_interrupts() as interrupt:
            self.interrupt = interrupt

            def after_step(report: StepReport) -> None:
                nonlocal first_done, first_at
                if report.step == self.first_step:
                    first_done, first_at = time.perf_counter(), time.time()
                if on_step is not None and self.main:
                    on_step(report)
                if self.main and preview_dir is not None and cfg.preview_every and self.step % cfg.preview_every == 0:
                    self.write_preview(preview_dir / f"step_{self.step:06d}.png")
                periodic = cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.step < self.total_steps
                if self.main and (report.stop or periodic):
                    self.save(output)
                if report.stop:
                    raise Interrupted(interrupt.signum or signal.SIGINT)

            try:
                self.train(after_step)
                if finish is not None:
                    try:
                        finish(self)
                    except Interrupted:
                        if self.main:
                            self.save(output)
                        raise
            finally:
                self.interrupt = InterruptFlag()
            avatar = self.avatar(final=True)
            avatar.meta["run"] = {**self._timings(started, first_done), "first_step_at": round(first_at, 3)}
            if self.main:
                avatar_file.save(avatar, output)
                write_checkpoint(checkpoint_path(output), self)
                unfinished_path(output).unlink(missing_ok=True)
        return avatar

    def _timings(self, started: float, first_done: float) -> dict:
        """How the run went: wall seconds, the first step's (compilation included), the
        steady time per step, processes and peak GPU memory."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        steps = self.step - self.first_step + 1
        first = (first_done or now) - started
        out = {
            "steps": steps,
            "seconds": round(now - started, 3),
            "first_step_seconds": round(first, 3),
            "ms_per_step": round(1000 * (now - started - first) / max(steps - 1, 1), 2),
            "processes": self.group.size if self.group is not None else 1,
            "device": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu",
        }
        if self.device.type == "cuda":
            out["peak_gib"] = round(torch.cuda.max_memory_allocated(self.device) / 2**30, 2)
        return out

    def avatar(self, final: bool = False) -> Avatar:
        """A snapshot of the avatar being trained, on the CPU (it shares nothing with the trainer)."""
        meta = copy.deepcopy(self.meta)
        meta.update(
            template=template_meta(self.tpl),
            stage=self.final_stage if final else f"{self.stage}@{self.step}",
            prompt=self.cfg.prompt,
            seed=self.cfg.seed,
            steps=self.step,
            guidance=self.guidance.name,
        )
        meta.update(copy.deepcopy(self.record))
        avatar = self.model.snapshot(meta)
        return avatar if self.shading is None else self.shading.finish(avatar)

    def save(self, output: str | Path) -> None:
        """The checkpoint, and the avatar so far as ``NAME.unfinished.avatar``, both atomically.
        ``output`` is not touched: only a finished run replaces a file there (see
        :mod:`~avatarcli.generate.run_files`)."""
        avatar_file.save(self.avatar(), unfinished_path(output))
        write_checkpoint(checkpoint_path(output), self)

    def restore(self, path: Path) -> None:
        """Continue from a checkpoint written by a run with the same prompt, kind and template."""
        restore_checkpoint(path, self)

    def write_preview(self, path: Path, size: int = 256) -> None:
        """Front, side and back renders in the rest pose, and the front view's condition image."""
        conditions = self.conditions if self.guidance.wants_conditions() else None
        shade = None if self.shading is None else self.shading.display_colors
        write_preview(path, self.model, self.tpl, self._background, conditions, size, shade)
