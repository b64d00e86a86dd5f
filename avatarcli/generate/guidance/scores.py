"""Score distillation: the update directions and the loss that carries them.

All functions work on noise predictions of shape (B, C, h, w) and timesteps (B,) in
[0, 1000). ``eps_uncond`` is the prediction without text (with the ControlNet condition),
``eps_cond`` with the prompt, ``eps_neg`` with the negative prompt, ``noise`` the noise
that was added.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

SCORES = ("sds", "nfsd", "asd")
DEFAULT_SCORE = {"head": "nfsd", "body": "asd"}  # HeadStudio; DreamWaltz-G / GaussianMotion
NEGATIVE_PROMPT = "unrealistic, blurry, low quality, out of focus, ugly, low contrast, dull, dark, low-resolution, gloomy"


def guided(eps_uncond: Tensor, eps_cond: Tensor, scale: float) -> Tensor:
    """Classifier-free guidance: eps_uncond + scale (eps_cond - eps_uncond)."""
    return eps_uncond + scale * (eps_cond - eps_uncond)


def sds_delta(eps_uncond: Tensor, eps_cond: Tensor, noise: Tensor, scale: float) -> Tensor:
    """DreamFusion's SDS: the guided prediction minus the added noise."""
    return guided(eps_uncond, eps_cond, scale) - noise


def nfsd_delta(
    eps_uncond: Tensor, eps_cond: Tensor, eps_neg: Tensor, t: Tensor, scale: float, neg_scale: float = 1.0, threshold: int = 200
) -> Tensor:
    """Denoised score (HeadStudio eq. 7, after NFSD).

    t < threshold: the guided prediction eps^s(x_t; y, C); t >= threshold: eps^s(x_t; y, C)
    minus the negative prompt's eps^{s_neg}(x_t; y_neg, C). Both are guided against the
    empty prompt, so eps^{s_neg} with s_neg = 1 is the negative prediction itself.
    """
    pos = guided(eps_uncond, eps_cond, scale)
    neg = guided(eps_uncond, eps_neg, neg_scale)
    late = (t >= threshold).view(-1, *[1] * (pos.dim() - 1))
    return torch.where(late, pos - neg, pos)


def asd_delta(eps_uncond: Tensor, eps_cond: Tensor, noise: Tensor, t: Tensor, scale: float, tau: int = 400) -> Tensor:
    """Adaptive score distillation (GaussianMotion eqs. 5-6).

    delta_n = eps(x_t; t, p) - noise, delta_c = eps(x_t; y, t, p) - eps(x_t; t, p);
    t < tau: delta_c; t >= tau: delta_n + scale delta_c.
    """
    delta_n = eps_uncond - noise
    delta_c = eps_cond - eps_uncond
    late = (t >= tau).view(-1, *[1] * (noise.dim() - 1))
    return torch.where(late, delta_n + scale * delta_c, delta_c)


def distillation_loss(latents: Tensor, grad: Tensor, views: int | None = None) -> Tensor:
    """0.5 ||z - stopgrad(z - grad)||^2 / B: its gradient with respect to z is grad / B.

    ``views``: B, the step's views in all (default: the views here); with several
    processes each sums its share over the whole step's count, so the shares add up.
    """
    target = (latents - grad).detach()
    return 0.5 * ((latents - target) ** 2).sum() / (views or latents.shape[0])


def sds_weight(alphas_cumprod: Tensor, t: Tensor) -> Tensor:
    """w(t) = 1 - alpha_bar_t, shaped (B, 1, 1, 1)."""
    return (1.0 - alphas_cumprod[t]).view(-1, 1, 1, 1)


@dataclass(frozen=True)
class TimestepSchedule:
    """The range timesteps are drawn from, as fractions of the diffusion's steps.

    ``step``: ``start`` until ``switch`` of training, then ``end`` (HeadStudio).
    ``anneal``: the upper end moves linearly from ``start[1]`` to ``end[1]`` over the first
    ``switch`` of training (GaussianMotion: 980 -> 500 by halfway).
    """

    start: tuple[float, float] = (0.05, 0.80)
    end: tuple[float, float] = (0.02, 0.55)
    switch: float = 0.3
    mode: str = "step"

    def bounds(self, progress: float) -> tuple[float, float]:
        if self.mode == "step":
            return self.start if progress < self.switch else self.end
        f = min(progress / max(self.switch, 1e-9), 1.0)
        return (self.start[0] + f * (self.end[0] - self.start[0]), self.start[1] + f * (self.end[1] - self.start[1]))

    def sample(self, batch: int, progress: float, num_steps: int, generator: torch.Generator) -> Tensor:
        lo, hi = self.bounds(progress)
        lo_i, hi_i = int(lo * num_steps), max(int(hi * num_steps), int(lo * num_steps) + 1)
        return torch.randint(lo_i, hi_i, (batch,), generator=generator)


HEAD_TIMESTEPS = TimestepSchedule()
BODY_TIMESTEPS = TimestepSchedule(start=(0.02, 0.98), end=(0.02, 0.50), switch=0.5, mode="anneal")


def view_suffix(azimuth_deg: float, elevation_deg: float) -> str:
    """The view-dependent prompt suffix for a camera around a subject facing +z."""
    if elevation_deg > 60.0:
        return ", overhead view"
    a = (azimuth_deg + 180.0) % 360.0 - 180.0
    if abs(a) < 45.0:
        return ", front view"
    if abs(a) > 135.0:
        return ", back view"
    return ", side view"
