"""The photometric loss capture trains with, and the image measures it reports.

Per view: the render against its video frame, the frame's background replaced by the
render's background colour through the person mask, ``0.8 L1 + 0.2 (1 - SSIM)`` (3DGS), plus
a silhouette term ``|alpha - mask|``. Pixels of a person the avatar does not model (the
shoulders and chest under a head) weigh nothing. Each view's render is composited again
over a background colour drawn for it, so that colour and opacity cannot trade places
(a dark avatar on a dark background).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from avatarcli.capture.regions import CLEAR, IGNORE
from avatarcli.devices import to_device
from avatarcli.generate.guidance.protocol import Scene


def _window(channels: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    coords = torch.arange(11, dtype=dtype, device=device) - 5
    g = torch.exp(-(coords**2) / (2 * 1.5**2))
    g = g / g.sum()
    return (g[:, None] @ g[None, :]).expand(channels, 1, 11, 11).contiguous()


def ssim_map(a: Tensor, b: Tensor) -> Tensor:
    """Structural similarity per pixel (N, H-10, W-10) of images (N, H, W, C) (Gaussian
    window 11, sigma 1.5; no padding), differentiable."""
    x, y = a.permute(0, 3, 1, 2), b.permute(0, 3, 1, 2)
    c = x.shape[1]
    w = _window(c, x.device, x.dtype)

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(t, w, groups=c)

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.mean(1)


def masked_psnr(a: Tensor, b: Tensor, mask: Tensor | None = None) -> float:
    """PSNR in dB of images (N, H, W, C) in [0, 1] over the pixels where ``mask`` (N, H, W)
    holds (all pixels when None); 100 for identical images."""
    err = (a.float() - b.float()).pow(2).mean(-1)
    if mask is not None:
        if not bool(mask.any()):
            return float("nan")
        err = err[mask]
    mse = float(err.mean())
    return 100.0 if mse == 0 else 10.0 * math.log10(1.0 / mse)


def masked_ssim(a: Tensor, b: Tensor, mask: Tensor | None = None) -> float:
    """Mean SSIM of images (N, H, W, C) over the window centres where ``mask`` (N, H, W) holds."""
    s = ssim_map(a.float(), b.float())
    if mask is not None:
        m = mask[:, 5:-5, 5:-5]
        if not bool(m.any()):
            return float("nan")
        return float(s[m].mean())
    return float(s.mean())


@dataclass
class LossWeights:
    """How the photometric loss is made (3DGS's 0.8 / 0.2 split of L1 and D-SSIM)."""

    l1: float = 0.8
    dssim: float = 0.2
    silhouette: float = 0.3


class PhotometricLoss:
    """The trainer's guidance for capture: renders against the video's frames.

    Args:
        frames: (T, H, W, 3) uint8 video frames at the training size.
        person: (T, H, W) uint8 person probability x 255.
        weights: (T, H, W) uint8 codes of :mod:`~avatarcli.capture.regions`: COUNT where a
            pixel counts as the frame shows it, IGNORE where it does not count (a person's
            body just under a captured head), CLEAR where it counts as background whatever
            the frame shows (a person's body away from the head); or None (every pixel counts).
        device: the training device (frames are kept there when they fit, else on the CPU).
        loss: the weights of the terms.
        seed: the draws of background colours.
    """

    name = "photometric"
    resolution = 0

    def __init__(
        self,
        frames: Tensor,
        person: Tensor,
        weights: Tensor | None,
        device: torch.device,
        loss: LossWeights | None = None,
        seed: int = 0,
    ) -> None:
        keep = device if device.type == "cpu" or _fits(device, frames, person, weights) else torch.device("cpu")
        self.frames, self.person = frames.to(keep), person.to(keep)
        self.weights = None if weights is None else weights.to(keep)
        self.device = device
        self.terms = loss or LossWeights()

    def wants_conditions(self) -> bool:
        return False

    def targets(self, frames: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """For video frames (B,): images (B, H, W, 3) and person masks (B, H, W, 1) in [0, 1]
        (0 where a pixel must be clear), and pixel weights (B, H, W, 1) (0 where a pixel is
        ignored, else 1), on the training device."""
        idx = frames.to(self.frames.device)
        image = to_device(self.frames[idx], self.device).float() / 255.0
        mask = to_device(self.person[idx], self.device).float()[..., None] / 255.0
        if self.weights is None:
            return image, mask, torch.ones_like(mask)
        code = to_device(self.weights[idx], self.device)[..., None]
        mask = torch.where(code == CLEAR, 0.0, mask)
        return image, mask, (code != IGNORE).float()

    def loss(
        self,
        images: Tensor,
        conditions: Tensor | None,
        prompts: list[str],
        progress: float,
        generator: torch.Generator,
        scene: Scene,
    ) -> tuple[Tensor, dict]:
        """See :meth:`avatarcli.generate.guidance.protocol.Guidance.loss`; ``scene.frames``
        and ``scene.alphas`` are required."""
        if scene.frames is None or scene.alphas is None:
            raise ValueError("the photometric loss needs the frames and opacities of the views")
        share = scene.share
        colors = to_device(share.take(torch.rand(share.total, 3, generator=generator)), images.device)
        target, mask, weight = self.targets(scene.frames)
        alpha = scene.alphas
        bg = colors[:, None, None, :]
        # the render over this view's colour instead of the trainer's background
        render = images + (1.0 - alpha) * (bg - scene.background.to(images.device))
        goal = target * mask + bg * (1.0 - mask)
        goal = torch.where(weight > 0, goal, render.detach())  # ignored pixels agree with the render
        t = self.terms
        l1 = (weight * (render - goal).abs()).mean()
        dssim = 1.0 - ssim_map(render, goal).mean()
        sil = (weight * (alpha - mask).abs()).mean()
        total = t.l1 * l1 + t.dssim * dssim + t.silhouette * sil
        # the trainer sums the losses of its passes and processes: each share counts its part
        return total * (images.shape[0] / share.total), {"elements": 1, "l1": l1.detach(), "silhouette": sil.detach()}


def _fits(device: torch.device, *tensors: Tensor | None) -> bool:
    """Whether ``tensors`` take under a quarter of the device's free memory."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    need = sum(t.numel() * t.element_size() for t in tensors if t is not None)
    return need < free / 4
