"""Shading Gaussians of known materials under an environment light (HRAvatar's model, split-sum).

Every Gaussian gets a colour per view before rasterisation, computed here in PyTorch from its
material, its normal and the direction to the camera; both rasterizers then draw those
colours as they draw any (so gsplat and the PyTorch rasterizer stay one pair, tested against
each other). Per Gaussian, with n its normal turned to face the camera (surfaces are lit on
the side they are seen from), v the direction to the camera and r = 2 (n.v) n - v:

    diffuse  = albedo * E(n) / pi                       nine SH coefficients of the light
    specular = prefiltered(r, roughness) * (F0 A + B)   split-sum: the prefiltered light, and
                                                        Karis's analytic fit of the
                                                        pre-integrated GGX BRDF (A, B) (no table)
    colour   = sRGB(exposure * (diffuse + specular))

The colour is encoded for display per Gaussian, so the rasterizers, the backgrounds, and the
colours exports bake are all in the same display values as an avatar of colours.
A light may be turned about the vertical axis per view (a light that turns during a clip).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from avatarcli.model.avatar import Avatar
from avatarcli.model.gaussians import Gaussians, PosedGaussians, rgb_to_sh0
from avatarcli.model.material import Material, linear_to_srgb
from avatarcli.model.normals import gaussian_normals, outward_signs, reference_normals
from avatarcli.render.cameras import Cameras
from avatarcli.render.lights import EnvironmentLight, LightMaps, preset_light, rotate_about_vertical
from avatarcli.templates.template import Template

DEFAULT_LIGHT = "studio"  # what an avatar with materials but no light of its own is shown under


def env_brdf(f0: Tensor, roughness: Tensor, n_dot_v: Tensor) -> Tensor:
    """The pre-integrated specular BRDF ``F0 A + B`` (...) for F0, roughness and n.v (...),
    by Karis's analytic fit ("Physically Based Shading on Mobile", 2014) of the GGX /
    Schlick-Fresnel integral the split-sum approximation tabulates."""
    r0 = roughness * -1.0 + 1.0
    r1 = roughness * -0.0275 + 0.0425
    r2 = roughness * -0.572 + 1.04
    r3 = roughness * 0.022 - 0.04
    a004 = torch.minimum(r0 * r0, torch.exp2(-9.28 * n_dot_v)) * r0 + r1
    a = a004 * -1.04 + r2
    b = a004 * 1.04 + r3
    return (f0 * a + b).clamp_min(0.0)  # the fit dips a little below zero for F0 near 0 on rough surfaces


def view_directions(means: Tensor, cameras: Cameras) -> Tensor:
    """Unit directions (C, N, 3) from Gaussians (C or 1, N, 3) to each camera's centre."""
    return F.normalize(cameras.centers[:, None, :].to(means.dtype) - means, dim=-1)


def shade(
    albedo: Tensor, roughness: Tensor, f0: Tensor, normals: Tensor, views: Tensor, light: LightMaps, angles: Tensor | None = None
) -> Tensor:
    """Linear radiance (C, N, 3) leaving N Gaussians towards C cameras.

    Args:
        albedo: (N, 3) linear; roughness: (N,); f0: (N,) specular reflectance.
        normals: (C, N, 3) unit (either side: each is turned to face its camera).
        views: (C, N, 3) unit directions to the cameras.
        light: C lights (one per view) or one for all.
        angles: (C,) radians each view's light is turned about the vertical, or None.
    """
    c = views.shape[0]
    if len(light) == 1 and c > 1:
        light = light.expand(c)
    along = (normals * views).sum(-1, keepdim=True)
    n = torch.where(along < 0, -normals, normals)
    n_dot_v = along.abs().clamp_min(1e-4)
    r = 2.0 * n_dot_v * n - views
    if angles is not None:  # a light turned by +angle is read at directions turned by -angle
        n, r = rotate_about_vertical(n, -angles), rotate_about_vertical(r, -angles)
    diffuse = albedo * light.diffuse(n)
    specular = light.reflected(r, roughness) * env_brdf(f0, roughness, n_dot_v[..., 0])[..., None]
    return diffuse + specular


