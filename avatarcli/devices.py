"""Choosing the compute device."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

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


@contextlib.contextmanager
def repeatable(device: torch.device) -> Iterator[None]:
    """Within the block, work on the CPU adds up gradients in the same order every time.

    The backward pass of indexing accumulates with ``index_put_``, whose CPU kernel adds in
    parallel with atomic operations: with more than one thread the sums come out in whatever
    order the threads reach them, differing in their last bits from run to run, and Adam
    (``eps`` 1e-15) makes whole learning-rate steps of such differences. PyTorch's
    deterministic mode runs those kernels in order. (On CUDA, gsplat's kernels add
    atomically whatever the mode, so nothing changes there.)
    """
    if device.type != "cpu":
        yield
        return
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
