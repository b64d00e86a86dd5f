"""The CUDA suite: the real CLI on a GPU, as users run it, with full-size random-weight networks.

Generation runs every stage of each recipe (heads: animate; bodies: canonical, re-rigging,
animate with residual skinning weights) with periodic checkpoints, is killed, and resumed;
the result then goes through every other command. Compiled networks, the tiny encoder and
the low-memory path each run too, and gsplat is checked against the PyTorch reference on
generated avatars. ``make gpu-test`` runs it on a GPU machine; elsewhere it is skipped.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import imageio.v3 as iio
import pytest
import torch
from gpu_helpers import Models, avatar, generate_killed_at, metadata

pytestmark = pytest.mark.cuda

STEPS = 200
PROMPTS = {"head": "Kratos", "body": "a chef dressed in white"}
MOTIONS = {"head": "talk", "body": "walk"}


def _generate_args(kind: str, models: Models, out: Path, *extra: str | Path) -> list[str | Path]:
    return [PROMPTS[kind], "--model", kind, "--diffusion", models.base, "--controlnet", models.controlnet,
            "--device", "cuda", "-o", out, *extra]  # fmt: skip


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a - b) ** 2).mean())
    return 100.0 if mse == 0 else 10 * math.log10(1.0 / mse)


def gsplat_against_reference(path: Path, kind: str) -> dict[str, float]:
    """Render a generated avatar with gsplat, the reference and the compiled CPU rasterizer
    (4 views, 512x512) and compare gsplat's images and the gradients of a random weighting of
    them with each of the other two."""
    from avatarcli.model import avatar_file
    from avatarcli.render.cameras import framing, turntable_cameras
    from avatarcli.render.rasterize import rasterize
    from avatarcli.templates.loading import load_template

    dev = torch.device("cuda")
    tpl = load_template(kind, device=dev)
    av = avatar_file.load(path).to(dev)
    with torch.no_grad():
        pg = av.posed(tpl)
    center, radius = framing(pg.means[0])
    cams = turntable_cameras(center, radius, 4, (512, 512)).to(dev)
    weights = torch.rand(4, 512, 512, 3, device=dev, generator=torch.Generator(dev).manual_seed(0))
    out = {}
    for backend in ("gsplat", "reference", "cpu"):  # the compiled CPU rasterizer on copies in host memory
        on = torch.device("cpu") if backend == "cpu" else dev
        leaves = [t.detach().to(on).clone().requires_grad_(True) for t in (pg.means[0], pg.quats[0], pg.scales[0], pg.opacities, pg.sh)]
        c = cams.to(on)
        images, _, _ = rasterize(*leaves, c, torch.ones(3, device=on), sh_degree=av.gaussians.sh_degree, backend=backend)
        (images * weights.to(on)).sum().backward()
        out[backend] = (images.detach().to(dev), [t.grad.to(dev) for t in leaves])

    def compare(a: str, b: str) -> tuple[float, float]:
        (ia, ga), (ib, gb) = out[a], out[b]
        cos = [float(torch.nn.functional.cosine_similarity(x.flatten(), y.flatten(), dim=0)) for x, y in zip(ga, gb, strict=True)]
        return _psnr(ia, ib), min(cos)

    psnr, cos = compare("gsplat", "reference")
    psnr_cpu, cos_cpu = compare("gsplat", "cpu")
    return {"psnr": psnr, "min_grad_cosine": cos, "psnr_cpu": psnr_cpu, "min_grad_cosine_cpu": cos_cpu, "gaussians": len(av)}


@pytest.mark.parametrize("kind", ["head", "body"])
def test_generate_killed_resumed_then_every_command(kind: str, models: Models, tmp_path: Path) -> None:
    out = tmp_path / f"{kind}.avatar"
    args = _generate_args(kind, models, out, "--steps", str(STEPS), "--checkpoint-every", "100")
    # killed at step 100: for bodies that is in the animation stage (canonical takes the
    # first 40 %), where the residual skinning network trains next to the checkpoint's copy
    kill_at = 100
    generate_killed_at(kill_at, args, out.with_suffix(".ckpt"))
    unfinished = out.with_suffix(".unfinished.avatar")
    assert metadata(unfinished)["stage"] == f"animate@{kill_at}" and not out.exists()
    avatar("generate", *args, "--resume")
    assert not unfinished.exists()
    meta = metadata(out)
    assert meta["stage"] == "generated" and meta["steps"] == STEPS
    if kind == "body":
        assert "residual" in meta  # the learnt skinning correction was saved

    info = json.loads(avatar("info", out, "--json").stdout)
    assert info["kind"] == kind and info["gaussians"] > 0 and info["bounds"] is not None

    avatar("rig", out, "-o", tmp_path / "rigged.avatar")
    assert metadata(tmp_path / "rigged.avatar")["kind"] == kind

    video = tmp_path / f"{kind}.mp4"
    avatar("animate", out, MOTIONS[kind], "--size", "1024", "--end", "2", "-o", video)
    frames = list(iio.imiter(video))
    assert len(frames) >= 50 and frames[0].shape == (1024, 1024, 3)

    avatar("render", out, "--views", "4", "-o", tmp_path / "views.png")
    assert iio.imread(tmp_path / "views.png").shape[:2] == (512, 2048)

    short = tmp_path / "short.npz"
    avatar("motions", MOTIONS[kind], "--seconds", "0.2", "--fps", "10", "-o", short)
    for name, extra in (("a.ply", ()), ("a.compressed.ply", ()), ("a.splat", ()), ("a.glb", ("--motion", short)),
                        ("frames", ("--motion", short, "--sequence"))):  # fmt: skip
        avatar("export", out, "--device", "cuda", "-o", tmp_path / name, *extra)
        assert (tmp_path / name).exists()
    assert len(list((tmp_path / "frames").glob("*.ply"))) == 3

    parity = gsplat_against_reference(out, kind)
    print(f"{kind}: gsplat vs reference and vs the cpu backend on the generated avatar: {parity}")
    assert parity["psnr"] > 60.0 and parity["min_grad_cosine"] > 0.999
    assert parity["psnr_cpu"] > 60.0 and parity["min_grad_cosine_cpu"] > 0.999


@pytest.mark.parametrize("kind", ["head", "body"])
def test_compiled_networks_with_the_tiny_encoder(kind: str, models: Models, tmp_path: Path) -> None:
    out = tmp_path / f"{kind}.avatar"
    avatar("generate", *_generate_args(kind, models, out, "--steps", "120", "--checkpoint-every", "100", "--compile",
                                       "--encoder", models.taesd))  # fmt: skip
    meta = metadata(out)
    assert meta["stage"] == "generated" and meta["steps"] == 120


@pytest.mark.parametrize("kind", ["head", "body"])
def test_low_memory(kind: str, models: Models, tmp_path: Path) -> None:
    out = tmp_path / f"{kind}.avatar"
    avatar("generate", *_generate_args(kind, models, out, "--steps", "10", "--checkpoint-every", "0", "--low-memory"))
    assert metadata(out)["stage"] == "generated"
