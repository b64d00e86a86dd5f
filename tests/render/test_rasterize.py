"""The reference rasterizer: against a brute-force per-pixel renderer, conventions, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from avatarcli.render.cameras import Cameras, intrinsics, look_at, orbit
from avatarcli.render.rasterize import rasterize
from avatarcli.render.torch_rasterizer import eval_sh, project
from avatarcli.rotations import quat_to_matrix


def _front_camera(size: int = 32, dist: float = 2.0, fovy: float = 40.0, dtype=torch.float32) -> Cameras:
    eye = torch.tensor([[0.0, 0.0, dist]], dtype=dtype)
    view = look_at(eye, torch.zeros(1, 3, dtype=dtype))
    return Cameras(view, intrinsics(torch.tensor([fovy], dtype=dtype), size, size), size, size)


def _scene(n: int, seed: int, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g, dtype=dtype) - 0.5) * 0.8
    quats = torch.randn(n, 4, generator=g, dtype=dtype)
    quats = quats / quats.norm(dim=-1, keepdim=True)
    scales = torch.rand(n, 3, generator=g, dtype=dtype) * 0.08 + 0.01
    opac = torch.rand(n, generator=g, dtype=dtype) * 0.9 + 0.05
    colors = torch.rand(n, 3, generator=g, dtype=dtype)
    return means, quats, scales, opac, colors


def brute_force(means, quats, scales, opac, colors, cam: Cameras, background):
    """Every Gaussian against every pixel, in depth order, one pixel at a time in spirit."""
    m2d, conics, depth, _, valid = project(
        means[None], quats[None], scales[None], opac[None], cam.viewmats, cam.Ks, cam.width, cam.height, 0.01, 1e10, 0.3
    )
    order = torch.argsort(depth[0])
    h, w = cam.height, cam.width
    ys, xs = torch.meshgrid(torch.arange(h, dtype=means.dtype) + 0.5, torch.arange(w, dtype=means.dtype) + 0.5, indexing="ij")
    out = torch.zeros(h, w, 3, dtype=means.dtype)
    T = torch.ones(h, w, dtype=means.dtype)
    done = torch.zeros(h, w, dtype=torch.bool)
    for i in order.tolist():
        if not valid[0, i]:
            continue
        dx, dy = m2d[0, i, 0] - xs, m2d[0, i, 1] - ys
        a, b, c = conics[0, i]
        sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
        alpha = torch.clamp(opac[i] * torch.exp(-sigma), max=0.999)
        use = (sigma >= 0) & (alpha >= 1 / 255) & ~done
        nxt = T * (1 - alpha)
        stop = use & (nxt <= 1e-4)
        done |= stop
        use &= ~stop
        out = out + torch.where(use[..., None], (alpha * T)[..., None] * colors[i], torch.zeros_like(out))
        T = torch.where(use, nxt, T)
    return out + T[..., None] * background, 1 - T


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tiles_agree_with_brute_force(seed):
    means, quats, scales, opac, colors = _scene(60, seed)
    cam = _front_camera(40)
    bg = torch.tensor([0.2, 0.3, 0.4])
    img, alpha, _ = rasterize(means, quats, scales, opac, colors, cam, backgrounds=bg, backend="reference")
    ref, ref_alpha = brute_force(means, quats, scales, opac, colors, cam, bg)
    assert (img[0] - ref).abs().max() < 1e-5
    assert (alpha[0, ..., 0] - ref_alpha).abs().max() < 1e-5


def test_single_gaussian_peaks_where_the_camera_projects_it():
    cam = _front_camera(64)
    point = torch.tensor([[0.12, -0.08, 0.1]])
    _, alpha, meta = rasterize(
        point, torch.tensor([[1.0, 0, 0, 0]]), torch.full((1, 3), 0.02), torch.tensor([0.9]), torch.ones(1, 3), cam, backend="reference"
    )
    px, _ = cam.project(point[None])
    peak = torch.nonzero(alpha[0, ..., 0] == alpha.max())[0]
    assert abs(float(px[0, 0, 0]) - (peak[1] + 0.5)) <= 1.0 and abs(float(px[0, 0, 1]) - (peak[0] + 0.5)) <= 1.0
    # +x (the subject's left) is on the image's right, +y is up
    assert px[0, 0, 0] > 32 and px[0, 0, 1] > 32
    assert torch.allclose(meta["means2d"][0, 0], px[0, 0], atol=1e-4)


def test_front_occludes_back():
    cam = _front_camera(16)
    means = torch.tensor([[0.0, 0.0, 0.3], [0.0, 0.0, -0.3]])
    colors = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    quats = torch.tensor([[1.0, 0, 0, 0]]).expand(2, -1)
    img, _, _ = rasterize(means, quats, torch.full((2, 3), 0.2), torch.tensor([0.99, 0.99]), colors, cam, backend="reference")
    centre = img[0, 8, 8]
    assert centre[0] > 0.9 and centre[2] < 0.05


def test_empty_scene_is_background():
    cam = _front_camera(16)
    far = torch.tensor([[0.0, 0.0, 5.0]])  # behind the camera
    img, alpha, _ = rasterize(far, torch.tensor([[1.0, 0, 0, 0]]), torch.full((1, 3), 0.1), torch.tensor([0.9]), torch.ones(1, 3), cam,
                              backgrounds=torch.tensor([0.1, 0.5, 0.9]), backend="reference")  # fmt: skip
    assert torch.allclose(img[0], torch.tensor([0.1, 0.5, 0.9]).expand(16, 16, 3))
    assert alpha.abs().max() == 0


def test_gradients_match_finite_differences():
    means, quats, scales, opac, colors = _scene(6, 3, dtype=torch.float64)
    cam = _front_camera(12, dtype=torch.float64)
    params = [t.clone().requires_grad_(True) for t in (means, scales, opac, colors)]

    def f(m, s, o, c):
        img, _, _ = rasterize(m, quats, s, o, c, cam, backgrounds=torch.zeros(3, dtype=torch.float64), backend="reference")
        return img

    assert torch.autograd.gradcheck(f, params, eps=1e-6, atol=1e-4, rtol=1e-3)


def test_view_dependent_colour_from_sh():
    d = torch.tensor([[0.3, -0.4, 0.866]])
    coeffs = torch.zeros(1, 16, 3)
    coeffs[0, 2, 0] = 1.0  # the z-aligned degree-1 function, red only
    val = eval_sh(3, d, coeffs)
    assert torch.allclose(val[0, 0], torch.tensor(0.4886025119029199 * 0.866 / float(d.norm())), atol=1e-6)
    assert val[0, 1] == 0 and val[0, 2] == 0


def test_camera_conventions():
    cams = orbit(torch.zeros(3), 2.0, torch.tensor([0.0, 90.0]), 0.0, 50.0, 64, 48)
    centers = cams.centers
    assert torch.allclose(centers[0], torch.tensor([0.0, 0.0, 2.0]), atol=1e-6)
    assert torch.allclose(centers[1], torch.tensor([2.0, 0.0, 0.0]), atol=1e-6)
    px, depth = cams.project(torch.zeros(2, 1, 3))
    assert torch.allclose(px[:, 0], torch.tensor([[32.0, 24.0], [32.0, 24.0]]), atol=1e-4)
    assert torch.allclose(depth, torch.full((2, 1), 2.0), atol=1e-6)
    fy = float(cams.Ks[0, 1, 1])
    assert math.isclose(fy, 24.0 / math.tan(math.radians(25.0)), rel_tol=1e-5)
    # world-to-camera rotation is orthonormal and right-handed
    r = cams.viewmats[:, :3, :3]
    assert torch.allclose(r @ r.transpose(1, 2), torch.eye(3).expand(2, 3, 3), atol=1e-6)
    assert torch.allclose(torch.linalg.det(r), torch.ones(2), atol=1e-6)


def test_anisotropic_gaussian_is_oriented():
    cam = _front_camera(48)
    # a needle along world x, then rotated 90 degrees about z: it should lie along the image's y
    q = torch.tensor([[math.cos(math.pi / 4), 0.0, 0.0, math.sin(math.pi / 4)]])
    assert torch.allclose(quat_to_matrix(q)[0] @ torch.tensor([1.0, 0, 0]), torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)
    _, alpha, _ = rasterize(torch.zeros(1, 3), q, torch.tensor([[0.2, 0.01, 0.01]]), torch.tensor([0.9]), torch.ones(1, 3), cam,
                            backend="reference")  # fmt: skip
    a = alpha[0, ..., 0]
    assert a[:, 24].sum() > 3 * a[24, :].sum()


def test_per_pose_opacities_and_colours_render_each_pose_its_own():
    """A batch whose opacities (B, N) and colours (B, N, K, 3) differ per pose renders as each
    pose alone; one such pose seen by several cameras takes its own values."""
    from avatarcli.model.gaussians import PosedGaussians
    from avatarcli.render.rasterize import render_gaussians

    means, quats, scales, opac, _ = _scene(40, 3)
    g = torch.Generator().manual_seed(4)
    sh = torch.rand(2, 40, 1, 3, generator=g)
    opacities = torch.stack([opac, opac.flip(0)])
    batch = PosedGaussians(means[None].expand(2, -1, -1), quats[None].expand(2, -1, -1), scales[None].expand(2, -1, -1), opacities, sh)
    cams = orbit(torch.zeros(3), 2.0, torch.tensor([0.0, 40.0]), 0.0, 40.0, 32, 32)
    images, _, _ = render_gaussians(batch, cams, torch.ones(3))
    for b in range(2):
        alone = PosedGaussians(means[None], quats[None], scales[None], opacities[b], sh[b])
        want, _, _ = render_gaussians(alone, cams.index([b]), torch.ones(3))
        assert torch.allclose(images[b], want[0], atol=1e-6)
    assert float((images[0] - images[1]).abs().max()) > 0.05
    both, _, _ = render_gaussians(batch.frame(1), cams, torch.ones(3))
    alone = PosedGaussians(means[None], quats[None], scales[None], opacities[1], sh[1])
    assert torch.allclose(both, render_gaussians(alone, cams, torch.ones(3))[0], atol=1e-6)
