"""The CUDA suite on the pose-dependent appearance: generation with ``--pose-dependent``
(killed and resumed, the model made at the animation stage), then animation and every
export at a motion frame on the GPU; gsplat against the PyTorch reference with per-pose
opacities and colours; and capture's trainer on the pose gauge, with and without the model.
"""

from __future__ import annotations

import math
from pathlib import Path

import imageio.v3 as iio
import pytest
import torch
from gpu_helpers import Models, avatar, generate_killed_at, metadata

pytestmark = pytest.mark.cuda

PROMPTS = {"head": "Kratos", "body": "a chef dressed in white"}
MOTIONS = {"head": "talk", "body": "walk"}


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a - b) ** 2).mean())
    return 100.0 if mse == 0 else 10 * math.log10(1.0 / mse)


@pytest.mark.parametrize("kind", ["head", "body"])
def test_generate_with_the_model_resumed_then_animate_and_export(kind: str, models: Models, tmp_path: Path) -> None:
    from avatarcli.api.exporting import _motion_poses
    from avatarcli.formats.ply import read_ply
    from avatarcli.model import avatar_file
    from avatarcli.motion.readers import read_motion
    from avatarcli.render.cameras import framing, turntable_cameras
    from avatarcli.render.rasterize import render_gaussians
    from avatarcli.templates.loading import load_template

    out = tmp_path / f"{kind}.avatar"
    args = [PROMPTS[kind], "--model", kind, "--diffusion", models.base, "--controlnet", models.controlnet, "--device", "cuda",
            "--steps", "40", "--batch", "4", "--resolution", "512", "--checkpoint-every", "12", "--pose-dependent", "-o", out]  # fmt: skip
    # step 24: bodies are in the animation stage (canonical: the first 16), the model trains
    generate_killed_at(24, args, out.with_suffix(".ckpt"))
    assert metadata(out.with_suffix(".ckpt"))["pose_dependent"] is not None
    avatar("generate", *args, "--resume")
    meta = metadata(out)
    assert meta["stage"] == "generated" and meta["pose_dependent"]["features"] == kind

    video = tmp_path / f"{kind}.mp4"
    avatar("animate", out, MOTIONS[kind], "--size", "1024", "--end", "2", "-o", video)
    frames = list(iio.imiter(video))
    assert len(frames) >= 50 and frames[0].shape == (1024, 1024, 3)

    short = tmp_path / "short.npz"
    avatar("motions", MOTIONS[kind], "--seconds", "0.2", "--fps", "10", "-o", short)
    for name, extra in (("f1.ply", ("--motion", short, "--frame", "1")), ("f1.splat.glb", ("--motion", short, "--frame", "1")),
                        ("a.glb", ("--motion", short)), ("a.html", ("--motion", short)),
                        ("frames", ("--motion", short, "--sequence"))):  # fmt: skip
        avatar("export", out, "--device", "cuda", "-o", tmp_path / name, *extra)
        assert (tmp_path / name).exists()
    assert len(list((tmp_path / "frames").glob("*.ply"))) == 3

    # the exported frame is the avatar posed with that frame's offsets, on the GPU
    dev = torch.device("cuda")
    tpl = load_template(kind, device=dev)
    av = avatar_file.load(out).to(dev)
    assert av.pose_dependent is not None
    poses = _motion_poses(read_motion(short), tpl).to(dev)
    with torch.no_grad():
        want = av.posed(tpl, poses.index([1])).gaussians(0)
    got = read_ply(tmp_path / "f1.ply")
    assert torch.allclose(got.means, want.means.cpu(), atol=1e-5)
    assert torch.allclose(got.sh[:, 0], want.sh[:, 0].cpu(), atol=1e-5)

    # gsplat and the reference agree on a batch of poses with per-pose opacities and colours
    with torch.no_grad():
        pg = av.posed(tpl, poses)
    assert pg.per_pose
    center, radius = framing(pg.means[0])
    cams = turntable_cameras(center, radius, 3, (512, 512)).to(dev)
    images = {b: render_gaussians(pg, cams, torch.ones(3, device=dev), backend=b)[0] for b in ("gsplat", "reference")}
    assert _psnr(images["gsplat"], images["reference"]) > 60.0


def test_capture_with_the_model_on_the_pose_gauge() -> None:
    """Capture's trainer on the GPU, with and without the model, on the head gauge at 128 px:
    with the model the novel poses come out closer to the reference."""
    from avatarcli.capture.fit import CaptureSettings
    from avatarcli.evaluation.pose_gauge import GaugeSetup, known_pose_capture, pose_reference, score
    from avatarcli.templates.loading import load_template

    tpl = load_template("head", device=torch.device("cuda"))
    setup = GaugeSetup(size=128, frames=60, novel=8)
    ref = pose_reference(tpl, True, 1)
    scores = {}
    for model in (True, False):
        settings = CaptureSettings(steps=600, batch=4, resolution=128, points_per_triangle=1, pose_dependent=model)
        captured = known_pose_capture(ref, tpl, setup, settings)
        assert (captured.pose_dependent is not None) == model
        scores[model] = score(captured, ref, tpl, setup)
    print(f"pose gauge, head, 128 px: with the model {scores[True]}, without {scores[False]}")
    assert scores[True]["psnr_masked"] > scores[False]["psnr_masked"] + 0.5
