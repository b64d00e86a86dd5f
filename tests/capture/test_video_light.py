"""The video's light, learnt with the materials: normalised (the albedo/light scale pinned),
trained through the shading, checkpointed; and capture's trainer built with it."""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F

from avatarcli.capture.fit import CaptureSettings, capture_config, make_trainer, score_holdout
from avatarcli.capture.lighting import VideoLight
from avatarcli.generate.distributed import whole
from avatarcli.render.cameras import Cameras, intrinsics, look_at
from avatarcli.render.lights import irradiance_coefficients, peak_irradiance

CPU = torch.device("cpu")


def test_the_light_is_normalised_so_albedo_and_light_cannot_trade_scale():
    light = VideoLight(CPU)
    with torch.no_grad():
        light.log_radiance.copy_(torch.randn(light.log_radiance.shape, generator=torch.Generator().manual_seed(0)))
    peak = peak_irradiance(irradiance_coefficients(light.radiance()))
    assert torch.allclose(peak, torch.ones(3), atol=1e-5)  # each channel's brightest irradiance is one
    before = light.radiance().detach()
    with torch.no_grad():
        light.log_radiance += torch.tensor([2.0, -1.0, 0.5])  # a brighter, tinted light ...
    assert torch.allclose(light.radiance(), before, rtol=1e-5)  # ... is the same light


def test_the_light_learns_through_shading_and_survives_a_checkpoint():
    light = VideoLight(CPU)
    lighting = light.lighting(whole(2), 0)
    normals = F.normalize(torch.randn(1, 50, 3), dim=-1)
    (lighting.maps.diffuse(normals).sum() + lighting.maps.reflected(normals, torch.rand(50)).sum()).backward()
    assert light.log_radiance.grad is not None and bool((light.log_radiance.grad.abs() > 0).any())
    assert float(light.prior().detach()) == 0.0  # a uniform start costs nothing
    with torch.no_grad():
        light.log_radiance[3, 4] = 2.0
    assert float(light.prior().detach()) > 0.0
    other = VideoLight(CPU)
    other.load_state({k: v.detach().clone() for k, v in light.state().items()})
    assert torch.equal(other.radiance(), light.radiance())


def test_a_relightable_capture_learns_materials_and_its_light(head_template):
    t, size = 6, 24
    g = torch.Generator().manual_seed(0)
    frames = (torch.rand(t, size, size, 3, generator=g) * 255).to(torch.uint8)
    person = torch.full((t, size, size), 255, dtype=torch.uint8)
    eye = torch.tensor([[0.0, 0.0, 0.6]])
    cameras = Cameras(look_at(eye, torch.zeros(1, 3)), intrinsics(torch.tensor([30.0]), size, size), size, size)
    prepared = SimpleNamespace(
        tracked=SimpleNamespace(fitted=SimpleNamespace(betas=torch.zeros(head_template.num_betas))),
        poses=head_template.zero_pose(t), cameras=cameras, train=torch.arange(4), holdout=torch.arange(4, 6), weights=None,
        footage=SimpleNamespace(frames=frames, person=person),
    )  # fmt: skip
    settings = CaptureSettings(steps=2, batch=2, resolution=size, points_per_triangle=1, refine_steps=1, relightable=True)
    trainer = make_trainer(prepared, head_template, settings, capture_config("head", "test", settings, checkpoint_every=0))  # type: ignore[arg-type]
    assert isinstance(trainer.shading.lights, VideoLight) and "shading.light" in trainer.extra_optimizers
    before = trainer.shading.lights.log_radiance.detach().clone()
    trainer.train()
    assert not torch.equal(trainer.shading.lights.log_radiance, before)
    scores = score_holdout(trainer, prepared, settings)  # type: ignore[arg-type]
    assert scores["frames"] == 2.0 and 0.0 < scores["psnr"] < 100.0
    avatar = trainer.avatar(final=True)
    assert avatar.material is not None and avatar.material.light.shape == (16, 32, 3)


def test_light_the_video_never_shows_neither_scales_nor_tints_what_it_does():
    """Normalised over the normals facing the camera, a bright coloured lamp behind the person
    leaves the light in front nearly as it was (normalised over every normal, it dims and tints
    it); what is left is the lamp reaching side-facing normals, and order-2 ringing."""
    from avatarcli.render.lights import equirect_directions

    facing = torch.tensor([0.0, 0.0, 1.0])
    light, everywhere = VideoLight(CPU, facing), VideoLight(CPU)
    front = light.radiance().detach().clone()
    behind = equirect_directions(16, 32)[..., 2] < -0.8
    with torch.no_grad():
        for lit in (light, everywhere):
            lit.log_radiance[behind] += torch.tensor([3.0, 1.0, 0.0])
    seen = equirect_directions(16, 32)[..., 2] > 0.5
    change = ((light.radiance()[seen] / front[seen]) - 1).abs().mean(0)
    change_everywhere = ((everywhere.radiance()[seen] / front[seen]) - 1).abs().mean(0)
    assert float(change.max()) < 0.25 and float(change_everywhere.max()) > 0.6, (change, change_everywhere)


def test_the_light_keeps_one_colour_unless_the_frames_insist():
    light = VideoLight(CPU, smooth=0.0, colour=1.0)
    with torch.no_grad():
        light.log_radiance += torch.tensor([0.5, 0.0, -0.5])  # tinted, but the same tint everywhere: free
    assert float(light.prior().detach()) < 1e-10
    with torch.no_grad():
        light.log_radiance[2:6, 3:9] += torch.tensor([1.0, 0.0, 0.0])  # a red patch
    assert float(light.prior().detach()) > 1e-3
