"""Time per `avatar generate` training step with full-size Stable Diffusion 1.5 networks.

    python bench/generate_step.py [--steps 20] [--kinds head,body] [--low-memory] [--compile] [--tiny-encoder]

UNet, ControlNet, VAE and CLIP text encoder are built from the SD 1.5 architecture with random
weights (speed does not depend on the weights), in fp16 on the GPU. The avatar is a real
`avatar init` one (K = 10). Batch 8, renders at 1024x1024, 512x512 into the diffusion model,
the head recipe (NFSD: three noise predictions per view at t >= 200) and the body recipe's
animation stage (ASD: two). Reports the median step time, peak GPU memory and the parts
measured on their own. Targets: head <= 60 ms, body <= 90 ms, peak <= 20 GiB.
--tiny-encoder encodes with the TAESD architecture (diffusers AutoencoderTiny, `--encoder`)
instead of the VAE.
With --cpu-tiny instead: 20 steps of `--guidance tiny` at 64x64 on the CPU (target < 1 min).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from avatarcli.generate.config import recipe
from avatarcli.generate.guidance.diffusion import Components, DiffusionGuidance, GuidanceConfig
from avatarcli.generate.guidance.random_weights import sd15_components, tiny_components
from avatarcli.generate.guidance.scores import BODY_TIMESTEPS, HEAD_TIMESTEPS
from avatarcli.generate.trainer import Trainer
from avatarcli.model.binding import deform
from avatarcli.model.initialize import init_avatar
from avatarcli.render.cameras import Cameras
from avatarcli.render.rasterize import render_gaussians
from avatarcli.templates.loading import load_template
from avatarcli.templates.template import Template

from common import time_it, write_result


def params_m(m: torch.nn.Module) -> float:
    return sum(p.numel() for p in m.parameters()) / 1e6


def bench_trainer(kind: str, template: Template, guide: DiffusionGuidance, compile_: bool = False) -> Trainer:
    """The recipe's animation stage on a fresh `avatar init` avatar (K = 10), without growth
    (it changes the count between runs: the steady state is timed)."""
    av = init_avatar(template, points_per_triangle=10, seed=0)
    cfg = recipe(kind, "a knight in shining armour", stages=("animate",), steps=100_000, checkpoint_every=0)
    cfg.densify.start = 10**9
    cfg.compile = compile_
    return Trainer(av, template, guide, cfg)


def bench_kind(kind: str, comps: Components, steps: int, low_memory: bool, compile_: bool) -> dict:
    device = torch.device("cuda")
    tpl = load_template(kind, device=device)
    score = "nfsd" if kind == "head" else "asd"
    schedule = HEAD_TIMESTEPS if kind == "head" else BODY_TIMESTEPS
    gcfg = GuidanceConfig(score=score, resolution=512, low_memory=low_memory, timesteps=schedule)
    guide = DiffusionGuidance(comps, gcfg)
    if compile_:
        guide.compile()
    trainer = bench_trainer(kind, tpl, guide, compile_)
    cfg = trainer.cfg
    warm = 25 if compile_ else 5
    for _ in range(warm):
        trainer.train_step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        trainer.train_step()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    peak = torch.cuda.max_memory_allocated() / 2**30

    # the parts on their own
    b, res = cfg.batch, cfg.resolution
    pose = trainer.poses(b, "animate")
    posed = tpl.pose(pose)
    cams = trainer.views(posed, res).cameras
    g, binding = trainer.model.gaussians(), trainer.model.binding()

    def render_fb() -> None:
        img, _, _ = render_gaussians(deform(g, binding, tpl, posed), cams, torch.ones(3, device=device))
        img.sum().backward()

    small = Cameras(cams.viewmats, cams.Ks * torch.tensor([0.5, 0.5, 1.0], device=device)[:, None], 512, 512)
    cond_renderer = trainer.conditions

    def conditions() -> None:
        with torch.no_grad():
            cond_renderer(posed, small)

    x = torch.rand(b, 3, 512, 512, device=device, requires_grad=True)

    def vae_fb() -> None:
        guide.encode(x).sum().backward()

    z = torch.randn(b, 4, 64, 64, device=device)
    t = torch.randint(20, 800, (b,), device=device)
    emb = [guide.embed(["x"] * b)] * (3 if score == "nfsd" else 2)
    cond = torch.rand(b, 3, 512, 512, device=device)

    def unet() -> None:
        with torch.no_grad():
            guide.predict(z, t, emb, cond)

    named = (("render 8 views f+b", render_fb), ("conditions", conditions), ("encode f+b", vae_fb), ("UNet+ControlNet", unet))
    parts = {name: time_it(fn, warmup=3, repeat=10)["median_ms"] for name, fn in named}
    step = statistics.median(times)
    parts["rest"] = step - sum(parts.values())
    return {
        "gaussians": trainer.model.gaussians().means.shape[0], "score": score, "batch": b, "render_size": res,
        "low_memory": low_memory, "compile": compile_,
        "step_ms_median": step, "step_ms_min": min(times), "peak_gib": peak, "parts_ms": parts,
        "steps_10k_minutes": step * 10_000 / 60_000,
    }  # fmt: skip


def cpu_tiny(steps: int) -> dict:
    dev = torch.device("cpu")
    tpl = load_template("head")
    av = init_avatar(tpl, points_per_triangle=2, seed=0)
    guide = DiffusionGuidance(tiny_components(dev), GuidanceConfig(resolution=64))
    cfg = recipe("head", "a knight", steps=steps, batch=4, resolution=64, checkpoint_every=0)
    trainer = Trainer(av, tpl, guide, cfg)
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    return {"steps": steps, "seconds": time.perf_counter() - t0, "gaussians": len(av), "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--kinds", default="head,body")
    ap.add_argument("--low-memory", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--cpu-tiny", action="store_true")
    ap.add_argument("--tiny-encoder", action="store_true")
    args = ap.parse_args()
    if args.cpu_tiny:
        r = cpu_tiny(args.steps)
        write_result("generate_cpu_tiny", r)
        print(f"CPU, tiny guidance, 64x64: {r['steps']} steps in {r['seconds']:.1f} s ({r['gaussians']:,} Gaussians)")
        return
    comps = sd15_components(torch.device("cuda"), tiny_encoder=args.tiny_encoder)
    nets = (("UNet", comps.unet), ("ControlNet", comps.controlnet), ("VAE", comps.vae), ("text", comps.text_encoder))
    sizes = {n: params_m(m) for n, m in nets}
    print("random SD 1.5, parameters (M): " + ", ".join(f"{n} {v:.0f}" for n, v in sizes.items()))
    results = {}
    for k in args.kinds.split(","):
        # a fresh copy of the networks per kind: compiling wraps (and so changes) the modules
        nets = sd15_components(torch.device("cuda"), tiny_encoder=args.tiny_encoder) if results else comps
        results[k] = bench_kind(k, nets, args.steps, args.low_memory, args.compile)
        r = results[k]
        print(f"{k}: {r['step_ms_median']:.1f} ms/step, peak {r['peak_gib']:.1f} GiB", flush=True)
    tag = "generate_step" + ("_lowmem" if args.low_memory else "") + ("_compiled" if args.compile else "")
    tag += "_taesd" if args.tiny_encoder else ""
    write_result(tag, results)
    for kind, r in results.items():
        parts = ", ".join(f"{k} {v:.1f}" for k, v in r["parts_ms"].items())
        print(f"{kind}: {r['step_ms_median']:.1f} ms/step (min {r['step_ms_min']:.1f}), peak {r['peak_gib']:.1f} GiB, "
              f"10k steps {r['steps_10k_minutes']:.1f} min | {parts}")  # fmt: skip


if __name__ == "__main__":
    main()
