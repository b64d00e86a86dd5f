"""Several processes (one per GPU) training one avatar.

Data parallel over the views of a step: every process draws the whole step's random poses,
cameras, timesteps and noise from the same generator (so the draws are those of a single
process), keeps its share of the views, renders and scores them, and the gradients, the
densification statistics, the loss and the interruption flag are summed over processes in
one all-reduce. Every process then takes the same optimizer step and the same densification
decisions, so all hold the same Gaussians; only the first writes files.

Processes start either with ``avatar generate --gpus N`` (:func:`spawn`, one process per
GPU on this machine) or under ``torchrun``, whose environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) :func:`from_environment` reads.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from avatarcli.errors import AvatarError


@dataclass(frozen=True)
class Share:
    """The views ``start`` to ``stop`` (exclusive) of a step of ``total`` views."""

    start: int
    stop: int
    total: int

    @property
    def whole(self) -> bool:
        return self.start == 0 and self.stop == self.total

    @property
    def views(self) -> slice:
        return slice(self.start, self.stop)

    def split(self, parts: int) -> list[Share]:
        """This share in ``parts`` consecutive pieces (for passes over its views)."""
        n = self.stop - self.start
        if parts < 1 or n % parts:
            raise AvatarError(f"{n} views cannot be split into {parts} equal passes")
        per = n // parts
        return [Share(self.start + i * per, self.start + (i + 1) * per, self.total) for i in range(parts)]

    def take(self, batch: Tensor) -> Tensor:
        """This share of a tensor holding all the step's views along its first dimension."""
        return batch if self.whole else batch[self.start : self.stop]


def whole(total: int) -> Share:
    return Share(0, total, total)


@dataclass(frozen=True)
class Group:
    """This process's place among the processes training one avatar."""

    rank: int
    size: int
    device: torch.device

    @property
    def main(self) -> bool:
        """Whether this process writes files and reports progress."""
        return self.rank == 0

    def share(self, total: int) -> Share:
        """The views of a ``total``-view step this process handles."""
        if total % self.size:
            raise AvatarError(f"the batch ({total} views) must divide evenly over {self.size} processes")
        per = total // self.size
        return Share(self.rank * per, (self.rank + 1) * per, total)

    def sum_(self, tensors: Sequence[Tensor]) -> None:
        """Sum tensors over the processes, in place, with one all-reduce of a flat buffer."""
        if self.size == 1 or not tensors:
            return
        flat = torch.cat([t.reshape(-1).float() for t in tensors])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        start = 0
        for t in tensors:
            n = t.numel()
            t.copy_(flat[start : start + n].view_as(t))
            start += n


def _backend(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def join(rank: int, size: int, device: torch.device, address: str = "127.0.0.1", port: int = 29500) -> Group:
    """Join (or form) the process group; the device is this process's (``cuda:rank`` for GPUs)."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(_backend(device), init_method=f"tcp://{address}:{port}", rank=rank, world_size=size)
    return Group(rank, size, device)


def launched() -> bool:
    """Whether this process was started as one of several (by ``torchrun``)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def from_environment(device: torch.device) -> Group | None:
    """The group ``torchrun`` set up in the environment, or None for a single process.

    ``device`` is the device asked for: with CUDA, this process takes ``cuda:LOCAL_RANK``.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return None
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    dev = torch.device("cuda", local) if device.type == "cuda" else device
    address = os.environ.get("MASTER_ADDR", "127.0.0.1")
    port = int(os.environ.get("MASTER_PORT", "29500"))
    return join(rank, size, dev, address, port)


def free_port() -> int:
    """A TCP port nothing listens on, for the processes to meet at."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
