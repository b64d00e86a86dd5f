"""Training checkpoints: everything needed to continue a run, in one safetensors file.

Tensors: ``param.*`` (Gaussians, binding and pose-dependent latents), ``betas``,
``residual.*`` (the residual skinning network), ``pose_network.*`` (the pose-dependent
model's network and basis), ``opt.<group>.<param>.<slot>`` and ``opt_extra.*`` (Adam moments and step
counts), ``densify.*`` (the densification statistics), ``source.*`` (what trains beside the avatar:
a video's per-frame pose corrections), ``shading.*`` (a relightable run's light: a video's, learnt)
and ``rng.*`` (generator states: the run's own, torch's and, on CUDA, the device's).
``__metadata__`` holds the step, the stage and the full configuration as JSON. A checkpoint
is taken between steps, so a run resumed from it continues exactly as it would have.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from avatarcli.errors import AvatarError
from avatarcli.fileio import read_bytes, write_bytes
from avatarcli.generate.parameters import POSE_LATENTS, trainable
from avatarcli.model.avatar_file import check_pose_config, check_residual_config
from avatarcli.model.binding import ResidualWeights
from avatarcli.model.pose_dependent import PoseNetwork

if TYPE_CHECKING:
    from avatarcli.generate.trainer import Trainer

FORMAT = "avatarcli.checkpoint"
VERSION = 1


def checkpoint_path(output: str | Path) -> Path:
    """Where a run writing ``output`` keeps its checkpoint: the same name with ``.ckpt``."""
    return Path(output).with_suffix(".ckpt")


def unfinished_path(output: str | Path) -> Path:
    """Where a run writing ``output`` keeps the avatar as it stands at each checkpoint,
    ``NAME.unfinished.avatar``. The output's own name is written only by a finished run, so a
    Makefile never mistakes an interrupted run for a finished one."""
    return Path(output).with_suffix(".unfinished.avatar")


def adam_state(optimizer: torch.optim.Optimizer, prefix: str) -> dict[str, Tensor]:
    """Flatten an Adam optimizer's state (one entry per parameter of its first group)."""
    out = {}
    for i, p in enumerate(optimizer.param_groups[0]["params"]):
        st = optimizer.state.get(p, {})
        for slot in ("exp_avg", "exp_avg_sq", "step"):
            if slot in st:
                v = st[slot]
                out[f"{prefix}.{i}.{slot}"] = v if isinstance(v, Tensor) else torch.tensor(float(v))
    return out


def restore_adam(optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor], prefix: str) -> None:
    for i, p in enumerate(optimizer.param_groups[0]["params"]):
        slots = {s: tensors[f"{prefix}.{i}.{s}"] for s in ("exp_avg", "exp_avg_sq", "step") if f"{prefix}.{i}.{s}" in tensors}
        if slots:
            if slots["exp_avg"].shape != p.shape:
                raise AvatarError("the checkpoint's optimizer state does not match its parameters")
            optimizer.state[p] = {k: v.to(p.device) if k != "step" else v.float() for k, v in slots.items()}


