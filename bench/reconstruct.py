"""Reference-guided reconstruction: the generation machinery measured without diffusion weights.

    python bench/reconstruct.py --kind head [--steps 6000] [--resolution 512] [--batch 8] [--gpus 2]
        [--lr position=1e-3,scale=1e-3,rotation=1e-2,position_decay=1] [--tag NAME]

Trains a fresh `avatar init` avatar with the normal generate recipe, the diffusion model
replaced by the reference guidance (a prior concentrated on a hidden reference avatar with
procedural colours and off-surface parts), training poses from some built-in motions, then
scores PSNR/SSIM against the reference on held-out views and on frames of built-in motions
training never saw. An ablation trains in the rest pose only (no animation-aware training).
Targets at 512x512: held-out-motion PSNR >= 30 dB (head), >= 28 dB (body). With --gpus N the
runs train on N GPUs together (one process each; the first reports). --lr overrides the
recipe's learning rates (an ablation); --tag names the result file's variant.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.multiprocessing as mp

from avatarcli.evaluation.reconstruction import BODY_SPLIT, HEAD_SPLIT, reconstruct
from avatarcli.evaluation.reference import reference_avatar
from avatarcli.generate import distributed
from avatarcli.templates.loading import load_template

from common import write_result


def run(rank: int, gpus: int, port: int, args: argparse.Namespace) -> None:
    device = torch.device("cuda", rank) if torch.cuda.is_available() else torch.device("cpu")
    group = distributed.join(rank, gpus, device, port=port) if gpus > 1 else None
    tpl = load_template(args.kind, device=device)
    ref = reference_avatar(tpl)
    runs = {}
    split = HEAD_SPLIT if args.kind == "head" else BODY_SPLIT
    clock = [time.perf_counter()]
    main = rank == 0
    rates = {k: float(v) for k, v in (item.split("=") for item in args.lr.split(",") if item)}

    def report(r) -> None:  # type: ignore[no-untyped-def]
        if r.step % 500 == 0 and main:
            now = time.perf_counter()
            print(
                f"  step {r.step} ({r.stage}): {r.gaussians:,} Gaussians, loss {r.loss:.3g}, {2 * (now - clock[0]):.1f} ms/step", flush=True
            )
            clock[0] = now

    for animated in (True,) if args.no_ablation else (True, False):
        r = reconstruct(
            tpl, args.steps, args.resolution, args.batch, animated=animated, points_per_triangle=args.k, reference=ref, on_step=report,
            group=group, learning_rates=rates,
        )  # fmt: skip
        if not main:
            continue
        name = "animated" if animated else "rest-pose only"
        runs[name] = {"steps": r.steps, "seconds": r.seconds, "gaussians": r.gaussians, "scores": r.scores, "gpus": gpus}
        speed = f"{r.steps} steps in {r.seconds:.0f} s ({1000 * r.seconds / r.steps:.1f} ms/step), {r.gaussians:,} Gaussians"
        scores = " | ".join(f"{k}: PSNR {v['psnr']:.2f} dB, SSIM {v['ssim']:.3f}" for k, v in r.scores.items())
        print(f"{args.kind} {name}, {gpus} GPU(s): {speed} | {scores}", flush=True)
        write_result(f"reconstruct_{args.kind}_{gpus}gpu{'_' + args.tag if args.tag else ''}", {"reference_gaussians": len(ref),
                     "train_motions": split[0], "held_out_motions": split[1], "resolution": args.resolution, "batch": args.batch,
                     "learning_rates": rates, "runs": runs})  # fmt: skip
    distributed.leave()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kind", default="head")
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--k", type=int, default=4, help="Gaussians per triangle at the start")
    ap.add_argument("--no-ablation", action="store_true")
    ap.add_argument("--gpus", type=int, default=1)
    ap.add_argument("--lr", default="", help="learning-rate overrides, NAME=VALUE,... (LearningRates fields)")
    ap.add_argument("--tag", default="", help="suffix of the result file's name")
    args = ap.parse_args()
    if args.gpus == 1:
        run(0, 1, 0, args)
    else:
        mp.start_processes(run, args=(args.gpus, distributed.free_port(), args), nprocs=args.gpus, start_method="spawn")


if __name__ == "__main__":
    main()