@dataclass
class Lighting:
    """What a batch of C views is lit by.

    Attributes:
        maps: one light for every view, or one per view (C).
        angles: (C,) radians each view's light is turned about the vertical axis, or None.
        exposure: a factor on the linear radiance before display encoding.
    """

    maps: LightMaps
    angles: Tensor | None = None
    exposure: float = 1.0

    @staticmethod
    def of(light: EnvironmentLight, device: torch.device | str, angles: Tensor | None = None) -> Lighting:
        return Lighting(light.maps(device), None if angles is None else angles.to(device))

    def index(self, idx: slice | Tensor | list[int]) -> Lighting:
        """The lighting of some of the views."""
        maps = self.maps if len(self.maps) == 1 else self.maps.index(idx)
        return Lighting(maps, None if self.angles is None else self.angles[idx], self.exposure)


def normal_signs(gaussians: Gaussians, avatar_binding: object, template: Template) -> Tensor:
    """The outward sign (N,) of each Gaussian's shortest axis (see :mod:`avatarcli.model.normals`)."""
    ref = reference_normals(avatar_binding, template, len(gaussians), gaussians.quats.dtype)  # type: ignore[arg-type]
    return outward_signs(gaussians.quats, gaussians.log_scales, ref)


def shade_posed(posed: PosedGaussians, material: Material, signs: Tensor, cameras: Cameras, lighting: Lighting) -> Tensor:
    """Display colours (C, N, 3) of posed Gaussians (B = C, or 1 for all cameras) seen by C cameras."""
    normals = gaussian_normals(posed.quats, posed.scales, signs)
    views = view_directions(posed.means, cameras)
    if normals.shape[0] == 1 and views.shape[0] > 1:
        normals = normals.expand(views.shape[0], -1, -1)
    linear = shade(material.albedo, material.roughness, material.specular, normals, views, lighting.maps, lighting.angles)
    return linear_to_srgb(lighting.exposure * linear)


def avatar_colors(avatar: Avatar, template: Template, posed: PosedGaussians, cameras: Cameras, lighting: Lighting) -> Tensor | None:
    """Display colours (C, N, 3) of ``avatar`` posed as ``posed`` under ``lighting``, or None for
    an avatar without materials (its own colours show, unlit)."""
    if avatar.material is None:
        return None
    av = avatar if avatar.device == posed.means.device else avatar.to(posed.means.device)
    assert av.material is not None
    return shade_posed(posed, av.material, normal_signs(av.gaussians, av.binding, template), cameras, lighting)


def own_light(avatar: Avatar) -> EnvironmentLight | None:
    """The light an avatar with materials is shown under when no other is asked for: the one it
    was captured under, or the default preset; None for an avatar of colours."""
    if avatar.material is None:
        return None
    if avatar.material.light is not None:
        return EnvironmentLight(avatar.material.light.float().cpu(), "captured")
    return preset_light(DEFAULT_LIGHT)


def baked_colors(posed: PosedGaussians, material: Material, signs: Tensor, lighting: Lighting) -> Tensor:
    """Display colours (N, 3) that carry ``lighting`` (one light) on posed Gaussians (B = 1) in
    one colour per Gaussian, for files that have no materials. The view this assumes is
    head-on: each Gaussian seen along its outward normal (n.v = 1, the reflection is the
    normal, Fresnel at its smallest)."""
    n = gaussian_normals(posed.quats, posed.scales, signs)[:1]
    linear = shade(material.albedo, material.roughness, material.specular, n, n, lighting.maps, lighting.angles)
    return linear_to_srgb(lighting.exposure * linear)[0].clamp(0.0, 1.0)


def bake_light(avatar: Avatar, template: Template, posed: PosedGaussians, lighting: Lighting) -> Gaussians:
    """``posed`` (B = 1, e.g. an export's frame) as world-space Gaussians whose colour (SH degree
    0) is ``avatar``'s materials lit by ``lighting`` (:func:`baked_colors`); an avatar without
    materials keeps its own colours."""
    g = posed.gaussians(0)
    if avatar.material is None:
        return g
    av = avatar if avatar.device == posed.means.device else avatar.to(posed.means.device)
    assert av.material is not None
    colors = baked_colors(posed, av.material, normal_signs(av.gaussians, av.binding, template), lighting)
    return Gaussians(g.means, g.log_scales, g.quats, g.opacity_logits, rgb_to_sh0(colors)[:, None])
