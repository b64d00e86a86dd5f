"""Training an avatar with materials: random lights per view, the materials in the trainer's
parameters (grown, pruned, checkpointed with their Adam state), the normal priors, and the
avatar written with its light baked into its colours."""

from __future__ import annotations

import pytest
import torch

from avatarcli.errors import AvatarError
from avatarcli.generate.checkpoint import checkpoint_path
from avatarcli.generate.config import DensifyConfig, recipe
from avatarcli.generate.distributed import Share, whole
from avatarcli.generate.lighting import MaterialPriors, MaterialShading, RandomLights
from avatarcli.generate.trainer import Trainer
from avatarcli.model import avatar_file
from avatarcli.model.material import with_material
from avatarcli.render.lights import preset_light
from avatarcli.render.shading import Lighting, bake_light

from helpers import run_cli

CPU = torch.device("cpu")


class GreyGuidance:
    """Pulls every render towards mid-grey (cheap, and every parameter that shows gets a gradient)."""

    name = "grey"
    resolution = 0

    def wants_conditions(self) -> bool:
        return False

    def loss(self, images, conditions, prompts, progress, generator, scene):  # type: ignore[no-untyped-def]
        return ((images - 0.5) ** 2).mean() * (images.shape[0] / scene.share.total), {"elements": 1}


def _cfg(steps: int = 4, **kw):  # type: ignore[no-untyped-def]
    cfg = recipe("head", "a knight", steps=steps, batch=2, resolution=24, checkpoint_every=0, **kw)
    cfg.densify = DensifyConfig(start=2, stop=4, every=2, grad_threshold=1e-12, max_gaussians=10**6)
    cfg.reg_position = cfg.reg_scale = 0.0
    return cfg


@pytest.fixture(scope="module")
def lit_head(head_avatar, head_template):
    return with_material(head_avatar, head_template)


def test_random_lights_differ_per_view_repeat_per_seed_and_split_into_shares():
    lights = RandomLights(CPU)
    a, b = lights.lighting(whole(4), 7), lights.lighting(whole(4), 7)
    assert torch.equal(a.maps.irradiance, b.maps.irradiance) and torch.equal(a.angles, b.angles)
    assert not torch.equal(lights.lighting(whole(4), 8).angles, a.angles)
    assert len({tuple(a.maps.irradiance[i, 0].tolist()) for i in range(4)}) == 4
    part = lights.lighting(Share(2, 4, 4), 7)  # the second process's half of the same step
    assert torch.equal(part.maps.irradiance, a.maps.irradiance[2:]) and torch.equal(part.angles, a.angles[2:])


def test_materials_train_grow_and_prune_with_their_gaussians(lit_head, head_template):
    trainer = Trainer(lit_head, head_template, GreyGuidance(), _cfg())
    assert trainer.shading is not None and {"albedo", "roughness", "specular"} <= set(trainer.optimizers)
    before = {k: trainer.model.params[k].detach().clone() for k in ("albedo", "sh")}
    n0 = len(trainer.model)
    trainer.train_step()
    assert not torch.equal(trainer.model.params["albedo"], before["albedo"])  # the shaded render trains the albedo
    assert torch.equal(trainer.model.params["sh"], before["sh"])  # colours are not rendered, so do not train
    trainer.train_step()  # a refinement step: every Gaussian is hot
    n = len(trainer.model)
    assert n > n0
    for k in ("albedo", "roughness", "specular"):
        p = trainer.model.params[k]
        assert p.shape[0] == n and trainer.optimizers[k].param_groups[0]["params"][0] is p
        assert trainer.optimizers[k].state[p]["exp_avg"].shape == p.shape


def test_a_relightable_run_resumes_exactly(lit_head, head_template, tmp_path):
    out = tmp_path / "k.avatar"
    straight = Trainer(lit_head, head_template, GreyGuidance(), _cfg())
    straight.train()
    first = Trainer(lit_head, head_template, GreyGuidance(), _cfg())
    for _ in range(3):
        first.train_step()
    first.save(out)
    resumed = Trainer(lit_head, head_template, GreyGuidance(), _cfg())
    resumed.restore(checkpoint_path(out))
    resumed.train_step()
    for k in ("means", "albedo", "roughness", "specular"):
        assert torch.equal(resumed.model.params[k], straight.model.params[k]), k
    plain = lit_head.select(torch.arange(len(lit_head)))
    plain.material = None
    colours = Trainer(plain, head_template, GreyGuidance(), _cfg())
    with pytest.raises(AvatarError, match="made with materials"):
        colours.restore(checkpoint_path(out))


def test_the_normal_priors_pull_normals_onto_the_surface_and_keep_gaussians_thin(lit_head, head_template):
    trainer = Trainer(lit_head, head_template, GreyGuidance(), _cfg())
    shading = MaterialShading(trainer.model, head_template, RandomLights(CPU), MaterialPriors(normal=1.0, flat=0.0))
    assert float(shading.prior().detach()) < 1e-6  # flattened onto the surface: nothing to pull
    with torch.no_grad():
        trainer.model.params["quats"].copy_(torch.nn.functional.normalize(torch.randn_like(trainer.model.params["quats"]), dim=-1))
    assert float(shading.prior().detach()) > 0.2
    thin = MaterialShading(trainer.model, head_template, RandomLights(CPU), MaterialPriors(normal=0.0, flat=1.0))
    assert abs(float(thin.prior().detach()) - 0.15) < 1e-3  # the flattened thickness
    with torch.no_grad():
        trainer.model.params["scales"].fill_(-5.0)
    assert abs(float(thin.prior().detach()) - 1.0) < 1e-5


def test_the_written_avatar_keeps_its_materials_and_carries_its_light_in_its_colours(lit_head, head_template, tmp_path):
    trainer = Trainer(lit_head, head_template, GreyGuidance(), _cfg(steps=2))
    avatar = trainer.run(tmp_path / "k.avatar")
    back = avatar_file.load(tmp_path / "k.avatar")
    assert back.material is not None and back.material.light is None  # random lights: no light of its own
    pg = back.posed(head_template)
    want = bake_light(back, head_template, pg, Lighting.of(preset_light("studio"), "cpu")).sh
    assert torch.allclose(back.gaussians.sh, want, atol=1e-5) and len(avatar) == len(back)


def test_generate_relightable_on_the_command_line(tmp_path):
    out = tmp_path / "k.avatar"
    r = run_cli("generate", "a knight", "--guidance", "tiny", "--relightable", "--steps", "2", "--batch", "2", "--resolution", "32",
                "-k", "1", "--device", "cpu", "--checkpoint-every", "0", "-o", str(out))  # fmt: skip
    assert r.code == 0, r.stderr
    assert avatar_file.load(out).material is not None
