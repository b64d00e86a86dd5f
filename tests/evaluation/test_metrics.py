"""PSNR and SSIM, whole and inside masks: known values, and masks that decide where errors count."""

from __future__ import annotations

import math

import pytest
import torch

from avatarcli.evaluation.metrics import IDENTICAL_DB, crop_to_ssim, psnr, ssim, ssim_map


def _images(n: int = 2, size: int = 32) -> torch.Tensor:
    return 0.2 + 0.6 * torch.rand(n, size, size, 3, generator=torch.Generator().manual_seed(0))


def test_identical_images_score_the_top():
    a = _images()
    assert psnr(a, a) == IDENTICAL_DB and abs(ssim(a, a) - 1.0) < 1e-6
    mask = torch.zeros(a.shape[:3], dtype=torch.bool)
    mask[:, 8:24, 8:24] = True
    assert psnr(a, a, mask) == IDENTICAL_DB and abs(ssim(a, a, mask) - 1.0) < 1e-6


def test_a_known_error_gives_its_psnr():
    a = _images()
    assert psnr(a, a + 0.1) == pytest.approx(20.0, abs=1e-4)  # mse 0.01
    assert psnr(a, a + 0.01) == pytest.approx(40.0, abs=1e-3)
    noisy = (a + 0.1 * torch.randn(a.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    assert 15 < psnr(a, noisy) < 25 and ssim(a, noisy) < 0.95


def test_the_mask_decides_where_errors_count():
    a = _images()
    b = a.clone()
    b[:, :, :12] += 0.1  # an error on the left part only
    left = torch.zeros(a.shape[:3], dtype=torch.bool)
    left[:, :, :12] = True
    right = torch.zeros_like(left)
    right[:, :, 20:] = True
    assert psnr(a, b, left) == pytest.approx(20.0, abs=1e-4)
    assert psnr(a, b, right) == IDENTICAL_DB
    share = 12 / 32
    assert psnr(a, b) == pytest.approx(20.0 + 10 * math.log10(1 / share), abs=1e-3)
    # SSIM windows centred more than 5 pixels from the error do not see it
    far = torch.zeros_like(left)
    far[:, :, 18:] = True
    assert abs(ssim(a, b, far) - 1.0) < 1e-6 and ssim(a, b, left) < 0.99 and ssim(a, b) < 1.0
    with pytest.raises(ValueError):
        psnr(a, b, torch.zeros_like(left))


def test_ssim_is_the_mean_of_its_map():
    a, b = _images(), _images().flip(1)
    m = ssim_map(a, b)
    assert m.shape == (2, 22, 22) and ssim(a, b) == pytest.approx(float(m.mean()), abs=1e-6)
    mask = torch.rand(2, 32, 32, generator=torch.Generator().manual_seed(3)) > 0.5
    assert ssim(a, b, mask) == pytest.approx(float(m[crop_to_ssim(mask)].mean()), abs=1e-6)
