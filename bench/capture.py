"""The capture gauge: `avatar capture` measured on videos whose truth is known.

    python bench/capture.py --kind head                    # 10 s at 512x512, 30 fps: quality, (a) and (b)
    python bench/capture.py --kind body --seconds 60       # the 1-minute clip of the speed target
    python bench/capture.py --kind head --reference-only   # the gauge's own bounds; no capture needed
    python bench/capture.py --kind head --reference-only --size 128 --fps 3 --seconds 12 --device cpu   # small, on a CPU

For each kind it renders the gauge video (`evaluation.capture_video`: the reference person of
`evaluation.capture_reference` talking and looking round / turning round and moving the arms,
over a moving textured background, filmed by the tracker's own camera model) into --work
(kept and reused when its settings match), then:

* capture: `avatarcli.api.capture` on the .mp4 with --holdout (the last share of the frames
  kept out of training), timed end to end (wall clock, tracking included), with the GPU's
  peak memory and the avatar's Gaussians;
* (a) held-out frames: the captured avatar rendered at its own fitted poses and cameras
  against the clean frames (the person's render over the background, before encoding), over
  white, whole frame and inside the true mask (`evaluation.capture_scoring.score_heldout`),
  and the same against the decoded video; a sample of training frames for comparison;
* (b) novel poses: the captured avatar and the reference driven by motions the video never
  shows (heads: nod, turn, grimace; bodies: dance, stretch) from the front (the video's own
  camera), three-quarters and the side (`score_novel`).

--reference-only scores, in place of a capture, the reference itself at the true motion (the
upper bound: only the video's encoding stands between it and the frames), the reference at the
motion `avatar track` recovers from the video (what the tracker's error alone costs a perfect
appearance; the tracked motion's translation is relative to its first frame, so it is placed by
the one offset that best matches the true path, its mean; --no-track skips it) and a plain `avatar init` avatar at the true
motion (a lower bound: the right shape and motion, no appearance).
--detect also runs MediaPipe over every frame and reports how many it finds a face / a person
in (on by default with --reference-only).

Targets (512x512): (a) PSNR >= 30 dB for heads, >= 28 dB for bodies; (b) within 2 dB of
(a); a 1-minute 30 fps clip captured in <= 3 minutes end to end on one H200.
The JSON goes to $OUT (or bench/out) as capture_<kind>_<size>_<seconds>s[_reference].json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avatarcli.evaluation.capture_scoring import novel_pose_set, score_heldout, score_novel
from avatarcli.evaluation.capture_video import (
    CaptureVideo,
    detection_rate,
    load_capture_video,
    make_capture_video,
    render_layers,
    truth_frames,
)
from avatarcli.model.initialize import init_avatar
from avatarcli.motion.video import probe_video, read_frames
from avatarcli.render.cameras import Cameras
from avatarcli.templates.loading import load_template
from avatarcli.templates.template import Pose, Template

from common import write_result


def run_capture(video: Path, output: Path, kind: str, holdout: float, steps: int | None, resolution: int | None, device: str,
                fov: float) -> Any:  # fmt: skip
    """`avatar capture` through the API, as the command runs it."""
    from avatarcli import api

    track = api.TrackSettings(fov=fov, hands=False)
    options = api.CaptureOptions(model=kind, track=track, holdout=holdout, steps=steps, resolution=resolution or 512, device=device,
                                 checkpoint_every=0)  # fmt: skip
    return api.capture(str(video), str(output), options)


def fitted_frames(result: Any) -> tuple[Pose, Cameras]:
    """The capture's pose and camera of every frame of the video (the gauge's clips are short
    enough that capture keeps every frame)."""
    numbers = result.frame_numbers
    assert bool((numbers == torch.arange(len(numbers))).all()), "capture kept every k-th frame: score by frame_numbers"
    cams = result.cameras
    t = len(numbers)
    return result.poses, Cameras(cams.viewmats.expand(t, 4, 4), cams.Ks.expand(t, 3, 3), cams.width, cams.height)


def holdout_indices(frames: int, fraction: float) -> list[int]:
    """The last ``fraction`` of ``frames`` (at least one): the frames `--holdout` keeps out."""
    n = max(1, math.ceil(frames * fraction))
    return list(range(frames - n, frames))


def decoded(video: CaptureVideo, indices: list[int]) -> torch.Tensor:
    """Frames ``indices`` (N, H, W, 3) of the encoded video, as a capture reads them, in [0, 1]."""
    want, out = set(indices), {}
    for i, frame in enumerate(read_frames(probe_video(video.video))):
        if i in want:
            out[i] = torch.from_numpy(frame.copy()).float() / 255.0
        if i >= max(indices):
            break
    return torch.stack([out[i] for i in indices])


def score_frames(avatar: Any, template: Template, poses: Pose, cameras: Cameras, video: CaptureVideo, indices: list[int],
                 chunk: int = 30) -> dict[str, Any]:  # fmt: skip
    """(a) on ``indices``: renders at ``poses`` / ``cameras`` (one per index) against the clean
    frames and against the decoded video."""
    renders, alphas = [], []
    for s in range(0, len(indices), chunk):
        sl = list(range(s, min(s + chunk, len(indices))))
        r, a = render_layers(avatar, template, poses.index(sl), cameras.index(sl))
        renders.append(r)
        alphas.append(a)
    r, a = torch.cat(renders), torch.cat(alphas)
    clean, masks, bgs = truth_frames(video, indices)
    out = {"clean": score_heldout(r, a, clean, masks, bgs), "video": score_heldout(r, a, decoded(video, indices), masks, bgs)}
    for s in out.values():
        s["frame_psnr_min"] = min(s.pop("frame_psnr"))
    return out


def tracked_bound(video: CaptureVideo, template: Template, held: list[int]) -> dict[str, Any]:
    """The reference at the motion ``avatar track`` recovers from the video, on frames ``held``,
    and the tracked motion's accuracy against the true one."""
    from avatarcli import api
    from avatarcli.evaluation.tracking import body_accuracy, head_accuracy
    from avatarcli.motion.motion import Motion, to_template_poses
    from avatarcli.motion.tracking import TrackSettings

    t0 = time.perf_counter()
    tracked = api.track(str(video.video), model=video.kind, settings=TrackSettings(fov=video.camera.fov)).motion
    seconds = time.perf_counter() - t0
    n = min(len(tracked), len(video.motion))
    offset = (video.motion.translation[:n] - tracked.translation[:n]).mean(0)  # one placement for the whole clip
    placed = Motion(tracked.kind, tracked.rotations, tracked.expression, tracked.translation + offset, tracked.fps, tracked.source)
    poses, _ = to_template_poses(placed, template)
    a = score_frames(video.reference, template, poses.index(held), video.camera.cameras(len(held)), video, held)
    accuracy = (head_accuracy if video.kind == "head" else body_accuracy)(tracked, video.motion, template).summary()
    print(f"  reference at the tracked motion ({seconds:.0f} s to track) | (a) {line('clean', a['clean'])} | "
          f"tracking {json.dumps({k: round(v, 2) for k, v in accuracy.items()})}", flush=True)  # fmt: skip
    return {"track_seconds": seconds, "heldout": a, "tracking": accuracy}


