"""Score variants against their formulas on fixed tensors; schedule; view prompts."""

from __future__ import annotations

import torch

from avatarcli.generate.guidance.scores import (
    BODY_TIMESTEPS,
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


def test_asd_switches_at_tau():
    d = asd_delta(U, C, E, torch.tensor([100, 399, 400, 800]), scale=7.5, tau=400)
    delta_n, delta_c = U - E, C - U
    assert torch.allclose(d[:2], delta_c[:2])
    assert torch.allclose(d[2:], (delta_n + 7.5 * delta_c)[2:])


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
    _, hi = BODY_TIMESTEPS.bounds(0.25)
    assert abs(hi - 0.74) < 1e-6 and BODY_TIMESTEPS.bounds(0.75)[1] == 0.5


def test_view_suffixes():
    assert view_suffix(10, 0) == ", front view"
    assert view_suffix(-100, 10) == ", side view"
    assert view_suffix(170, 0) == ", back view" and view_suffix(-179, 0) == ", back view"
    assert view_suffix(0, 75) == ", overhead view"
