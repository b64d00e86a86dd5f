"""Training a pose-dependent appearance: when the model is made, its latents through
densification, its regulariser, and checkpoints that resume it exactly."""

from __future__ import annotations

import signal

import pytest
import torch

from avatarcli.generate.checkpoint import checkpoint_path
from avatarcli.generate.config import DensifyConfig, recipe
from avatarcli.generate.densify import Densifier
from avatarcli.generate.guidance.diffusion import DiffusionGuidance, GuidanceConfig
from avatarcli.generate.guidance.random_weights import tiny_components
from avatarcli.generate.parameters import POSE_LATENTS, AvatarParameters
from avatarcli.generate.trainer import Trainer
from avatarcli.model import avatar_file
from avatarcli.signals import Interrupted

from helpers import train_and_write

CPU = torch.device("cpu")


class _Nothing:
    """A guidance that asks for nothing: only the regularisers move the avatar."""

    name, resolution = "nothing", 0

    def wants_conditions(self) -> bool:
        return False

    def loss(self, images, conditions, prompts, progress, generator, scene):  # type: ignore[no-untyped-def]
        return images.sum() * 0.0, {"elements": 1}


def _cfg(kind: str, steps: int = 6, **kw):  # type: ignore[no-untyped-def]
    cfg = recipe(kind, "a knight in armour", steps=steps, batch=2, resolution=64, checkpoint_every=3, **kw)
    cfg.densify = DensifyConfig(start=2, stop=6, every=2, grad_threshold=1e-9)
    cfg.pose_dependent.enabled = True
    return cfg


def test_densification_carries_each_gaussians_latents(head_avatar, head_template):
    model = AvatarParameters(head_avatar.select(torch.arange(200)), CPU, False, head_template.num_betas)
    n = len(model)
    model.params["binding_face_idx"] = torch.nn.Parameter(torch.arange(n), requires_grad=False)  # each Gaussian's name
    model.params[POSE_LATENTS] = torch.nn.Parameter(torch.arange(n, dtype=torch.float32)[:, None].repeat(1, 4))
    from avatarcli.model.pose_dependent import PoseNetwork

    model.pose_network = PoseNetwork("head", 19, 4, 4, 8, {"position": 1.0, "color": 1.0, "scale": 1.0, "opacity": 1.0})
    optimizers, _ = model.optimizers(recipe("head", "x").lr)
    assert POSE_LATENTS in optimizers
    with torch.no_grad():
        model.params["scales"][:] = -5.0  # small: the hot ones are cloned
        model.params["opacities"][:20] = -10.0  # these are pruned
        model.params["scales"][20:60] = -2.0  # large: these split
    d = Densifier(DensifyConfig(grad_threshold=0.5, clone_scale=0.05, prune_scale=100.0), radius=1.0)
    d.add(torch.where(torch.arange(n) < 100, 1.0, 0.0), torch.ones(n))  # the first 100 are hot
    world = torch.exp(model.params["scales"].detach()).max(-1).values
    cloned, splitted, pruned = d.refine(model.params, optimizers, world)
    assert cloned > 0 and splitted > 0 and pruned > 0
    latents, names = model.params[POSE_LATENTS], model.params["binding_face_idx"]
    assert latents.shape == (len(model), 4) and latents.requires_grad
    assert torch.equal(latents[:, 0].long(), names)  # every latent code went where its Gaussian went
    assert optimizers[POSE_LATENTS].param_groups[0]["params"][0] is latents


def test_the_model_starts_with_the_animation_stage_and_is_written(body_avatar, body_template, tmp_path):
    tiny = tiny_components(CPU)
    cfg = _cfg("body", steps=4)
    cfg.densify = DensifyConfig(start=100)
    out = tmp_path / "b.avatar"
    seen = []

    def step(report):  # type: ignore[no-untyped-def]
        seen.append((report.stage, trainer.model.pose_network is not None))

    trainer = Trainer(body_avatar, body_template, DiffusionGuidance(tiny, GuidanceConfig(score="asd", resolution=64)), cfg)
    assert trainer.model.pose_network is None  # the canonical stage has one pose
    trainer.run(out, step)
    assert seen[0] == ("canonical", False) and seen[-1] == ("animate", True)
    net = trainer.model.pose_network
    assert float(net.std[0]) != 1.0 and float(net.directions.abs().sum()) > 0  # fitted to the drawn poses
    assert float(net.net[-1].weight.detach().abs().max()) > 0  # and trained
    back = avatar_file.load(out)
    assert back.pose_dependent is not None and back.pose_dependent.latents.shape[0] == len(back)
    assert torch.equal(back.pose_dependent.network.directions, net.directions)


@pytest.mark.parametrize("weight", [1.0, 0.0])
def test_the_regulariser_pulls_offsets_nothing_asks_for_back(weight, head_avatar, head_template):
    cfg = _cfg("head", steps=30)
    cfg.densify = DensifyConfig(start=1000)
    cfg.pose_dependent.regularisation = weight
    trainer = Trainer(head_avatar, head_template, _Nothing(), cfg)  # type: ignore[arg-type]
    with torch.no_grad():
        trainer.model.pose_network.net[-1].bias.normal_(generator=torch.Generator().manual_seed(0))
    pose = trainer.source.basis_poses(5).index(slice(0, 16))

    def size() -> float:
        with torch.no_grad():
            o = trainer.model.offsets(pose)
        return float(o.sh0.pow(2).mean() + o.means.pow(2).mean())

    before = size()
    for _ in range(30):
        trainer.train_step()
    if weight:
        assert size() < 0.5 * before
    else:
        assert size() == pytest.approx(before)


class _SignalAt:
    def __init__(self, guidance, at: int) -> None:  # type: ignore[no-untyped-def]
        self.inner, self.at, self.calls = guidance, at, 0
        self.name, self.resolution = guidance.name, guidance.resolution

    def wants_conditions(self) -> bool:
        return self.inner.wants_conditions()

    def loss(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        import os

        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), signal.SIGINT)
        return self.inner.loss(*args, **kwargs)


def test_a_run_with_the_model_resumes_exactly(head_avatar, head_template, tmp_path):
    """An interrupted run resumed from its checkpoint gives the avatar, latents and network
    of an uninterrupted one (densification in between, periodic checkpoints every 3 steps)."""
    tiny = tiny_components(CPU)

    def guide():  # type: ignore[no-untyped-def]
        return DiffusionGuidance(tiny, GuidanceConfig(score="sds", resolution=64))

    straight = train_and_write(head_avatar, head_template, guide(), _cfg("head"), tmp_path / "a.avatar")
    out = tmp_path / "b.avatar"
    with pytest.raises(Interrupted):
        train_and_write(head_avatar, head_template, _SignalAt(guide(), 5), _cfg("head"), out)
    assert checkpoint_path(out).exists()
    resumed = train_and_write(head_avatar, head_template, guide(), _cfg("head"), out, resume=True)
    assert len(resumed) == len(straight) != len(head_avatar)
    assert torch.equal(resumed.gaussians.means, straight.gaussians.means)
    assert torch.equal(resumed.pose_dependent.latents, straight.pose_dependent.latents)
    mine, theirs = resumed.pose_dependent.network.state_dict(), straight.pose_dependent.network.state_dict()
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
