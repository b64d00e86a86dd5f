"""The remaining levers on a generation step on one GPU, each measured alone.

    python bench/step_levers.py --part fp8      # UNet + ControlNet, 24 latents: FP8 matrix products
    python bench/step_levers.py --part vae      # VAE encoder f+b compiled, contiguous vs channels-last
    python bench/step_levers.py --part step     # the head step (--compile --encoder) at batch 8 and 4

``fp8`` needs torchao (not a dependency of the package): carry its wheel in ``.whl/`` as
for ``make gpu-test``. ``fp8``: the UNet's and ControlNet's large linear layers (attention projections and
feed-forward; not the time embeddings, whose rows are one per latent) quantised with torchao's
dynamic FP8 (e4m3 activations and weights, per-tensor scales in fp16 or per-row in bf16),
compiled, against the compiled fp16 / bf16 networks, and how far each one's noise prediction
moves from the eager fp16 one (relative L2 and cosine over the batch, random weights).
``step``: wall time per step, the GPU's kernel time per step (profiler), and the places that
make the CPU wait, at batch 8 and at batch 4 (one GPU's share of two): when the batch-4 step
is much longer than its kernel time, a step on two GPUs is bound by per-step work that does not
split.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable
from typing import Any

import torch

from avatarcli.generate.guidance.random_weights import sd15_components

from common import time_it, write_result


def big_linear(module: torch.nn.Module, name: str) -> bool:
    """Linear layers worth FP8: wide, and fed one row per token (not the per-latent time embeddings)."""
    return isinstance(module, torch.nn.Linear) and module.in_features >= 320 and "time_emb" not in name and "time_embedding" not in name


def fp8_part() -> dict:
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, PerTensor, quantize_

    dev = torch.device("cuda")
    comps = sd15_components(dev)
    z = torch.randn(24, 4, 64, 64, device=dev)
    t = torch.randint(20, 800, (24,), device=dev)
    emb = torch.randn(24, 77, 768, device=dev)
    cond = torch.rand(24, 3, 512, 512, device=dev)

    def call(unet, cn, dtype):
        zz = z.to(dtype).contiguous(memory_format=torch.channels_last)
        c = cond.to(dtype).contiguous(memory_format=torch.channels_last)
        down, mid = cn(zz, t, encoder_hidden_states=emb.to(dtype), controlnet_cond=c, return_dict=False)
        return unet(
            zz, t, encoder_hidden_states=emb.to(dtype), down_block_additional_residuals=down, mid_block_additional_residual=mid
        ).sample

    base_unet, base_cn = comps.unet.to(memory_format=torch.channels_last), comps.controlnet.to(memory_format=torch.channels_last)
    with torch.no_grad():
        reference = call(base_unet, base_cn, torch.float16).float()
    results: dict = {}
    variants = (("fp8 per-row (bf16) compiled", torch.bfloat16, "row"), ("fp8 per-tensor (fp16) compiled", torch.float16, "tensor"),
                ("fp16 compiled", torch.float16, None), ("bf16 compiled", torch.bfloat16, None))  # fmt: skip
    for key, dtype, fp8 in variants:
        unet, cn = copy.deepcopy(base_unet).to(dtype), copy.deepcopy(base_cn).to(dtype)
        if fp8 is not None:
            # torchao's own inductor settings (set_inductor_config) made one compile run past 10 minutes
            config = Float8DynamicActivationFloat8WeightConfig(
                granularity=PerTensor() if fp8 == "tensor" else PerRow(), set_inductor_config=False
            )
            for m in (unet, cn):
                quantize_(m, config, filter_fn=big_linear)
        unet, cn = torch.compile(unet), torch.compile(cn)
        try:
            t0 = time.perf_counter()
            with torch.no_grad():
                out = call(unet, cn, dtype).float()
            torch.cuda.synchronize()
            first = time.perf_counter() - t0
            with torch.no_grad():
                ms = time_it(lambda unet=unet, cn=cn, dtype=dtype: call(unet, cn, dtype), warmup=3, repeat=10)["median_ms"]
        except Exception as exc:  # a variant that fails here is reported, not fatal
            print(f"{key}: failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})", flush=True)
            continue
        err = ((out - reference).norm() / reference.norm()).item()
        cos = torch.nn.functional.cosine_similarity(out.flatten(1), reference.flatten(1)).min().item()
        results[key] = {"ms": ms, "first_call_s": first, "relative_error": err, "min_cosine": cos}
        print(f"{key}: {ms:.1f} ms (first call {first:.0f} s), vs eager fp16: relative error {err:.4f}, min cosine {cos:.5f}", flush=True)
        del unet, cn
        torch.cuda.empty_cache()
    return results


def vae_part() -> dict:
    dev = torch.device("cuda")
    vae = sd15_components(dev).vae
    x = torch.rand(8, 3, 512, 512, device=dev)
    results = {}
    for layout, fmt in (("contiguous", torch.contiguous_format), ("channels_last", torch.channels_last)):
        vae.to(memory_format=fmt)
        enc = torch.compile(vae.encode)

        def run(enc=enc, fmt=fmt) -> None:
            xi = (x * 2 - 1).half().contiguous(memory_format=fmt).requires_grad_(True)
            enc(xi).latent_dist.mean.float().sum().backward()

        results[layout] = time_it(run, warmup=4, repeat=10)["median_ms"]
        print(f"VAE encode f+b compiled {layout}: {results[layout]:.1f} ms", flush=True)
    return results


def step_part(steps: int) -> dict:
    from profile_step import sync_points

    from avatarcli.generate.config import recipe
    from avatarcli.generate.guidance.diffusion import DiffusionGuidance, GuidanceConfig
    from avatarcli.generate.trainer import Trainer
    from avatarcli.model.initialize import init_avatar
    from avatarcli.templates.loading import load_template

    dev = torch.device("cuda")
    tpl = load_template("head", device=dev)
    guide = DiffusionGuidance(sd15_components(dev, tiny_encoder=True), GuidanceConfig(score="nfsd", resolution=512))
    guide.compile()
    results = {}
    for batch in (8, 4):
        cfg = recipe("head", "a knight in shining armour", stages=("animate",), steps=100_000, checkpoint_every=0, batch=batch)
        cfg.densify.start = 10**9
        cfg.compile = True
        trainer = Trainer(init_avatar(tpl, points_per_triangle=10, seed=0), tpl, guide, cfg)
        for _ in range(25):
            trainer.train_step()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            trainer.train_step()
        torch.cuda.synchronize()
        wall = (time.perf_counter() - t0) * 1e3 / steps
        # CPU time to issue a step when it never waits: the step's host work alone
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                trainer.train_step()
            torch.cuda.synchronize()
        kernels = sum(e.self_device_time_total for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA) / 5e3
        syncs = sync_points(trainer)
        results[batch] = {"wall_ms": wall, "kernel_ms": kernels, "syncs": syncs}
        print(f"head batch {batch}, --compile --encoder: {wall:.1f} ms/step wall, GPU kernels {kernels:.1f} ms/step", flush=True)
        for where, n in syncs.items():
            print(f"  sync x{n}: {where}", flush=True)
    return results


def _timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` inside a profiler range named ``name``."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with torch.profiler.record_function(name):
            return fn(*args, **kwargs)

    return wrapper


def phases_part(batch: int, kind: str) -> dict:
    """Host time and GPU kernel time of each phase of a compiled step (``--encoder``), one
    fresh process per batch size (so the networks compile for that shape only): a phase whose
    host time is well above its kernel time keeps the GPU waiting when the kernel time of the
    whole step is small (a share of the views on one of several GPUs)."""
    from torch.profiler import ProfilerActivity, profile

    import avatarcli.generate.trainer as trainer_module
    from avatarcli.generate.config import recipe
    from avatarcli.generate.guidance.diffusion import DiffusionGuidance, GuidanceConfig
    from avatarcli.generate.guidance.scores import BODY_TIMESTEPS, HEAD_TIMESTEPS
    from avatarcli.generate.trainer import Trainer
    from avatarcli.model.initialize import init_avatar
    from avatarcli.templates.loading import load_template

    dev = torch.device("cuda")
    tpl = load_template(kind, device=dev)
    score, schedule = ("nfsd", HEAD_TIMESTEPS) if kind == "head" else ("asd", BODY_TIMESTEPS)
    guide = DiffusionGuidance(sd15_components(dev, tiny_encoder=True), GuidanceConfig(score=score, resolution=512, timesteps=schedule))
    guide.compile()
    cfg = recipe(kind, "a knight in shining armour", stages=("animate",), steps=100_000, checkpoint_every=0, batch=batch)
    cfg.densify.start = 10**9
    cfg.compile = True
    trainer = Trainer(init_avatar(tpl, points_per_triangle=10, seed=0), tpl, guide, cfg)
    trainer_module.deform = _timed("deform", trainer_module.deform)
    trainer_module.render_gaussians = _timed("render (waits for the GPU)", trainer_module.render_gaussians)
    tpl.pose = _timed("pose templates", tpl.pose)  # type: ignore[method-assign]
    trainer.poses = _timed("draw poses", trainer.poses)  # type: ignore[assignment]
    trainer.views = _timed("draw cameras", trainer.views)  # type: ignore[assignment]
    trainer.conditions = _timed("conditions", trainer.conditions)  # type: ignore[assignment]
    guide.encode = _timed("encode", guide.encode)  # type: ignore[method-assign]
    guide.predict = _timed("UNet + ControlNet", guide.predict)  # type: ignore[method-assign]
    guide.loss = _timed("guidance loss (all)", guide.loss)  # type: ignore[method-assign]
    trainer._regularisers = _timed("regularisers", trainer._regularisers)  # type: ignore[method-assign]
    trainer.densifier.step_post_backward = _timed("densify bookkeeping", trainer.densifier.step_post_backward)  # type: ignore[method-assign]
    trainer.densifier.statistics = _timed("densify statistics", trainer.densifier.statistics)  # type: ignore[method-assign]
    for opt in trainer.optimizers.values():
        opt.step = _timed("optimizers", opt.step)  # type: ignore[method-assign]
    backward = torch.Tensor.backward
    torch.Tensor.backward = _timed("backward", backward)  # type: ignore[method-assign]
    step = _timed("whole step", trainer.train_step)
    for _ in range(25):
        step()
    torch.cuda.synchronize()
    n = 10
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    torch.cuda.synchronize()
    wall = (time.perf_counter() - t0) * 1e3 / n
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(n):
            step()
        torch.cuda.synchronize()
    torch.Tensor.backward = backward  # type: ignore[method-assign]
    rows = {}
    for e in prof.key_averages():
        if e.key in ("whole step", "deform", "render (waits for the GPU)", "pose templates", "draw poses", "draw cameras", "conditions",
                     "encode", "UNet + ControlNet", "guidance loss (all)", "regularisers", "densify bookkeeping", "densify statistics",
                     "optimizers", "backward"):  # fmt: skip
            rows[e.key] = {"host_ms": e.cpu_time_total / 1e3 / n, "kernel_ms": e.device_time_total / 1e3 / n, "calls": e.count / n}
    kernels = sum(e.self_device_time_total for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA) / 1e3 / n
    print(f"{kind} batch {batch}, --compile --encoder: {wall:.1f} ms/step wall, kernels {kernels:.1f} ms/step", flush=True)
    for k, r in sorted(rows.items(), key=lambda kv: -kv[1]["host_ms"]):
        print(f"  {k:28s} host {r['host_ms']:7.2f} ms   kernels {r['kernel_ms']:7.2f} ms   calls {r['calls']:.0f}", flush=True)
    return {"wall_ms": wall, "kernel_ms": kernels, "phases": rows}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=("fp8", "vae", "step", "phases"), required=True)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--kind", default="head")
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    parts = {"fp8": fp8_part, "vae": vae_part, "step": lambda: step_part(args.steps), "phases": lambda: phases_part(args.batch, args.kind)}
    result = parts[args.part]()
    name = f"step_levers_{args.part}" + (f"_{args.kind}_{args.batch}" if args.part == "phases" else "")
    write_result(name, result)


if __name__ == "__main__":
    main()
