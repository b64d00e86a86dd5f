"""Shading Gaussians of known materials: the split-sum terms, the light's turn, normals and
their sides, and the colours the rasterizers and exports get."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from avatarcli.model.material import Material, linear_to_srgb, srgb_to_linear, with_material
from avatarcli.render import lights as L
from avatarcli.render.cameras import framing, turntable_cameras
from avatarcli.render.rasterize import rasterize, render_gaussians
from avatarcli.render.shading import Lighting, avatar_colors, baked_colors, env_brdf, normal_signs, shade


def _lamp_light(direction: tuple[float, float, float], sigma: float = 10.0) -> L.LightMaps:
    d = L.equirect_directions(32, 64, torch.float64)
    c = F.normalize(torch.tensor(direction, dtype=torch.float64), dim=0)
    gamma = torch.acos((d @ c).clamp(-1, 1))
    return L.light_maps(torch.exp(-0.5 * (gamma / math.radians(sigma)) ** 2)[..., None].expand(32, 64, 3).float() + 1e-3)


def test_the_analytic_brdf_fit_is_f0_head_on_for_smooth_surfaces_and_grows_towards_grazing():
    f0 = torch.tensor([0.04, 0.04, 0.04])
    head_on = env_brdf(f0, torch.zeros(3), torch.ones(3))
    assert torch.allclose(head_on, f0, atol=0.01)
    grazing = env_brdf(f0, torch.zeros(3), torch.full((3,), 0.05))
    assert bool((grazing > 0.3).all())  # Fresnel
    rough = env_brdf(torch.zeros(50), torch.linspace(0, 1, 50), torch.linspace(0.01, 1, 50))
    assert bool((rough >= 0).all()) and bool((rough <= 1).all())


def test_under_a_uniform_white_light_a_surface_shows_its_albedo_plus_the_brdf():
    g = torch.Generator().manual_seed(0)
    n = 20
    albedo, rough, f0 = torch.rand(n, 3, generator=g), torch.rand(n, generator=g), 0.02 + 0.05 * torch.rand(n, generator=g)
    normals = F.normalize(torch.randn(1, n, 3, generator=g), dim=-1)
    views = F.normalize(normals + 0.3 * torch.randn(1, n, 3, generator=g), dim=-1)
    out = shade(albedo, rough, f0, normals, views, L.light_maps(torch.ones(16, 32, 3)))
    nv = (normals * views).sum(-1).abs()[0]
    assert torch.allclose(out[0], albedo + env_brdf(f0, rough, nv)[:, None], atol=5e-3)


def test_diffuse_light_falls_off_with_the_cosine_and_both_sides_of_a_surface_are_lit_alike():
    light = _lamp_light((0.0, 0.0, 1.0), sigma=5.0)
    albedo, rough, f0 = torch.full((2, 3), 0.5), torch.ones(2), torch.full((2,), 0.02)
    tilt = math.radians(60)
    normals = torch.tensor([[[0.0, 0.0, 1.0], [math.sin(tilt), 0.0, math.cos(tilt)]]])
    views = torch.tensor([[[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]])
    out = shade(albedo, rough, f0, normals, views, light, None)
    diffuse = out - shade(torch.zeros_like(albedo), rough, f0, normals, views, light, None)
    assert math.isclose(float(diffuse[0, 1, 0] / diffuse[0, 0, 0]), math.cos(tilt), rel_tol=0.08)
    flipped = shade(albedo, rough, f0, -normals, views, light, None)
    assert torch.allclose(flipped, out)


def test_turning_the_light_is_turning_the_surface_the_other_way():
    light = _lamp_light((0.4, 0.5, 0.7))
    g = torch.Generator().manual_seed(3)
    n = 30
    albedo, rough, f0 = torch.rand(n, 3, generator=g), torch.rand(n, generator=g), torch.full((n,), 0.05)
    normals = F.normalize(torch.randn(1, n, 3, generator=g), dim=-1)
    views = F.normalize(torch.randn(1, n, 3, generator=g), dim=-1)
    angle = torch.tensor([0.9])
    turned = shade(albedo, rough, f0, normals, views, light, angle)
    back = -angle
    same = shade(albedo, rough, f0, L.rotate_about_vertical(normals, back), L.rotate_about_vertical(views, back), light, None)
    assert torch.allclose(turned, same, atol=1e-5)
    assert not torch.allclose(turned, shade(albedo, rough, f0, normals, views, light, None), atol=1e-2)


def test_srgb_round_trips():
    x = torch.linspace(0, 1, 101)
    assert torch.allclose(linear_to_srgb(srgb_to_linear(x)), x, atol=1e-5)


def test_a_shaded_avatar_renders_its_shaded_colours_and_the_light_changes_them(head_template, head_avatar):
    av = with_material(head_avatar, head_template)
    pg = av.posed(head_template)
    center, radius = framing(pg.means[0])
    cams = turntable_cameras(center, radius, 2, (24, 24))
    studio, sunset = (Lighting.of(L.preset_light(n), "cpu") for n in ("studio", "sunset"))
    colors = avatar_colors(av, head_template, pg, cams, studio)
    assert colors.shape == (2, len(av), 3)
    images, alphas, _ = render_gaussians(pg, cams, torch.ones(3), colors=colors)
    direct, _, _ = rasterize(pg.means[0].expand(2, -1, -1), pg.quats[0].expand(2, -1, -1), pg.scales[0].expand(2, -1, -1),
                             pg.opacities, colors, cams, torch.ones(3))  # fmt: skip
    assert torch.allclose(images, direct)
    other, _, _ = render_gaussians(pg, cams, torch.ones(3), colors=avatar_colors(av, head_template, pg, cams, sunset))
    inside = alphas[..., 0] > 0.5
    assert float((images - other).abs()[inside].mean()) > 0.05
    assert avatar_colors(head_avatar, head_template, pg, cams, studio) is None  # an avatar of colours is not shaded


def test_normals_of_a_flattened_avatar_point_out_of_its_surface(head_template, head_avatar):
    from avatarcli.model.binding import rest_posed, triangle_frames
    from avatarcli.model.normals import gaussian_normals

    av = with_material(head_avatar, head_template)
    pg = av.posed(head_template)
    normals = gaussian_normals(pg.quats, pg.scales, normal_signs(av.gaussians, av.binding, head_template))[0]
    _, frames, _ = triangle_frames(rest_posed(head_template).vertices, head_template.faces)
    faces = frames[0, av.binding.face_idx, :, 1]
    assert float((normals * faces).sum(-1).min()) > 0.999


def test_baked_colours_see_each_gaussian_head_on():
    n = 5
    material = Material.from_values(torch.full((n, 3), 0.3), torch.full((n,), 0.5), torch.full((n,), 0.04))
    from avatarcli.model.gaussians import PosedGaussians

    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]]).expand(1, n, 4)
    scales = torch.tensor([[0.01, 0.001, 0.01]]).expand(1, n, 3)  # the normal is +y
    pg = PosedGaussians(torch.zeros(1, n, 3), quats, scales, torch.ones(n), torch.zeros(n, 1, 3))
    lighting = Lighting(L.light_maps(torch.ones(16, 32, 3)))
    got = baked_colors(pg, material, torch.ones(n), lighting)
    want = linear_to_srgb(material.albedo + env_brdf(material.specular, material.roughness, torch.ones(n))[:, None])
    assert torch.allclose(got, want, atol=5e-3)
