"""Antialiased 2D drawing on batches of images in PyTorch: segments, discs and squares.

Written for the ControlNet condition images so they can be drawn on the GPU for a batch of
views without a round trip to the CPU (the common OpenPose drawing code also carries a
non-commercial licence). Shapes are drawn as coverage from a distance field, so strokes
keep their width at any resolution.
"""

from __future__ import annotations

import torch
from torch import Tensor


def pixel_grid(height: int, width: int, device: torch.device) -> Tensor:
    """Pixel centres (H, W, 2) as (x, y)."""
    ys = torch.arange(height, device=device, dtype=torch.float32) + 0.5
    xs = torch.arange(width, device=device, dtype=torch.float32) + 0.5
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([x, y], dim=-1)


def segment_distance(pix: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Distance from pixels (H, W, 2) to segments a-b (B, S, 2): (B, S, H, W)."""
    pa = pix[None, None] - a[:, :, None, None]
    ba = (b - a)[:, :, None, None]
    t = ((pa * ba).sum(-1) / (ba * ba).sum(-1).clamp_min(1e-9)).clamp(0.0, 1.0)
    return (pa - t[..., None] * ba).norm(dim=-1)


def paint_layer(canvas: Tensor, coverage: Tensor, colors: Tensor, opacity: float = 1.0) -> Tensor:
    """Paint shapes that do not need an order (or rarely overlap) in one pass.

    Where shapes overlap their colours are averaged by coverage; elsewhere this equals
    painting them one by one, at a fraction of the memory traffic.

    Args:
        canvas: (B, H, W, 3); coverage: (B, S, H, W); colors: (S, 3) or (B, S, 3).
    """
    if coverage.shape[1] == 0:
        return canvas
    if colors.dim() == 2:
        colors = colors[None].expand(coverage.shape[0], -1, -1)
    total = coverage.sum(1)
    color = torch.einsum("bshw,bsc->bhwc", coverage, colors) / total.clamp_min(1e-6)[..., None]
    a = (coverage.amax(1) * opacity)[..., None]
    return canvas * (1 - a) + color * a


def stroke(pix: Tensor, a: Tensor, b: Tensor, half_width: float, visible: Tensor) -> Tensor:
    """Coverage (B, S, H, W) of segments of half-width ``half_width`` px; hidden ones empty."""
    d = segment_distance(pix, a, b)
    cov = (half_width + 0.5 - d).clamp(0.0, 1.0)
    return cov * visible[:, :, None, None].to(cov.dtype)


def discs(pix: Tensor, centers: Tensor, radius: float, visible: Tensor) -> Tensor:
    """Coverage (B, P, H, W) of discs of ``radius`` px around centers (B, P, 2)."""
    d = (pix[None, None] - centers[:, :, None, None]).norm(dim=-1)
    return (radius + 0.5 - d).clamp(0.0, 1.0) * visible[:, :, None, None].to(d.dtype)


def squares(pix: Tensor, centers: Tensor, half: float, visible: Tensor) -> Tensor:
    """Coverage (B, P, H, W) of axis-aligned squares of half-side ``half`` px."""
    d = (pix[None, None] - centers[:, :, None, None]).abs().amax(dim=-1)
    return (half + 0.5 - d).clamp(0.0, 1.0) * visible[:, :, None, None].to(d.dtype)
