"""The photometric loss and the image measures capture reports."""

from __future__ import annotations

import math

import torch

from avatarcli.capture.photometric import LossWeights, PhotometricLoss, masked_psnr, masked_ssim, ssim_map
from avatarcli.capture.regions import CLEAR, COUNT
from avatarcli.generate.distributed import Share, whole
from avatarcli.generate.guidance.protocol import Scene


def _scene(frames: torch.Tensor, alphas: torch.Tensor, share: Share | None = None) -> Scene:
    return Scene(None, None, None, torch.zeros(3), share or whole(len(frames)), frames, alphas)  # type: ignore[arg-type]


def _data(t: int = 3, h: int = 24, w: int = 20, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    frames = (torch.rand(t, h, w, 3, generator=g) * 255).to(torch.uint8)
    person = torch.zeros(t, h, w, dtype=torch.uint8)
    person[:, 4:20, 5:15] = 255
    return frames, person


def test_a_render_that_is_the_person_over_its_background_costs_nothing():
    frames, person = _data()
    loss = PhotometricLoss(frames, person, None, torch.device("cpu"))
    idx = torch.tensor([2, 0])
    target, mask, _ = loss.targets(idx)
    # the render over black: the person where the mask is, black elsewhere; alpha = the mask
    images = (target * mask).requires_grad_(True)
    value, info = loss.loss(images, None, [], 0.5, torch.Generator().manual_seed(1), _scene(idx, mask))
    assert float(value) < 1e-6 and info["elements"] == 1
    # a wrong colour, or a silhouette where there is no person, costs
    worse, _ = loss.loss(images * 0.5, None, [], 0.5, torch.Generator().manual_seed(1), _scene(idx, mask))
    halo, _ = loss.loss(images, None, [], 0.5, torch.Generator().manual_seed(1), _scene(idx, torch.ones_like(mask)))
    assert float(worse) > 0.01 and float(halo) > 0.01


def test_ignored_pixels_carry_no_gradient():
    frames, person = _data(w=40)
    weights = torch.full(person.shape, 255, dtype=torch.uint8)
    weights[:, :, :20] = 0  # the left half does not count
    loss = PhotometricLoss(frames, person, weights, torch.device("cpu"))
    idx = torch.tensor([1])
    images = torch.rand(1, 24, 40, 3, requires_grad=True)
    alphas = torch.rand(1, 24, 40, 1, requires_grad=True)
    value, _ = loss.loss(images, None, [], 0.5, torch.Generator().manual_seed(0), _scene(idx, alphas))
    value.backward()
    assert images.grad is not None and alphas.grad is not None
    # SSIM's 11-pixel windows reach across: pixels whose windows hold no counted pixel have no say
    counted = float(images.grad[..., 20:, :].abs().max())
    assert float(images.grad[..., :5, :].abs().max()) < 1e-6 * counted and float(alphas.grad[..., :5, :].abs().max()) < 1e-6 * counted
    assert counted > 0 and float(alphas.grad[..., 20:, :].abs().sum()) > 0


def test_clear_pixels_are_background_whatever_the_segmenter_says():
    """A person the avatar does not model, away from the head (a hand, the shoulders), is
    background to the loss: opacity there costs, a transparent render there costs nothing."""
    frames, person = _data(w=40)
    person[:] = 255  # the segmenter finds the person everywhere
    weights = torch.full(person.shape, COUNT, dtype=torch.uint8)
    weights[:, :, :20] = CLEAR
    loss = PhotometricLoss(frames, person, weights, torch.device("cpu"))
    idx = torch.tensor([1])
    target, mask, weight = loss.targets(idx)
    assert bool((mask[..., :20, :] == 0).all()) and bool((mask[..., 20:, :] == 1).all()) and bool((weight == 1).all())
    right = torch.zeros(1, 24, 40, 1)
    right[..., 20:, :] = 1.0
    clear, _ = loss.loss(target * right, None, [], 0.5, torch.Generator().manual_seed(1), _scene(idx, right))
    covered, _ = loss.loss(target, None, [], 0.5, torch.Generator().manual_seed(1), _scene(idx, torch.ones_like(right)))
    assert float(clear) < 1e-6 and float(covered) > 0.01


def test_shares_of_a_step_add_up_to_the_whole_step():
    """Two processes (or passes) with half the views each give the whole step's loss together."""
    frames, person = _data(t=4)
    loss = PhotometricLoss(frames, person, None, torch.device("cpu"), LossWeights(silhouette=0.5))
    idx = torch.tensor([3, 1, 0, 2])
    images = torch.rand(4, 24, 20, 3)
    alphas = torch.rand(4, 24, 20, 1)
    full, _ = loss.loss(images, None, [], 0.5, torch.Generator().manual_seed(5), _scene(idx, alphas))
    parts = 0.0
    for s in (Share(0, 2, 4), Share(2, 4, 4)):
        v, _ = loss.loss(images[s.views], None, [], 0.5, torch.Generator().manual_seed(5), _scene(idx[s.views], alphas[s.views], s))
        parts += float(v)
    assert math.isclose(parts, float(full), rel_tol=1e-5)


def test_psnr_and_ssim_measure_where_the_mask_says():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 32, 32, 3, generator=g)
    b = a.clone()
    b[:, :, :16] += 0.1  # an error on the left half only
    left = torch.zeros(2, 32, 32, dtype=torch.bool)
    left[:, :, :16] = True
    assert math.isclose(masked_psnr(a, b, left), 20.0, abs_tol=1e-3)
    assert masked_psnr(a, b, ~left) == 100.0
    assert math.isclose(masked_psnr(a, b), 23.0103, abs_tol=1e-3)  # half the pixels: twice the PSNR's MSE
    assert masked_ssim(a, a) > 0.9999 and masked_ssim(a, b, ~left) > masked_ssim(a, b, left)
    assert ssim_map(a, b).shape == (2, 22, 22)
