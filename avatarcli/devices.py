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
        raise AvatarError(f"device {name} was asked for but no CUDA device is available")
    if device.type not in ("cpu", "cuda"):
        raise AvatarError(f"unsupported device {name!r}: use auto, cpu or cuda")
    return device


def to_device(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``tensor.to(device)`` without making the CPU wait for the GPU.

    A plain copy from ordinary CPU memory to a CUDA device waits until the GPU has finished
    everything queued before it; in a training step that stalls the pipeline several times.
    Copying from page-locked memory with ``non_blocking`` queues the copy instead (the
    page-locked buffer is kept until the copy is done).
    """
    device = torch.device(device)
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)
