"""Image metrics: PSNR and SSIM of renders in [0, 1]."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def psnr(a: Tensor, b: Tensor) -> float:
    """Peak signal-to-noise ratio in dB of images in [0, 1] (any matching shapes)."""
    mse = float(((a.float() - b.float()) ** 2).mean())
    return 100.0 if mse == 0 else 10.0 * math.log10(1.0 / mse)


def ssim(a: Tensor, b: Tensor) -> float:
    """Mean structural similarity of images (N, H, W, 3) in [0, 1] (Gaussian window 11, sigma 1.5)."""
    x, y = a.permute(0, 3, 1, 2).float(), b.permute(0, 3, 1, 2).float()
    coords = torch.arange(11, dtype=torch.float32, device=x.device) - 5
    g = torch.exp(-(coords**2) / (2 * 1.5**2))
    g = (g / g.sum())[:, None] @ (g / g.sum())[None, :]
    w = g.expand(3, 1, 11, 11)

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(t, w, groups=3)

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(s.mean())
