"""The CUDA suite's relighting part: gsplat against the PyTorch rasterizer on shaded colours
(gradients into the materials and, through the normals, the rotations), the relighting gauge
run small through capture's trainer on the GPU, and a relightable generate (head and body,
full-size random-weight networks) followed by animate, render and export with --light."""

from __future__ import annotations

import json
import math
from pathlib import Path

import imageio.v3 as iio
import pytest
import torch
from gpu_helpers import Models, avatar, metadata

pytestmark = pytest.mark.cuda

PROMPTS = {"head": "Kratos", "body": "a chef dressed in white"}
MOTIONS = {"head": "talk", "body": "walk"}


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a - b) ** 2).mean())
    return 100.0 if mse == 0 else 10 * math.log10(1.0 / mse)


def test_gsplat_matches_the_reference_on_shaded_colours() -> None:
    from avatarcli.model.initialize import init_avatar
    from avatarcli.model.material import linear_to_srgb, with_material
    from avatarcli.model.normals import gaussian_normals
    from avatarcli.render.cameras import framing, turntable_cameras
    from avatarcli.render.lights import preset_light
    from avatarcli.render.rasterize import rasterize
    from avatarcli.render.shading import Lighting, normal_signs, shade, view_directions
    from avatarcli.templates.loading import load_template

    dev = torch.device("cuda")
    tpl = load_template("head", device=dev)
    av = with_material(init_avatar(tpl, 4, 0), tpl).to(dev)
    gen = torch.Generator(device=dev).manual_seed(0)
    m = av.material
    m.albedo_logits = m.albedo_logits + torch.randn(m.albedo_logits.shape, generator=gen, device=dev)
    m.roughness_logits = torch.randn(m.roughness_logits.shape, generator=gen, device=dev)
    with torch.no_grad():
        pg = av.posed(tpl)
    signs = normal_signs(av.gaussians, av.binding, tpl)
    center, radius = framing(pg.means[0])
    cams = turntable_cameras(center, radius, 4, (512, 512)).to(dev)
    lighting = Lighting.of(preset_light("sunset"), dev, torch.tensor([0.0, 0.5, 1.0, 1.5], device=dev))
    weights = torch.rand(4, 512, 512, 3, device=dev, generator=gen)
    out = {}
    for backend in ("gsplat", "reference"):
        leaves = [t.detach().clone().requires_grad_(True) for t in (pg.means[0], pg.quats[0], pg.scales[0], m.albedo_logits,
                                                                    m.roughness_logits, m.specular_logits)]  # fmt: skip
        means, quats, scales, a, r, f = leaves
        lo, hi = m.roughness_range
        so, sh = m.specular_range
        normals = gaussian_normals(quats[None], scales[None], signs).expand(4, -1, -1)
        colors = shade(torch.sigmoid(a), lo + (hi - lo) * torch.sigmoid(r), so + (sh - so) * torch.sigmoid(f), normals,
                       view_directions(means[None], cams), lighting.maps, lighting.angles)  # fmt: skip
        c = len(cams)
        images, _, _ = rasterize(means.expand(c, -1, -1), quats.expand(c, -1, -1), scales.expand(c, -1, -1), pg.opacities,
                                 linear_to_srgb(colors), cams, torch.ones(3, device=dev), backend=backend)  # fmt: skip
        (images * weights).sum().backward()
        out[backend] = (images.detach(), [t.grad for t in leaves])
    (ig, gg), (ir, gr) = out["gsplat"], out["reference"]
    cos = [float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0)) for a, b in zip(gg, gr, strict=True)]
    print(f"shaded: gsplat vs reference {_psnr(ig, ir):.1f} dB, gradient cosines {[round(x, 6) for x in cos]}")
    assert _psnr(ig, ir) > 60.0 and min(cos) > 0.999


def test_the_relighting_gauge_small_on_the_gpu() -> None:
    from avatarcli.evaluation.relight_gauge import GaugeSettings, run_gauge
    from avatarcli.templates.loading import load_template

    tpl = load_template("head", device=torch.device("cuda"))
    result = run_gauge(tpl, GaugeSettings(size=128, frames=48, steps=600, batch=4, reference_points=2, capture_points=2))
    summary = result.summary()
    print("relighting gauge at 128 px, 600 steps:", {k: round(v, 2) for k, v in summary.items()})
    assert result.avatars["relightable"].material is not None and result.avatars["relightable"].material.light is not None
    assert summary["relit_above_colours"] > 3.0 and summary["relit_below_same"] < 2.5


@pytest.mark.parametrize("kind", ["head", "body"])
def test_relightable_generate_then_animate_render_and_export_with_lights(kind: str, models: Models, tmp_path: Path) -> None:
    out = tmp_path / f"{kind}.avatar"
    avatar("generate", PROMPTS[kind], "--model", kind, "--diffusion", models.base, "--controlnet", models.controlnet, "--device", "cuda",
           "--relightable", "--steps", "40", "--batch", "4", "--resolution", "512", "--checkpoint-every", "20", "-o", out)  # fmt: skip
    meta = metadata(out)
    assert meta["stage"] == "generated" and "material" in meta
    info = json.loads(avatar("info", out, "--json").stdout)
    assert info["materials"] is not None
    video = tmp_path / "sunset.mp4"
    avatar("animate", out, MOTIONS[kind], "--size", "1024", "--end", "1", "--light", "sunset", "--light-rotate", "90", "-o", video)
    frames = list(iio.imiter(video))
    assert len(frames) >= 25 and frames[0].shape == (1024, 1024, 3)
    avatar("render", out, "--views", "2", "--light", "daylight", "-o", tmp_path / "views.png")
    assert iio.imread(tmp_path / "views.png").shape[:2] == (512, 1024)
    for name in ("a.ply", "a.splat", "a.splat.glb", "a.glb", "a.html"):
        avatar("export", out, "--device", "cuda", "--light", "night", "-o", tmp_path / name)
        assert (tmp_path / name).stat().st_size > 0
    bad = tmp_path / "bad.hdr"
    bad.write_bytes(b"#?RADIANCE\n\n-Y 2 +X 2\n")
    run = avatar("render", out, "--light", bad, "-o", tmp_path / "x.png", check=False)
    assert run.code == 2 and run.stderr.strip().startswith("error:") and not (tmp_path / "x.png").exists()
