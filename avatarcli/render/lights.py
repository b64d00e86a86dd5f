"""Environment lights: an equirectangular map of linear radiance, and what shading reads of it.

A light is a panorama of the radiance arriving at the avatar from every direction
(:class:`EnvironmentLight`). Shading (:mod:`avatarcli.render.shading`) reads two things of it,
both made once per light by :func:`light_maps`:

* the diffuse irradiance as nine order-2 spherical-harmonic coefficients per channel
  (Ramamoorthi and Hanrahan: the clamped cosine keeps 99 % of its energy in the first three
  bands, so nine numbers answer ``E(n)`` for every normal), and
* the specular part of the split-sum approximation: the map prefiltered with the GGX lobe at
  ``LEVELS`` roughnesses (normal = view = reflection direction, as the approximation takes
  them), looked up at a reflection direction and a roughness by trilinear interpolation.

Directions (y up, subjects facing +z): texel (row i, column j) of an H x W map looks along
elevation ``pi (0.5 - (i + 0.5) / H)`` and azimuth ``phi = 2 pi ((j + 0.5) / W - 0.5)``,
direction ``(-sin phi cos el, sin el, cos phi cos el)``: the top row is the sky, the middle
column is in front of the avatar (+z, where the camera of ``animate`` stands), and the image
is seen as from the avatar's place (its right, -x, to the right of the middle). A rotation of
a light by ``angle`` turns it about the vertical axis like the cameras' azimuth: positive
turns a light in front of the avatar towards its left (+x).

Lights are normalised so that the brightest irradiance a surface can receive (its luminance)
is one: a white surface facing the brightest part of any light shows white, and a user's
.hdr of any absolute scale looks as exposed as the presets. The presets are made here from a
few lamps and a sky (no image files): ``studio`` (key, fill and rim), ``softbox``, ``daylight``,
``sunset``, ``overcast`` and ``night``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from avatarcli.errors import AvatarError

LEVELS = 6  # prefiltered roughnesses 0, 0.2, ..., 1
PREFILTER_SIZE = (32, 64)  # the specular maps' texels (about 5.6 degrees each)
SH_SIZE = (64, 128)  # the resolution a light keeps and projects onto the harmonics
LUMINANCE = (0.2126, 0.7152, 0.0722)  # Rec. 709
# the clamped cosine's convolution per band, divided by pi (Ramamoorthi and Hanrahan)
IRRADIANCE_BANDS = (1.0, 2.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0, 0.25, 0.25, 0.25, 0.25, 0.25)
MIN_ALPHA = 1e-3  # GGX alpha = roughness^2, floored (a mirror reflects the nearest texel)
FACING_COS = 0.5  # peak_irradiance(facing=...) looks at normals within 60 degrees of that direction


# -- directions on the panorama -------------------------------------------------------------
def equirect_directions(height: int, width: int, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> Tensor:
    """Unit directions (H, W, 3) of the texel centres of an H x W panorama."""
    el = math.pi * (0.5 - (torch.arange(height, dtype=torch.float64) + 0.5) / height)
    phi = 2 * math.pi * ((torch.arange(width, dtype=torch.float64) + 0.5) / width - 0.5)
    el, phi = torch.meshgrid(el, phi, indexing="ij")
    d = torch.stack([-torch.sin(phi) * torch.cos(el), torch.sin(el), torch.cos(phi) * torch.cos(el)], dim=-1)
    return d.to(dtype=dtype, device=device)


def texel_solid_angles(height: int, width: int, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> Tensor:
    """The solid angle (H, 1) of a texel of each row (they sum to 4 pi over the map)."""
    top = math.pi * (0.5 - torch.arange(height, dtype=torch.float64) / height)
    bottom = top - math.pi / height
    omega = (2 * math.pi / width) * (torch.sin(top) - torch.sin(bottom))
    return omega[:, None].to(dtype=dtype, device=device)


def direction_uv(dirs: Tensor) -> tuple[Tensor, Tensor]:
    """Panorama coordinates (u, v), each (...,) in [0, 1], of directions (..., 3). Their gradients
    stay finite at the poles (where the azimuth is undefined and asin's slope infinite)."""
    d = F.normalize(dirs, dim=-1)
    x, y, z = d.unbind(-1)
    # within a milliradian of a pole every azimuth is the same place: no gradient through it there
    near = x * x + z * z < 1e-6
    x, z = torch.where(near, x.detach(), x), torch.where(near, z.detach() + 1e-9, z)
    u = torch.atan2(-x, z) / (2 * math.pi) + 0.5
    v = 0.5 - torch.asin(y.clamp(-1.0 + 1e-6, 1.0 - 1e-6)) / math.pi
    return u, v


def rotate_about_vertical(dirs: Tensor, angles: Tensor) -> Tensor:
    """Directions (C, N, 3) turned about +y by ``angles`` (C,) radians (+z towards +x)."""
    c, s = torch.cos(angles)[:, None], torch.sin(angles)[:, None]
    x, y, z = dirs.unbind(-1)
    return torch.stack([c * x + s * z, y, -s * x + c * z], dim=-1)


# -- spherical harmonics -----------------------------------------------------------------------
def sh9_basis(dirs: Tensor) -> Tensor:
    """The nine real spherical harmonics of bands 0-2 at unit directions (..., 3): (..., 9)."""
    x, y, z = dirs.unbind(-1)
    return torch.stack(
        [
            torch.full_like(x, 0.28209479177387814),
            0.4886025119029199 * y,
            0.4886025119029199 * z,
            0.4886025119029199 * x,
            1.0925484305920792 * x * y,
            1.0925484305920792 * y * z,
            0.31539156525252005 * (3.0 * z * z - 1.0),
            1.0925484305920792 * x * z,
            0.5462742152960396 * (x * x - y * y),
        ],
        dim=-1,
    )


def irradiance_coefficients(radiance: Tensor) -> Tensor:
    """Order-2 coefficients (9, 3) of the irradiance over pi of a panorama (H, W, 3): evaluated
    at a normal with :func:`sh9_basis` they give ``E(n) / pi``, which a uniform radiance of one
    makes one everywhere (so a diffuse surface shows its albedo)."""
    h, w, _ = radiance.shape
    basis = sh9_basis(equirect_directions(h, w, radiance.dtype, radiance.device))  # (H, W, 9)
    weighted = radiance * texel_solid_angles(h, w, radiance.dtype, radiance.device)[..., None]
    coeffs = torch.einsum("hwk,hwc->kc", basis, weighted)
    return coeffs * torch.tensor(IRRADIANCE_BANDS, dtype=radiance.dtype, device=radiance.device)[:, None]


def evaluate_irradiance(coeffs: Tensor, normals: Tensor) -> Tensor:
    """``E(n) / pi`` (C, N, 3), clamped at zero, for coefficients (C, 9, 3) and unit normals (C, N, 3)."""
    return torch.einsum("cnk,ckd->cnd", sh9_basis(normals), coeffs).clamp_min(0.0)


# -- the specular maps ----------------------------------------------------------------------------
def level_roughness(levels: int = LEVELS) -> Tensor:
    """The roughness of each prefiltered level (levels,): 0 to 1 evenly."""
    return torch.linspace(0.0, 1.0, levels, dtype=torch.float64)


def prefilter(radiance: Tensor, levels: int = LEVELS) -> Tensor:
    """The panorama (H, W, 3) prefiltered with the GGX lobe at each level's roughness: (levels, H, W, 3).

    Texel ``o`` of level ``k`` is ``sum_i L_i D(n.h) max(n.l, 0) dw_i / sum_i D(n.h) max(n.l, 0) dw_i``
    with n = v = the texel's direction, l_i the input texels' directions and h the half vector:
    the split-sum approximation's first factor, as importance sampling of D computes it.
    Differentiable in ``radiance`` (capture learns its light through it).

    The panorama's rows are symmetric about the vertical axis, so the weights of texel (i, j)
    over texel (i', j + dj) depend on i, i' and dj alone: (H, H, W) of them per level, not
    (HW)^2.
    """
    h, w, _ = radiance.shape
    dirs = equirect_directions(h, w, torch.float64, radiance.device)  # (H, W, 3)
    omega = texel_solid_angles(h, w, torch.float64, radiance.device)  # (H, 1)
    cos = torch.einsum("id,akd->iak", dirs[:, 0], dirs).clamp(-1.0, 1.0)  # (H, H', dj): n.l from column 0
    n_dot_h2 = (1.0 + cos) / 2.0  # (n.h)^2 with h = normalize(n + l), |n| = |l| = 1
    front = cos.clamp_min(0.0) * omega[None]
    cols = (torch.arange(w, device=radiance.device)[:, None] + torch.arange(w, device=radiance.device)[None]) % w
    shifted = radiance[:, cols].permute(0, 2, 1, 3).reshape(h * w, w * 3)  # rows (i', dj), columns (j, channel)
    out = []
    for rough in level_roughness(levels).tolist():
        a2 = max(rough * rough, MIN_ALPHA) ** 2
        weights = a2 / (math.pi * (n_dot_h2 * (a2 - 1.0) + 1.0) ** 2) * front
        weights = (weights / weights.sum((1, 2), keepdim=True)).to(radiance.dtype)
        out.append((weights.reshape(h, h * w) @ shifted).reshape(h, w, 3))
    return torch.stack(out)


def area_resize(radiance: Tensor, size: tuple[int, int]) -> Tensor:
    """A panorama (H, W, 3) averaged down to ``size`` (rows, columns) (never enlarged)."""
    h, w = min(size[0], radiance.shape[0]), min(size[1], radiance.shape[1])
    if (h, w) == tuple(radiance.shape[:2]):
        return radiance
    return F.interpolate(radiance.permute(2, 0, 1)[None], size=(h, w), mode="area")[0].permute(1, 2, 0)


@dataclass
class LightMaps:
    """What shading reads of C lights (one per view).

    Attributes:
        irradiance: (C, 9, 3) order-2 coefficients of ``E(n) / pi``.
        specular: (C, 3, L, H, W + 2) the prefiltered maps, levels of roughness 0 to 1, each
            row wrapped by one texel at both ends (so interpolation wraps round the panorama).
    """

    irradiance: Tensor
    specular: Tensor

    def __len__(self) -> int:
        return int(self.irradiance.shape[0])

    def index(self, idx: Tensor | slice | list[int]) -> LightMaps:
        return LightMaps(self.irradiance[idx], self.specular[idx])

    def scaled(self, tint: Tensor) -> LightMaps:
        """The lights times ``tint`` (C, 3) (linear radiance scales both parts alike)."""
        return LightMaps(self.irradiance * tint[:, None, :], self.specular * tint[:, :, None, None, None])

    def expand(self, count: int) -> LightMaps:
        """One light (C = 1) as ``count`` views' lights (no copy)."""
        return LightMaps(self.irradiance.expand(count, -1, -1), self.specular.expand(count, -1, -1, -1, -1))

    def to(self, device: torch.device | str) -> LightMaps:
        return LightMaps(self.irradiance.to(device), self.specular.to(device))

    def diffuse(self, normals: Tensor) -> Tensor:
        """``E(n) / pi`` (C, N, 3) at unit normals (C, N, 3)."""
        return evaluate_irradiance(self.irradiance, normals)

    def reflected(self, dirs: Tensor, roughness: Tensor) -> Tensor:
        """Prefiltered radiance (C, N, 3) along unit directions (C, N, 3) at roughness (N,) or (C, N) in [0, 1]."""
        c, _, levels, _, wp = self.specular.shape
        u, v = direction_uv(dirs)
        w = wp - 2
        x = 2.0 * (u * w + 1.0) / wp - 1.0  # texel j sits at padded column j + 1
        y = 2.0 * v - 1.0
        r = roughness.expand(c, -1) if roughness.dim() == 1 else roughness
        z = 2.0 * (r.clamp(0.0, 1.0) * (levels - 1) + 0.5) / levels - 1.0
        grid = torch.stack([x, y, z.to(x.dtype)], dim=-1)[:, None, None]  # (C, 1, 1, N, 3)
        out = F.grid_sample(self.specular, grid.to(self.specular.dtype), mode="bilinear", padding_mode="border", align_corners=False)
        return out[:, :, 0, 0].transpose(1, 2)  # (C, N, 3)


def cat_maps(parts: list[LightMaps]) -> LightMaps:
    return LightMaps(torch.cat([p.irradiance for p in parts]), torch.cat([p.specular for p in parts]))


def light_maps(radiance: Tensor) -> LightMaps:
    """The maps of one panorama (H, W, 3) of linear radiance, differentiable in it: C = 1."""
    coeffs = irradiance_coefficients(area_resize(radiance, SH_SIZE))
    spec = prefilter(area_resize(radiance, PREFILTER_SIZE))  # (L, h, w, 3)
    spec = torch.cat([spec[:, :, -1:], spec, spec[:, :, :1]], dim=2)  # wrap the columns
    return LightMaps(coeffs[None], spec.permute(3, 0, 1, 2)[None].contiguous())


def peak_irradiance(coeffs: Tensor, facing: Tensor | None = None, size: tuple[int, int] = PREFILTER_SIZE) -> Tensor:
    """The largest ``E(n) / pi`` (3,) over normals on a grid, of coefficients (9, 3), per channel;
    with ``facing`` (3,), over the normals within 60 degrees of it only."""
    dirs = equirect_directions(*size, coeffs.dtype, coeffs.device).reshape(-1, 3)
    if facing is not None:
        dirs = dirs[dirs @ facing.to(dirs) > FACING_COS]
    return evaluate_irradiance(coeffs[None], dirs[None])[0].max(0).values


def luminance(rgb: Tensor) -> Tensor:
    """Rec. 709 luminance (...,) of linear colours (..., 3)."""
    return rgb @ torch.tensor(LUMINANCE, dtype=rgb.dtype, device=rgb.device)


def normalized(radiance: Tensor, level: float = 1.0) -> Tensor:
    """``radiance`` (H, W, 3) scaled so that the brightest irradiance's luminance is ``level``."""
    coeffs = irradiance_coefficients(area_resize(radiance, SH_SIZE))
    dirs = equirect_directions(*PREFILTER_SIZE, radiance.dtype, radiance.device).reshape(1, -1, 3)
    peak = luminance(evaluate_irradiance(coeffs[None], dirs)[0]).max()
    if not bool(peak > 0):
        raise AvatarError("the light is black everywhere: it would light nothing")
    return radiance * (level / peak)


# -- lights -----------------------------------------------------------------------------------------
MAX_LIGHT_SIZE = 8192  # texels along a panorama's long side that a light is made from


@dataclass
class EnvironmentLight:
    """A light: linear radiance (H, W, 3) over the panorama (see the module doc), normalised.

    Attributes:
        radiance: (H, W, 3) non-negative, at most ``SH_SIZE``.
        name: a preset's name or the file it was read from.
    """

    radiance: Tensor
    name: str

    @staticmethod
    def from_image(image: Tensor, name: str, level: float = 1.0) -> EnvironmentLight:
        """A light from an equirectangular image (H, W, 3) of linear radiance (any scale);
        AvatarError when it has NaNs, negative values, or is black."""
        if image.dim() != 3 or image.shape[-1] != 3 or min(image.shape[:2]) < 2:
            raise AvatarError(f"{name}: a light needs an H x W x 3 panorama (got {tuple(image.shape)})")
        if max(image.shape[:2]) > MAX_LIGHT_SIZE:
            raise AvatarError(f"{name}: the panorama is {image.shape[1]}x{image.shape[0]}; at most {MAX_LIGHT_SIZE} texels a side are read")
        img = image.float()
        if not bool(torch.isfinite(img).all()):
            raise AvatarError(f"{name}: the panorama holds NaN or infinite values")
        if bool((img < 0).any()):
            raise AvatarError(f"{name}: the panorama holds negative radiance")
        return EnvironmentLight(normalized(area_resize(img, SH_SIZE), level), name)

    def maps(self, device: torch.device | str | None = None) -> LightMaps:
        """The light's maps for shading (C = 1), on ``device`` (default: the radiance's)."""
        with torch.no_grad():
            maps = light_maps(self.radiance.double())
        return LightMaps(maps.irradiance.float(), maps.specular.float()).to(device or self.radiance.device)


def _lamp(dirs: Tensor, azimuth: float, elevation: float, radius: float, color: tuple[float, float, float], share: float) -> Tensor:
    """A round lamp (H, W, 3) of angular radius ``radius`` degrees (a Gaussian falloff) that gives
    a surface facing it an irradiance of about ``share`` times its colour."""
    az, el, sigma = math.radians(azimuth), math.radians(elevation), math.radians(radius)
    centre = torch.tensor([math.sin(az) * math.cos(el), math.sin(el), math.cos(az) * math.cos(el)], dtype=dirs.dtype)
    gamma = torch.acos((dirs @ centre).clamp(-1.0, 1.0))
    peak = share / (2.0 * sigma * sigma)  # E / pi of a small lamp is 2 sigma^2 its peak radiance
    return peak * torch.exp(-0.5 * (gamma / sigma) ** 2)[..., None] * torch.tensor(color, dtype=dirs.dtype)


def _sky(dirs: Tensor, zenith: tuple[float, ...], horizon: tuple[float, ...], ground: tuple[float, ...]) -> Tensor:
    """A sky (H, W, 3): ``horizon`` to ``zenith`` above, ``ground`` below."""
    y = dirs[..., 1:2]
    up = y.clamp_min(0.0).sqrt()
    z, h, g = (torch.tensor(c, dtype=dirs.dtype) for c in (zenith, horizon, ground))
    above = h + (z - h) * up
    below = g + (h - g) * torch.exp(y.clamp_max(0.0) * 12.0)  # the ground meets the horizon softly
    return torch.where(y > 0, above, below)


def _ambient(dirs: Tensor, level: float, color: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> Tensor:
    return torch.tensor(color, dtype=dirs.dtype) * level + torch.zeros_like(dirs)


def _preset_radiance(name: str, dirs: Tensor) -> tuple[Tensor, float]:
    """The panorama of a preset and the peak irradiance it is normalised to."""
    if name == "studio":  # key light high on the avatar's right, a soft fill on its left, a rim light behind
        return (
            _lamp(dirs, -35, 30, 10, (1.0, 0.95, 0.88), 1.0)
            + _lamp(dirs, 55, 5, 25, (0.85, 0.92, 1.0), 0.3)
            + _lamp(dirs, 160, 35, 8, (1.0, 1.0, 1.0), 0.7)
            + _ambient(dirs, 0.05)
        ), 1.0
    if name == "softbox":  # one large soft light in front, above the eyes, in a bright room
        return _lamp(dirs, 0, 25, 30, (1.0, 1.0, 1.0), 1.0) + _ambient(dirs, 0.18, (1.0, 0.97, 0.93)), 1.0
    if name == "daylight":  # a high sun on the avatar's left, blue sky, sunlit ground
        return (_lamp(dirs, 60, 55, 3, (1.0, 0.97, 0.9), 1.0) + _sky(dirs, (0.12, 0.18, 0.35), (0.3, 0.34, 0.4), (0.12, 0.1, 0.08))), 1.0
    if name == "sunset":  # a low orange sun on the avatar's right, a dusk sky
        return (
            _lamp(dirs, -80, 6, 4, (1.0, 0.55, 0.25), 1.0) + _sky(dirs, (0.05, 0.05, 0.12), (0.28, 0.16, 0.12), (0.04, 0.03, 0.03))
        ), 1.0
    if name == "overcast":  # a bright even sky, darker ground, no sun
        return _sky(dirs, (0.95, 0.97, 1.0), (0.7, 0.72, 0.75), (0.18, 0.17, 0.16)), 1.0
    if name == "night":  # a warm street lamp above on the right, cold moonlight from behind on the left
        return (
            _lamp(dirs, -55, 50, 8, (1.0, 0.72, 0.38), 1.0)
            + _lamp(dirs, 130, 35, 3, (0.6, 0.7, 1.0), 0.35)
            + _sky(dirs, (0.01, 0.015, 0.04), (0.02, 0.025, 0.05), (0.015, 0.012, 0.01))
        ), 0.6
    raise AvatarError(f"unknown light {name!r}: choose {', '.join(PRESETS)} or an .hdr / .exr panorama")


PRESETS = ("studio", "softbox", "daylight", "sunset", "overcast", "night")


def preset_light(name: str) -> EnvironmentLight:
    """One of ``PRESETS``, made procedurally at ``SH_SIZE``; AvatarError for another name."""
    radiance, level = _preset_radiance(name, equirect_directions(*SH_SIZE, torch.float64))
    return EnvironmentLight(normalized(radiance, level).float(), name)
