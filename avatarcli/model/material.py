"""Materials: what each Gaussian is made of, so that an avatar can be lit anew (HRAvatar).

Every Gaussian has an albedo (linear RGB), a roughness (GGX, perceptual: alpha is its square)
and a specular reflectance at normal incidence (F0, one value: skin, hair, eyes and cloth are
dielectrics, whose F0 has no colour). Like the Gaussians, they are kept before activation:
sigmoids map them into their ranges, which an avatar file records with them. Its normals are
the Gaussians' shortest axes (:mod:`avatarcli.model.normals`); the light it is shown under,
and how it is shaded, are the renderer's (:mod:`avatarcli.render.lights`,
:mod:`avatarcli.render.shading`).

An avatar captured from a video also keeps the light the video was lit by (``light``, a
panorama of linear radiance): what it is shown under when no other light is asked for.

Colours elsewhere (SH coefficients, frames) are display values (sRGB); albedo is linear, and
:func:`srgb_to_linear` / :func:`linear_to_srgb` convert between them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from avatarcli.errors import AvatarError
from avatarcli.model.gaussians import sh0_to_rgb
from avatarcli.model.normals import reference_normals
from avatarcli.rotations import matrix_to_quat, quat_to_matrix
from avatarcli.templates.template import Template

if TYPE_CHECKING:  # the avatar holds a Material: this module cannot import it at run time
    from avatarcli.model.avatar import Avatar

ROUGHNESS_RANGE = (0.15, 1.0)  # below 0.15 a lobe is narrower than the prefiltered maps' texels
SPECULAR_RANGE = (0.02, 0.10)  # F0 of dielectrics: water 0.02, skin 0.028, hair 0.046, most plastics < 0.06
DEFAULT_ROUGHNESS = 0.6
DEFAULT_SPECULAR = 0.04
FLAT = 0.15  # a flattened Gaussian's thickness, as a fraction of its other two axes


def srgb_to_linear(c: Tensor) -> Tensor:
    """sRGB display values (...) in [0, 1] -> linear values."""
    c = c.clamp(0.0, 1.0)
    return torch.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: Tensor) -> Tensor:
    """Linear values (...) >= 0 -> sRGB display values (above one past 1: the curve continues, so
    a render brighter than white still has a gradient)."""
    x = x.clamp_min(0.0)
    return torch.where(x <= 0.0031308, 12.92 * x, 1.055 * x.clamp_min(0.0031308) ** (1 / 2.4) - 0.055)


def _logit(p: Tensor) -> Tensor:
    p = p.clamp(1e-6, 1 - 1e-6)
    return torch.log(p / (1 - p))


def to_logits(values: Tensor, bounds: tuple[float, float]) -> Tensor:
    """Logits whose sigmoid maps into ``bounds`` at ``values`` (clamped into them)."""
    lo, hi = bounds
    return _logit((values - lo) / (hi - lo))


@dataclass
class Material:
    """The materials of N Gaussians, before activation.

    Attributes:
        albedo_logits: (N, 3); sigmoid gives the linear albedo.
        roughness_logits: (N,); sigmoid maps into ``roughness_range``.
        specular_logits: (N,); sigmoid maps into ``specular_range`` (F0).
        roughness_range, specular_range: (low, high) of the two.
        light: (H, W, 3) the linear radiance panorama the avatar was captured under, or None.
    """

    albedo_logits: Tensor
    roughness_logits: Tensor
    specular_logits: Tensor
    roughness_range: tuple[float, float] = ROUGHNESS_RANGE
    specular_range: tuple[float, float] = SPECULAR_RANGE
    light: Tensor | None = None

    def __len__(self) -> int:
        return int(self.albedo_logits.shape[0])

    @property
    def albedo(self) -> Tensor:
        """(N, 3) linear albedo in [0, 1]."""
        return torch.sigmoid(self.albedo_logits)

    @property
    def roughness(self) -> Tensor:
        lo, hi = self.roughness_range
        return lo + (hi - lo) * torch.sigmoid(self.roughness_logits)

    @property
    def specular(self) -> Tensor:
        lo, hi = self.specular_range
        return lo + (hi - lo) * torch.sigmoid(self.specular_logits)

    @staticmethod
    def from_values(albedo: Tensor, roughness: Tensor, specular: Tensor, light: Tensor | None = None) -> Material:
        """Materials with these activated values: albedo (N, 3) linear, roughness (N,), F0 (N,)."""
        return Material(_logit(albedo), to_logits(roughness, ROUGHNESS_RANGE), to_logits(specular, SPECULAR_RANGE), light=light)

    def tensors(self) -> dict[str, Tensor]:
        """The per-Gaussian tensors by name (as the file and the trainer name them)."""
        return {"albedo_logits": self.albedo_logits, "roughness_logits": self.roughness_logits, "specular_logits": self.specular_logits}

    def select(self, idx: Tensor) -> Material:
        return replace(self, **{k: v[idx] for k, v in self.tensors().items()})

    def to(self, device: torch.device | str) -> Material:
        light = None if self.light is None else self.light.to(device)
        return replace(self, **{k: v.to(device) for k, v in self.tensors().items()}, light=light)

    def detach(self) -> Material:
        light = None if self.light is None else self.light.detach()
        return replace(self, **{k: v.detach() for k, v in self.tensors().items()}, light=light)

    def check(self, n: int) -> None:
        """Raises ValueError unless the tensors are for ``n`` Gaussians, finite, the ranges
        ordered within [0, 1] and the light a non-negative (H, W, 3) panorama."""
        want = {"albedo_logits": (n, 3), "roughness_logits": (n,), "specular_logits": (n,)}
        for name, t in self.tensors().items():
            if tuple(t.shape) != want[name]:
                raise ValueError(f"material {name} has shape {tuple(t.shape)}, expected {want[name]}")
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"material {name} holds NaN or infinite values")
        for what, (lo, hi) in (("roughness", self.roughness_range), ("specular", self.specular_range)):
            if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 <= lo < hi <= 1.0):
                raise ValueError(f"the {what} range must be two numbers 0 <= low < high <= 1 (got {lo}, {hi})")
        if self.light is not None:
            s = tuple(self.light.shape)
            if len(s) != 3 or s[2] != 3 or min(s[:2]) < 2:
                raise ValueError(f"the material's light has shape {s}, expected (H, W, 3)")
            if not bool(torch.isfinite(self.light).all()) or bool((self.light < 0).any()):
                raise ValueError("the material's light holds negative, NaN or infinite radiance")


def default_material(colors: Tensor) -> Material:
    """Materials for Gaussians of display colours (N, 3): the colour as albedo (in linear
    values), and skin's roughness and F0."""
    n = colors.shape[0]
    return Material.from_values(
        srgb_to_linear(colors).clamp(0.01, 0.99), torch.full((n,), DEFAULT_ROUGHNESS), torch.full((n,), DEFAULT_SPECULAR)
    )


