"""The fast CPU rasterizer: gsplat's conventions, compiled compositing, differentiable.

Projection, spherical harmonics and culling are the reference's own PyTorch code
(:func:`avatarcli.render.torch_rasterizer.project`, ``eval_sh``), so autograd carries
gradients from 2D means and conics back to 3D means, rotations, scales and SH. The per-pixel
work runs in the compiled kernels of :mod:`avatarcli.render.cpu_kernels`: Gaussians are
sorted by depth once per camera, binned into screen tiles (each tile's list stays front to
back), and every tile is composited in parallel, each pixel stopping once its transmittance
runs out. :class:`Composite` is the ``torch.autograd.Function`` around the kernels; its
backward pass walks each pixel's list back to front and returns the gradients of the 2D
means (which densification reads), conics, opacities, colours (any number of channels)
and backgrounds.

Same arguments, conventions and returns as
:func:`avatarcli.render.torch_rasterizer.rasterize_reference`, which it is tested against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from avatarcli.render import cpu_kernels as kernels
from avatarcli.render.torch_rasterizer import ALPHA_THRESHOLD, MAX_ALPHA, T_MIN, eval_sh, project


@dataclass
class TileLists:
    """Each tile's Gaussians front to back (see :func:`bin_gaussians`).

    Attributes:
        start: (C * T + 1,) int64 offsets into ``ids``; ids: (K,) int64 rows of the
            flattened (C * N) Gaussians; tiles_x, tiles_y, tile_size: the grid.
    """

    start: np.ndarray
    ids: np.ndarray
    tiles_x: int
    tiles_y: int
    tile_size: int


def _rect(means2d: Tensor, radii: Tensor, tiles_x: int, tiles_y: int, tile_size: int) -> Tensor:
    """(C, N, 4) int32 first and last tile column and row under each centre +/- its radii."""
    r = radii.to(means2d.dtype)
    lo, hi = means2d - r, means2d + r
    cols = [lo[..., 0], hi[..., 0], lo[..., 1], hi[..., 1]]
    limits = [tiles_x, tiles_x, tiles_y, tiles_y]
    return torch.stack([(x / tile_size).floor().clamp(0, n - 1) for x, n in zip(cols, limits, strict=True)], -1).to(torch.int32)


@torch.no_grad()
def bin_gaussians(depths: Tensor, valid: Tensor, rect: Tensor, tiles_x: int, tiles_y: int, tile_size: int) -> TileLists:
    """List each camera's visible Gaussians per tile they touch, front to back.

    Args:
        depths: (C, N); valid: (C, N) bool; rect: (C, N, 4) int32 tiles touched (x0, x1, y0, y1).
    """
    d = _np(depths)
    start, ids = _launch(kernels.bin_tiles, d, kernels.depth_keys(d), _np(valid), _np(rect), tiles_x, tiles_y, chunk=kernels.CHUNK)
    return TileLists(start, ids, tiles_x, tiles_y, tile_size)


def _launch(kernel: Any, *args: Any, chunk: int = 0) -> Any:
    """Run a parallel kernel on as many threads as torch uses; ``chunk`` > 0 hands out the
    loop ``chunk`` iterations at a time (tiles: their work differs a lot), 0 splits it evenly."""
    with kernels.LOCK:
        threads = max(1, min(torch.get_num_threads(), kernels.numba.config.NUMBA_NUM_THREADS))
        kernels.numba.set_num_threads(threads)
        old = kernels.numba.set_parallel_chunksize(chunk)
        try:
            return kernel(*args)
        finally:
            kernels.numba.set_parallel_chunksize(old)


def _np(t: Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


def _centres(width: int, height: int, dtype: np.dtype) -> np.ndarray:
    """Pixel centres i + 0.5 in ``dtype`` (exact below 2^24)."""
    return (np.arange(max(width, height)) + 0.5).astype(dtype)


def composite(
    means2d: Tensor, conics: Tensor, opacities: Tensor, colors: Tensor, tiles: TileLists, width: int, height: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Forward compositing without gradients.

    Args:
        means2d: (C, N, 2); conics: (C, N, 3); opacities: (C, N); colors: (C, N, D).

    Returns:
        colour over black (C, H, W, D), transmittance left (C, H, W), and (C, H, W) int64
        one past each pixel's last contributing entry of the tile lists.
    """
    c, n, d = colors.shape
    dtype = means2d.dtype
    flat = [_np(t).reshape(c * n, w) for t, w in ((means2d, 2), (conics, 3), (colors, d))]
    color = torch.empty(c, height, width, d, dtype=dtype)
    trans = torch.empty(c, height, width, dtype=dtype)
    last = torch.empty(c, height, width, dtype=torch.int64)
    np_dtype = flat[0].dtype
    _launch(
        kernels.composite_forward, tiles.start, tiles.ids, flat[0], flat[1], _np(opacities).reshape(c * n), flat[2],
        _centres(width, height, np_dtype), kernels.constants(np_dtype, ALPHA_THRESHOLD, MAX_ALPHA, T_MIN),
        tiles.tile_size, tiles.tiles_x, tiles.tiles_y, color.numpy(), trans.numpy(), last.numpy(), chunk=kernels.CHUNK,
    )  # fmt: skip
    return color, trans, last


