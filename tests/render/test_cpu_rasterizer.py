"""The compiled CPU rasterizer against the PyTorch reference: images, alphas, meta and the
gradients of every input, on random scenes, real avatars and the awkward cases."""

from __future__ import annotations

import math

import numba
import pytest
import torch

from avatarcli.errors import AvatarError
from avatarcli.render import cpu_kernels
from avatarcli.render.cameras import Cameras, framing, intrinsics, look_at, orbit, turntable_cameras
from avatarcli.render.rasterize import pick_backend, rasterize, render_gaussians

NAMES = ("means", "quats", "scales", "opacities", "colors", "backgrounds")


def _cameras(width: int, height: int, azimuths: list[float], dtype: torch.dtype = torch.float32, dist: float = 2.0) -> Cameras:
    cams = orbit(torch.zeros(3), dist, torch.tensor(azimuths), 10.0, 45.0, width, height)
    return Cameras(cams.viewmats.to(dtype), cams.Ks.to(dtype), width, height)


def _scene(n: int, seed: int, channels: int = 3, dtype: torch.dtype = torch.float32, spread: float = 0.8):
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g, dtype=dtype) - 0.5) * spread
    quats = torch.randn(n, 4, generator=g, dtype=dtype)
    scales = torch.rand(n, 3, generator=g, dtype=dtype) * 0.08 + 0.01
    opac = torch.rand(n, generator=g, dtype=dtype) * 0.9 + 0.05
    colors = torch.rand(n, channels, generator=g, dtype=dtype)
    return [means, quats, scales, opac, colors]


def _both(inputs: list[torch.Tensor], cams: Cameras, backgrounds: torch.Tensor | None, sh_degree: int | None = None, alpha_loss=True):
    """Render with both backends, backpropagate one random weighting of images (and alphas)
    through each; returns {backend: (images, alphas, meta, grads by name)}."""
    out = {}
    for backend in ("cpu", "reference"):
        leaves = [t.clone().requires_grad_(True) for t in inputs]
        bg = None if backgrounds is None else backgrounds.clone().requires_grad_(True)
        images, alphas, meta = rasterize(*leaves, cams, backgrounds=bg, sh_degree=sh_degree, backend=backend)
        meta["means2d"].retain_grad()
        g = torch.Generator().manual_seed(7)
        loss = (images * torch.randn(images.shape, generator=g, dtype=images.dtype)).sum()
        if alpha_loss:
            loss = loss + (alphas * torch.randn(alphas.shape, generator=g, dtype=alphas.dtype)).sum()
        loss.backward()
        grads = dict(zip(NAMES, [t.grad for t in leaves] + [None if bg is None else bg.grad], strict=True))
        grads["means2d"] = meta["means2d"].grad
        out[backend] = (images.detach(), alphas.detach(), meta, grads)
    return out


def _assert_agree(out: dict, image_tol: float = 1e-5, rel_tol: float = 1e-4) -> None:
    (img, alp, meta, grads), (rimg, ralp, rmeta, rgrads) = out["cpu"], out["reference"]
    assert (img - rimg).abs().max() < image_tol
    assert (alp - ralp).abs().max() < image_tol
    assert torch.equal(meta["radii"], rmeta["radii"])
    for key in ("means2d", "conics", "depths"):
        assert torch.allclose(meta[key], rmeta[key])
    for name, ref in rgrads.items():
        mine = grads[name]
        if ref is None or mine is None:  # no path to the images in one of them (nothing visible): zeros in the other
            assert all(t is None or bool((t == 0).all()) for t in (ref, mine)), name
            continue
        if bool((ref == 0).all()):
            assert bool((mine == 0).all()), name
            continue
        cos = torch.nn.functional.cosine_similarity(mine.flatten().double(), ref.flatten().double(), dim=0)
        rel = (mine - ref).norm() / ref.norm()
        assert cos > 1 - 1e-6 and rel < rel_tol, (name, float(cos), float(rel))


@pytest.mark.parametrize("seed", [0, 1])
def test_random_scenes_agree_with_the_reference(seed):
    # one set seen by three cameras, at a size that is not a multiple of the tile
    cams = _cameras(53, 37, [0.0, 40.0, 200.0])
    out = _both(_scene(400, seed), cams, torch.tensor([0.2, 0.3, 0.4]))
    _assert_agree(out)
    assert out["cpu"][1].max() > 0.9  # the scene covers pixels: a real test