@torch.no_grad()
def flatten_on_surface(quats: Tensor, log_scales: Tensor, reference: Tensor, thickness: float = FLAT) -> tuple[Tensor, Tensor]:
    """Gaussians turned so that the axis nearest each reference normal is that normal, and
    squashed along it to ``thickness`` of their other two axes (their geometric mean): the
    shortest axis, their normal, is then the surface's.

    Args:
        quats: (N, 4) rotations (w, x, y, z); log_scales: (N, 3); reference: (N, 3) unit normals,
            all in the same (binding-local) space.

    Returns:
        quats (N, 4) and log-scales (N, 3).
    """
    rot = quat_to_matrix(F.normalize(quats, dim=-1))  # columns: the axes
    along = (rot * reference[:, :, None]).sum(1)  # (N, 3): each axis . reference
    k = along.abs().argmax(1)
    sign = torch.where(along.gather(1, k[:, None]) < 0, -1.0, 1.0).to(rot.dtype)
    axis = rot.gather(2, k[:, None, None].expand(-1, 3, 1))[..., 0] * sign
    # the shortest rotation taking ``axis`` onto ``reference`` (Rodrigues), applied to all three axes
    v = torch.cross(axis, reference, dim=-1)
    c = (axis * reference).sum(-1).clamp(-1.0, 1.0)
    vx = torch.zeros(len(v), 3, 3, dtype=v.dtype, device=v.device)
    vx[:, 0, 1], vx[:, 0, 2], vx[:, 1, 2] = -v[:, 2], v[:, 1], -v[:, 0]
    vx = vx - vx.transpose(1, 2)
    turn = torch.eye(3, dtype=v.dtype, device=v.device) + vx + (vx @ vx) / (1.0 + c).clamp_min(1e-6)[:, None, None]
    new_quats = matrix_to_quat(turn @ rot)
    others = log_scales.sum(1) - log_scales.gather(1, k[:, None])[:, 0]
    scales = log_scales.clone()
    scales.scatter_(1, k[:, None], (others / 2.0 + math.log(thickness))[:, None])
    return new_quats, scales


