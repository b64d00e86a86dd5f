"""The staged training loop of ``avatar generate``.

Each step: draw a pose and a camera for each of ``batch`` views, pose the template, deform
the Gaussians, render, draw the ControlNet conditions from the same posed template, ask the
guidance for its loss, add the regularisers, step Adam, and every so often grow and prune
Gaussians. Bodies run a canonical stage in a star pose, are re-rigged, then train with
random poses and residual skinning weights. Checkpoints go beside the output; a run
continues from one with ``resume``.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from avatarcli import avatar as avatar_file
from avatarcli.avatar import Avatar, check_template, template_meta
from avatarcli.binding import ResidualWeights, SkinningBinding, TriangleBinding, deform, rest_posed
from avatarcli.conditions import ConditionRenderer
from avatarcli.devices import to_device
from avatarcli.errors import AvatarError
from avatarcli.export.ply import world_gaussians
from avatarcli.frames import to_uint8, write_png
from avatarcli.gaussians import Gaussians
from avatarcli.generate import losses
from avatarcli.generate.checkpoint import adam_state, checkpoint_path, load_checkpoint, restore_adam, save_checkpoint
from avatarcli.generate.config import GenerateConfig
from avatarcli.generate.densify import Densifier
from avatarcli.generate.samplers import PoseSampler
from avatarcli.guidance import Guidance, Scene
from avatarcli.guidance.scores import view_suffix
from avatarcli.preview import framing, turntable_cameras
from avatarcli.render import render_gaussians
from avatarcli.render.cameras import CameraRanges, Cameras, sample_cameras
from avatarcli.rig import rig_gaussians
from avatarcli.templates import Posed, Template

GAUSS = {"means": "means", "scales": "log_scales", "quats": "quats", "opacities": "opacity_logits", "sh": "sh"}
FACE_RANGES = CameraRanges(distance=(0.9, 1.4), fovy_deg=(40.0, 60.0), elevation_deg=(-15.0, 25.0), azimuth_deg=(-70.0, 70.0))


@dataclass
class StepReport:
    """One finished step. ``loss_tensor`` stays on the device: reading ``loss`` waits for the
    GPU, so callers that do not need it every step let the CPU run ahead."""

    step: int
    stage: str
    loss_tensor: Tensor
    gaussians: int

    @property
    def loss(self) -> float:
        return float(self.loss_tensor)


class Trainer:
    """Owns the parameters, optimizers and schedule of one generation run.

    Args:
        avatar: the starting avatar (from ``avatar init`` or a previous run).
        template: its template, on the training device.
        guidance: produces the distillation loss.
        config: the run's settings.
    """

    def __init__(self, avatar: Avatar, template: Template, guidance: Guidance, config: GenerateConfig) -> None:
        check_template(avatar, template)
        if avatar.kind != config.kind:
            raise AvatarError(f"--from is a {avatar.kind} avatar but --model is {config.kind}")
        self.tpl = template
        self.device = template.device
        self.cfg = config
        self.guidance = guidance
        self.meta = copy.deepcopy(avatar.meta)
        self.gen = torch.Generator().manual_seed(config.seed)
        torch.manual_seed(config.seed)  # splits draw from the global generator
        self.step = 0
        self.stage_index = 0
        self.poses = PoseSampler(template, self.gen, config.train_motions, config.animated)
        self.conditions = ConditionRenderer(template, compile=config.compile)
        # constants made once: creating them on the GPU every step would stall it
        self._background = torch.tensor(config.background, device=self.device, dtype=torch.float32)
        self._head_joint = template.joint_names.index("head") if "head" in template.joint_names else 0
        self._face_offset = torch.tensor([0.0, 0.05, 0.0], device=self.device)
        av = avatar.to(self.device)
        self.betas = torch.nn.Parameter(
            av.betas.clone() if av.betas.numel() else torch.zeros(template.num_betas, device=self.device),
            requires_grad=config.learn_shape and config.kind == "head",
        )
        self.residual: ResidualWeights | None = getattr(av.binding, "residual", None)
        self._load_params(av.gaussians, av.binding)
        with torch.no_grad():
            _, self.radius = framing(deform(av.gaussians, av.binding, template, rest_posed(template, self.betas.detach())))
        self.densifier = Densifier(config.densify, self.radius)
        if self.residual is None and self._wants_residual():  # a body run that starts animated
            self.residual = ResidualWeights(template.num_joints, self.radius).to(self.device)
        self._make_optimizers()

    def _wants_residual(self) -> bool:
        """Residual skinning weights train in a body's animation stage (when the recipe has them)."""
        return self.cfg.residual_weights and self.tpl.kind == "body" and self.stage == "animate"

    # -- parameters ---------------------------------------------------------------------
    def _load_params(self, g: Gaussians, binding: TriangleBinding | SkinningBinding) -> None:
        self.params: dict[str, torch.nn.Parameter] = {
            k: torch.nn.Parameter(getattr(g, attr).detach().clone().float()) for k, attr in GAUSS.items()
        }
        for name, t in binding.tensors().items():
            self.params[f"binding_{name}"] = torch.nn.Parameter(t.detach().clone(), requires_grad=False)

    def gaussians(self) -> Gaussians:
        return Gaussians(**{attr: self.params[k] for k, attr in GAUSS.items()})

    def binding(self) -> TriangleBinding | SkinningBinding:
        if self.tpl.kind == "head":
            return TriangleBinding(self.params["binding_face_idx"])
        return SkinningBinding(self.params["binding_weights"], self.params["binding_face_idx"], self.params["binding_bary"], self.residual)

    def _make_optimizers(self) -> None:
        lr = self.cfg.lr
        rates = {"means": lr.position, "scales": lr.scale, "quats": lr.rotation, "opacities": lr.opacity, "sh": lr.color}
        self.optimizers = {k: torch.optim.Adam([self.params[k]], lr=rates[k], betas=(0.9, 0.99), eps=1e-15) for k in GAUSS}
        self.extra_optimizers: dict[str, torch.optim.Optimizer] = {}
        if self.betas.requires_grad and lr.shape > 0:
            self.extra_optimizers["betas"] = torch.optim.Adam([self.betas], lr=lr.shape, betas=(0.9, 0.99))
        if self.residual is not None:
            self.extra_optimizers["residual"] = torch.optim.Adam(self.residual.parameters(), lr=lr.residual, betas=(0.9, 0.99))

    # -- schedule ----------------------------------------------------------------------
    @property
    def total_steps(self) -> int:
        return sum(n for _, n in self.cfg.stage_steps())

    @property
    def stage(self) -> str:
        return self.cfg.stage_steps()[self.stage_index][0]

    def _stage_end(self) -> int:
        return sum(n for _, n in self.cfg.stage_steps()[: self.stage_index + 1])

    def _enter_next_stage(self) -> None:
        """Canonical -> animate: re-rig the Gaussians from where they now are, add residual weights."""
        self.stage_index += 1
        if self.tpl.kind == "body" and self.stage == "animate":
            with torch.no_grad():
                world = deform(self.gaussians(), self.binding(), self.tpl, rest_posed(self.tpl, self.betas))
                rigged, _ = rig_gaussians(world_gaussians(world).to("cpu"), self.tpl.to("cpu"), self.betas.detach().cpu(), meta=self.meta)
            if self._wants_residual():
                self.residual = ResidualWeights(self.tpl.num_joints, self.radius).to(self.device)
            rigged = rigged.to(self.device)
            self._load_params(rigged.gaussians, rigged.binding)
            self._make_optimizers()
            self.densifier = Densifier(self.cfg.densify, self.radius)

    # -- one step ------------------------------------------------------------------------
    def _cameras(self, posed: Posed, n: int, size: int) -> tuple[Cameras, Tensor, Tensor, Tensor]:
        """Training cameras around each posed view; some body views look at the face.

        Returns the cameras (on the device) and each view's azimuth, elevation and whether it
        is a face close-up (on the CPU, for the prompts).
        """
        verts = posed.vertices.detach()
        centers = (verts.max(1).values + verts.min(1).values) / 2
        face = torch.zeros(n, dtype=torch.bool)
        if self.cfg.face_closeups > 0:
            face = torch.rand(n, generator=self.gen) < self.cfg.face_closeups
        sample = sample_cameras(n, centers, self.radius, self.cfg.cameras, size, size, self.gen)
        viewmats, ks = sample.cameras.viewmats, sample.cameras.Ks
        az, el = sample.azimuth_deg.clone(), sample.elevation_deg.clone()
        if bool(face.any()):
            idx = torch.nonzero(face)[:, 0]
            idx_dev = to_device(idx, self.device)
            targets = posed.joints[:, self._head_joint].detach()[idx_dev] + self._face_offset
            close = sample_cameras(len(idx), targets, 0.15, FACE_RANGES, size, size, self.gen)
            viewmats[idx_dev] = close.cameras.viewmats
            ks[idx_dev] = close.cameras.Ks
            az[idx], el[idx] = close.azimuth_deg, close.elevation_deg
        return Cameras(viewmats, ks, size, size), az, el, face

    def prompts(self, azimuth: Tensor, elevation: Tensor, face: Tensor) -> list[str]:
        out = []
        for a, e, f in zip(azimuth.tolist(), elevation.tolist(), face.tolist(), strict=True):
            base = f"the face of {self.cfg.prompt}" if f else self.cfg.prompt
            out.append(base + (view_suffix(a, e) if self.cfg.view_prompts else ""))
        return out

    def train_step(self) -> StepReport:
        cfg = self.cfg
        progress = self.step / self.total_steps
        n = cfg.batch
        pose = self.poses(n, self.stage)
        posed = self.tpl.pose(pose, self.betas)
        g = self.gaussians()
        binding = self.binding()
        pg = deform(g, binding, self.tpl, posed)
        cams, az, el, face = self._cameras(posed, n, cfg.resolution)
        bg = self._background
        images, _, meta = render_gaussians(pg, cams, bg)
        meta["means2d"].retain_grad()
        conditions = None
        if self.guidance.wants_conditions():
            r = self.guidance.resolution
            scale = r / cfg.resolution
            ks = cams.Ks.clone()
            ks[:, :2] *= scale  # focal lengths and principal point follow the image size
            small = Cameras(cams.viewmats, ks, r, r)
            with torch.no_grad():
                conditions = self.conditions(posed, small)
        scene = Scene(pose, posed, cams, bg)
        loss, info = self.guidance.loss(images, conditions, self.prompts(az, el, face), progress, self.gen, scene=scene)
        total = loss + self._regularisers(g, binding)
        for opt in (*self.optimizers.values(), *self.extra_optimizers.values()):
            opt.zero_grad(set_to_none=True)
        total.backward()
        self.densifier.accumulate(meta, len(g), int(info.get("elements", 1)))
        for opt in self.optimizers.values():
            opt.step()
        if "betas" in self.extra_optimizers and progress < cfg.shape_freeze:
            self.extra_optimizers["betas"].step()
        if "residual" in self.extra_optimizers:
            self.extra_optimizers["residual"].step()
        self.step += 1
        if self.densifier.due(self.step - self._stage_start()):
            self._refine()
        return StepReport(self.step, self.stage, total.detach(), len(self.params["means"]))

    def _stage_start(self) -> int:
        return self._stage_end() - self.cfg.stage_steps()[self.stage_index][1]

    def _regularisers(self, g: Gaussians, binding: TriangleBinding | SkinningBinding) -> Tensor:
        cfg = self.cfg
        if isinstance(binding, TriangleBinding):
            if cfg.reg_position == 0 and cfg.reg_scale == 0:
                return g.means.new_zeros(())
            rest = rest_posed(self.tpl, self.betas)
            return losses.head_geometry(g, binding, self.tpl, rest, cfg.reg_position, cfg.reg_scale)
        reg = cfg.reg_body_scale * losses.body_scale(g, cfg.scale_limit)
        if binding.residual is not None:
            reg = reg + cfg.reg_residual * losses.residual_penalty(binding, g.means)
        return reg

    @torch.no_grad()
    def _refine(self) -> None:
        world = deform(self.gaussians(), self.binding(), self.tpl, rest_posed(self.tpl, self.betas))
        scale = world.scales[0].max(dim=-1).values
        self.densifier.refine(self.params, self.optimizers, scale)

    # -- running ---------------------------------------------------------------------------
    def train(self, on_step: Callable[[StepReport], None] | None = None) -> None:
        """Run the remaining steps of all stages (no files written)."""
        while self.step < self.total_steps:
            if self.step >= self._stage_end():
                self._enter_next_stage()
            report = self.train_step()
            if (self.step % 100 == 0 or self.step == self.total_steps) and not math.isfinite(report.loss):
                raise AvatarError(f"training diverged at step {self.step} (loss {report.loss}); try lower learning rates")
            if on_step is not None:
                on_step(report)

    def run(
        self,
        output: str | Path,
        on_step: Callable[[StepReport], None] | None = None,
        preview_dir: Path | None = None,
    ) -> Avatar:
        """Train to the end, checkpointing as configured; Ctrl-C checkpoints and re-raises."""
        cfg = self.cfg

        def after_step(report: StepReport) -> None:
            if on_step is not None:
                on_step(report)
            if preview_dir is not None and cfg.preview_every and self.step % cfg.preview_every == 0:
                self.write_preview(preview_dir / f"step_{self.step:06d}.png")
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.step < self.total_steps:
                self.save(output)

        try:
            self.train(after_step)
        except KeyboardInterrupt:
            self.save(output)
            raise
        avatar = self.avatar(final=True)
        avatar_file.save(avatar, output)
        self.save_checkpoint_only(output)
        return avatar

    def avatar(self, final: bool = False) -> Avatar:
        """A snapshot of the avatar being trained, on the CPU. It shares no tensor or module
        with the trainer, so writing, moving or editing it never touches the training state."""

        def snap(t: Tensor) -> Tensor:
            return t.detach().to("cpu", copy=True)

        g = Gaussians(**{attr: snap(self.params[k]) for k, attr in GAUSS.items()})
        b = self.binding()
        binding: TriangleBinding | SkinningBinding
        if isinstance(b, TriangleBinding):
            binding = TriangleBinding(snap(b.face_idx))
        else:
            binding = SkinningBinding(snap(b.weights), snap(b.face_idx), snap(b.bary), b.residual).to("cpu")  # .to copies the network
        meta = copy.deepcopy(self.meta)
        meta.update(
            template=template_meta(self.tpl),
            stage="generated" if final else f"{self.stage}@{self.step}",
            prompt=self.cfg.prompt,
            seed=self.cfg.seed,
            steps=self.step,
            guidance=self.guidance.name,
        )
        return Avatar(self.tpl.kind, g, binding, snap(self.betas), meta)

    def save(self, output: str | Path) -> None:
        """The avatar so far and the checkpoint, both atomically."""
        avatar_file.save(self.avatar(), output)
        self.save_checkpoint_only(output)

    def save_checkpoint_only(self, output: str | Path) -> None:
        tensors: dict[str, Tensor] = {f"param.{k}": v for k, v in self.params.items()}
        tensors["betas"] = self.betas
        for k, opt in self.optimizers.items():
            tensors.update(adam_state(opt, f"opt.{k}"))
        for k, opt in self.extra_optimizers.items():
            tensors.update(adam_state(opt, f"opt_extra.{k}"))
        if self.residual is not None:
            tensors.update({f"residual.{k}": v for k, v in self.residual.state_dict().items()})
        for k, v in self.densifier.state.items():
            if v is not None:
                tensors[f"densify.{k}"] = v
        tensors["rng.generator"] = self.gen.get_state()
        tensors["rng.torch"] = torch.get_rng_state()
        meta = {
            "step": self.step,
            "stage_index": self.stage_index,
            "config": self.cfg.to_dict(),
            "kind": self.tpl.kind,
            "template_sha256": self.tpl.sha256,
            "avatar_meta": self.meta,
            "residual": self.residual.config if self.residual is not None else None,
            "saved": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        save_checkpoint(checkpoint_path(output), tensors, meta)

    def restore(self, path: Path) -> None:
        """Continue from a checkpoint written by a run with the same prompt, kind and template."""
        tensors, meta = load_checkpoint(path)
        want = self.cfg.to_dict()
        got = meta.get("config", {})
        if meta.get("kind") != self.tpl.kind or meta.get("template_sha256") != self.tpl.sha256:
            raise AvatarError(f"the checkpoint {path} was made for another template or model kind; it cannot resume this run")
        if got.get("prompt") != want["prompt"] or got.get("stages") != list(want["stages"]) or got.get("steps") != want["steps"]:
            raise AvatarError(f"the checkpoint {path} belongs to a different run (prompt, stages or steps differ)")
        self.stage_index = int(meta["stage_index"])
        self.step = int(meta["step"])
        if meta.get("residual"):
            self.residual = ResidualWeights(**meta["residual"]).to(self.device)
            self.residual.load_state_dict({k[len("residual.") :]: v for k, v in tensors.items() if k.startswith("residual.")})
        self.params = {
            k[len("param.") :]: torch.nn.Parameter(v.to(self.device), requires_grad=k[len("param.") :] in GAUSS)
            for k, v in tensors.items()
            if k.startswith("param.")
        }
        with torch.no_grad():
            self.betas.copy_(tensors["betas"].to(self.device))
        self._make_optimizers()
        for k, opt in self.optimizers.items():
            restore_adam(opt, tensors, f"opt.{k}")
        for k, opt in self.extra_optimizers.items():
            restore_adam(opt, tensors, f"opt_extra.{k}")
        self.densifier = Densifier(self.cfg.densify, self.radius)
        if "densify.grad2d" in tensors:
            self.densifier.state = {"grad2d": tensors["densify.grad2d"].to(self.device), "count": tensors["densify.count"].to(self.device)}
        self.gen.set_state(tensors["rng.generator"])
        torch.set_rng_state(tensors["rng.torch"])

    @torch.no_grad()
    def write_preview(self, path: Path, size: int = 256) -> None:
        """Front, side and back renders in the rest pose, and the front view's condition image."""
        path.parent.mkdir(parents=True, exist_ok=True)
        posed = rest_posed(self.tpl, self.betas)
        pg = deform(self.gaussians(), self.binding(), self.tpl, posed)
        center, radius = framing(pg)
        cams = turntable_cameras(center, radius, 4, (size, size))
        views = cams.index([0, 1, 2])
        images, _, _ = render_gaussians(pg, views, self._background)
        panels = [images]
        if self.guidance.wants_conditions():
            posed1 = self.tpl.pose(self.tpl.zero_pose(1), self.betas)
            panels.append(self.conditions(posed1, cams.index([0])))
        grid = np.concatenate(list(to_uint8(torch.cat(panels))), axis=1)
        write_png(grid, path)