def test_one_set_per_camera_many_channels_no_background():
    sets = [_scene(150, 10 + c, channels=5) for c in range(2)]
    batched = [torch.stack([s[i] for s in sets]) for i in range(5)]
    out = _both(batched, _cameras(40, 40, [10.0, 100.0]), None)
    _assert_agree(out)
    assert out["cpu"][0].shape == (2, 40, 40, 5)


def test_per_camera_backgrounds_and_sh_colours():
    means, quats, scales, opac, _ = _scene(300, 4)
    sh = torch.randn(300, 16, 3, generator=torch.Generator().manual_seed(5)) * 0.3
    bgs = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.5, 1.0]])
    out = _both([means, quats, scales, opac, sh], _cameras(48, 32, [0.0, 130.0]), bgs, sh_degree=3)
    _assert_agree(out)


def test_rendering_without_gradients_agrees():
    """The compiled projection and SH of the render-only path against the reference."""
    means, quats, scales, opac, _ = _scene(500, 6)
    sh = torch.randn(500, 9, 3, generator=torch.Generator().manual_seed(8)) * 0.3
    cams = _cameras(61, 45, [0.0, 75.0, 190.0])
    bg = torch.tensor([0.1, 0.7, 0.3])
    with torch.no_grad():
        img, alp, meta = rasterize(means, quats, scales, opac, sh, cams, backgrounds=bg, sh_degree=2, backend="cpu")
        rimg, ralp, rmeta = rasterize(means, quats, scales, opac, sh, cams, backgrounds=bg, sh_degree=2, backend="reference")
    assert (img - rimg).abs().max() < 1e-5 and (alp - ralp).abs().max() < 1e-5
    assert torch.equal(meta["radii"], rmeta["radii"])
    visible = rmeta["radii"][..., 0] > 0
    for key in ("means2d", "conics", "depths"):
        assert torch.allclose(meta[key][visible], rmeta[key][visible], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["head", "body"])
def test_avatars_agree_with_the_reference(kind, request):
    template = request.getfixturevalue(f"{kind}_template")
    avatar = request.getfixturevalue(f"{kind}_avatar")
    with torch.no_grad():
        pg = avatar.posed(template)
        center, radius = framing(pg.means[0])
        cams = turntable_cameras(center, radius, 2, (40, 40), 5.0)
        out = {b: render_gaussians(pg, cams, torch.ones(3), backend=b) for b in ("cpu", "reference")}
    assert (out["cpu"][0] - out["reference"][0]).abs().max() < 1e-5
    assert (out["cpu"][1] - out["reference"][1]).abs().max() < 1e-5
    assert out["cpu"][1].max() > 0.99
    # gradients of every parameter, rotations and scales disturbed so that they matter
    g = torch.Generator().manual_seed(1)
    quats = torch.nn.functional.normalize(pg.quats[0] + 0.3 * torch.randn(pg.quats[0].shape, generator=g), dim=-1)
    scales = pg.scales[0] * torch.exp(0.3 * torch.randn(pg.scales[0].shape, generator=g))
    inputs = [pg.means[0], quats, scales, pg.opacities, pg.sh]
    _assert_agree(_both(inputs, cams.index([1]), torch.ones(3), sh_degree=0))


def test_empty_scenes_are_background():
    bg = torch.tensor([0.1, 0.5, 0.9])
    cams = _cameras(20, 12, [0.0])
    behind = _scene(30, 2)
    behind[0] = behind[0] * 0.1 + torch.tensor([0.0, 0.0, 3.0])  # the camera is at z = 2, looking at -z
    for inputs in (behind, _scene(0, 0)):
        out = _both(inputs, cams, bg)
        img, alp, meta, _ = out["cpu"]
        assert torch.allclose(img[0], bg.expand(12, 20, 3)) and alp.abs().max() == 0
        assert (meta["radii"] == 0).all()
        _assert_agree(out)


