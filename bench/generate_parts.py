"""Variants of the two network costs of a generation step, measured alone on the GPU.

    python bench/generate_parts.py [--networks-only]

VAE encoder forward + backward for 8 images at 512x512, and UNet + ControlNet forward for
24 latents (NFSD's three predictions for 8 views), in fp16 / bf16, contiguous / channels-last,
eager / torch.compile (default, and ``reduce-overhead``: CUDA graphs of the compiled
networks). Informs the defaults of DiffusionGuidance. ``--networks-only`` skips the VAE.
"""

from __future__ import annotations

import argparse

import torch

from avatarcli.generate.guidance.random_weights import sd15_components

from common import time_it, write_result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--networks-only", action="store_true", help="only UNet + ControlNet")
    ap.add_argument("--modes", default="eager,compile,compile-graphs", help="UNet + ControlNet modes to time (comma-separated)")
    args = ap.parse_args()
    dev = torch.device("cuda")
    comps = sd15_components(dev)
    results: dict[str, float] = {}
    x = torch.rand(8, 3, 512, 512, device=dev)
    for dtype in () if args.networks_only else (torch.float16, torch.bfloat16):
        vae = comps.vae.to(dtype=dtype)
        for layout in ("contiguous", "channels_last"):
            fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
            vae.to(memory_format=fmt)
            modes = ("eager", "compile") if layout == "contiguous" else ("eager",)
            for mode in modes:
                enc = torch.compile(vae.encode) if mode == "compile" else vae.encode

                def run(enc=enc, dtype=dtype, fmt=fmt) -> None:
                    xi = (x * 2 - 1).to(dtype).contiguous(memory_format=fmt).requires_grad_(True)
                    enc(xi).latent_dist.mean.float().sum().backward()

                key = f"vae f+b {str(dtype)[6:]} {layout} {mode}"
                results[key] = time_it(run, warmup=3 if mode == "eager" else 4, repeat=10)["median_ms"]
                print(f"{key}: {results[key]:.1f} ms", flush=True)
    z = torch.randn(24, 4, 64, 64, device=dev, dtype=torch.float16)
    t = torch.randint(20, 800, (24,), device=dev)
    emb = torch.randn(24, 77, 768, device=dev, dtype=torch.float16)
    cond = torch.rand(24, 3, 512, 512, device=dev, dtype=torch.float16)
    for layout in ("contiguous", "channels_last"):
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        comps.unet.to(memory_format=fmt)
        comps.controlnet.to(memory_format=fmt)
        modes = [m for m in args.modes.split(",") if layout == "contiguous" or m != "compile-graphs"]
        for mode in modes:
            if mode == "eager":
                unet, cn = comps.unet, comps.controlnet
            else:
                kw = {"mode": "reduce-overhead"} if mode == "compile-graphs" else {}
                unet, cn = torch.compile(comps.unet, **kw), torch.compile(comps.controlnet, **kw)

            @torch.no_grad()
            def run(unet=unet, cn=cn, fmt=fmt, graphs=mode == "compile-graphs") -> None:
                if graphs:  # a new step: the graphs may reuse the memory of the last call's outputs
                    torch.compiler.cudagraph_mark_step_begin()
                zz = z.contiguous(memory_format=fmt)
                down, mid = cn(zz, t, encoder_hidden_states=emb, controlnet_cond=cond.contiguous(memory_format=fmt), return_dict=False)
                unet(zz, t, encoder_hidden_states=emb, down_block_additional_residuals=down, mid_block_additional_residual=mid)

            key = f"unet+cn x24 {layout} {mode}"
            try:
                results[key] = time_it(run, warmup=3, repeat=10)["median_ms"]
            except Exception as exc:  # a compile mode that fails here is reported, not fatal
                print(f"{key}: failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})", flush=True)
                continue
            print(f"{key}: {results[key]:.1f} ms", flush=True)
    write_result("generate_parts", results)


if __name__ == "__main__":
    main()
