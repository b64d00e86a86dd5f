"""The CUDA suite's capture: a gauge video of a known person (a head, a body), captured by the
real CLI on the GPU with held-out frames, then animated and exported.

The videos are short (4 s at 256 px) so the suite stays minutes long; the full-size gauge is
bench/capture.py. Needs MediaPipe (the ``[track]`` extra) beside the CUDA packages.
"""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import pytest
import torch
from gpu_helpers import avatar, metadata

pytestmark = pytest.mark.cuda

STEPS = {"head": 1200, "body": 1200}
BARS = {"head": 24.0, "body": 22.0}  # held-out PSNR inside the mask; an avatar of the template's colours scores 10-12 dB there


@pytest.mark.parametrize("kind", ["head", "body"])
def test_capture_a_gauge_video_then_every_command(kind: str, tmp_path: Path) -> None:
    pytest.importorskip("mediapipe")
    from avatarcli.evaluation.capture_video import make_capture_video
    from avatarcli.templates.loading import load_template

    template = load_template(kind, device=torch.device("cuda"))
    video = make_capture_video(kind, tmp_path / "gauge", size=256, fps=15, seconds=4.0, template=template)
    out = tmp_path / f"{kind}.avatar"
    args = ["capture", video.video, "--model", kind, "--fov", str(video.camera.fov), "--holdout", "0.15", "--steps", str(STEPS[kind]),
            "--resolution", "256", "--device", "cuda", "--checkpoint-every", "400", "-o", out]  # fmt: skip
    run = avatar(*args)
    assert "held out" in run.stderr
    meta = metadata(out)
    held = meta["capture"]["holdout"]
    print(f"{kind}: captured in {run.seconds:.0f} s, held-out {held}")
    assert meta["stage"] == "captured" and held["psnr_masked"] > BARS[kind], held
    assert meta["run"]["device"] != "cpu"

    info = json.loads(avatar("info", out, "--json").stdout)
    assert info["kind"] == kind and info["gaussians"] > 0
    motion = "talk" if kind == "head" else "walk"
    clip = tmp_path / f"{kind}.mp4"
    avatar("animate", out, motion, "--size", "512", "--end", "1", "-o", clip)
    assert iio.imread(clip, index=0).shape == (512, 512, 3)
    for name in ("a.ply", "a.splat.glb", "a.glb"):
        avatar("export", out, "--device", "cuda", "-o", tmp_path / name)
        assert (tmp_path / name).stat().st_size > 0