class Composite(torch.autograd.Function):
    """Alpha compositing of binned Gaussians, with its backward pass in compiled code."""

    @staticmethod
    def forward(
        ctx: Any,
        means2d: Tensor,
        conics: Tensor,
        opacities: Tensor,
        colors: Tensor,
        backgrounds: Tensor | None,
        tiles: TileLists,
        width: int,
        height: int,
    ) -> tuple[Tensor, Tensor]:
        """means2d (C, N, 2), conics (C, N, 3), opacities (C, N), colors (C, N, D),
        backgrounds (C, D) or None -> images (C, H, W, D), alphas (C, H, W, 1)."""
        color, trans, last = composite(means2d, conics, opacities, colors, tiles, width, height)
        images = color if backgrounds is None else color + trans[..., None] * backgrounds[:, None, None, :]
        ctx.tiles = tiles
        ctx.has_background = backgrounds is not None
        ctx.save_for_backward(means2d, conics, opacities, colors, trans, last, backgrounds if backgrounds is not None else torch.empty(0))
        return images, (1.0 - trans)[..., None]

    @staticmethod
    def backward(ctx: Any, v_images: Tensor | None, v_alphas: Tensor | None) -> tuple[Tensor | None, ...]:
        means2d, conics, opacities, colors, trans, last, backgrounds = ctx.saved_tensors
        tiles: TileLists = ctx.tiles
        c, n, d = colors.shape
        height, width = trans.shape[1:]
        v_color = torch.zeros(c, height, width, d, dtype=trans.dtype) if v_images is None else v_images
        v_trans = torch.zeros_like(trans) if v_alphas is None else -v_alphas[..., 0]
        v_bg = None
        if ctx.has_background:
            v_trans = v_trans + (v_color * backgrounds[:, None, None, :]).sum(-1)
            v_bg = (v_color * trans[..., None]).sum((1, 2))
        flat = [_np(t).reshape(c * n, w) for t, w in ((means2d, 2), (conics, 3), (colors, d))]
        np_dtype = flat[0].dtype
        grads = np.zeros((len(tiles.ids), 6 + d), dtype=np_dtype)
        _launch(
            kernels.composite_backward, tiles.start, tiles.ids, flat[0], flat[1], _np(opacities).reshape(c * n), flat[2],
            _centres(width, height, np_dtype), kernels.constants(np_dtype, ALPHA_THRESHOLD, MAX_ALPHA, T_MIN),
            tiles.tile_size, tiles.tiles_x, tiles.tiles_y, _np(trans), _np(last), _np(v_color), _np(v_trans), grads, chunk=kernels.CHUNK,
        )  # fmt: skip
        total = np.zeros((c * n, 6 + d), dtype=np_dtype)
        with kernels.LOCK:
            kernels.sum_rows(tiles.ids, grads, total)
        out = torch.from_numpy(total)
        return (
            out[:, 0:2].reshape(c, n, 2),
            out[:, 2:5].reshape(c, n, 3),
            out[:, 5].reshape(c, n),
            out[:, 6:].reshape(c, n, d),
            v_bg,
            None,
            None,
            None,
        )


