"""Score distillation through DiffusionGuidance's real path, with an analytic oracle in place of
the UNet: everything else is real (tokenizer and text encoder, ControlNet, VAE encoder, the
timestep and noise draws, the loss).

The oracle is the exact noise prediction of a diffusion prior concentrated on one latent per
prompt: eps(x_t) = (x_t - sqrt(abar_t) z*) / sqrt(1 - abar_t), with z* the conditional target
for the prompt, and other latents for the empty and the negative prompt. Then every score has
a closed form, and its gradient on the render's latents must be w(t) delta / B exactly."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch
from torch import Tensor

from avatarcli.generate.guidance.diffusion import DiffusionGuidance, GuidanceConfig
from avatarcli.generate.guidance.random_weights import tiny_components
from avatarcli.generate.guidance.scores import HEAD_TIMESTEPS, NEGATIVE_PROMPT

CPU = torch.device("cpu")
B, SIZE = 8, 64
PROMPTS = [f"a knight, {side} view" for side in ("front", "side", "back", "side")] * 2


class Oracle(torch.nn.Module):
    """A UNet stand-in: the exact prediction of a prior concentrated on ``targets[branch]``
    (B, 4, h, w), the branch chosen by each input's text embedding (``embeddings``: branch ->
    (77, D); any other embedding is the conditional branch "cond"). ``prediction``: "epsilon"
    or "v_prediction"."""

    def __init__(self, alphas_cumprod: Tensor, embeddings: dict[str, Tensor], targets: dict[str, Tensor], prediction: str) -> None:
        super().__init__()
        self.alphas_cumprod, self.embeddings, self.targets, self.prediction = alphas_cumprod, embeddings, targets, prediction
        self.controlled = 0  # calls that carried the ControlNet's residuals

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def branch(self, embedding: Tensor) -> str:
        return next((k for k, e in self.embeddings.items() if torch.equal(e, embedding)), "cond")

    def forward(self, z: Tensor, t: Tensor, encoder_hidden_states: Tensor, down_block_additional_residuals=None,
                mid_block_additional_residual=None) -> SimpleNamespace:  # fmt: skip
        self.controlled += mid_block_additional_residual is not None
        x0 = torch.stack([self.targets[self.branch(e)][i % B] for i, e in enumerate(encoder_hidden_states)])
        ab = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        eps = (z - ab.sqrt() * x0) / (1 - ab).sqrt()
        return SimpleNamespace(sample=eps if self.prediction == "epsilon" else ab.sqrt() * eps - (1 - ab).sqrt() * x0)


@pytest.fixture(scope="module")
def tiny():
    return tiny_components(CPU, seed=0)


def _images(seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(B, 3, 8, 8, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(SIZE, SIZE), mode="bilinear").permute(0, 2, 3, 1).contiguous()


def _setup(tiny, score: str, prediction: str = "epsilon"):
    """The guidance with the oracle, the starting renders, and the oracle's targets: the
    conditional one is the latents of other renders; the empty prompt's lies near the start
    (a twentieth of the way to the target, in a random direction), the negative prompt's as
    far from the empty prompt's as the target, in another random direction."""
    probe = DiffusionGuidance(tiny, GuidanceConfig(score=score, resolution=SIZE))
    start = _images(1)
    with torch.no_grad():
        z0, z_cond = probe.encode(start.permute(0, 3, 1, 2)), probe.encode(_images(2).permute(0, 3, 1, 2))
    g = torch.Generator().manual_seed(3)

    def towards_random(length: Tensor) -> Tensor:
        d = torch.randn(z0.shape, generator=g)
        return d * (length / _norm(d)).view(-1, 1, 1, 1)

    z_uncond = z0 + towards_random(0.05 * _norm(z_cond - z0))
    z_neg = z_uncond + towards_random(_norm(z_cond - z_uncond))
    targets = {"cond": z_cond, "uncond": z_uncond, "neg": z_neg}
    embeddings = {"uncond": probe.embed([""])[0], "neg": probe.embed([NEGATIVE_PROMPT])[0]}
    oracle = Oracle(tiny.alphas_cumprod, embeddings, targets, prediction)
    guide = DiffusionGuidance(
        dataclasses.replace(tiny, unet=oracle, prediction_type=prediction), GuidanceConfig(score=score, resolution=SIZE)
    )
    return guide, oracle, start, targets


def _norm(z: Tensor) -> Tensor:
    """(B,) the length of each view's latents (B, 4, h, w)."""
    return z.flatten(1).norm(dim=1)


