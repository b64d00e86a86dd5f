"""Where a `avatar generate` training step spends its time on the GPU, and where it waits.

    python bench/profile_step.py [--kinds head,body] [--steps 5]

Full-size SD 1.5 networks at random weights (as in generate_step.py), eager mode. Reports:
the places in the step that make the CPU wait for the GPU (CUDA sync debug mode), the GPU's
busy fraction over a few steps (kernel time against wall time), the most expensive kernels,
and the VAE encoder's forward + backward with cuDNN autotuning off and on, next to the tiny
autoencoder (AutoencoderTiny, the TAESD architecture).
"""

from __future__ import annotations

import argparse
import collections
import time
import traceback
import warnings

import torch
from generate_step import bench_trainer

from avatarcli.generate.guidance.diffusion import DiffusionGuidance, GuidanceConfig
from avatarcli.generate.guidance.random_weights import sd15_components
from avatarcli.generate.guidance.scores import BODY_TIMESTEPS, HEAD_TIMESTEPS
from avatarcli.generate.trainer import Trainer
from avatarcli.templates.loading import load_template

from common import time_it, write_result


def sync_points(trainer: Trainer) -> dict[str, int]:
    """Lines of the project's code that made the CPU wait for the GPU during one step."""
    seen: collections.Counter[str] = collections.Counter()

    def record(message, category, filename, lineno, file=None, line=None) -> None:
        frames = [f for f in traceback.extract_stack()[:-1] if "avatarcli" in f.filename]
        where = f"{frames[-1].filename.split('avatarcli/')[-1]}:{frames[-1].lineno} {frames[-1].line}" if frames else f"{filename}:{lineno}"
        seen[where] += 1

    old = warnings.showwarning
    warnings.showwarning = record
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = record
            torch.cuda.set_sync_debug_mode("warn")
            trainer.train_step()
            torch.cuda.set_sync_debug_mode("default")
    finally:
        warnings.showwarning = old
    return dict(seen)


def profile(trainer: Trainer, steps: int) -> dict:
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            trainer.train_step()
        torch.cuda.synchronize()
        wall = (time.perf_counter() - t0) * 1e3 / steps
    events = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    kernel_ms = sum(e.self_device_time_total for e in events) / 1e3 / steps
    top = sorted(events, key=lambda e: e.self_device_time_total, reverse=True)[:20]
    return {
        "wall_ms_per_step": wall,
        "gpu_busy_ms_per_step": kernel_ms,
        "top_kernels_ms_per_step": {e.key[:90]: e.self_device_time_total / 1e3 / steps for e in top},
    }


def encoder_parts() -> dict[str, float]:
    from diffusers import AutoencoderTiny

    dev = torch.device("cuda")
    comps = sd15_components(dev)
    x = torch.rand(8, 3, 512, 512, device=dev, dtype=torch.float16, requires_grad=True)

    def kl() -> None:
        comps.vae.encode(x * 2 - 1).latent_dist.mean.float().sum().backward()

    out = {}
    torch.backends.cudnn.benchmark = False
    out["VAE (KL) encode f+b, cudnn heuristics"] = time_it(kl, warmup=3, repeat=10)["median_ms"]
    torch.backends.cudnn.benchmark = True
    out["VAE (KL) encode f+b, cudnn benchmark"] = time_it(kl, warmup=3, repeat=10)["median_ms"]
    tiny = AutoencoderTiny().to(dev, torch.float16).requires_grad_(False).eval()

    def taesd() -> None:
        tiny.encode(x * 2 - 1).latents.float().sum().backward()

    out["tiny autoencoder encode f+b, cudnn benchmark"] = time_it(taesd, warmup=3, repeat=10)["median_ms"]
    torch.backends.cudnn.benchmark = False
    out["tiny autoencoder encode f+b, cudnn heuristics"] = time_it(taesd, warmup=3, repeat=10)["median_ms"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kinds", default="head,body")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--cudnn-benchmark", action="store_true")
    args = ap.parse_args()
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    results: dict = {"cudnn_benchmark": args.cudnn_benchmark}
    for kind in args.kinds.split(","):
        score = "nfsd" if kind == "head" else "asd"
        gcfg = GuidanceConfig(score=score, resolution=512, timesteps=HEAD_TIMESTEPS if kind == "head" else BODY_TIMESTEPS)
        trainer = bench_trainer(
            kind, load_template(kind, device=torch.device("cuda")), DiffusionGuidance(sd15_components(torch.device("cuda")), gcfg)
        )
        for _ in range(5):
            trainer.train_step()
        r = {"syncs": sync_points(trainer), **profile(trainer, args.steps)}
        results[kind] = r
        print(f"\n== {kind}: {r['wall_ms_per_step']:.1f} ms/step wall, GPU busy {r['gpu_busy_ms_per_step']:.1f} ms")
        for where, n in r["syncs"].items():
            print(f"  sync x{n}: {where}")
        for k, v in r["top_kernels_ms_per_step"].items():
            print(f"  {v:7.2f} ms  {k}")
        del trainer
        torch.cuda.empty_cache()
    results["encoders"] = encoder_parts()
    for k, v in results["encoders"].items():
        print(f"{v:7.1f} ms  {k}")
    write_result("profile_step", results)


if __name__ == "__main__":
    main()
