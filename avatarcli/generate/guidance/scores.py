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
    t < tau: scale delta_c; t >= tau: delta_n + scale delta_c.

    Below tau the classifier score keeps its guidance scale. Eq. 6 is printed with a bare
    delta_c there, but the text around it (sec. 4.3) describes one change at tau: "the
    denoising score is selectively removed for timesteps below a threshold tau ... while
    being reintroduced for timesteps beyond tau", i.e. eq. 5's delta_n + s delta_c without
    delta_n; and the ablation (sec. 5.3) reads tau as a dial between classifier-score-only
    training and "naive SDS", which eq. 5 is at every t. A bare delta_c would make the step
    ``scale`` times (7.5x) smaller just below tau than just above it, a jump the paper
    nowhere mentions. (GaussianMotion's code is not public to settle it.)
    """
    delta_n = eps_uncond - noise
    delta_c = eps_cond - eps_uncond
    late = (t >= tau).view(-1, *[1] * (noise.dim() - 1))
    return torch.where(late, delta_n + scale * delta_c, scale * delta_c)


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
    """The range timesteps are drawn from, as fractions of the diffusion's steps: ``start``
    until ``switch`` of training, then ``end``."""

    start: tuple[float, float] = (0.05, 0.80)
    end: tuple[float, float] = (0.02, 0.55)
    switch: float = 0.3

    def bounds(self, progress: float) -> tuple[float, float]:
        return self.start if progress < self.switch else self.end

    def sample(self, batch: int, progress: float, num_steps: int, generator: torch.Generator) -> Tensor:
        lo, hi = self.bounds(progress)
        lo_i, hi_i = int(lo * num_steps), max(int(hi * num_steps), int(lo * num_steps) + 1)
        return torch.randint(lo_i, hi_i, (batch,), generator=generator)


# HeadStudio's code: t in [0.05, 0.8] of 1000 (configs/headstudio.yaml), then [0.02, 0.55]
# after step 3000 of 10 000 (threestudio/systems/Head3DGSLKs.py, half_scheduler_max_step).
HEAD_TIMESTEPS = TimestepSchedule()
# GaussianMotion (sec. 5.3) follows ProlificDreamer: the maximum timestep drops from 980 to 500
# "from the middle of the training process", a switch, not a ramp (threestudio's
# stable_diffusion_vsd_guidance.py sets max_step_percent_annealed = 0.5 once the step passes
# anneal_start_step). So the canonical stage (the first 40 % of a body run) is shaped by
# timesteps up to 980 throughout.
BODY_TIMESTEPS = TimestepSchedule(start=(0.02, 0.98), end=(0.02, 0.50), switch=0.5)

# Classifier-free guidance scales per score, from the systems each score comes from:
# * sds 50: DreamWaltz-G's SDS (configs/__init__.py, GuideConfig.guidance_scale = 50.0, which its
#   training scripts keep; it weights by w(t) = 1 where this weights by 1 - alpha_bar_t).
#   SDS runs at large scales (DreamFusion 100): at 7.5 its denoising term outweighs the
#   prompt's and results blur.
# * nfsd 7.5, negative scale 1: HeadStudio eq. 7 and its code (controlnet_guidance.py,
#   guidance_scale = 7.5, which scripts/headstudio.sh keeps for every NFSD run).
# * asd 7.5: GaussianMotion gives no scale; 7.5 is Stable Diffusion's usual scale and the one
#   threestudio runs ProlificDreamer (whose timestep schedule GaussianMotion follows) with.
GUIDANCE_SCALES = {"sds": 50.0, "nfsd": 7.5, "asd": 7.5}


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
