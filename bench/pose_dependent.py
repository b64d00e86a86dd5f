"""The pose-dependent appearance gauge: capture a reference whose look follows its pose, with
and without the pose-dependent model, and score poses the capture never saw.

    python bench/pose_dependent.py [--kind head body] [--size 512] [--frames 120] [--steps 3000]
                                   [--batch 4] [--novel 16] [--points 2]

For each kind, four captures (avatarcli.evaluation.pose_gauge): the reference with its
pose effects (creases that darken with the bend, a skirt that swings with the hips; lines at
the eyes and mouth with a smile, a chin crease with the jaw, forehead lines with raised
brows) and the same reference without them, each captured with and without the model, at
known poses with exact masks (capture's trainer, its defaults for everything else). Scores:
PSNR over the whole frame and inside the silhouettes, on ``--novel`` poses of another seed
from the video's camera and from 60 degrees aside. Targets: with the model at least 1.5 dB
above without on the reference with effects, and no more than 0.3 dB below on the one
without. On one H200 about 4 x 3 minutes per kind at the defaults.
"""

from __future__ import annotations

import argparse
import time

import torch

from avatarcli.capture.fit import CaptureSettings
from avatarcli.evaluation.pose_gauge import GaugeSetup, run_gauge
from avatarcli.templates.loading import load_template

from common import write_result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kind", nargs="+", default=["head", "body"], choices=["head", "body"])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--steps", type=int, default=None, help="capture's default when not given")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--novel", type=int, default=16)
    ap.add_argument("--points", type=int, default=2, help="the reference's Gaussians per triangle")
    ap.add_argument("--capture-points", type=int, default=None, help="the capture's start (capture's default when not given)")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    setup = GaugeSetup(size=args.size, frames=args.frames, novel=args.novel)
    results = {}
    for kind in args.kind:
        tpl = load_template(kind, device=device)
        settings = CaptureSettings(steps=args.steps, batch=args.batch, resolution=args.size, points_per_triangle=args.capture_points)
        t0 = time.perf_counter()
        results[kind] = {**run_gauge(kind, tpl, setup, settings, args.points), "seconds": time.perf_counter() - t0}
    write_result("pose_dependent", {"args": vars(args), "results": results})
    print(f"{'kind':5} {'reference':11} {'with dB':>8} {'without dB':>10} {'gain':>6} {'masked gain':>11}")
    for kind, r in results.items():
        for ref in ("effects", "no_effects"):
            row = r[ref]
            print(f"{kind:5} {ref:11} {row['with']['psnr']:>8.2f} {row['without']['psnr']:>10.2f} {row['gain_db']:>6.2f} "
                  f"{row['gain_masked_db']:>11.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
