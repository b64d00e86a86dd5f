"""Choosing the compute device."""

from __future__ import annotations

import torch

from avatarcli.errors import AvatarError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise AvatarError(f"unknown device {name!r}: use auto, cpu or cuda") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AvatarError(f"--device {name} was asked for but no CUDA device is available")
    if device.type not in ("cpu", "cuda"):
        raise AvatarError(f"unsupported device {name!r}: use auto, cpu or cuda")
    return device
