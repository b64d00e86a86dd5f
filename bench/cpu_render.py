"""CPU rendering speed: the compiled rasterizer (backend "cpu") against the PyTorch reference.

    taskset -c 0,1 python bench/cpu_render.py [--size 256] [--seconds 2] [--repeat 3]
        [--reference-frames 4] [--train-size 128] [--train-views 4] [--parts all|animate|train|jit]

For the default head (built-in 'talk') and body ('walk') from `avatar init` (K = 10), on the CPU:

- animate: frames/s of `avatar animate`'s pipeline for a ``--seconds`` motion at 30 fps
  (``plan_frames``, then ``render_frames`` posing, deforming and rendering 8 frames at a
  time, encoded to .mp4 by ``FrameWriter`` on its own thread), of posing + rendering alone,
  of posing alone and of rasterizing alone (one frame's posed Gaussians); the reference
  rasterizer on the first ``--reference-frames`` frames.
- train: forward and forward + backward of ``--train-views`` views at ``--train-size`` of
  an `avatar init` avatar with K = 4 (a reconstruction run's size), both rasterizers.
- jit: the first render in a fresh process with an empty compile cache (cold) and again
  with the cache it wrote (warm), process start excluded.

Every number is the median of ``--repeat`` runs, with the 1-minute load average read after
it: other work on a shared machine slows them. Targets (2 cores): head >= 10 frames/s and
body >= 5 frames/s at 256x256 through the whole pipeline.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from avatarcli.formats.frames import FrameWriter
from avatarcli.model.initialize import init_avatar
from avatarcli.motion.builtin import builtin_motion
from avatarcli.render.cameras import framing, turntable_cameras
from avatarcli.render.clip import AnimateOptions, plan_frames, render_frames
from avatarcli.render.rasterize import render_gaussians, to_uint8
from avatarcli.templates.loading import load_template

from common import write_result

MOTIONS = {"head": "talk", "body": "walk"}


def load() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0]) if Path("/proc/loadavg").exists() else float("nan")


def median_of(fn: Callable[[], Any], repeat: int) -> dict[str, float]:
    """Seconds of ``fn``: median, min, max over ``repeat`` runs, and the load after each."""
    times, loads = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        loads.append(load())
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "load": statistics.median(loads)}


def animate(kind: str, size: int, seconds: float, repeat: int, reference_frames: int, work: Path) -> dict:
    tpl = load_template(kind)
    av = init_avatar(tpl, points_per_triangle=10, seed=0)
    opts = AnimateOptions(size=(size, size))
    plan = plan_frames(av, tpl, builtin_motion(MOTIONS[kind], kind, seconds=seconds, fps=30.0), opts)
    frames = len(plan)

    def pipeline() -> None:
        p = plan_frames(av, tpl, builtin_motion(MOTIONS[kind], kind, seconds=seconds, fps=30.0), opts)
        with FrameWriter(work / f"{kind}.mp4", p.fps, opts.size) as w:
            for chunk in render_frames(av, tpl, p, opts.background, opts.batch):
                for f in chunk:
                    w.add(f)

    def render_only() -> None:
        for _ in render_frames(av, tpl, plan, opts.background, opts.batch):
            pass

    def pose_only() -> None:
        with torch.no_grad():
            for s in range(0, frames, opts.batch):
                av.posed(tpl, plan.poses.index(slice(s, min(s + opts.batch, frames))))

    with torch.no_grad():
        posed = av.posed(tpl, plan.poses.index(slice(0, 1)))
    cams = plan.cameras.index(slice(0, 1))
    bg = opts.background

    def raster(backend: str) -> Callable[[], None]:
        def fn() -> None:
            with torch.no_grad():
                to_uint8(render_gaussians(posed, cams, bg, backend=backend)[0])

        return fn

    pipeline()  # warm up: kernels compiled or loaded, encoder started once
    out: dict[str, Any] = {"gaussians": len(av), "frames": frames, "size": size}
    out["pipeline"] = median_of(pipeline, repeat)
    out["render_frames"] = median_of(render_only, repeat)
    out["posing"] = median_of(pose_only, repeat)
    out["rasterize_one"] = median_of(raster("cpu"), max(repeat, 5))
    for key in ("pipeline", "render_frames", "posing"):
        out[key]["frames_per_s"] = frames / out[key]["median_s"]
    out["rasterize_one"]["frames_per_s"] = 1.0 / out["rasterize_one"]["median_s"]
    if reference_frames > 0:
        n = min(reference_frames, frames)
        sub = plan_frames(av, tpl, builtin_motion(MOTIONS[kind], kind, seconds=(n - 1) / 30.0, fps=30.0), opts)

        def reference_render() -> None:
            with torch.no_grad():
                for s in range(0, n, opts.batch):
                    idx = slice(s, min(s + opts.batch, n))
                    pg = av.posed(tpl, sub.poses.index(idx))
                    to_uint8(render_gaussians(pg, sub.cameras.index(idx), bg, backend="reference")[0])

        r = median_of(reference_render, 1)
        r["frames"] = n
        r["frames_per_s"] = n / r["median_s"]
        out["reference_render_frames"] = r
    return out


def train(kind: str, size: int, views: int, repeat: int) -> dict:
    tpl = load_template(kind)
    av = init_avatar(tpl, points_per_triangle=4, seed=0)
    with torch.no_grad():
        pg = av.posed(tpl)
        center, radius = framing(pg.means[0])
    cams = turntable_cameras(center, radius, views, (size, size), 5.0)
    g = torch.Generator().manual_seed(0)
    weights = torch.rand(views, size, size, 3, generator=g)
    out: dict[str, Any] = {"gaussians": len(av), "size": size, "views": views}
    for backend in ("cpu", "reference"):
        leaves = [t.detach().clone().requires_grad_(True) for t in (pg.means, pg.quats, pg.scales, pg.opacities, pg.sh)]

        def forward(backward: bool, backend: str = backend, leaves: list = leaves) -> None:
            means, quats, scales, opac, sh = leaves
            posed = type(pg)(means, quats, scales, opac, sh)
            images, _, meta = render_gaussians(posed, cams, torch.ones(3), backend=backend)
            if backward:
                meta["means2d"].retain_grad()
                (images * weights).sum().backward()

        forward(True)
        reps = repeat if backend == "cpu" else 1
        out[backend] = {
            "forward": median_of(lambda f=forward: f(False), reps),
            "forward_backward": median_of(lambda f=forward: f(True), reps),
        }
    return out


JIT_SNIPPET = """
import time, torch
t0 = time.perf_counter()
from avatarcli.render.cameras import turntable_cameras
from avatarcli.render.rasterize import rasterize
g = torch.Generator().manual_seed(0)
n = 2000
means = torch.rand(n, 3, generator=g) - 0.5
quats, scales = torch.randn(n, 4, generator=g), torch.rand(n, 3, generator=g) * 0.05
opac, colors = torch.rand(n, generator=g), torch.rand(n, 3, generator=g)
cams = turntable_cameras(torch.zeros(3), 0.8, 1, (128, 128), 5.0)
t1 = time.perf_counter()
rasterize(means, quats, scales, opac, colors, cams, backgrounds=torch.ones(3))
t2 = time.perf_counter()
leaves = [t.requires_grad_(True) for t in (means, quats, scales, opac, colors)]
img, _, _ = rasterize(*leaves, cams, backgrounds=torch.ones(3))
img.sum().backward()
t3 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2)
"""


def jit() -> dict:
    """First render (no gradients) and first forward + backward in fresh processes."""
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        for label in ("cold", "warm"):
            proc = subprocess.run([sys.executable, "-c", JIT_SNIPPET], capture_output=True, text=True, env=env, check=True)
            setup, render, train = (float(x) for x in proc.stdout.split())
            out[label] = {"imports_s": setup, "first_render_s": render, "first_forward_backward_s": train, "load": load()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--reference-frames", type=int, default=4)
    ap.add_argument("--train-size", type=int, default=128)
    ap.add_argument("--train-views", type=int, default=4)
    ap.add_argument("--parts", default="all", help="all, or a comma list of animate, train, jit")
    args = ap.parse_args()
    parts = {"animate", "train", "jit"} if args.parts == "all" else set(args.parts.split(","))
    results: dict[str, Any] = {"threads": torch.get_num_threads(), "args": vars(args)}
    if "jit" in parts:
        results["jit"] = jit()
        for label, r in results["jit"].items():
            print(f"jit {label}: imports {r['imports_s']:.2f} s, first render {r['first_render_s']:.2f} s, "
                  f"first forward+backward {r['first_forward_backward_s']:.2f} s (load {r['load']:.2f})")  # fmt: skip
    if "animate" in parts:
        with tempfile.TemporaryDirectory() as tmp:
            for kind in ("head", "body"):
                r = animate(kind, args.size, args.seconds, args.repeat, args.reference_frames, Path(tmp))
                results[f"animate_{kind}"] = r
                line = f"{kind} {r['gaussians']} Gaussians, {r['frames']} frames at {r['size']}px:"
                for key in ("pipeline", "render_frames", "posing", "rasterize_one", "reference_render_frames"):
                    if key in r:
                        m = r[key]
                        line += f"\n  {key:24s} {m['frames_per_s']:7.2f} frames/s ({m['median_s']:.3f} s, load {m['load']:.2f})"
                print(line)
    if "train" in parts:
        for kind in ("head", "body"):
            r = train(kind, args.train_size, args.train_views, args.repeat)
            results[f"train_{kind}"] = r
            print(f"{kind} training scene {r['gaussians']} Gaussians, {r['views']} views at {r['size']}px:")
            for backend in ("cpu", "reference"):
                f, fb = r[backend]["forward"], r[backend]["forward_backward"]
                ms, ms_fb = f["median_s"] * 1e3, fb["median_s"] * 1e3
                print(f"  {backend:9s} forward {ms:8.1f} ms, forward+backward {ms_fb:8.1f} ms (load {fb['load']:.2f})")
    write_result("cpu_render", results)


if __name__ == "__main__":
    main()
