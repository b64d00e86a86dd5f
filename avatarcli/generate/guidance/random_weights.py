"""Stable Diffusion + ControlNet at random weights, built from configs.

``tiny_components``: the same classes, the same call paths and the same loss as the real
models, small enough to run on a CPU in tests and offline smoke runs. ``sd15_components``:
the full Stable Diffusion 1.5 architecture (UNet, ControlNet, VAE or TAESD, CLIP ViT-L text
encoder) for timing and GPU tests, where speed and memory do not depend on the weights.
``save_components`` writes either as diffusers folders that ``--diffusion`` /
``--controlnet`` / ``--encoder`` load through the real ``from_pretrained`` path. Their scores
are noise: an avatar trained against them shows that the machinery runs, not what a prompt
looks like. The tokenizer is a byte-level CLIP tokenizer with no merges whose files are
written here.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from avatarcli.generate.guidance.diffusion import Components, DiffusionSpec, quiet_loading

TEXT_WIDTH = 32


def _byte_alphabet() -> list[str]:
    """The 256 printable stand-ins for bytes that byte-level BPE vocabularies use."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = keep[:]
    n = 0
    for b in range(256):
        if b not in keep:
            chars.append(256 + n)
            n += 1
    return [chr(c) for c in chars]


def write_tokenizer_files(folder: Path) -> tuple[Path, Path]:
    """A CLIP tokenizer vocabulary: every byte, alone and word-final, and the two specials."""
    folder.mkdir(parents=True, exist_ok=True)
    alphabet = _byte_alphabet()
    vocab = {c: i for i, c in enumerate(alphabet)}
    vocab.update({c + "</w>": len(alphabet) + i for i, c in enumerate(alphabet)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return folder / "vocab.json", folder / "merges.txt"


def tiny_components(device: torch.device, seed: int = 0) -> Components:
    """Small random UNet, ControlNet, VAE, CLIP text encoder and tokenizer, plus an SD scheduler."""
    from diffusers import AutoencoderKL, ControlNetModel, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    blocks = (32, 64)
    with torch.random.fork_rng(devices=[]), quiet_loading():
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=32, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=blocks,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=TEXT_WIDTH, attention_head_dim=8, norm_num_groups=8,
        )  # fmt: skip
        controlnet = ControlNetModel(
            in_channels=4, layers_per_block=1, block_out_channels=blocks,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), cross_attention_dim=TEXT_WIDTH,
            attention_head_dim=8, norm_num_groups=8, conditioning_embedding_out_channels=(16, 32),
        )  # fmt: skip
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, block_out_channels=blocks, layers_per_block=1,
            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=8,
        )  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            vocab, merges = write_tokenizer_files(Path(tmp))
            tokenizer = CLIPTokenizer(str(vocab), str(merges))
        config = CLIPTextConfig(
            hidden_size=TEXT_WIDTH, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2,
            vocab_size=len(tokenizer), max_position_embeddings=77, bos_token_id=len(tokenizer) - 2, eos_token_id=len(tokenizer) - 1,
            pad_token_id=len(tokenizer) - 1,
        )  # fmt: skip
        text_encoder = CLIPTextModel(config)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    for m in (unet, controlnet, vae, text_encoder):
        m.requires_grad_(False).eval().to(device)
    return Components(unet, vae, text_encoder, tokenizer, controlnet, scheduler.alphas_cumprod.to(device), "tiny", vae_scale=2)


def sd15_components(device: torch.device, dtype: torch.dtype = torch.float16, tiny_encoder: bool = False, seed: int = 0) -> Components:
    """The SD 1.5 UNet (860 M parameters), an SD 1.5 ControlNet (361 M), the SD VAE (84 M) or
    the TAESD architecture (diffusers ``AutoencoderTiny``, 2.4 M) and the CLIP ViT-L text
    encoder (123 M), at random weights."""
    from diffusers import AutoencoderKL, AutoencoderTiny, ControlNetModel, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    with torch.random.fork_rng(devices=[]), quiet_loading(), torch.device(device):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
        controlnet = ControlNetModel(cross_attention_dim=768, attention_head_dim=8)
        if tiny_encoder:
            vae = AutoencoderTiny()  # the default configuration is TAESD's
        else:
            vae = AutoencoderKL(
                block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4, sample_size=512,
            )  # fmt: skip
        text = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                                            vocab_size=49408, max_position_embeddings=77))  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        vocab, merges = write_tokenizer_files(Path(tmp))
        tokenizer = CLIPTokenizer(str(vocab), str(merges))
    for m in (unet, controlnet, vae, text):
        m.requires_grad_(False).eval().to(device=device, dtype=dtype)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    name = "sd15-random" + ("+taesd" if tiny_encoder else "")
    return Components(unet, vae, text, tokenizer, controlnet, sched.alphas_cumprod.to(device), name, vae_scale=8)


def tiny_autoencoder(seed: int = 0) -> torch.nn.Module:
    """A small random AutoencoderTiny (the TAESD architecture) with the tiny VAE's downscale of 2."""
    from diffusers import AutoencoderTiny

    with torch.random.fork_rng(devices=[]), quiet_loading():
        torch.manual_seed(seed)
        model = AutoencoderTiny(
            encoder_block_out_channels=(16, 16), decoder_block_out_channels=(16, 16),
            num_encoder_blocks=(1, 1), num_decoder_blocks=(1, 1), latent_channels=4,
        )  # fmt: skip
    return model.requires_grad_(False).eval()


def save_components(components: Components, folder: Path) -> DiffusionSpec:
    """Save as a diffusers pipeline folder plus a ControlNet folder; returns the spec that loads them."""
    from diffusers import DDPMScheduler

    base, cn = folder / "base", folder / "controlnet"
    components.unet.save_pretrained(base / "unet")  # type: ignore[attr-defined]
    components.vae.save_pretrained(base / "vae")  # type: ignore[attr-defined]
    components.text_encoder.save_pretrained(base / "text_encoder")  # type: ignore[attr-defined]
    components.tokenizer.save_pretrained(base / "tokenizer")  # type: ignore[attr-defined]
    DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear").save_pretrained(
        base / "scheduler"
    )
    if components.controlnet is not None:
        components.controlnet.save_pretrained(cn)  # type: ignore[attr-defined]
    return DiffusionSpec(str(base), str(cn) if components.controlnet is not None else None)


def write_sd15_folders(folder: Path, device: torch.device) -> dict[str, Path]:
    """The full-size SD 1.5 networks at random weights as diffusers folders, fp16: ``base``
    (UNet, VAE, text encoder, tokenizer, scheduler), ``controlnet`` and ``taesd`` (a tiny
    autoencoder for ``--encoder``). The head's face and the body's OpenPose ControlNets share
    one architecture, so one folder serves both. Built once: a folder already complete is
    reused (other processes wait on a lock)."""
    import fcntl

    from diffusers import AutoencoderTiny

    folder.mkdir(parents=True, exist_ok=True)
    paths = {"base": folder / "base", "controlnet": folder / "controlnet", "taesd": folder / "taesd"}
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "complete").exists():
            comps = sd15_components(device, torch.float16)
            save_components(comps, folder)
            del comps
            with torch.random.fork_rng(devices=[]), quiet_loading(), torch.device(device):
                torch.manual_seed(0)
                AutoencoderTiny().to(torch.float16).save_pretrained(paths["taesd"])
            if device.type == "cuda":
                torch.cuda.empty_cache()
            (folder / "complete").write_text("ok\n")
    return paths
