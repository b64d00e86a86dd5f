"""Score variants against their formulas on fixed tensors; schedule; view prompts."""

from __future__ import annotations

import torch

from avatarcli.generate.guidance.diffusion import GuidanceConfig
from avatarcli.generate.guidance.scores import (
    BODY_TIMESTEPS,
    GUIDANCE_SCALES,
    HEAD_TIMESTEPS,
    asd_delta,
    distillation_loss,
    nfsd_delta,
    sds_delta,
    view_suffix,
)

g = torch.Generator().manual_seed(0)
U, C, N, E = (torch.randn(4, 4, 8, 8, generator=g) for _ in range(4))
T = torch.tensor([50, 199, 200, 900])


def test_sds():
    want = U + 7.5 * (C - U) - E
    assert torch.allclose(sds_delta(U, C, E, 7.5), want)


def test_nfsd_is_piecewise_in_t():
    d = nfsd_delta(U, C, N, T, scale=7.5, neg_scale=1.0, threshold=200)
    guided = U + 7.5 * (C - U)
    assert torch.allclose(d[:2], guided[:2])  # t < 200: the guided prediction itself
    assert torch.allclose(d[2:], (guided - N)[2:])  # t >= 200: minus the negative prediction (s_neg = 1)
    d2 = nfsd_delta(U, C, N, T, scale=7.5, neg_scale=2.0)
    assert torch.allclose(d2[2:], (guided - (U + 2.0 * (N - U)))[2:])


def test_asd_drops_the_denoising_score_below_tau():
    """Below tau only the denoising score goes: the classifier score keeps its scale, so the
    step does not shrink 7.5-fold from t = tau to t = tau - 1."""
    d = asd_delta(U, C, E, torch.tensor([100, 399, 400, 800]), scale=7.5, tau=400)
    delta_n, delta_c = U - E, C - U
    assert torch.allclose(d[:2], 7.5 * delta_c[:2])
    assert torch.allclose(d[2:], (delta_n + 7.5 * delta_c)[2:])
    # the same predictions either side of tau differ by the denoising score alone
    t = torch.tensor([399, 400, 399, 400])
    same = lambda x: x[:1].expand(4, -1, -1, -1)  # noqa: E731
    d = asd_delta(same(U), same(C), same(E), t, scale=7.5, tau=400)
    assert torch.allclose(d[1] - d[0], (U - E)[0], atol=1e-4)


def test_distillation_loss_gradient_is_the_score():
    z = torch.randn(4, 4, 8, 8, generator=g, requires_grad=True)
    grad = torch.randn(4, 4, 8, 8, generator=g)
    distillation_loss(z, grad).backward()
    assert torch.allclose(z.grad, grad / 4)


def test_timestep_schedules():
    gen = torch.Generator().manual_seed(1)
    assert HEAD_TIMESTEPS.bounds(0.1) == (0.05, 0.8) and HEAD_TIMESTEPS.bounds(0.5) == (0.02, 0.55)
    t = HEAD_TIMESTEPS.sample(1000, 0.9, 1000, gen)
    assert t.min() >= 20 and t.max() < 550
    # bodies: the maximum stays at 980 until halfway, then drops to 500 at once (ProlificDreamer's
    # switch, which GaussianMotion follows); the canonical stage (the first 40 %) sees it all
    assert BODY_TIMESTEPS.bounds(0.0) == BODY_TIMESTEPS.bounds(0.25) == BODY_TIMESTEPS.bounds(0.4) == (0.02, 0.98)
    assert BODY_TIMESTEPS.bounds(0.499) == (0.02, 0.98) and BODY_TIMESTEPS.bounds(0.5) == BODY_TIMESTEPS.bounds(0.9) == (0.02, 0.5)
    t = BODY_TIMESTEPS.sample(4000, 0.39, 1000, gen)
    assert t.min() >= 20 and t.max() >= 970 and t.max() < 980


def test_each_score_has_its_sources_guidance_scale():
    assert GUIDANCE_SCALES == {"sds": 50.0, "nfsd": 7.5, "asd": 7.5}
    assert {s: GuidanceConfig(score=s).scale for s in ("sds", "nfsd", "asd")} == GUIDANCE_SCALES
    assert GuidanceConfig(score="sds", guidance_scale=12.0).scale == 12.0


def test_view_suffixes():
    assert view_suffix(10, 0) == ", front view"
    assert view_suffix(-100, 10) == ", side view"
    assert view_suffix(170, 0) == ", back view" and view_suffix(-179, 0) == ", back view"
    assert view_suffix(0, 75) == ", overhead view"
