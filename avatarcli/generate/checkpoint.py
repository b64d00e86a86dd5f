"""Training checkpoints: everything needed to continue a run, in one safetensors file.

Tensors: ``param.*`` (Gaussians and binding), ``opt.<group>.<param>.<slot>`` (Adam moments and
step counts), ``densify.*``, ``rng.*`` (generator states) and the template shape and residual
network. ``__metadata__`` holds the step, the stage and the full configuration as JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from avatarcli.errors import AvatarError
from avatarcli.fileio import read_bytes, write_bytes

FORMAT = "avatarcli.checkpoint"
VERSION = 1


def checkpoint_path(output: str | Path) -> Path:
    """Where a run writing ``output`` keeps its checkpoint: the same name with ``.ckpt``."""
    return Path(output).with_suffix(".ckpt")


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
    data = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    write_bytes(path, st_save(data, metadata={"avatarcli": json.dumps({"format": FORMAT, "version": VERSION, **meta})}))


def load_checkpoint(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    data = read_bytes(path, "checkpoint")
    try:
        n = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + n])
        meta = json.loads(header["__metadata__"]["avatarcli"])
        tensors = st_load(data)
    except (SafetensorError, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise AvatarError(f"{path} is not a readable checkpoint") from exc
    if meta.get("format") != FORMAT:
        raise AvatarError(f"{path} is not an avatarcli checkpoint")
    return tensors, meta
