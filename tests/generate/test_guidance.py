"""Diffusion guidance with tiny models: the real loading path, the loss, and failures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from avatarcli.errors import AvatarError
from avatarcli.generate.guidance.diffusion import DiffusionGuidance, DiffusionSpec, GuidanceConfig, load_components
from avatarcli.generate.guidance.random_weights import save_components, tiny_autoencoder, tiny_components

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny():
    return tiny_components(CPU, seed=0)


def _loss(components, images, score="nfsd"):
    guide = DiffusionGuidance(components, GuidanceConfig(score=score, resolution=64))
    cond = torch.zeros(2, 64, 64, 3)
    cond[:, 20:40, 20:40] = 1.0
    return guide.loss(images, cond, ["a knight, front view", "a knight, back view"], 0.2, torch.Generator().manual_seed(3))


def test_saved_pipeline_loads_through_from_pretrained(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = save_components(tiny, tmp_path)
    loaded = load_components(spec, CPU)
    images = torch.rand(2, 48, 48, 3, generator=torch.Generator().manual_seed(0))
    a, _ = _loss(tiny, images)
    b, _ = _loss(loaded, images)
    assert torch.allclose(a, b)
    assert loaded.vae_scale == 2 and loaded.controlnet is not None


def test_tiny_autoencoder_encodes_in_place_of_the_vae(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = save_components(tiny, tmp_path)
    tiny_autoencoder(seed=1).save_pretrained(tmp_path / "taesd")
    spec = DiffusionSpec(spec.base, spec.controlnet, encoder=str(tmp_path / "taesd"))
    loaded = load_components(spec, CPU)
    assert type(loaded.vae).__name__ == "AutoencoderTiny" and loaded.vae_scale == 2 and loaded.scaling_factor == 1.0
    images = torch.rand(2, 64, 64, 3, generator=torch.Generator().manual_seed(1), requires_grad=True)
    loss, _ = _loss(loaded, images)
    loss.backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    # the latents are the tiny encoder's, not the VAE's
    x = torch.rand(1, 3, 64, 64)
    guide = DiffusionGuidance(loaded, GuidanceConfig(resolution=64))
    assert torch.allclose(guide.encode(x), loaded.vae.encode(x * 2 - 1).latents)
    assert not torch.allclose(guide.encode(x), DiffusionGuidance(tiny, GuidanceConfig(resolution=64)).encode(x))


def test_missing_encoder_is_named_in_the_error(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = save_components(tiny, tmp_path)
    with pytest.raises(AvatarError, match="--encoder"):
        load_components(DiffusionSpec(spec.base, spec.controlnet, encoder=str(tmp_path / "missing")), CPU)


@pytest.mark.parametrize("score", ["sds", "nfsd", "asd"])
def test_gradients_reach_the_images(tiny, score):
    images = torch.rand(2, 64, 64, 3, generator=torch.Generator().manual_seed(1), requires_grad=True)
    loss, info = _loss(tiny, images, score)
    loss.backward()
    assert torch.isfinite(loss) and images.grad is not None and images.grad.abs().sum() > 0
    assert info["t"].shape == (2,)


def test_prompt_embeddings_are_cached(tiny):
    guide = DiffusionGuidance(tiny, GuidanceConfig(resolution=64))
    e1 = guide.embed(["a", "b", "a"])
    assert e1.shape[0] == 3 and torch.equal(e1[0], e1[2]) and not torch.equal(e1[0], e1[1])
    assert len(guide._embeddings) == 2


def test_low_memory_path_gives_the_same_loss(tiny):
    images = torch.rand(2, 64, 64, 3, generator=torch.Generator().manual_seed(2))
    a = DiffusionGuidance(tiny, GuidanceConfig(resolution=64)).loss(
        images, torch.zeros(2, 64, 64, 3), ["x", "y"], 0.1, torch.Generator().manual_seed(0)
    )[0]
    b = DiffusionGuidance(tiny, GuidanceConfig(resolution=64, low_memory=True)).loss(
        images, torch.zeros(2, 64, 64, 3), ["x", "y"], 0.1, torch.Generator().manual_seed(0)
    )[0]
    assert torch.allclose(a, b, rtol=1e-4)


def _set_prediction_type(spec, value: str) -> None:
    path = Path(spec.base) / "scheduler" / "scheduler_config.json"
    config = json.loads(path.read_text())
    config["prediction_type"] = value
    path.write_text(json.dumps(config))


def test_the_schedulers_prediction_type_is_read(tiny, tmp_path, monkeypatch):
    """A v-prediction model is read as one (its outputs are converted to noise predictions,
    tests/generate/test_guidance_oracle.py); a model that predicts the clean sample is
    refused in one line, before its networks are loaded."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = save_components(tiny, tmp_path)
    assert load_components(spec, CPU).prediction_type == "epsilon"
    _set_prediction_type(spec, "v_prediction")
    assert load_components(spec, CPU).prediction_type == "v_prediction"
    _set_prediction_type(spec, "sample")
    shutil.rmtree(Path(spec.base) / "unet")  # not looked at: the scheduler is read first
    with pytest.raises(AvatarError, match="predicts 'sample'") as err:
        load_components(spec, CPU)
    assert "\n" not in str(err.value)


def test_missing_weights_are_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(AvatarError, match="--guidance tiny"):
        load_components(DiffusionSpec(str(tmp_path / "nothing"), None), CPU)
    with pytest.raises(AvatarError, match="cannot load diffusion weights"):
        load_components(DiffusionSpec("someone/not-cached-anywhere", "someone/else"), CPU)


def test_unknown_score_is_refused():
    with pytest.raises(AvatarError):
        GuidanceConfig(score="vsd")
