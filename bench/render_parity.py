"""gsplat against the pure-PyTorch reference on real avatars from `avatar init`, and gsplat's
render time at 1024x1024.

    python bench/render_parity.py [--size 512] [--timing-size 1024]

Needs CUDA. For each template kind: 8 random training cameras, images and gradients from both
backends (max / mean absolute difference, PSNR between them, cosine similarity and relative
error of every parameter's gradient), then gsplat forward and forward+backward times.
"""

from __future__ import annotations

import argparse
import math

import torch

from avatarcli.generate.samplers import view_size
from avatarcli.model.binding import deform, rest_posed
from avatarcli.model.initialize import init_avatar
from avatarcli.render.cameras import BODY_RANGES, HEAD_RANGES, framing, sample_cameras
from avatarcli.render.rasterize import render_gaussians
from avatarcli.templates.loading import load_template

from common import time_it, write_result


def perturbed(avatar, seed: int = 0):
    """The init avatar with anisotropic, randomly turned Gaussians and varied opacity and colour:
    an isotropic init has exactly zero rotation gradients, which would compare nothing."""
    g = avatar.gaussians
    gen = torch.Generator().manual_seed(seed)
    n = len(g)
    g.log_scales = g.log_scales + torch.randn(n, 3, generator=gen) * 0.4
    g.quats = torch.nn.functional.normalize(torch.randn(n, 4, generator=gen), dim=-1)
    g.opacity_logits = g.opacity_logits + torch.randn(n, generator=gen)
    g.sh = g.sh + torch.randn(g.sh.shape, generator=gen) * 0.3
    return avatar


def leaf_params(avatar, device):
    g = avatar.gaussians.to(device)
    return {k: getattr(g, k).clone().requires_grad_(True) for k in ("means", "log_scales", "quats", "opacity_logits", "sh")}


def render_with(params, avatar, template, posed, cams, backend):
    from avatarcli.model.gaussians import Gaussians

    g = Gaussians(**params)
    pg = deform(g, avatar.binding, template, posed)
    return render_gaussians(pg, cams, torch.ones(3, device=cams.viewmats.device), backend=backend)


def parity(kind: str, size: int, timing_size: int, device: torch.device) -> dict:
    tpl = load_template(kind, device=device)
    av = perturbed(init_avatar(tpl, points_per_triangle=10, seed=0)).to(device)
    posed = rest_posed(tpl)
    with torch.no_grad():
        means = deform(av.gaussians, av.binding, tpl, posed).means[0]
        center, _ = framing(means)
    ranges = HEAD_RANGES if kind == "head" else BODY_RANGES
    view = view_size(ranges, tpl, means)
    gen = torch.Generator().manual_seed(0)
    cams = sample_cameras(8, center, view, ranges, size, size, gen).cameras
    posed8 = tpl.pose(tpl.zero_pose(8))
    weights = torch.rand(8, size, size, 3, generator=gen).to(device)
    out: dict = {"gaussians": len(av), "size": size}
    grads, images = {}, {}
    for backend in ("gsplat", "reference"):
        params = leaf_params(av, device)
        img, _, _ = render_with(params, av, tpl, posed8, cams, backend)
        (img * weights).sum().backward()
        images[backend] = img.detach()
        grads[backend] = {k: v.grad.detach().clone() for k, v in params.items()}
    diff = (images["gsplat"] - images["reference"]).abs()
    mse = float((diff**2).mean())
    out["image_max_abs_diff"] = float(diff.max())
    out["image_mean_abs_diff"] = float(diff.mean())
    out["image_psnr_db"] = 10 * math.log10(1.0 / max(mse, 1e-20))
    out["grad"] = {}
    for k in grads["gsplat"]:
        a, b = grads["gsplat"][k].flatten(), grads["reference"][k].flatten()
        out["grad"][k] = {
            "cosine": float(torch.nn.functional.cosine_similarity(a, b, dim=0)),
            "relative_l2": float((a - b).norm() / b.norm().clamp_min(1e-20)),
        }
    # gsplat timing at the timing size: one view, and a batch of 8 (forward, forward+backward)
    cams_t = sample_cameras(8, center, view, ranges, timing_size, timing_size, gen).cameras
    params = leaf_params(av, device)
    posed1 = tpl.pose(tpl.zero_pose(1))

    def fwd1():
        with torch.no_grad():
            render_with(params, av, tpl, posed1, cams_t.index(slice(0, 1)), "gsplat")

    def fwd8():
        with torch.no_grad():
            render_with(params, av, tpl, posed8, cams_t, "gsplat")

    def fwdbwd8():
        img, _, _ = render_with(params, av, tpl, posed8, cams_t, "gsplat")
        img.sum().backward()

    out["timing_size"] = timing_size
    out["gsplat_1view_forward"] = time_it(fwd1)
    out["gsplat_8views_forward"] = time_it(fwd8)
    out["gsplat_8views_forward_backward"] = time_it(fwdbwd8)
    out["fps_1view"] = 1000.0 / out["gsplat_1view_forward"]["median_ms"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--timing-size", type=int, default=1024)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("render_parity needs CUDA")
    device = torch.device("cuda")
    results = {kind: parity(kind, args.size, args.timing_size, device) for kind in ("head", "body")}
    write_result("render_parity", results)
    print(f"{'kind':6} {'N':>8} {'max|d|':>9} {'mean|d|':>9} {'PSNR':>7}  grad cos (means/scales/quats/opac/sh)  1view ms  8view f+b ms")
    for kind, r in results.items():
        cos = "/".join(f"{r['grad'][k]['cosine']:.4f}" for k in ("means", "log_scales", "quats", "opacity_logits", "sh"))
        print(
            f"{kind:6} {r['gaussians']:>8} {r['image_max_abs_diff']:>9.2e} {r['image_mean_abs_diff']:>9.2e} {r['image_psnr_db']:>7.1f}  "
            f"{cos}  {r['gsplat_1view_forward']['median_ms']:.2f}  {r['gsplat_8views_forward_backward']['median_ms']:.2f}"
        )


if __name__ == "__main__":
    main()
