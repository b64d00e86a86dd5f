"""Rendering Gaussians: one ``rasterize`` with three backends.

``gsplat`` (CUDA kernels, compiled on first use) on GPUs; ``cpu``, the compiled tile
rasterizer of :mod:`avatarcli.render.cpu_rasterizer`, on the CPU; and ``reference``, the
readable pure-PyTorch rasterizer of :mod:`avatarcli.render.torch_rasterizer` that the other
two are tested against (and the fallback on other devices). All take the same arguments,
follow the same conventions and return the same things, so callers never branch on the device.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

from avatarcli.errors import AvatarError
from avatarcli.model.binding import PosedGaussians
from avatarcli.render.cameras import Cameras
from avatarcli.render.torch_rasterizer import rasterize_reference

Backend = Literal["auto", "gsplat", "cpu", "reference"]


def gsplat_available() -> bool:
    try:
        import gsplat  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


def pick_backend(device: torch.device, backend: Backend = "auto") -> Literal["gsplat", "cpu", "reference"]:
    """The backend that renders tensors on ``device``: "auto" is gsplat on CUDA, the
    compiled CPU rasterizer on the CPU and the reference elsewhere."""
    if backend == "reference":
        return "reference"
    if backend == "cpu":
        if device.type != "cpu":
            raise AvatarError(f"the cpu backend renders tensors on the CPU, not on {device.type}")
        return "cpu"
    if device.type == "cuda" and gsplat_available():
        return "gsplat"
    if backend == "gsplat":
        raise AvatarError("the gsplat backend needs a CUDA device and the gsplat package")
    return "cpu" if device.type == "cpu" else "reference"


def rasterize(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    cameras: Cameras,
    backgrounds: Tensor | None = None,
    sh_degree: int | None = None,
    backend: Backend = "auto",
) -> tuple[Tensor, Tensor, dict]:
    """Render one image per camera; camera c sees Gaussian set c.

    Args:
        means: (C, N, 3) world positions, or (N, 3) for one set seen by every camera.
        quats: (C, N, 4) / (N, 4) unit quaternions (w, x, y, z).
        scales: (C, N, 3) / (N, 3) standard deviations, metres.
        opacities: (C, N) / (N,) in [0, 1].
        colors: (C, N, D) / (N, D) colours, or (C, N, K, 3) / (N, K, 3) SH coefficients
            when ``sh_degree`` is given.
        cameras: C cameras.
        backgrounds: (C, D) or (D,) colour behind the Gaussians; None leaves black with alpha.
        sh_degree: evaluate ``colors`` as SH of this degree, or None for plain colours.
        backend: "auto" (gsplat on CUDA, cpu on the CPU, else reference), "gsplat",
            "cpu" or "reference".

    Returns:
        images (C, H, W, D), alphas (C, H, W, 1), and the backend's meta dict (``means2d``
        (C, N, 2) for densification, ``radii`` (C, N, 2), ``width``, ``height``,
        ``n_cameras``, ``gaussian_ids``).
    """
    c = len(cameras)
    shared = means.dim() == 2
    if backgrounds is not None and backgrounds.dim() == 1:
        backgrounds = backgrounds[None].expand(c, -1)
    chosen = pick_backend(means.device, backend)
    if chosen == "gsplat":
        from gsplat import rasterization

        if shared:  # one set, C cameras
            viewmats, ks, bgs = cameras.viewmats, cameras.Ks, backgrounds
        else:  # gsplat's batch dimension: set b seen by its one camera
            viewmats, ks = cameras.viewmats[:, None], cameras.Ks[:, None]
            bgs = None if backgrounds is None else backgrounds[:, None]
            opacities, colors = _per_camera(c, opacities, colors, sh_degree)
        images, alphas, meta = rasterization(
            means, quats, scales, opacities, colors, viewmats, ks, cameras.width, cameras.height,
            sh_degree=sh_degree, packed=False, backgrounds=bgs,
        )  # fmt: skip
        meta = dict(meta)
        meta["n_cameras"] = c
        if not shared:
            images, alphas = images[:, 0], alphas[:, 0]
        return images, alphas, meta
    if shared:
        means, quats, scales = (t[None].expand(c, *t.shape) for t in (means, quats, scales))
        opacities = opacities[None].expand(c, -1)
        colors = colors[None].expand(c, *colors.shape)
    else:
        opacities, colors = _per_camera(c, opacities, colors, sh_degree)
    if chosen == "cpu":
        from avatarcli.render.cpu_rasterizer import rasterize_cpu  # numba loads on first use

        fn = rasterize_cpu
    else:
        fn = rasterize_reference
    return fn(
        means, quats, scales, opacities, colors, cameras.viewmats, cameras.Ks, cameras.width, cameras.height,
        backgrounds=backgrounds, sh_degree=sh_degree,
    )  # fmt: skip


def _per_camera(c: int, opacities: Tensor, colors: Tensor, sh_degree: int | None) -> tuple[Tensor, Tensor]:
    """Opacities (C, N) and colours (C, N, ...) for C cameras from shared or per-camera ones."""
    if opacities.dim() == 1:
        opacities = opacities[None].expand(c, -1)
    if colors.dim() == (3 if sh_degree is not None else 2):  # one set of colours for every camera
        colors = colors[None].expand(c, *colors.shape)
    return opacities, colors


def render_gaussians(
    posed: PosedGaussians,
    cameras: Cameras,
    background: Tensor | None = None,
    backend: Backend = "auto",
    colors: Tensor | None = None,
) -> tuple[Tensor, Tensor, dict]:
    """Render posed Gaussians: pose b through camera b, or one pose through every camera.
    Opacities and colours that differ per pose (``posed.per_pose``) go to the rasterizer as
    (C, N) and (C, N, K, 3); shared ones as they are.

    Args:
        colors: (C, N, 3) a colour of every Gaussian for each camera, drawn instead of the SH
            (a shaded avatar: :mod:`avatarcli.render.shading`), or None.

    Returns:
        images (C, H, W, 3), alphas (C, H, W, 1), meta.
    """
    b = posed.means.shape[0]
    if colors is not None:
        c = len(cameras)
        if b not in (1, c) or colors.shape[0] != c:
            raise ValueError(f"{b} poses and colours for {colors.shape[0]} views cannot be paired with {c} cameras")
        means, quats, scales = (t.expand(c, -1, -1) for t in (posed.means, posed.quats, posed.scales))
        opacities = posed.opacities_of(0) if b == 1 else posed.opacities
        return rasterize(means, quats, scales, opacities, colors, cameras, backgrounds=background, backend=backend)
    opacities, sh = posed.opacities, posed.sh
    if b == 1 and len(cameras) > 1:
        means, quats, scales = posed.means[0], posed.quats[0], posed.scales[0]
        opacities, sh = posed.opacities_of(0), posed.sh_of(0)
    elif b == len(cameras):
        means, quats, scales = posed.means, posed.quats, posed.scales
    else:
        raise ValueError(f"{b} poses cannot be paired with {len(cameras)} cameras")
    degree = round(sh.shape[-2] ** 0.5) - 1
    return rasterize(
        means, quats, scales, opacities, sh, cameras,
        backgrounds=background, sh_degree=degree, backend=backend,
    )  # fmt: skip


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, H, W, 3) floats in [0, 1] -> uint8 numpy."""
    return (images.detach().clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()
