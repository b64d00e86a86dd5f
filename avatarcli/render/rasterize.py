"""Rendering Gaussians: one ``rasterize`` with two backends.

``gsplat`` (CUDA kernels, compiled on first use) on GPUs; the pure-PyTorch reference in
:mod:`avatarcli.render.reference` everywhere else. Both take the same arguments, follow the
same conventions and return the same things, so callers never branch on the device.
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

Backend = Literal["auto", "gsplat", "reference"]


def gsplat_available() -> bool:
    try:
        import gsplat  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


def pick_backend(device: torch.device, backend: Backend = "auto") -> Literal["gsplat", "reference"]:
    if backend == "reference":
        return "reference"
    if device.type == "cuda" and gsplat_available():
        return "gsplat"
    if backend == "gsplat":
        raise AvatarError("the gsplat backend needs a CUDA device and the gsplat package")
    return "reference"


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
        backend: "auto" (gsplat on CUDA, else reference), "gsplat" or "reference".

    Returns:
        images (C, H, W, D), alphas (C, H, W, 1), and the backend's meta dict (``means2d``
        (C, N, 2) for densification, ``radii`` (C, N, 2), ``width``, ``height``,
        ``n_cameras``, ``gaussian_ids``).
    """
    c = len(cameras)
    shared = means.dim() == 2
    if backgrounds is not None and backgrounds.dim() == 1:
        backgrounds = backgrounds[None].expand(c, -1)
    if pick_backend(means.device, backend) == "gsplat":
        from gsplat import rasterization

        if shared:  # one set, C cameras
            viewmats, ks, bgs = cameras.viewmats, cameras.Ks, backgrounds
        else:  # gsplat's batch dimension: set b seen by its one camera
            viewmats, ks = cameras.viewmats[:, None], cameras.Ks[:, None]
            bgs = None if backgrounds is None else backgrounds[:, None]
            if opacities.dim() == 1:
                opacities = opacities[None].expand(c, -1)
                colors = colors[None].expand(c, *colors.shape)
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
    elif opacities.dim() == 1:
        opacities = opacities[None].expand(c, -1)
        colors = colors[None].expand(c, *colors.shape)
    return rasterize_reference(
        means, quats, scales, opacities, colors, cameras.viewmats, cameras.Ks, cameras.width, cameras.height,
        backgrounds=backgrounds, sh_degree=sh_degree,
    )  # fmt: skip


def render_gaussians(
    posed: PosedGaussians,
    cameras: Cameras,
    background: Tensor | None = None,
    backend: Backend = "auto",
) -> tuple[Tensor, Tensor, dict]:
    """Render posed Gaussians: pose b through camera b, or one pose through every camera.
    Opacities and colours that differ per pose (``posed.per_pose``) go to the rasterizer as
    (C, N) and (C, N, K, 3); shared ones as they are.

    Returns:
        images (C, H, W, 3), alphas (C, H, W, 1), meta.
    """
    b = posed.means.shape[0]
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