def save_checkpoint(path: Path, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """Write tensors and metadata as a checkpoint file (atomically)."""
    data = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    write_bytes(path, st_save(data, metadata={"avatarcli": json.dumps({"format": FORMAT, "version": VERSION, **meta})}))


MAX_CHECKPOINT_BYTES = 16 << 30  # the largest checkpoint read: 16 GiB (the avatar and Adam's two moments)


def load_checkpoint(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The tensors and metadata of a checkpoint file; AvatarError if it is not one."""
    data = read_bytes(path, "checkpoint", MAX_CHECKPOINT_BYTES)
    try:
        n = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + n])
        meta = json.loads(header["__metadata__"]["avatarcli"])
        tensors = st_load(data)
    except (SafetensorError, ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError, OverflowError) as exc:
        raise AvatarError(f"{path} is not a readable checkpoint") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise AvatarError(f"{path} is not an avatarcli checkpoint")
    return tensors, meta


def write_checkpoint(path: Path, trainer: Trainer) -> None:
    """Write the trainer's whole state to ``path`` (atomically)."""
    model = trainer.model
    tensors: dict[str, Tensor] = {f"param.{k}": v for k, v in model.params.items()}
    tensors["betas"] = model.betas
    for k, opt in trainer.optimizers.items():
        tensors.update(adam_state(opt, f"opt.{k}"))
    for k, opt in trainer.extra_optimizers.items():
        tensors.update(adam_state(opt, f"opt_extra.{k}"))
    if model.residual is not None:
        tensors.update({f"residual.{k}": v for k, v in model.residual.state_dict().items()})
    if model.pose_network is not None:
        tensors.update({f"pose_network.{k}": v for k, v in model.pose_network.state_dict().items()})
    for k, v in trainer.densifier.state.items():
        if v is not None:
            tensors[f"densify.{k}"] = v
    tensors.update({f"source.{k}": v for k, v in trainer.source.state().items()})
    if trainer.shading is not None:
        tensors.update({f"shading.{k}": v for k, v in trainer.shading.state().items()})
    tensors["rng.generator"] = trainer.gen.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    if trainer.device.type == "cuda":  # gsplat's splits draw from the device's own generator
        tensors["rng.cuda"] = torch.cuda.get_rng_state(trainer.device)
    meta = {
        "step": trainer.step,
        "stage_index": trainer.stage_index,
        "config": trainer.cfg.to_dict(),
        "kind": trainer.tpl.kind,
        "template_sha256": trainer.tpl.sha256,
        "avatar_meta": trainer.meta,
        "residual": model.residual.config if model.residual is not None else None,
        "pose_dependent": model.pose_network.config if model.pose_network is not None else None,
        "saved": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    save_checkpoint(path, tensors, meta)


def restore_checkpoint(path: Path, trainer: Trainer) -> None:
    """Load a checkpoint written by a run with the same prompt, stages, steps, kind and template."""
    tensors, meta = load_checkpoint(path)
    try:
        _restore(path, tensors, meta, trainer)
    except (KeyError, ValueError, TypeError, RuntimeError, IndexError, AttributeError) as exc:
        detail = " ".join(str(exc).split())[:100]
        raise AvatarError(f"the checkpoint {path} is damaged ({type(exc).__name__}: {detail}); it cannot resume this run") from exc


def _restore(path: Path, tensors: dict[str, Tensor], meta: dict[str, Any], trainer: Trainer) -> None:
    want = trainer.cfg.to_dict()
    got = meta.get("config", {})
    if meta.get("kind") != trainer.tpl.kind or meta.get("template_sha256") != trainer.tpl.sha256:
        raise AvatarError(f"the checkpoint {path} was made for another template or model kind; it cannot resume this run")
    if got.get("prompt") != want["prompt"] or got.get("stages") != list(want["stages"]) or got.get("steps") != want["steps"]:
        raise AvatarError(f"the checkpoint {path} belongs to a different run (prompt, stages or steps differ)")
    model, device = trainer.model, trainer.device
    trainer.stage_index = int(meta["stage_index"])
    trainer.step = int(meta["step"])
    model.residual = None
    if meta.get("residual"):
        check_residual_config(meta["residual"], trainer.tpl.num_joints, str(path))  # bounded before it is built
        model.residual = ResidualWeights(**meta["residual"]).to(device)
        model.residual.load_state_dict({k[len("residual.") :]: v for k, v in tensors.items() if k.startswith("residual.")})
    if ("param.albedo" in tensors) != model.has_material:
        made = "with" if "param.albedo" in tensors else "without"
        raise AvatarError(f"the checkpoint {path} was made {made} materials (--relightable); it cannot resume this run")
    model.pose_network = None
    if meta.get("pose_dependent"):
        check_pose_config(meta["pose_dependent"], trainer.tpl.kind, str(path))  # bounded before it is built
        model.pose_network = PoseNetwork(**meta["pose_dependent"]).to(device)
        prefix = "pose_network."
        model.pose_network.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
    model.params = {
        k[len("param.") :]: torch.nn.Parameter(v.to(device), requires_grad=trainable(k[len("param.") :]))
        for k, v in tensors.items()
        if k.startswith("param.")
    }
    if model.pose_network is not None and tuple(model.params[POSE_LATENTS].shape) != (len(model), model.pose_network.rank):
        raise ValueError(f"{POSE_LATENTS} does not match the Gaussians and the pose-dependent network")
    with torch.no_grad():
        model.betas.copy_(tensors["betas"].to(device))
    trainer.source.load_state({k[len("source.") :]: v for k, v in tensors.items() if k.startswith("source.")})
    if trainer.shading is not None:
        trainer.shading.load_state({k[len("shading.") :]: v for k, v in tensors.items() if k.startswith("shading.")})
    trainer.make_optimizers()
    for k, opt in trainer.optimizers.items():
        restore_adam(opt, tensors, f"opt.{k}")
    for k, opt in trainer.extra_optimizers.items():
        restore_adam(opt, tensors, f"opt_extra.{k}")
    trainer.densifier.state = {"grad2d": None, "count": None}
    if "densify.grad2d" in tensors:
        trainer.densifier.state = {"grad2d": tensors["densify.grad2d"].to(device), "count": tensors["densify.count"].to(device)}
    trainer.gen.set_state(tensors["rng.generator"])
    torch.set_rng_state(tensors["rng.torch"])
    if device.type == "cuda" and "rng.cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng.cuda"], device)
    trainer.meta["history"] = _history(meta.get("avatar_meta"), trainer.meta.get("history"))


def _history(saved_meta: object, current: object) -> list[dict[str, Any]]:
    """The commands that made the checkpoint's avatar, then this run's own (the resuming
    command); entries that are not JSON objects are dropped."""

    def records(value: object) -> list[dict[str, Any]]:
        return [h for h in value if isinstance(h, dict)] if isinstance(value, list) else []

    old = records(saved_meta.get("history") if isinstance(saved_meta, dict) else None)
    return old + [h for h in records(current) if h not in old]