def test_mixed_in_front_and_behind_and_huge_gaussians():
    scene = _scene(120, 3)
    scene[0][:40, 2] += 2.5  # behind the camera
    scene[0][40:45] = torch.tensor([0.0, 0.0, 0.0])
    scene[2][40:45] = torch.tensor([3.0, 2.0, 0.5])  # each covers the whole frame
    scene[3][40:45] = 0.3
    out = _both(scene, _cameras(33, 29, [0.0]), torch.tensor([1.0, 0.0, 0.0]))
    _assert_agree(out)
    assert (out["cpu"][2]["radii"][0, :40] == 0).all()
    assert out["cpu"][1].min() > 0.3  # every pixel is under the big ones


def test_gradients_reach_the_cameras():
    """With camera gradients asked for, the projection is the reference's own (autograd)."""
    scene = _scene(150, 12)
    grads = {}
    for backend in ("cpu", "reference"):
        cams = _cameras(30, 30, [0.0, 50.0])
        view = cams.viewmats.clone().requires_grad_(True)
        img, _, _ = rasterize(*scene, Cameras(view, cams.Ks, 30, 30), backgrounds=torch.ones(3), backend=backend)
        (img * torch.linspace(0, 1, 30)[:, None]).sum().backward()
        grads[backend] = view.grad
    assert grads["reference"].abs().max() > 0
    assert torch.allclose(grads["cpu"], grads["reference"], rtol=1e-4, atol=1e-4 * float(grads["reference"].abs().max()))


def test_images_only_loss_without_background():
    out = _both(_scene(200, 9), _cameras(32, 24, [0.0, 60.0]), None, alpha_loss=False)
    _assert_agree(out)


def test_gradients_match_finite_differences():
    dtype = torch.float64
    means, quats, scales, opac, colors = _scene(6, 3, dtype=dtype)
    eye = torch.tensor([[0.0, 0.0, 2.0]], dtype=dtype)
    cam = Cameras(look_at(eye, torch.zeros(1, 3, dtype=dtype)), intrinsics(torch.tensor([40.0], dtype=dtype), 12, 12), 12, 12)
    params = [t.clone().requires_grad_(True) for t in (means, scales, opac, colors)]
    bg = torch.tensor([0.3, 0.6, 0.2], dtype=dtype, requires_grad=True)

    def f(m, s, o, c, b):
        img, alpha, _ = rasterize(m, quats, s, o, c, cam, backgrounds=b, backend="cpu")
        return img, alpha

    assert torch.autograd.gradcheck(f, [*params, bg], eps=1e-6, atol=1e-4, rtol=1e-3)


def test_results_do_not_depend_on_the_thread_count():
    scene = [t.requires_grad_(True) for t in _scene(300, 11)]
    cams = _cameras(40, 40, [0.0, 90.0])
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (1, max(2, min(4, numba.config.NUMBA_NUM_THREADS))):
            torch.set_num_threads(n)
            for t in scene:
                t.grad = None
            img, alpha, _ = rasterize(*scene, cams, backgrounds=torch.ones(3), backend="cpu")
            (img.square().sum() + alpha.sum()).backward()
            results.append([img.detach(), *(t.grad.clone() for t in scene)])
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


def test_backend_choice():
    cpu = torch.device("cpu")
    assert pick_backend(cpu) == "cpu"
    assert pick_backend(cpu, "reference") == "reference"
    assert pick_backend(cpu, "cpu") == "cpu"
    with pytest.raises(AvatarError):
        pick_backend(torch.device("meta"), "cpu")
    assert pick_backend(torch.device("meta")) == "reference"


def test_kernels_compile_where_nothing_can_be_cached():
    """A function numba cannot cache (here: no source file) is compiled without a cache, not refused."""
    namespace: dict = {}
    exec("def twice(x):\n    return 2 * x\n", namespace)
    fn = cpu_kernels.compiled()(namespace["twice"])
    assert fn(21) == 42


def test_depth_keys_sort_like_depths():
    d = torch.tensor([[3.0, -1.0, 0.0, -0.0, 1e-30, -5e3, math.inf, 2.5]]).numpy()
    keys = cpu_kernels.depth_keys(d)
    order = keys[0].argsort(kind="stable")
    assert list(d[0][order]) == sorted(d[0])