def _conditions() -> Tensor:
    cond = torch.zeros(B, SIZE, SIZE, 3)
    cond[:, 20:40, 20:40] = 1.0
    return cond


def _expected(score: str, z: Tensor, t: Tensor, noise: Tensor, targets: dict[str, Tensor], alphas_cumprod: Tensor) -> Tensor:
    """w(t) delta / B for the oracle, written out from the papers' formulas."""
    ab = alphas_cumprod[t].view(-1, 1, 1, 1)
    z_t = ab.sqrt() * z + (1 - ab).sqrt() * noise
    eps = {k: (z_t - ab.sqrt() * v) / (1 - ab).sqrt() for k, v in targets.items()}
    col = lambda mask: mask.view(-1, 1, 1, 1)  # noqa: E731
    if score == "sds":  # DreamFusion, CFG 50
        delta = eps["uncond"] + 50.0 * (eps["cond"] - eps["uncond"]) - noise
    elif score == "nfsd":  # HeadStudio eq. 7: s = 7.5, s_neg = 1
        guided = eps["uncond"] + 7.5 * (eps["cond"] - eps["uncond"])
        delta = torch.where(col(t < 200), guided, guided - eps["neg"])
    else:  # GaussianMotion eqs. 5-6, tau = 400, the classifier score scaled on both sides
        d_n, d_c = eps["uncond"] - noise, eps["cond"] - eps["uncond"]
        delta = torch.where(col(t < 400), 7.5 * d_c, d_n + 7.5 * d_c)
    return (1 - ab) * delta / len(z)


def _loss_and_latent_grad(guide: DiffusionGuidance, images: Tensor, progress: float, seed: int):
    seen: dict[str, Tensor] = {}
    encode = guide.encode

    def keep(x: Tensor) -> Tensor:
        z = encode(x)
        z.retain_grad()
        seen["z"] = z
        return z

    guide.encode = keep  # type: ignore[method-assign]
    loss, info = guide.loss(images, _conditions(), PROMPTS, progress, torch.Generator().manual_seed(seed))
    loss.backward()
    guide.encode = encode  # type: ignore[method-assign]
    return seen["z"], info


@pytest.mark.parametrize(
    "score, prediction",
    [("sds", "epsilon"), ("nfsd", "epsilon"), ("asd", "epsilon"), ("nfsd", "v_prediction")],  # nfsd: all three branches
)
def test_the_latent_gradient_is_the_papers_formula(tiny, score, prediction):
    """For a v-prediction model the oracle answers v = sqrt(abar) eps - sqrt(1 - abar) x0; the
    guidance must turn it back into eps and give the same gradient."""
    guide, oracle, start, targets = _setup(tiny, score, prediction)
    images = start.clone().requires_grad_(True)
    z, info = _loss_and_latent_grad(guide, images, 0.1, seed=7)
    # the draws the guidance makes, in its order: timesteps, then noise
    g = torch.Generator().manual_seed(7)
    t = HEAD_TIMESTEPS.sample(B, 0.1, 1000, g)
    noise = torch.randn(z.shape, generator=g)
    assert torch.equal(info["t"], t)
    assert bool((t < 200).any() and (t >= 400).any() and ((t >= 200) & (t < 400)).any())  # both sides of each switch
    want = _expected(score, z.detach(), t, noise, targets, tiny.alphas_cumprod)
    assert float((z.grad - want).norm() / want.norm()) < 1e-5
    assert oracle.controlled > 0 and images.grad is not None and images.grad.abs().sum() > 0


@pytest.mark.parametrize("score", ["sds", "nfsd", "asd"])
def test_descent_moves_the_renders_latents_to_the_target(tiny, score):
    """A few steps down the loss's gradient on the rendered pixels (each view's step scaled to
    0.005 RMS a pixel, so that one step size serves every score) bring the renders' latents,
    through the VAE encoder, closer to the oracle's conditional target in every view."""
    guide, _, start, targets = _setup(tiny, score)
    images = start.clone().requires_grad_(True)

    def distance() -> Tensor:
        with torch.no_grad():
            return _norm(guide.encode(images.permute(0, 3, 1, 2)) - targets["cond"])

    before = distance()
    for step in range(5):
        images.grad = None
        loss, _ = guide.loss(images, _conditions(), PROMPTS, 0.1, torch.Generator().manual_seed(100 + step))
        loss.backward()
        with torch.no_grad():
            grad = images.grad
            images -= 0.005 * grad / grad.flatten(1).pow(2).mean(1).sqrt().view(-1, 1, 1, 1)
    after = distance()
    assert bool((after < 0.8 * before).all()), (before, after)
