"""Training an avatar with materials: every view is shaded under a light before it is scored.

:class:`MaterialShading` is the trainer's hook: it turns the posed Gaussians' materials into a
colour per view (:mod:`avatarcli.render.shading`) under the light its :class:`LightSource`
gives, adds the priors that keep the normals meaningful, and when the avatar is written
records its light and bakes it into the Gaussians' colours (for everything that reads
colours, not materials).

Lights: generation draws a random one per view each step (:class:`RandomLights`: a preset,
turned about the vertical, tinted and dimmed or brightened), so that the colours that score
well under all of them are the surface's own; capture learns the video's one
(:class:`~avatarcli.capture.lighting.VideoLight`).

Priors (per Gaussian, in the binding's space): ``normal`` pulls each Gaussian's shortest
axis towards the surface's normal it is bound to, ``flat`` keeps it thin (its shortest axis
over its middle one), so that its shortest axis is a normal at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Protocol

import torch
from torch import Tensor

from avatarcli.devices import to_device
from avatarcli.generate.distributed import Share
from avatarcli.generate.parameters import AvatarParameters
from avatarcli.model.avatar import Avatar
from avatarcli.model.gaussians import PosedGaussians
from avatarcli.model.normals import outward_signs, reference_normals, shortest_axes
from avatarcli.render.cameras import Cameras
from avatarcli.render.lights import PRESETS, EnvironmentLight, LightMaps, cat_maps, luminance, preset_light
from avatarcli.render.shading import DEFAULT_LIGHT, Lighting, bake_light, shade_posed
from avatarcli.templates.template import Template


class LightSource(Protocol):
    """Where the lights of a step's views come from."""

    def lighting(self, share: Share, seed: int) -> Lighting:
        """The lighting of the views of ``share`` (drawn for the whole step from ``seed``)."""
        ...

    def trainables(self) -> dict[str, tuple[list[Tensor], float]]:
        """Tensors that train with the avatar, by name, with their learning rates."""
        ...

    def prior(self) -> Tensor | None:
        """A penalty on those tensors (added once a step), or None."""
        ...

    def state(self) -> dict[str, Tensor]:
        """Tensors a checkpoint keeps (restored with :meth:`load_state`)."""
        ...

    def load_state(self, tensors: dict[str, Tensor]) -> None: ...

    def environment(self) -> Tensor | None:
        """The radiance panorama (H, W, 3) the avatar keeps as its own light, or None (the default preset)."""
        ...


@dataclass
class LightDraws:
    """How generation's random lights vary: each view a preset, turned by a uniform angle,
    tinted by ``exp(N(0, tint))`` per channel (at constant luminance) and scaled by a factor
    uniform in ``brightness``."""

    presets: tuple[str, ...] = PRESETS
    tint: float = 0.1
    brightness: tuple[float, float] = (0.75, 1.25)


class RandomLights:
    """Generation's lights: a random one for every view (see :class:`LightDraws`).

    Args:
        device: the training device (the presets' maps are made there once).
        draws: what varies.
    """

    def __init__(self, device: torch.device, draws: LightDraws | None = None) -> None:
        self.draws = draws or LightDraws()
        self.maps: LightMaps = cat_maps([preset_light(n).maps(device) for n in self.draws.presets])
        self.device = device

    def lighting(self, share: Share, seed: int) -> Lighting:
        d = self.draws
        g = torch.Generator().manual_seed(seed ^ 0x11647)  # the step's own draws, apart from the guidance's
        n = share.total
        pick = torch.randint(0, len(self.maps), (n,), generator=g)
        angles = 2 * math.pi * torch.rand(n, generator=g)
        tint = torch.exp(torch.randn(n, 3, generator=g) * d.tint)
        tint = tint / luminance(tint)[:, None]
        scale = d.brightness[0] + (d.brightness[1] - d.brightness[0]) * torch.rand(n, 1, generator=g)
        keep = share.views
        maps = self.maps.index(to_device(pick[keep], self.device)).scaled(to_device((tint * scale)[keep], self.device))
        return Lighting(maps, to_device(angles[keep], self.device))

    def trainables(self) -> dict[str, tuple[list[Tensor], float]]:
        return {}

    def prior(self) -> Tensor | None:
        return None

    def state(self) -> dict[str, Tensor]:
        return {}

    def load_state(self, tensors: dict[str, Tensor]) -> None:
        return None

    def environment(self) -> Tensor | None:
        return None


