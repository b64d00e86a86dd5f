"""Score distillation from a Stable Diffusion 1.x model with a ControlNet, through diffusers.

Weights load with ``from_pretrained`` from a Hugging Face hub id or a local folder laid out
like a diffusers pipeline (``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``,
``scheduler/``); the ControlNet is a separate id or folder. Of the scheduler only its
``alphas_cumprod`` and ``prediction_type`` are used: a v-prediction model's outputs are turned
into noise predictions, so every score works on epsilon. When the hub is not reachable, only
already-cached files are looked at, and a failure is one clear error naming the options.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import Tensor

from avatarcli.devices import to_device
from avatarcli.errors import AvatarError
from avatarcli.generate.distributed import whole
from avatarcli.generate.guidance.protocol import Scene
from avatarcli.generate.guidance.scores import (
    GUIDANCE_SCALES,
    HEAD_TIMESTEPS,
    NEGATIVE_PROMPT,
    SCORES,
    TimestepSchedule,
    asd_delta,
    distillation_loss,
    nfsd_delta,
    sds_delta,
    sds_weight,
)


@dataclass(frozen=True)
class DiffusionSpec:
    """Where the weights come from: hub ids or local folders."""

    base: str
    controlnet: str | None
    controlnet_subfolder: str | None = None
    vae: str | None = None  # used when the base has no VAE of its own
    # a tiny autoencoder (diffusers AutoencoderTiny, e.g. madebyollin/taesd) that encodes the
    # renders in place of the VAE: its latents approximate the VAE's, at a fraction of the cost
    encoder: str | None = None


DEFAULT_SPECS = {
    "head": DiffusionSpec(
        "SG161222/Realistic_Vision_V5.1_noVAE", "CrucibleAI/ControlNetMediaPipeFace", "diffusion_sd15", "stabilityai/sd-vae-ft-mse"
    ),
    "body": DiffusionSpec("stable-diffusion-v1-5/stable-diffusion-v1-5", "lllyasviel/control_v11p_sd15_openpose"),
}


PREDICTION_TYPES = ("epsilon", "v_prediction")


def check_prediction_type(prediction_type: str, name: str) -> str:
    """``prediction_type`` (a diffusers scheduler's) if the scores can use it.

    Raises:
        AvatarError: a model that predicts something else (the clean sample).
    """
    if prediction_type not in PREDICTION_TYPES:
        raise AvatarError(
            f"{name}: its UNet predicts {prediction_type!r} (the scheduler's prediction_type); "
            f"score distillation takes {' or '.join(PREDICTION_TYPES)} models"
        )
    return prediction_type


@dataclass
class Components:
    """The networks of one diffusion model, ready on a device."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    controlnet: torch.nn.Module | None
    alphas_cumprod: Tensor
    name: str
    vae_scale: int = 8  # image pixels per latent pixel
    prediction_type: str = "epsilon"  # what the UNet predicts: "epsilon" or "v_prediction" (the scheduler's config)

    def __post_init__(self) -> None:
        check_prediction_type(self.prediction_type, self.name)

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Silence the libraries' progress bars and warnings while loading."""
    import diffusers
    import transformers

    names = ("diffusers", "transformers", "huggingface_hub")
    old = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for n, level in old.items():
            logging.getLogger(n).setLevel(level)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers (so downloads are worth trying)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def load_components(spec: DiffusionSpec, device: torch.device, dtype: torch.dtype | None = None) -> Components:
    """Load a base model and ControlNet with diffusers / transformers ``from_pretrained``.

    Raises:
        AvatarError: the weights are neither local nor downloadable.
    """
    from diffusers import AutoencoderKL, AutoencoderTiny, ControlNetModel, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    if dtype is None:
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    local_only = not hub_reachable()

    def get(cls: type, name: str, subfolder: str | None, **kw: object) -> object:
        sub = {"subfolder": subfolder} if subfolder else {}
        return cls.from_pretrained(name, local_files_only=local_only, **sub, **kw)  # type: ignore[attr-defined]

    where = "the Hugging Face cache" if local_only else "the Hugging Face hub or its cache"
    try:
        with quiet_loading():
            scheduler = get(DDPMScheduler, spec.base, "scheduler")
            prediction = check_prediction_type(str(scheduler.config.get("prediction_type", "epsilon")), spec.base)  # type: ignore[attr-defined]
            unet = get(UNet2DConditionModel, spec.base, "unet", torch_dtype=dtype)
            if spec.encoder is not None:
                vae = get(AutoencoderTiny, spec.encoder, None, torch_dtype=dtype)
            else:
                try:
                    vae = get(AutoencoderKL, spec.base, "vae", torch_dtype=dtype)
                except OSError:
                    if spec.vae is None:
                        raise
                    vae = get(AutoencoderKL, spec.vae, None, torch_dtype=dtype)
            text_encoder = get(CLIPTextModel, spec.base, "text_encoder", torch_dtype=dtype)
            tokenizer = get(CLIPTokenizer, spec.base, "tokenizer")
            controlnet = get(ControlNetModel, spec.controlnet, spec.controlnet_subfolder, torch_dtype=dtype) if spec.controlnet else None
    except (OSError, ValueError, KeyError) as exc:
        names = " / ".join(repr(n) for n in (spec.base, spec.controlnet, spec.encoder) if n is not None)
        raise AvatarError(
            f"cannot load diffusion weights {names} from {where}: pass local folders with --diffusion and --controlnet"
            f"{' and --encoder' if spec.encoder else ''}, or use --guidance tiny for an offline smoke run (random weights)"
        ) from exc
    modules = [m for m in (unet, vae, text_encoder, controlnet) if m is not None]
    for m in modules:
        m.requires_grad_(False).eval().to(device)  # type: ignore[attr-defined]
    return Components(unet, vae, text_encoder, tokenizer, controlnet, scheduler.alphas_cumprod.to(device), spec.base,  # type: ignore[arg-type,attr-defined]
                      downscale(vae), prediction)  # fmt: skip


def downscale(vae: torch.nn.Module) -> int:
    """Image pixels per latent pixel of a VAE (AutoencoderKL) or tiny autoencoder (AutoencoderTiny)."""
    config = vae.config  # type: ignore[attr-defined]
    blocks = config.block_out_channels if hasattr(config, "block_out_channels") else config.encoder_block_out_channels
    return 2 ** (len(blocks) - 1)


@dataclass
class GuidanceConfig:
    """Score distillation settings (defaults: the head recipe's NFSD; README.md names the recipes).

    ``guidance_scale`` None takes the score's own (``scores.GUIDANCE_SCALES``: sds 50, nfsd
    7.5, asd 7.5); ``conditioning_scale`` is the ControlNet's strength (the recipes set it:
    1.5 for heads, 1.0 for bodies).
    """

    score: str = "nfsd"
    guidance_scale: float | None = None
    negative_scale: float = 1.0
    negative_prompt: str = NEGATIVE_PROMPT
    nfsd_threshold: int = 200
    asd_tau: int = 400
    timesteps: TimestepSchedule = field(default_factory=lambda: HEAD_TIMESTEPS)
    resolution: int = 512
    conditioning_scale: float = 1.0
    low_memory: bool = False

    def __post_init__(self) -> None:
        if self.score not in SCORES:
            raise AvatarError(f"unknown score {self.score!r}: choose {', '.join(SCORES)}")

    @property
    def scale(self) -> float:
        """The classifier-free guidance scale in use."""
        return float(self.guidance_scale if self.guidance_scale is not None else GUIDANCE_SCALES[self.score])


def _latents(encoded: object) -> Tensor:
    """The latents of an encoder output: the mean of the VAE's distribution, or the tiny
    autoencoder's latents (already on the UNet's scale: its scaling factor is 1)."""
    dist = getattr(encoded, "latent_dist", None)
    return dist.mean if dist is not None else encoded.latents  # type: ignore[attr-defined]


class DiffusionGuidance:
    """Turns rendered views into a score-distillation loss.

    Args:
        components: the diffusion model's networks.
        config: score variant and its settings.
    """

    def __init__(self, components: Components, config: GuidanceConfig) -> None:
        self.c = components
        self.config = config
        self.device = components.alphas_cumprod.device
        self._embeddings: dict[str, Tensor] = {}
        self._encode = components.vae.encode  # type: ignore[attr-defined]
        self._dtype = components.unet.dtype  # type: ignore[attr-defined]
        self._compiled = False
        if self.device.type == "cuda":
            # channels-last helps the UNet and ControlNet a little; it slows the VAE (its
            # GroupNorms) by half on an H200 (bench/RESULTS.md), so the VAE stays contiguous
            for m in (components.unet, components.controlnet):
                if m is not None:
                    m.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def compile(self) -> None:
        """torch.compile the UNet, ControlNet and encoder: a few minutes once, then about a
        third off their time (bench/RESULTS.md)."""
        if self._compiled:
            return
        self._compiled = True
        self.c.unet = torch.compile(self.c.unet)  # type: ignore[assignment]
        if self.c.controlnet is not None:
            self.c.controlnet = torch.compile(self.c.controlnet)  # type: ignore[assignment]
        self._encode = torch.compile(self._encode)

    @property
    def num_timesteps(self) -> int:
        return int(self.c.alphas_cumprod.shape[0])

    @property
    def resolution(self) -> int:
        return self.config.resolution

    @property
    def name(self) -> str:
        return f"{self.c.name} ({self.config.score})"

    def wants_conditions(self) -> bool:
        return self.c.controlnet is not None

    def embed(self, prompts: list[str]) -> Tensor:
        """Text embeddings (B, 77, D), each distinct prompt encoded once."""
        new = [p for p in dict.fromkeys(prompts) if p not in self._embeddings]
        if new:
            tok = self.c.tokenizer(new, padding="max_length", max_length=77, truncation=True, return_tensors="pt")  # type: ignore[operator]
            with torch.no_grad():
                out = self.c.text_encoder(tok.input_ids.to(self.device))[0]
            for p, e in zip(new, out, strict=True):
                self._embeddings[p] = e
        return torch.stack([self._embeddings[p] for p in prompts])

    def encode(self, images: Tensor) -> Tensor:
        """VAE latents (B, 4, r/8, r/8) of images (B, 3, r, r) in [0, 1], differentiable."""
        vae = self.c.vae
        x = (images * 2.0 - 1.0).to(vae.dtype)  # type: ignore[attr-defined]
        if self.config.low_memory:
            from torch.utils.checkpoint import checkpoint

            parts = [checkpoint(lambda y: _latents(self._encode(y)), x[i : i + 1], use_reentrant=False) for i in range(len(x))]
            latents = torch.cat(parts)
        else:
            latents = _latents(self._encode(x))
        return latents.float() * self.c.scaling_factor

    def predict(self, latents_t: Tensor, t: Tensor, embeddings: list[Tensor], condition: Tensor | None) -> list[Tensor]:
        """Noise predictions (B, 4, h, w) for each embedding batch (B, 77, D), with the ControlNet
        condition (B, 3, r, r) or None, for noisy latents ``latents_t`` (B, 4, h, w) at timesteps
        ``t`` (B,). A v-prediction UNet's outputs v = sqrt(abar) eps - sqrt(1 - abar) x0 come
        back as eps = sqrt(abar) v + sqrt(1 - abar) x_t."""
        unet, cn = self.c.unet, self.c.controlnet
        dtype = self._dtype
        k = len(embeddings)
        groups = [list(range(k))] if not self.config.low_memory else [[i] for i in range(k)]
        outs: list[Tensor] = []
        for group in groups:
            n = len(group)
            z = latents_t.to(dtype).repeat(n, 1, 1, 1)
            tt = t.repeat(n)
            emb = torch.cat([embeddings[i] for i in group]).to(dtype)
            kwargs = {}
            if cn is not None and condition is not None:
                down, mid = cn(z, tt, encoder_hidden_states=emb, controlnet_cond=condition.to(dtype).repeat(n, 1, 1, 1),
                               conditioning_scale=self.config.conditioning_scale, return_dict=False)  # fmt: skip
                kwargs = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
            eps = unet(z, tt, encoder_hidden_states=emb, **kwargs).sample  # type: ignore[operator]
            outs.extend(eps.float().chunk(n))
        if self.c.prediction_type == "v_prediction":
            ab = self.c.alphas_cumprod[t].float().view(-1, 1, 1, 1)
            z_t = latents_t.float()
            outs = [ab.sqrt() * v + (1 - ab).sqrt() * z_t for v in outs]
        return outs

    def loss(
        self,
        images: Tensor,
        conditions: Tensor | None,
        prompts: list[str],
        progress: float,
        generator: torch.Generator,
        scene: Scene | None = None,
    ) -> tuple[Tensor, dict]:
        """See :meth:`avatarcli.generate.guidance.protocol.Guidance.loss`; of ``scene`` only the share is used."""
        cfg = self.config
        b = images.shape[0]
        r = cfg.resolution
        x = F.interpolate(images.permute(0, 3, 1, 2), size=(r, r), mode="bilinear", align_corners=False)
        cond = None
        if conditions is not None:
            cond = F.interpolate(conditions.permute(0, 3, 1, 2), size=(r, r), mode="bilinear", align_corners=False)
        latents = self.encode(x)
        share = scene.share if scene is not None else whole(b)
        t = to_device(share.take(cfg.timesteps.sample(share.total, progress, self.num_timesteps, generator)), self.device)
        noise = to_device(share.take(torch.randn((share.total, *latents.shape[1:]), generator=generator)), self.device)
        ab = self.c.alphas_cumprod[t].float().view(-1, 1, 1, 1)
        with torch.no_grad():
            z_t = ab.sqrt() * latents.detach() + (1 - ab).sqrt() * noise
            embeds = [self.embed([""] * b), self.embed(prompts)]
            if cfg.score == "nfsd":
                embeds.append(self.embed([cfg.negative_prompt] * b))
            eps = self.predict(z_t, t, embeds, cond)
            if cfg.score == "sds":
                delta = sds_delta(eps[0], eps[1], noise, cfg.scale)
            elif cfg.score == "nfsd":
                delta = nfsd_delta(eps[0], eps[1], eps[2], t, cfg.scale, cfg.negative_scale, cfg.nfsd_threshold)
            else:
                delta = asd_delta(eps[0], eps[1], noise, t, cfg.scale, cfg.asd_tau)
            grad = torch.nan_to_num(sds_weight(self.c.alphas_cumprod.float(), t) * delta)
        return distillation_loss(latents, grad, share.total), {"t": t, "elements": latents[0].numel()}
