"""The light of a video, learnt with the avatar's materials (``avatar capture --relightable``).

The light is a small panorama of linear radiance in the camera's world (the person turns in
it, the light stays), trained through the same maps shading reads
(:func:`~avatarcli.render.lights.light_maps` is differentiable), so that the albedo is left
with what the shading does not explain.

Albedo times light is ambiguous: twice the light and half the albedo render alike, and so do
a warm lamp and warm skin. Both are pinned by normalising the light: each channel's brightest
irradiance is one, the same scale every light is shown at (presets and users' panoramas are
normalised so too), so an albedo is on the scale it will be relit at, and a colour cast of the
video's light as a whole stays in the albedo (a video cannot tell it from the skin's). The
brightest irradiance is taken over the normals within 60 degrees of the camera's direction:
the light on surfaces the video never shows (from behind the person, say) is free to be
anything, and normalising by it would tint and scale everything that is seen. What the video does tell apart, light from one
side and another, the normal priors and the head turning in the light separate. Two priors
on the panorama's log radiance: smoothness keeps it from growing detail that no frame shows,
and one colour keeps the light's chromaticity the same in every direction unless the frames
insist otherwise. Without the second, the light, shared by every Gaussian and so quicker to
move than any albedo, takes up the difference between the starting albedo's colour and the
skin's as a tint over the parts of the sphere the frames see least, and the albedo takes the
opposite tint (measured on the relighting gauge: albedo off by x1.5 in red and x0.66 in blue).
"""

from __future__ import annotations

import torch
from torch import Tensor

from avatarcli.generate.distributed import Share
from avatarcli.render.cameras import Cameras
from avatarcli.render.lights import irradiance_coefficients, light_maps, peak_irradiance, texel_solid_angles
from avatarcli.render.shading import Lighting

LIGHT_SIZE = (16, 32)  # texels of the learnt panorama (about 11 degrees each)


class VideoLight:
    """A learnt light (a :class:`~avatarcli.generate.lighting.LightSource`), the same for every frame.

    Args:
        device: the training device.
        facing: (3,) the direction from the person to the camera (see :func:`facing_camera`),
            or None to normalise over every normal.
        size: (rows, columns) of the panorama.
        lr: Adam's learning rate on its log radiance.
        smooth: the weight of the smoothness prior; colour: of the one-colour prior.
    """

    def __init__(
        self,
        device: torch.device,
        facing: Tensor | None = None,
        size: tuple[int, int] = LIGHT_SIZE,
        lr: float = 0.01,
        smooth: float = 0.02,
        colour: float = 1.0,
    ) -> None:
        self.log_radiance = torch.zeros(*size, 3, device=device, requires_grad=True)  # starts uniform
        self.facing = None if facing is None else torch.nn.functional.normalize(facing.float(), dim=0).to(device)
        self.lr, self.smooth, self.colour = lr, smooth, colour
        self._omega = texel_solid_angles(*size, device=device)  # (H, 1)

    def radiance(self) -> Tensor:
        """The panorama (H, W, 3), normalised: each channel's brightest irradiance on a surface
        facing the camera (within 60 degrees) is one."""
        r = torch.exp(self.log_radiance)
        return r / peak_irradiance(irradiance_coefficients(r), self.facing)

    def lighting(self, share: Share, seed: int) -> Lighting:
        return Lighting(light_maps(self.radiance()))

    def trainables(self) -> dict[str, tuple[list[Tensor], float]]:
        return {"light": ([self.log_radiance], self.lr)}

    def prior(self) -> Tensor | None:
        """Squared differences of neighbouring texels' log radiance (round the panorama, and down
        it), and of each texel's log chromaticity from the panorama's mean (by solid angle)."""
        x = self.log_radiance
        across = (x - x.roll(1, dims=1)).pow(2).mean()
        down = (x[1:] - x[:-1]).pow(2).mean()
        chroma = x - x.mean(-1, keepdim=True)
        w = self._omega.expand(x.shape[:2])[..., None] / (self._omega.sum() * x.shape[1])
        off = chroma - (chroma * w).sum((0, 1))
        return self.smooth * (across + down) + self.colour * (off.pow(2) * w).sum()

    def state(self) -> dict[str, Tensor]:
        return {"log_radiance": self.log_radiance}

    def load_state(self, tensors: dict[str, Tensor]) -> None:
        if "log_radiance" not in tensors:
            raise KeyError("no shading.log_radiance in the checkpoint")
        value = tensors["log_radiance"]
        if value.shape != self.log_radiance.shape:
            raise ValueError(f"log_radiance has shape {tuple(value.shape)}, expected {tuple(self.log_radiance.shape)}")
        with torch.no_grad():
            self.log_radiance.copy_(value.to(self.log_radiance.device))

    def environment(self) -> Tensor:
        return self.radiance().detach()


def facing_camera(cameras: Cameras) -> Tensor:
    """The direction (3,) from a person in front of the (first) camera back to it: minus its
    optical axis in the world."""
    return -cameras.viewmats[0, 2, :3].detach().float().cpu()