def _projection_constants(means: Tensor, width: int, height: int, tile_size: int, near: float, far: float, eps2d: float) -> np.ndarray:
    return kernels.projection_constants(_np(means).dtype, width, height, tile_size, near, far, eps2d, ALPHA_THRESHOLD)


@torch.no_grad()
def _project_compiled(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float,
    far_plane: float,
    eps2d: float,
    tile_size: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """:func:`project` in one compiled pass, plus the tiles each Gaussian touches.

    Returns:
        means2d (C, N, 2), conics (C, N, 3), depths (C, N), radii (C, N, 2) int32, valid (C, N)
        bool, rect (C, N, 4) int32.
    """
    c, n = means.shape[:2]
    dtype = means.dtype
    means2d, conics = torch.empty(c, n, 2, dtype=dtype), torch.empty(c, n, 3, dtype=dtype)
    depths, radii = torch.empty(c, n, dtype=dtype), torch.empty(c, n, 2, dtype=torch.int32)
    valid, rect = torch.empty(c, n, dtype=torch.bool), torch.zeros(c, n, 4, dtype=torch.int32)
    tiles_x, tiles_y = math.ceil(width / tile_size), math.ceil(height / tile_size)
    consts = _projection_constants(means, width, height, tile_size, near_plane, far_plane, eps2d)
    _launch(
        kernels.project_forward, _np(means), _np(quats), _np(scales), _np(opacities), _np(viewmats.to(dtype)), _np(Ks.to(dtype)),
        consts, tiles_x, tiles_y, means2d.numpy(), conics.numpy(), depths.numpy(), radii.numpy(), valid.numpy(), rect.numpy(),
    )  # fmt: skip
    return means2d, conics, depths, radii, valid, rect


class Project(torch.autograd.Function):
    """:func:`_project_compiled` with its backward pass compiled too: gradients of means2d,
    conics and depths flow to the means, quaternions and scales (not to the cameras)."""

    @staticmethod
    def forward(
        ctx: Any,
        means: Tensor,
        quats: Tensor,
        scales: Tensor,
        opacities: Tensor,
        viewmats: Tensor,
        Ks: Tensor,
        settings: tuple[int, int, float, float, float, int],
    ) -> tuple[Tensor, ...]:
        """means (C, N, 3), quats (C, N, 4), scales (C, N, 3), opacities (C, N), viewmats
        (C, 4, 4), Ks (C, 3, 3), settings (width, height, near, far, eps2d, tile size) ->
        what :func:`_project_compiled` returns."""
        out = _project_compiled(means, quats, scales, opacities, viewmats, Ks, *settings)
        ctx.mark_non_differentiable(*out[3:])
        ctx.settings = settings
        ctx.save_for_backward(means, quats, scales, viewmats, Ks)
        return out

    @staticmethod
    def backward(ctx: Any, v_means2d: Tensor, v_conics: Tensor, v_depths: Tensor, *_: Any) -> tuple[Tensor | None, ...]:
        means, quats, scales, viewmats, Ks = ctx.saved_tensors
        width, height, near, far, eps2d, tile_size = ctx.settings
        dtype = means.dtype
        c, n = means.shape[:2]
        v_means, v_quats, v_scales = (torch.empty(c, n, w, dtype=dtype) for w in (3, 4, 3))
        shapes = ((c, n, 2), (c, n, 3), (c, n))
        upstream = (v_means2d, v_conics, v_depths)
        grads = [torch.zeros(shape, dtype=dtype) if t is None else t for shape, t in zip(shapes, upstream, strict=True)]
        _launch(
            kernels.project_backward, _np(means), _np(quats), _np(scales), _np(viewmats.to(dtype)), _np(Ks.to(dtype)),
            _projection_constants(means, width, height, tile_size, near, far, eps2d), *(_np(t) for t in grads),
            v_means.numpy(), v_quats.numpy(), v_scales.numpy(),
        )  # fmt: skip
        return v_means, v_quats, v_scales, None, None, None, None


@torch.no_grad()
def _sh_compiled(degree: int, means: Tensor, viewmats: Tensor, coeffs: Tensor, valid: Tensor) -> Tensor:
    """Colours (C, N, 3) of the valid Gaussians from SH (zeros elsewhere), as the reference computes them."""
    campos = -(viewmats[:, :3, :3].transpose(1, 2) @ viewmats[:, :3, 3:])[..., 0]
    out = torch.zeros(*means.shape[:2], 3, dtype=means.dtype)
    k = np.array(kernels.SH_CONSTANTS, dtype=_np(means).dtype)
    _launch(kernels.sh_forward, degree, _np(means), _np(campos.to(means.dtype)), _np(coeffs), k, _np(valid), out.numpy())
    return out


def rasterize_cpu(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    backgrounds: Tensor | None = None,
    sh_degree: int | None = None,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    tile_size: int = 8,
) -> tuple[Tensor, Tensor, dict]:
    """Render C images on the CPU, camera c seeing Gaussian set c.

    Args:
        means: (C, N, 3); quats: (C, N, 4) unit (w, x, y, z); scales: (C, N, 3);
        opacities: (C, N) in [0, 1].
        colors: (C, N, D) colours, or (C, N, K, 3) SH coefficients with ``sh_degree``.
        viewmats: (C, 4, 4) world to camera; Ks: (C, 3, 3); width, height: pixels.
        backgrounds: (C, D) or None (black, with alpha to composite later).
        near_plane, far_plane, eps2d: as the reference's (gsplat's defaults).
        tile_size: pixels per tile side. 8 composites a head at 256x256 in 35 ms on one
            core against 55 ms with 16 (fewer Gaussians per pixel's list), binning costing
            16 ms against 11.

    Returns:
        colors (C, H, W, D), alphas (C, H, W, 1) and a dict like gsplat's ``meta``
        (``means2d`` (C, N, 2) whose gradient drives densification, ``radii`` (C, N, 2),
        ``depths`` (C, N), ``conics`` (C, N, 3), ``width``, ``height``, ``n_cameras``,
        ``gaussian_ids`` None).
    """
    tiles_x, tiles_y = math.ceil(width / tile_size), math.ceil(height / tile_size)
    inputs = (means, quats, scales, opacities, colors, viewmats, Ks, backgrounds)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs):
        if viewmats.requires_grad or Ks.requires_grad:  # the reference's projection: autograd reaches the cameras
            means2d, conics, depths, radii, valid = project(
                means, quats, scales, opacities, viewmats, Ks, width, height, near_plane, far_plane, eps2d
            )
            rect = _rect(means2d.detach(), radii, tiles_x, tiles_y, tile_size)
        else:
            settings = (width, height, near_plane, far_plane, eps2d, tile_size)
            means2d, conics, depths, radii, valid, rect = Project.apply(means, quats, scales, opacities, viewmats, Ks, settings)
        if sh_degree is not None:  # the reference's SH, through autograd
            campos = -(viewmats[:, :3, :3].transpose(1, 2) @ viewmats[:, :3, 3:])[..., 0]
            colors = torch.clamp_min(eval_sh(sh_degree, means - campos[:, None], colors) + 0.5, 0.0)
        tiles = bin_gaussians(depths.detach(), valid, rect, tiles_x, tiles_y, tile_size)
        images, alphas = Composite.apply(means2d, conics, opacities, colors, backgrounds, tiles, width, height)
    else:  # rendering only: projection and SH compiled too
        means2d, conics, depths, radii, valid, rect = _project_compiled(
            means, quats, scales, opacities, viewmats, Ks, width, height, near_plane, far_plane, eps2d, tile_size
        )
        if sh_degree is not None:
            colors = _sh_compiled(sh_degree, means, viewmats, colors, valid)
        tiles = bin_gaussians(depths, valid, rect, tiles_x, tiles_y, tile_size)
        color, trans, _ = composite(means2d, conics, opacities, colors, tiles, width, height)
        images = color if backgrounds is None else color + trans[..., None] * backgrounds[:, None, None, :].to(color.dtype)
        alphas = (1.0 - trans)[..., None]
    meta = {
        "means2d": means2d,
        "radii": radii,
        "depths": depths,
        "conics": conics,
        "width": width,
        "height": height,
        "n_cameras": means.shape[0],
        "gaussian_ids": None,
    }
    return images, alphas, meta
