"""Image metrics: PSNR and SSIM of renders in [0, 1], over whole images or inside a mask.

Identical images score 100 dB (PSNR has no finite value for them).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

WINDOW = 11  # SSIM's Gaussian window (sigma 1.5)
IDENTICAL_DB = 100.0


def psnr_of_mse(mse: float) -> float:
    """PSNR in dB of a mean squared error of images in [0, 1] (:data:`IDENTICAL_DB` for 0)."""
    return IDENTICAL_DB if mse <= 0 else 10.0 * math.log10(1.0 / mse)


def psnr(a: Tensor, b: Tensor, mask: Tensor | None = None) -> float:
    """Peak signal-to-noise ratio in dB of images (..., H, W, C) in [0, 1] (any matching shapes).

    Args:
        mask: (..., H, W) bool: only these pixels count (every channel of each); None: all.
    """
    sq = (a.float() - b.float()) ** 2
    if mask is None:
        return psnr_of_mse(float(sq.mean()))
    m = mask.bool()
    count = int(m.sum()) * sq.shape[-1]
    if count == 0:
        raise ValueError("the mask holds no pixels")
    return psnr_of_mse(float(sq[m].sum()) / count)


def ssim_map(a: Tensor, b: Tensor) -> Tensor:
    """Structural similarity per pixel (N, H - 10, W - 10) of images (N, H, W, 3) in [0, 1],
    averaged over the channels; the window (Gaussian 11, sigma 1.5) only where it fits."""
    x, y = a.permute(0, 3, 1, 2).float(), b.permute(0, 3, 1, 2).float()
    coords = torch.arange(WINDOW, dtype=torch.float32, device=x.device) - WINDOW // 2
    g = torch.exp(-(coords**2) / (2 * 1.5**2))
    g = (g / g.sum())[:, None] @ (g / g.sum())[None, :]
    w = g.expand(x.shape[1], 1, WINDOW, WINDOW)

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(t, w, groups=x.shape[1])

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.mean(1)


def crop_to_ssim(mask: Tensor) -> Tensor:
    """A mask (N, H, W) cut to the pixels :func:`ssim_map` scores (the window's centres)."""
    r = WINDOW // 2
    return mask[:, r:-r, r:-r]


def ssim(a: Tensor, b: Tensor, mask: Tensor | None = None) -> float:
    """Mean structural similarity of images (N, H, W, 3) in [0, 1] (Gaussian window 11, sigma 1.5).

    Args:
        mask: (N, H, W) bool: the mean is over the windows centred on these pixels; None: all.
    """
    s = ssim_map(a, b)
    if mask is None:
        return float(s.mean())
    m = crop_to_ssim(mask.bool())
    if not bool(m.any()):
        raise ValueError("the mask holds no pixels where the SSIM window fits")
    return float(s[m].mean())
