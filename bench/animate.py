"""End-to-end `avatar animate` speed: a 300-frame motion at 1024x1024 into an .mp4.

    python bench/animate.py [--frames 300] [--size 1024] [--batch 16] [--kinds head body head+pose body+pose]

For the head (built-in 'talk') and the body (built-in 'walk') avatars from `avatar init`
(K = 10): the library pipeline exactly as the CLI runs it (plan, pose, deform, render in
batches, encode on a background thread), its parts alone (rendering without encoding,
encoding pre-rendered frames), and the `avatar animate` command as a user runs it
(process start, file and template loading included). Targets: head under 3 s, body under 5 s.
``head+pose`` / ``body+pose``: the same avatars with a pose-dependent model of the default
size (its last layer given random weights, so that every pose's offsets, opacities and
colours are real work); target: at least half the frames per second of the plain avatar.
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

from avatarcli.formats.frames import FrameWriter
from avatarcli.model import avatar_file
from avatarcli.model.avatar import Avatar
from avatarcli.model.initialize import init_avatar
from avatarcli.model.pose_dependent import new_pose_dependent
from avatarcli.motion.builtin import builtin_motion
from avatarcli.motion.motion import Motion, to_template_poses
from avatarcli.motion.readers import write_motion
from avatarcli.render.clip import AnimateOptions, plan_frames, render_frames
from avatarcli.templates.loading import load_template
from avatarcli.templates.template import Template

from common import write_result


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def with_pose_model(av: Avatar, tpl: Template, motion: Motion) -> Avatar:
    """``av`` with a pose-dependent model of the default size, fitted to ``motion``'s poses,
    its last layer random (so that the offsets are not zero)."""
    poses, _ = to_template_poses(motion, tpl)
    with torch.no_grad():
        rest = av.posed(tpl).means[0].cpu()
    av.pose_dependent = new_pose_dependent(tpl.kind, tpl.num_expression, poses, rest, 0.5)
    with torch.no_grad():
        av.pose_dependent.network.net[-1].weight.normal_(std=0.1)
    return av.to(tpl.device)


def run(kind: str, motion_name: str, frames: int, size: int, batch: int, device: torch.device, work: Path, pose: bool = False) -> dict:
    tpl = load_template(kind, device=device)
    av = init_avatar(tpl, points_per_triangle=10, seed=0)
    motion = builtin_motion(motion_name, kind, seconds=(frames - 1) / 30.0, fps=30.0)
    if pose:
        av = with_pose_model(av, tpl, motion)
    opts = AnimateOptions(size=(size, size), batch=batch)
    out = work / f"{kind}.mp4"
    # warm up kernels and the encoder once
    plan = plan_frames(av, tpl, builtin_motion(motion_name, kind, seconds=0.5), opts)
    with FrameWriter(work / "warm.mp4", plan.fps, opts.size) as w:
        for chunk in render_frames(av, tpl, plan, opts.background, batch):
            for f in chunk:
                w.add(f)
    sync()

    t0 = time.perf_counter()
    plan = plan_frames(av, tpl, motion, opts)
    with FrameWriter(out, plan.fps, opts.size) as w:
        for chunk in render_frames(av, tpl, plan, opts.background, batch):
            for f in chunk:
                w.add(f)
    pipeline = time.perf_counter() - t0

    t0 = time.perf_counter()
    rendered = [chunk for chunk in render_frames(av, tpl, plan, opts.background, batch)]
    sync()
    render_only = time.perf_counter() - t0

    t0 = time.perf_counter()
    with FrameWriter(work / "enc.mp4", plan.fps, opts.size) as w:
        for chunk in rendered:
            for f in chunk:
                w.add(f)
    encode_only = time.perf_counter() - t0

    path = work / f"{kind}{'_pose' if pose else ''}.avatar"
    avatar_file.save(av, path)
    motion_file = work / f"{kind}_motion.npz"
    write_motion(motion, motion_file)
    env = dict(os.environ)
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "avatarcli", "animate", str(path), str(motion_file), "-o", str(work / f"{kind}_cli.mp4"),
           "--size", str(size), "--batch", str(batch), "--device", str(device)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    cli = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    return {
        "gaussians": len(av),
        "frames": len(plan),
        "size": size,
        "batch": batch,
        "pipeline_s": pipeline,
        "pipeline_fps": len(plan) / pipeline,
        "render_only_s": render_only,
        "encode_only_s": encode_only,
        "mp4_bytes": out.stat().st_size,
        "cli_s": cli,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--kinds", nargs="+", default=["head", "body", "head+pose", "body+pose"])
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    motions = {"head": "talk", "body": "walk"}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        results = {}
        for name in args.kinds:
            kind = name.removesuffix("+pose")
            results[name] = run(kind, motions[kind], args.frames, args.size, args.batch, device, work, pose=name.endswith("+pose"))
    write_result("animate", results)
    print(f"{'kind':9} {'N':>8} {'frames':>6} {'pipeline s':>10} {'fps':>7} {'render s':>9} {'encode s':>9} {'CLI s':>15}")
    for kind, r in results.items():
        print(
            f"{kind:9} {r['gaussians']:>8} {r['frames']:>6} {r['pipeline_s']:>10.2f} {r['pipeline_fps']:>7.1f} "
            f"{r['render_only_s']:>9.2f} {r['encode_only_s']:>9.2f} {r['cli_s']:>15.2f}"
        )


if __name__ == "__main__":
    main()