def summary(scores: dict[str, Any]) -> dict[str, Any]:
    """(b)'s scores without the per-frame lists."""
    return {k: {kk: vv for kk, vv in v.items() if kk != "frame_psnr"} for k, v in scores.items()}


def line(name: str, s: dict[str, Any]) -> str:
    return f"{name}: PSNR {s['psnr']:.2f} dB / SSIM {s['ssim']:.4f}, in mask {s['psnr_mask']:.2f} dB / {s['ssim_mask']:.4f}"


def get_video(args: argparse.Namespace, template: Template) -> tuple[CaptureVideo, float]:
    """The gauge video, made or reused from --work."""
    folder = Path(args.work) / f"{args.kind}_{args.size}_{args.fps:g}fps_{args.seconds:g}s_seed{args.seed}_crf{args.crf}"
    want = {"kind": args.kind, "fps": float(args.fps), "seconds": float(args.seconds), "seed": args.seed, "size": args.size, "k": args.k,
            "crf": args.crf}  # fmt: skip
    stamp = folder / "bench.json"
    if folder.exists() and stamp.exists() and json.loads(stamp.read_text()) == want and not args.remake:
        return load_capture_video(folder), 0.0
    folder.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    video = make_capture_video(args.kind, folder, args.size, args.fps, args.seconds, args.seed, template=template,
                               points_per_triangle=args.k, crf=args.crf, force=True)  # fmt: skip
    seconds = time.perf_counter() - t0
    stamp.write_text(json.dumps(want))
    return video, seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kind", default="head", choices=("head", "body"))
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--seconds", type=float, default=10.0, help="clip length (60: the speed target)")
    ap.add_argument("--seed", type=int, default=23)
    ap.add_argument("--k", type=int, default=6, help="the reference's Gaussians per template triangle")
    ap.add_argument("--crf", type=int, default=18, help="the video's H.264 quality (18: as phones record; lower: closer to lossless)")
    ap.add_argument("--holdout", type=float, default=0.1)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--resolution", type=int, default=None)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "capture-gauge"))
    ap.add_argument("--remake", action="store_true", help="render the video again even if --work has it")
    ap.add_argument("--reference-only", action="store_true", help="score the reference and an init avatar instead of a capture")
    ap.add_argument("--detect", action="store_true", help="count the frames MediaPipe finds the subject in")
    ap.add_argument("--no-track", action="store_true", help="--reference-only: skip the reference at the tracked motion")
    ap.add_argument("--novel-frames", type=int, default=8, help="frames of each novel motion, per view")
    ap.add_argument("--train-frames", type=int, default=30, help="training frames scored for comparison")
    args = ap.parse_args()
    device = torch.device(args.device)
    template = load_template(args.kind, device=device)
    video, render_seconds = get_video(args, template)
    print(f"{args.kind} gauge video: {video.frames} frames {args.size}x{args.size} at {args.fps:g} fps "
          f"({render_seconds:.0f} s to render), reference {len(video.reference):,} Gaussians", flush=True)  # fmt: skip
    out: dict[str, Any] = {"kind": args.kind, "size": args.size, "fps": args.fps, "seconds": args.seconds, "frames": video.frames,
                           "seed": args.seed, "crf": args.crf, "holdout": args.holdout, "camera": dataclasses.asdict(video.camera),
                           "reference_gaussians": len(video.reference), "render_seconds": render_seconds}  # fmt: skip
    if args.detect or args.reference_only:
        t0 = time.perf_counter()
        det = detection_rate(args.kind, read_frames(probe_video(video.video)), args.size, args.size)
        out["detection"] = {**det, "seconds": time.perf_counter() - t0}
        print(f"  MediaPipe finds the {'face' if args.kind == 'head' else 'person'} in {100 * det['found']:.1f} % of "
              f"{det['frames']} frames; missed {det['missed'][:20]}", flush=True)  # fmt: skip
    held = holdout_indices(video.frames, args.holdout)
    novel = novel_pose_set(template, video.camera, frames_per_motion=args.novel_frames)
    true_poses, true_cams = video.poses(template), video.camera.cameras(video.frames)
    runs: dict[str, Any] = {}
    if args.reference_only:
        init = init_avatar(template.to("cpu"), args.k, 0)
        for name, avatar in (("reference", video.reference), ("init", init)):
            a = score_frames(avatar, template, true_poses.index(held), true_cams.index(held), video, held)
            b = summary(score_novel(avatar, video.reference, template, novel))
            runs[name] = {"gaussians": len(avatar), "heldout": a, "novel": b}
            print(f"  {name} at the true motion | (a) {line('clean', a['clean'])} | vs video {a['video']['psnr']:.2f} dB | "
                  f"(b) {line('all views', b['all'])}, front {b['front']['psnr']:.2f} dB", flush=True)  # fmt: skip
        if not args.no_track:
            runs["reference_tracked"] = tracked_bound(video, template, held)
    else:
        output = Path(args.work) / f"{args.kind}_{args.size}_{args.seconds:g}s.avatar"
        cuda = device.type == "cuda"
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        result = run_capture(video.video, output, args.kind, args.holdout, args.steps, args.resolution, args.device, video.camera.fov)
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
        poses, cams = fitted_frames(result)
        held = [int(i) for i in result.holdout_frames]
        train = [int(i) for i in result.train_frames]
        train = train[:: max(1, len(train) // args.train_frames)][: args.train_frames]
        a = score_frames(result.avatar, template, poses.to(template.device).index(held), cams.index(held), video, held)
        t = score_frames(result.avatar, template, poses.to(template.device).index(train), cams.index(train), video, train)
        b = summary(score_novel(result.avatar, video.reference, template, novel))
        runs["capture"] = {
            "seconds": seconds, "minutes": seconds / 60, "peak_gpu_gib": peak,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "gaussians": len(result.avatar),
            "holdout_frames": [held[0], held[-1]], "own_holdout_metrics": result.holdout, "heldout": a, "train_sample": t, "novel": b,
        }  # fmt: skip
        print(f"  capture: {seconds / 60:.2f} min end to end, {len(result.avatar):,} Gaussians, peak GPU {peak} GiB", flush=True)
        print(f"  (a) held-out frames {held[0]}-{held[-1]}: {line('clean', a['clean'])}; vs video {a['video']['psnr']:.2f} dB", flush=True)
        print(f"  train sample: {line('clean', t['clean'])}", flush=True)
        print(f"  (b) novel poses: {line('all views', b['all'])}; " + ", ".join(f"{v} {b[v]['psnr']:.2f} dB" for v in b if v != "all"),
              flush=True)  # fmt: skip
        print(f"  the command's own held-out metrics: {result.holdout}", flush=True)
    out["runs"] = runs
    out["holdout_frames"] = [held[0], held[-1]]
    out["novel"] = {"frames": len(novel), "motions": sorted(set(novel.motions)), "views": sorted(set(novel.views))}
    suffix = "_reference" if args.reference_only else ""
    path = write_result(f"capture_{args.kind}_{args.size}_{args.seconds:g}s{suffix}", json.loads(json.dumps(out, default=_plain)))
    print(f"  -> {path}", flush=True)


def _plain(value: Any) -> Any:
    if isinstance(value, (np.generic, torch.Tensor)):
        return value.tolist()
    return str(value)


if __name__ == "__main__":
    main()
