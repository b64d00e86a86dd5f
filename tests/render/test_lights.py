"""Environment lights: panorama directions, the SH irradiance, the prefiltered maps and their
lookup, normalisation and the presets, against brute-force integrals."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from avatarcli.errors import AvatarError
from avatarcli.render import lights as L


def _lamp_map(h: int, w: int, direction: tuple[float, float, float], sigma_deg: float) -> torch.Tensor:
    d = L.equirect_directions(h, w, torch.float64)
    c = F.normalize(torch.tensor(direction, dtype=torch.float64), dim=0)
    gamma = torch.acos((d @ c).clamp(-1, 1))
    colour = torch.tensor([1.0, 0.6, 0.3], dtype=torch.float64)
    return torch.exp(-0.5 * (gamma / math.radians(sigma_deg)) ** 2)[..., None].expand(h, w, 3) * colour


def _brute_irradiance(radiance: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
    """E(n) / pi by summing every texel: (N, 3)."""
    h, w, _ = radiance.shape
    d = L.equirect_directions(h, w, radiance.dtype).reshape(-1, 3)
    omega = L.texel_solid_angles(h, w, radiance.dtype).expand(h, w).reshape(-1)
    cos = (normals @ d.T).clamp_min(0)
    return (cos * omega) @ radiance.reshape(-1, 3) / math.pi


def test_panorama_directions_follow_the_stated_convention():
    d = L.equirect_directions(8, 16, torch.float64)
    assert torch.allclose(d.norm(dim=-1), torch.ones(8, 16, dtype=torch.float64))
    assert d[0, :, 1].min() > 0.9 and d[-1, :, 1].max() < -0.9  # the top row looks up
    mid = d[4, 8]  # just right of the middle column, just below the horizon: in front of the avatar
    assert mid[2] > 0.9 and mid[0] < 0  # +z, turning to -x (the avatar's right) to the right
    assert math.isclose(float(L.texel_solid_angles(8, 16, torch.float64).sum() * 16), 4 * math.pi, rel_tol=1e-12)
    u, v = L.direction_uv(d)
    j = (torch.arange(16, dtype=torch.float64) + 0.5) / 16
    i = (torch.arange(8, dtype=torch.float64) + 0.5) / 8
    assert torch.allclose(u, j[None].expand(8, 16), atol=1e-9) and torch.allclose(v, i[:, None].expand(8, 16), atol=1e-9)


def test_turning_about_the_vertical_takes_the_front_to_the_avatars_left():
    front = torch.tensor([[[0.0, 0.0, 1.0]]])
    turned = L.rotate_about_vertical(front, torch.tensor([math.pi / 2]))
    assert torch.allclose(turned, torch.tensor([[[1.0, 0.0, 0.0]]]), atol=1e-6)


def test_sh_irradiance_matches_the_integral_of_the_clamped_cosine():
    radiance = _lamp_map(32, 64, (0.3, 0.6, 0.7), 30.0) + 0.2
    normals = F.normalize(torch.randn(200, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64), dim=-1)
    sh = L.evaluate_irradiance(L.irradiance_coefficients(radiance)[None], normals[None])[0]
    brute = _brute_irradiance(radiance, normals)
    assert (sh - brute).abs().max() < 0.03 * brute.max()  # order 2 keeps the clamped cosine to a few per cent
    uniform = L.evaluate_irradiance(L.irradiance_coefficients(torch.ones(16, 32, 3, dtype=torch.float64))[None], normals[None])
    assert torch.allclose(uniform, torch.ones_like(uniform), atol=3e-3)  # white everywhere shows the albedo (to the quadrature)


def test_prefiltering_matches_the_ggx_weighted_sum_and_keeps_a_uniform_light():
    radiance = _lamp_map(8, 16, (0.0, 0.5, 1.0), 20.0)
    got = L.prefilter(radiance)
    d = L.equirect_directions(8, 16, torch.float64).reshape(-1, 3)
    omega = L.texel_solid_angles(8, 16, torch.float64).expand(8, 16).reshape(-1)
    cos = (d @ d.T).clamp(-1, 1)
    for k, rough in enumerate(L.level_roughness().tolist()):
        a2 = max(rough * rough, L.MIN_ALPHA) ** 2
        ggx = a2 / (math.pi * ((1 + cos) / 2 * (a2 - 1) + 1) ** 2)
        w = ggx * cos.clamp_min(0) * omega[None]
        want = (w / w.sum(1, keepdim=True)) @ radiance.reshape(-1, 3)
        assert torch.allclose(got[k].reshape(-1, 3), want, atol=1e-10)
    assert got[-1].max() < got[0].max()  # rougher is blurrier
    flat = L.prefilter(torch.ones(8, 16, 3, dtype=torch.float64))
    assert torch.allclose(flat, torch.ones_like(flat))


def test_the_specular_lookup_reads_texel_centres_and_wraps_round_the_panorama():
    radiance = torch.rand(16, 32, 3, generator=torch.Generator().manual_seed(1))
    maps = L.light_maps(radiance)
    levels = maps.specular.shape[2]
    spec = maps.specular[0].permute(1, 2, 3, 0)[:, :, 1:-1]  # (L, H, W, 3)
    dirs = L.equirect_directions(16, 32).reshape(1, -1, 3)
    for k in (0, levels - 1):
        got = maps.reflected(dirs, torch.full((16 * 32,), k / (levels - 1)))[0]
        assert torch.allclose(got, spec[k].reshape(-1, 3), atol=1e-5)
    # just either side of the seam behind the avatar (u = 0 and u = 1) read the same
    el = 0.3
    a = torch.tensor([[[-math.sin(math.pi - 1e-4) * math.cos(el), math.sin(el), math.cos(math.pi - 1e-4) * math.cos(el)]]])
    b = torch.tensor([[[-math.sin(-math.pi + 1e-4) * math.cos(el), math.sin(el), math.cos(-math.pi + 1e-4) * math.cos(el)]]])
    ra, rb = maps.reflected(a, torch.tensor([0.0])), maps.reflected(b, torch.tensor([0.0]))
    assert torch.allclose(ra, rb, atol=1e-3)


def test_lights_are_normalised_to_a_peak_irradiance_of_one():
    for name in L.PRESETS:
        light = L.preset_light(name)
        coeffs = L.irradiance_coefficients(light.radiance.double())
        dirs = L.equirect_directions(*L.PREFILTER_SIZE, torch.float64).reshape(1, -1, 3)
        peak = float(L.luminance(L.evaluate_irradiance(coeffs[None], dirs)[0]).max())
        assert math.isclose(peak, 0.6 if name == "night" else 1.0, rel_tol=1e-4), name
    img = _lamp_map(32, 64, (1.0, 0.2, 0.0), 15.0).float() + 0.05
    a, b = L.EnvironmentLight.from_image(img, "a"), L.EnvironmentLight.from_image(img * 1000.0, "b")
    assert torch.allclose(a.radiance, b.radiance, rtol=1e-5)  # any absolute scale looks alike


def test_presets_differ_and_unknown_names_and_bad_images_are_refused():
    means = {n: L.preset_light(n).radiance.mean((0, 1)) for n in L.PRESETS}
    assert len({tuple(torch.round(v, decimals=3).tolist()) for v in means.values()}) == len(L.PRESETS)
    assert means["sunset"][0] > 1.5 * means["sunset"][2]  # warm
    with pytest.raises(AvatarError, match="unknown light 'disco'"):
        L.preset_light("disco")
    with pytest.raises(AvatarError, match="negative"):
        L.EnvironmentLight.from_image(-torch.ones(8, 16, 3), "x")
    with pytest.raises(AvatarError, match="NaN"):
        L.EnvironmentLight.from_image(torch.full((8, 16, 3), float("nan")), "x")
    with pytest.raises(AvatarError, match="black"):
        L.EnvironmentLight.from_image(torch.zeros(8, 16, 3), "x")
    with pytest.raises(AvatarError, match="H x W x 3"):
        L.EnvironmentLight.from_image(torch.ones(8, 16), "x")


def test_maps_of_a_learnt_light_carry_gradients_to_its_radiance():
    radiance = torch.rand(8, 16, 3, requires_grad=True)
    maps = L.light_maps(radiance)
    dirs = F.normalize(torch.randn(1, 10, 3), dim=-1)
    (maps.diffuse(dirs).sum() + maps.reflected(dirs, torch.rand(10)).sum()).backward()
    assert radiance.grad is not None and bool((radiance.grad.abs() > 0).any())


def test_lookups_at_the_poles_have_finite_gradients():
    """A reflection straight up or down (its azimuth undefined, asin's slope infinite there)
    must not send NaN or huge gradients into the normals it came from."""
    maps = L.light_maps(torch.rand(16, 32, 3, generator=torch.Generator().manual_seed(2)))
    dirs = torch.tensor([[[0.0, 1.0, 0.0], [0.0, -1.0, 0.0], [1e-9, 1.0, 0.0], [0.3, 0.4, 0.5]]], requires_grad=True)
    maps.reflected(dirs, torch.rand(4)).sum().backward()
    assert bool(torch.isfinite(dirs.grad).all()) and float(dirs.grad.abs().max()) < 10.0