def with_material(avatar: Avatar, template: Template, thickness: float = FLAT) -> Avatar:
    """A copy of ``avatar`` with materials (its colours as albedo) and its Gaussians flattened
    onto the surface they are bound to (:func:`flatten_on_surface`), so that their normals
    mean something from the start. An avatar with materials is returned as it is."""
    if avatar.material is not None:
        return avatar
    g = avatar.gaussians
    ref = reference_normals(avatar.binding, template.to(g.means.device), len(g), g.means.dtype)
    quats, log_scales = flatten_on_surface(g.quats, g.log_scales, ref, thickness)
    out = avatar.select(torch.arange(len(avatar), device=g.means.device))  # a copy
    out.gaussians = replace(out.gaussians, quats=quats, log_scales=log_scales)
    out.material = default_material(sh0_to_rgb(g.sh[:, 0]).clamp(0, 1))
    return out


# -- in the .avatar file ----------------------------------------------------------------------------
PREFIX = "material."
CONFIG_KEYS = {"roughness_range", "specular_range", "light_size"}
MAX_LIGHT_TEXELS = 512  # a stored light's rows or columns (capture keeps 16 x 32)


def material_record(material: Material) -> tuple[dict[str, Tensor], dict]:
    """The tensors (``material.*``) and the metadata entry (``meta["material"]``) of an avatar file."""
    tensors = {PREFIX + k: v for k, v in material.tensors().items()}
    config: dict = {"roughness_range": list(material.roughness_range), "specular_range": list(material.specular_range)}
    if material.light is not None:
        tensors[PREFIX + "light"] = material.light
        config["light_size"] = list(material.light.shape[:2])
    return tensors, config


def check_material_config(config: object, name: str = "input") -> None:
    """Raise AvatarError unless ``config`` is a material entry this version reads (checked before
    any tensor is read)."""
    where = f"{name}: material"
    if not isinstance(config, dict) or not {"roughness_range", "specular_range"} <= set(config) <= CONFIG_KEYS:
        raise AvatarError(f"{where} must be an object of roughness_range, specular_range and optionally light_size")
    for key in ("roughness_range", "specular_range"):
        r = config[key]
        ok = isinstance(r, list) and len(r) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in r)
        if not ok or not (math.isfinite(r[0]) and math.isfinite(r[1]) and 0.0 <= r[0] < r[1] <= 1.0):
            raise AvatarError(f"{where}: '{key}' must be [low, high] with 0 <= low < high <= 1 (got {json.dumps(r)[:40]})")
    size = config.get("light_size")
    if size is not None:
        ok = isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in size)
        if not ok or not all(2 <= v <= MAX_LIGHT_TEXELS for v in size):
            raise AvatarError(f"{where}: 'light_size' must be [rows, columns], each 2 to {MAX_LIGHT_TEXELS} (got {json.dumps(size)[:40]})")


def material_from_record(config: dict | None, tensors: dict[str, Tensor], n: int) -> Material | None:
    """The materials of a file's ``n`` Gaussians (their tensors are taken out of ``tensors``), or
    None for an avatar without; ValueError for tensors that disagree with the (checked) config."""
    if config is None:
        stray = sorted(k for k in tensors if k.startswith(PREFIX))
        if stray:
            raise ValueError(f"it holds {stray[0]} but no material settings")
        return None

    def take(key: str) -> Tensor:
        if PREFIX + key not in tensors:
            raise ValueError(f"tensor {PREFIX + key} is missing")
        t = tensors.pop(PREFIX + key)
        if not t.is_floating_point():
            raise ValueError(f"{PREFIX + key} holds {t.dtype}, not floating-point numbers")
        return t.float()

    light = None
    if config.get("light_size") is not None:
        light = take("light")
        rows, cols = config["light_size"]
        if list(light.shape) != [rows, cols, 3]:
            raise ValueError(f"{PREFIX}light has shape {tuple(light.shape)}, expected ({rows}, {cols}, 3)")
    m = Material(take("albedo_logits"), take("roughness_logits"), take("specular_logits"), tuple(config["roughness_range"]),
                 tuple(config["specular_range"]), light)  # fmt: skip
    unknown = sorted(k for k in tensors if k.startswith(PREFIX))
    if unknown:
        raise ValueError(f"unexpected material tensor {unknown[0]}")
    m.check(n)
    return m
