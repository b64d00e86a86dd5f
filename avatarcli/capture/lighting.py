"""The light of a video, learnt with the avatar's materials (``avatar capture --relightable``).

The light is a small panorama of linear radiance in the camera's world (the person turns in
it, the light stays), trained through the same maps shading reads
(:func:`~avatarcli.render.lights.light_maps` is differentiable), so that the albedo is left
with what the shading does not explain.

Albedo times light is ambiguous: twice the light and half the albedo render alike, and so do
a warm lamp and warm skin. Both are pinned by normalising the light: each channel's brightest
irradiance is one, the same scale every light is shown at (presets and users' panoramas are
normalised so too), so an albedo is on the scale it will be relit at, and a colour cast of the
video's light as a whole stays in the albedo (a video cannot tell it from the skin's). What
the video does tell apart, light from one side and another, the normal priors and the head
turning in the light separate. A smoothness prior on the panorama's log radiance keeps it
from growing detail that no frame shows.
"""

from __future__ import annotations

import torch
from torch import Tensor

from avatarcli.generate.distributed import Share
from avatarcli.render.lights import irradiance_coefficients, light_maps, peak_irradiance
from avatarcli.render.shading import Lighting

LIGHT_SIZE = (16, 32)  # texels of the learnt panorama (about 11 degrees each)


class VideoLight:
    """A learnt light (a :class:`~avatarcli.generate.lighting.LightSource`), the same for every frame.

    Args:
        device: the training device.
        size: (rows, columns) of the panorama.
        lr: Adam's learning rate on its log radiance.
        smooth: the weight of the smoothness prior.
    """

    def __init__(self, device: torch.device, size: tuple[int, int] = LIGHT_SIZE, lr: float = 0.01, smooth: float = 0.02) -> None:
        self.log_radiance = torch.zeros(*size, 3, device=device, requires_grad=True)  # starts uniform
        self.lr, self.smooth = lr, smooth

    def radiance(self) -> Tensor:
        """The panorama (H, W, 3), normalised: each channel's brightest irradiance is one."""
        r = torch.exp(self.log_radiance)
        return r / peak_irradiance(irradiance_coefficients(r))

    def lighting(self, share: Share, seed: int) -> Lighting:
        return Lighting(light_maps(self.radiance()))

    def trainables(self) -> dict[str, tuple[list[Tensor], float]]:
        return {"light": ([self.log_radiance], self.lr)}

    def prior(self) -> Tensor | None:
        """Squared differences of neighbouring texels' log radiance (round the panorama, and down it)."""
        x = self.log_radiance
        across = (x - x.roll(1, dims=1)).pow(2).mean()
        down = (x[1:] - x[:-1]).pow(2).mean()
        return self.smooth * (across + down)

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
