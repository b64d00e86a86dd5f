"""A readable, differentiable 3D Gaussian rasterizer in plain PyTorch.

It follows gsplat's conventions step by step (EWA projection with the same Jacobian clamp,
``eps2d`` blur, opacity-aware extents, pixel centres at half-integers, alpha capped at
0.999, contributions below 1/255 skipped, a pixel stops once its transmittance would fall
to 1e-4) so the two agree to float precision. It runs anywhere PyTorch runs; gsplat is the
fast path on CUDA. Work is organised in screen tiles like gsplat's, batched so that Python
loops over chunks of tiles rather than pixels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from avatarcli.rotations import quat_to_matrix

ALPHA_THRESHOLD = 1.0 / 255.0
MAX_ALPHA = 0.999
T_MIN = 1e-4


def eval_sh(degree: int, dirs: Tensor, coeffs: Tensor) -> Tensor:
    """Real spherical harmonics up to ``degree`` (<= 3), the basis 3DGS uses.

    Args:
        dirs: (..., 3) view directions (any length); coeffs: (..., K, 3), K >= (degree + 1)^2.

    Returns:
        (..., 3) colour before the +0.5 offset.
    """
    out = 0.28209479177387814 * coeffs[..., 0, :]
    if degree == 0:
        return out
    d = F.normalize(dirs, dim=-1)
    x, y, z = d[..., 0:1], d[..., 1:2], d[..., 2:3]
    out = out + 0.4886025119029199 * (-y * coeffs[..., 1, :] + z * coeffs[..., 2, :] - x * coeffs[..., 3, :])
    if degree == 1:
        return out
    xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
    out = (
        out
        + 1.0925484305920792 * xy * coeffs[..., 4, :]
        - 1.0925484305920792 * yz * coeffs[..., 5, :]
        + 0.31539156525252005 * (3.0 * zz - 1.0) * coeffs[..., 6, :]
        - 1.0925484305920792 * xz * coeffs[..., 7, :]
        + 0.5462742152960396 * (xx - yy) * coeffs[..., 8, :]
    )
    if degree == 2:
        return out
    return (
        out
        - 0.5900435899266435 * y * (3.0 * xx - yy) * coeffs[..., 9, :]
        + 2.890611442640554 * xy * z * coeffs[..., 10, :]
        - 0.4570457994644658 * y * (5.0 * zz - 1.0) * coeffs[..., 11, :]
        + 0.3731763325901154 * z * (5.0 * zz - 3.0) * coeffs[..., 12, :]
        - 0.4570457994644658 * x * (5.0 * zz - 1.0) * coeffs[..., 13, :]
        + 1.445305721320277 * z * (xx - yy) * coeffs[..., 14, :]
        - 0.5900435899266435 * x * (xx - 3.0 * yy) * coeffs[..., 15, :]
    )


def project(
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
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """EWA projection of C Gaussian sets, one per camera.

    Args:
        means: (C, N, 3); quats: (C, N, 4); scales: (C, N, 3); opacities: (C, N);
        viewmats: (C, 4, 4); Ks: (C, 3, 3).

    Returns:
        means2d (C, N, 2), conics (C, N, 3) as (a, b, c) of the inverse 2D covariance,
        depths (C, N), radii (C, N, 2) int32 (zero where culled), valid (C, N) bool.
    """
    rot = viewmats[:, None, :3, :3]
    p = (rot @ means[..., None])[..., 0] + viewmats[:, None, :3, 3]
    x, y, z = p.unbind(-1)
    rg = quat_to_matrix(quats)
    m = rg * scales[..., None, :]
    cov = m @ m.transpose(-1, -2)
    cov_c = rot @ cov @ rot.transpose(-1, -2)
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    zs = torch.where(z.abs() < 1e-8, torch.full_like(z, 1e-8), z)
    rz = 1.0 / zs
    lim_xp, lim_xn = (width - cx) / fx + 0.3 * tan_x, cx / fx + 0.3 * tan_x
    lim_yp, lim_yn = (height - cy) / fy + 0.3 * tan_y, cy / fy + 0.3 * tan_y
    tx = zs * torch.minimum(lim_xp, torch.maximum(-lim_xn, x * rz))
    ty = zs * torch.minimum(lim_yp, torch.maximum(-lim_yn, y * rz))
    zero = torch.zeros_like(z)
    jac = torch.stack(
        [torch.stack([fx * rz, zero, -fx * tx * rz * rz], -1), torch.stack([zero, fy * rz, -fy * ty * rz * rz], -1)], dim=-2
    )  # (C, N, 2, 3)
    cov2d = jac @ cov_c @ jac.transpose(-1, -2)
    a = cov2d[..., 0, 0] + eps2d
    b = cov2d[..., 0, 1]
    c = cov2d[..., 1, 1] + eps2d
    det = a * c - b * b
    valid = (z >= near_plane) & (z <= far_plane) & (det > 0)
    det_safe = torch.where(valid, det, torch.ones_like(det))
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], dim=-1)
    means2d = torch.stack([fx * x * rz + cx, fy * y * rz + cy], dim=-1)
    op = opacities.detach()
    valid = valid & (op >= ALPHA_THRESHOLD)
    extend = torch.clamp(torch.sqrt(2.0 * torch.log(op.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD)), max=3.33)
    rx = torch.ceil(extend * torch.sqrt(a.detach().clamp_min(0)))
    ry = torch.ceil(extend * torch.sqrt(c.detach().clamp_min(0)))
    mx, my = means2d[..., 0].detach(), means2d[..., 1].detach()
    inside = (mx + rx > 0) & (mx - rx < width) & (my + ry > 0) & (my - ry < height)
    valid = valid & inside & ((rx > 0) | (ry > 0))
    radii = torch.stack([rx, ry], dim=-1).to(torch.int32) * valid[..., None]
    return means2d, conics, z, radii, valid


def _composite_one(
    means2d: Tensor,
    conics: Tensor,
    depths: Tensor,
    radii: Tensor,
    valid: Tensor,
    opacities: Tensor,
    colors: Tensor,
    background: Tensor | None,
    width: int,
    height: int,
    tile_size: int,
    budget: int,
) -> tuple[Tensor, Tensor]:
    """Alpha-composite one camera's projected Gaussians. Returns colour (H, W, D), alpha (H, W, 1)."""
    device, d = means2d.device, colors.shape[-1]
    ntx, nty = math.ceil(width / tile_size), math.ceil(height / tile_size)
    ids = torch.nonzero(valid)[:, 0]
    ids = ids[torch.argsort(depths.detach()[ids], stable=True)]  # front to back
    if len(ids) > 0:
        m = means2d.detach()[ids]
        r = radii[ids].float()
        tx0 = ((m[:, 0] - r[:, 0]) / tile_size).floor().clamp(0, ntx - 1).long()
        tx1 = ((m[:, 0] + r[:, 0]) / tile_size).floor().clamp(0, ntx - 1).long()
        ty0 = ((m[:, 1] - r[:, 1]) / tile_size).floor().clamp(0, nty - 1).long()
        ty1 = ((m[:, 1] + r[:, 1]) / tile_size).floor().clamp(0, nty - 1).long()
        wide = tx1 - tx0 + 1
        counts = wide * (ty1 - ty0 + 1)
        owner = torch.repeat_interleave(torch.arange(len(ids), device=device), counts)
        first = torch.cumsum(counts, 0) - counts
        local = torch.arange(len(owner), device=device) - first[owner]
        tile = (ty0[owner] + local // wide[owner]) * ntx + tx0[owner] + local % wide[owner]
        tile, order = torch.sort(tile, stable=True)  # stays front to back within a tile
        gauss = ids[owner[order]]
        per_tile = torch.bincount(tile, minlength=ntx * nty)
        start = torch.cumsum(per_tile, 0) - per_tile
        rank = torch.arange(len(tile), device=device) - start[tile]
        n_max = int(per_tile.max())
        table = torch.full((ntx * nty, max(n_max, 1)), -1, dtype=torch.long, device=device)
        table[tile, rank] = gauss
    else:
        table = torch.full((ntx * nty, 1), -1, dtype=torch.long, device=device)
        per_tile = torch.zeros(ntx * nty, dtype=torch.long, device=device)

    ts = tile_size
    offs = torch.arange(ts, device=device, dtype=means2d.dtype) + 0.5
    py, px = torch.meshgrid(offs, offs, indexing="ij")
    local_pix = torch.stack([px.reshape(-1), py.reshape(-1)], dim=-1)  # (P, 2)
    tiles_xy = torch.stack(torch.meshgrid(torch.arange(nty, device=device), torch.arange(ntx, device=device), indexing="ij"), -1)
    tiles_xy = tiles_xy.reshape(-1, 2).flip(-1).to(means2d.dtype) * ts  # (T, 2) pixel origin (x, y)

    out_color = means2d.new_zeros(ntx * nty, ts * ts, d)
    out_alpha = means2d.new_zeros(ntx * nty, ts * ts)
    busy = torch.nonzero(per_tile > 0)[:, 0]
    if len(busy) > 0:
        n_max = table.shape[1]
        chunk = max(1, budget // (ts * ts * n_max))
        color_chunks, alpha_chunks = [], []
        for s in range(0, len(busy), chunk):
            tiles = busy[s : s + chunk]
            idx = table[tiles]  # (t, n)
            used = int((idx >= 0).sum(1).max())
            idx = idx[:, :used]
            pad = idx < 0
            safe = idx.clamp_min(0)
            pix = tiles_xy[tiles][:, None, :] + local_pix[None]  # (t, P, 2)
            delta = means2d[safe][:, None, :, :] - pix[:, :, None, :]  # (t, P, n, 2)
            con = conics[safe][:, None]
            sigma = (
                0.5 * (con[..., 0] * delta[..., 0] ** 2 + con[..., 2] * delta[..., 1] ** 2) + con[..., 1] * delta[..., 0] * delta[..., 1]
            )
            alpha = torch.clamp_max(opacities[safe][:, None, :] * torch.exp(-sigma), MAX_ALPHA)
            skip = (sigma < 0) | (alpha < ALPHA_THRESHOLD) | pad[:, None, :]
            alpha = torch.where(skip, torch.zeros_like(alpha), alpha)
            keep = torch.cumprod(1.0 - alpha, dim=-1)  # transmittance after each Gaussian
            trans = torch.cat([torch.ones_like(keep[..., :1]), keep[..., :-1]], dim=-1)
            weight = alpha * trans * (keep.detach() > T_MIN)
            color_chunks.append(torch.einsum("tpn,tnd->tpd", weight, colors[safe]))
            alpha_chunks.append(weight.sum(-1))
        out_color = out_color.index_copy(0, busy, torch.cat(color_chunks))
        out_alpha = out_alpha.index_copy(0, busy, torch.cat(alpha_chunks))
    if background is not None:
        out_color = out_color + (1.0 - out_alpha)[..., None] * background
    img = out_color.reshape(nty, ntx, ts, ts, d).permute(0, 2, 1, 3, 4).reshape(nty * ts, ntx * ts, d)
    alp = out_alpha.reshape(nty, ntx, ts, ts).permute(0, 2, 1, 3).reshape(nty * ts, ntx * ts, 1)
    return img[:height, :width], alp[:height, :width]


def rasterize_reference(
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
    budget: int = 1 << 20,
) -> tuple[Tensor, Tensor, dict]:
    """Render C images, camera c seeing Gaussian set c.

    Args:
        means: (C, N, 3); quats: (C, N, 4); scales: (C, N, 3); opacities: (C, N).
        colors: (C, N, D) colours, or (C, N, K, 3) SH coefficients with ``sh_degree``.
        viewmats: (C, 4, 4); Ks: (C, 3, 3); width, height: pixels.
        backgrounds: (C, D) or None (black, with alpha to composite later).
        tile_size: pixels per tile side; budget: elements per batched chunk of tiles. Small
            tiles and chunks keep the work near each Gaussian's footprint and in cache
            (8 and 2^20 were fastest on a CPU at 64-128 px, about twice 16 and 2^22).

    Returns:
        colors (C, H, W, D), alphas (C, H, W, 1) and a dict like gsplat's ``meta``
        (``means2d`` (C, N, 2) whose gradient drives densification, ``radii`` (C, N, 2),
        ``depths``, ``width``, ``height``, ``n_cameras``, ``gaussian_ids`` None).
    """
    means2d, conics, depths, radii, valid = project(
        means, quats, scales, opacities, viewmats, Ks, width, height, near_plane, far_plane, eps2d
    )
    if sh_degree is not None:
        campos = -(viewmats[:, :3, :3].transpose(1, 2) @ viewmats[:, :3, 3:])[..., 0]
        colors = torch.clamp_min(eval_sh(sh_degree, means - campos[:, None], colors) + 0.5, 0.0)
    images, alphas = [], []
    for c in range(means.shape[0]):
        bg = None if backgrounds is None else backgrounds[c]
        img, alp = _composite_one(
            means2d[c], conics[c], depths[c], radii[c], valid[c], opacities[c], colors[c], bg, width, height, tile_size, budget
        )
        images.append(img)
        alphas.append(alp)
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
    return torch.stack(images), torch.stack(alphas), meta