@dataclass
class MaterialPriors:
    """The weights of the normal priors (see the module doc)."""

    normal: float = 0.05
    flat: float = 0.05


class MaterialShading:
    """The trainer's shading of an avatar with materials.

    Args:
        model: the trainable avatar (with materials).
        template: its template, on the training device.
        lights: where each view's light comes from.
        priors: the normal priors' weights.
    """

    def __init__(self, model: AvatarParameters, template: Template, lights: LightSource, priors: MaterialPriors | None = None) -> None:
        if not model.has_material:
            raise ValueError("shading needs an avatar with materials")
        self.model, self.template, self.lights = model, template, lights
        self.priors = priors or MaterialPriors()

    def colors(self, posed: PosedGaussians, cameras: Cameras, share: Share, seed: int) -> Tensor:
        """Display colours (C, N, 3) of the posed Gaussians under the views' lights."""
        material = self.model.material()
        assert material is not None
        return shade_posed(posed, material, self._signs(), cameras, self.lights.lighting(share, seed))

    def own_light(self) -> EnvironmentLight:
        """The light the avatar keeps: its learnt one, or the default preset."""
        env = self.lights.environment()
        return preset_light(DEFAULT_LIGHT) if env is None else EnvironmentLight(env.detach().float(), "captured")

    @torch.no_grad()
    def display_colors(self, posed: PosedGaussians, cameras: Cameras) -> Tensor:
        """Display colours (C, N, 3) under the avatar's own light (previews)."""
        material = self.model.material()
        assert material is not None
        return shade_posed(posed, material, self._signs(), cameras, Lighting.of(self.own_light(), posed.means.device))

    def _signs(self) -> Tensor:
        g = self.model.gaussians()
        ref = reference_normals(self.model.binding(), self.template, len(g))
        return outward_signs(g.quats.detach(), g.log_scales.detach(), ref)

    def prior(self) -> Tensor:
        """The normal priors plus the light's own (once a step)."""
        g = self.model.gaussians()
        p = self.priors
        ref = reference_normals(self.model.binding(), self.template, len(g))
        total = g.means.new_zeros(())
        if p.normal:
            along = (shortest_axes(g.quats, g.log_scales) * ref).sum(-1)
            total = total + p.normal * (1.0 - along * along).mean()
        if p.flat:
            s = torch.sort(g.log_scales, dim=-1).values
            total = total + p.flat * torch.exp(s[:, 0] - s[:, 1]).mean()
        light = self.lights.prior()
        return total if light is None else total + light

    def trainables(self) -> dict[str, tuple[list[Tensor], float]]:
        return self.lights.trainables()

    def state(self) -> dict[str, Tensor]:
        return self.lights.state()

    def load_state(self, tensors: dict[str, Tensor]) -> None:
        self.lights.load_state(tensors)

    @torch.no_grad()
    def finish(self, avatar: Avatar) -> Avatar:
        """``avatar`` (a snapshot of the model) with its own light recorded and baked into its
        colours, so that what reads colours shows it as it looks under that light."""
        assert avatar.material is not None
        env = self.lights.environment()
        avatar.material = replace(avatar.material, light=None if env is None else env.detach().float().cpu())
        light = self.own_light()
        dev = self.template.device
        av = avatar.to(dev)
        baked = bake_light(av, self.template, av.posed(self.template), Lighting.of(light, dev))
        avatar.gaussians = replace(avatar.gaussians, sh=baked.sh.cpu())
        return avatar
