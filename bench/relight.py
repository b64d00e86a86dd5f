"""Relightable avatars: the relighting gauge, and `avatar animate --light` speed.

    python bench/relight.py                      # both, at the sizes the targets are set at (GPU)
    python bench/relight.py --only gauge --size 512 --steps 3000
    python bench/relight.py --only animate --frames 300 --anim-size 1024

gauge (avatarcli.evaluation.relight_gauge): a reference head with known albedo, roughness, F0
and surface normals, its 120-frame video at --size lit by "studio", captured twice through
capture's trainer (relightable, and of colours); the held-out frames rendered by both under
the video's light and under "sunset" and "daylight", against the reference under those
lights. Targets: relit PSNR (inside the silhouette) within 2 dB of the same-light PSNR, and
at least 4 dB above the capture of colours under the new lights.

animate: the head ('talk') and body ('walk') avatars of `avatar init` (K = 10) given
materials, 300 frames at 1024x1024 into an .mp4 through the library pipeline as the CLI runs
it, without a light (their colours, today's path), with --light studio, and with the light
turning; then the `avatar animate --light` command itself. Target: with the light, at least
half the frame rate without.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from avatarcli.evaluation.relight_gauge import GaugeSettings, run_gauge
from avatarcli.formats.frames import FrameWriter
from avatarcli.model import avatar_file
from avatarcli.model.initialize import init_avatar
from avatarcli.model.material import with_material
from avatarcli.motion.builtin import builtin_motion
from avatarcli.motion.readers import write_motion
from avatarcli.render.clip import AnimateOptions, plan_frames, render_frames
from avatarcli.render.lights import preset_light
from avatarcli.templates.loading import load_template

from common import write_result


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def gauge(args: argparse.Namespace, device: torch.device) -> dict:
    tpl = load_template("head", device=device)
    s = GaugeSettings(size=args.size, frames=args.frames_gauge, steps=args.steps, batch=args.batch,
                      reference_points=args.reference_points, capture_points=args.capture_points)  # fmt: skip
    t0 = time.perf_counter()

    def on_step(r) -> None:  # type: ignore[no-untyped-def]
        if r.step % 500 == 0:
            print(f"  step {r.step}/{r.total}  loss {r.loss:.4f}  {r.gaussians:,} Gaussians  {time.perf_counter() - t0:.0f} s", flush=True)

    result = run_gauge(tpl, s, on_step)
    record = result.record()
    print("gauge (PSNR dB inside the silhouette / whole frame; SSIM inside):")
    for cap, per_light in result.scores.items():
        for light, sc in per_light.items():
            print(f"  {cap:12} {light:9} {sc['psnr_masked']:6.2f} / {sc['psnr']:6.2f}   {sc['ssim_masked']:.4f}")
    print("  summary:", {k: round(v, 2) for k, v in result.summary().items()}, "seconds:", result.seconds)
    return record


def _clip(av, tpl, plan, opts, batch, out, light=None, rotate=0.0) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    with FrameWriter(out, plan.fps, opts.size) as w:
        for chunk in render_frames(av, tpl, plan, opts.background, batch, light, rotate):
            for f in chunk:
                w.add(f)
    sync()
    return time.perf_counter() - t0


def animate(kind: str, motion_name: str, args: argparse.Namespace, device: torch.device, work: Path) -> dict:
    tpl = load_template(kind, device=device)
    plain = init_avatar(tpl, points_per_triangle=10, seed=0)
    lit = with_material(plain, tpl)
    size, batch, frames = args.anim_size, args.anim_batch, args.frames
    motion = builtin_motion(motion_name, kind, seconds=(frames - 1) / 30.0, fps=30.0)
    opts = AnimateOptions(size=(size, size), batch=batch)
    studio = preset_light("studio")
    warm = plan_frames(lit, tpl, builtin_motion(motion_name, kind, seconds=0.5), opts)
    _clip(lit, tpl, warm, opts, batch, work / "warm.mp4", studio)  # kernels and the encoder, once
    plan = plan_frames(lit, tpl, motion, opts)
    colours = _clip(plain, tpl, plan, opts, batch, work / "colours.mp4")
    light = _clip(lit, tpl, plan, opts, batch, work / "light.mp4", studio)
    turning = _clip(lit, tpl, plan, opts, batch, work / "turning.mp4", studio, 30.0)
    path, motion_file = work / f"{kind}.avatar", work / f"{kind}_motion.npz"
    avatar_file.save(lit, path)
    write_motion(motion, motion_file)
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "avatarcli", "animate", str(path), str(motion_file), "-o", str(work / f"{kind}_cli.mp4"),
           "--size", str(size), "--batch", str(batch), "--device", str(device), "--light", "studio"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ), check=False)
    cli = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    n = len(plan)
    return {"gaussians": len(lit), "frames": n, "size": size, "batch": batch, "colours_fps": n / colours, "light_fps": n / light,
            "turning_light_fps": n / turning, "light_over_colours": colours / light, "cli_light_s": cli}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=("gauge", "animate"), default=None)
    ap.add_argument("--size", type=int, default=512, help="gauge frame size")
    ap.add_argument("--steps", type=int, default=3000, help="gauge capture steps")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--frames-gauge", type=int, default=120)
    ap.add_argument("--reference-points", type=int, default=6)
    ap.add_argument("--capture-points", type=int, default=4)
    ap.add_argument("--frames", type=int, default=300, help="animate frames")
    ap.add_argument("--anim-size", type=int, default=1024)
    ap.add_argument("--anim-batch", type=int, default=16)
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results: dict = {}
    if args.only in (None, "animate"):
        with tempfile.TemporaryDirectory() as tmp:
            results["animate"] = {k: animate(k, m, args, device, Path(tmp)) for k, m in (("head", "talk"), ("body", "walk"))}
        for kind, r in results["animate"].items():
            print(f"animate {kind}: {r['gaussians']:,} Gaussians, {r['frames']} frames at {r['size']}: colours {r['colours_fps']:.1f} fps, "
                  f"--light {r['light_fps']:.1f} fps ({1 / r['light_over_colours']:.2f}x), turning {r['turning_light_fps']:.1f} fps, "
                  f"CLI {r['cli_light_s']:.2f} s")  # fmt: skip
    if args.only in (None, "gauge"):
        results["gauge"] = gauge(args, device)
    write_result("relight", results)


if __name__ == "__main__":
    main()
