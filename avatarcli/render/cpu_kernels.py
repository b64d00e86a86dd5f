"""Compiled CPU kernels of the tile rasterizer: binning, compositing and its backward pass.

No maintained library composites 3D Gaussians on a CPU with gsplat's conventions and a
backward pass (gsplat and the other rasterizers on PyPI are CUDA, Metal or GPU-first), so
these few loops are written here and compiled with numba. They follow
:mod:`avatarcli.render.torch_rasterizer` operation for operation, in the inputs' precision
(float32 or float64), and are tested against it.

Layout: C cameras with N Gaussians each, flattened to M = C * N rows; camera c's screen is
cut into T = tiles_x * tiles_y tiles, tile ``c * T + ty * tiles_x + tx``. ``tile_start``
(C * T + 1,) and ``tile_ids`` (K,) list each tile's Gaussians (rows of the flattened
arrays) front to back, CSR style. Each kernel runs one tile per task, its pixels in turn,
each pixel walking the tile's list (forward: front to back until its transmittance runs
out; backward: from its last contributor back to the front, as gsplat's backward does).
The backward pass writes one gradient row per (tile, Gaussian) pair, so tiles never write
to the same place, and adds them per Gaussian afterwards in a fixed order: the result does
not depend on the number of threads.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from avatarcli.templates.loading import cache_dir

# Compiled code is cached beside the project's other generated files (so a read-only
# install never needs to write into its own package folder); NUMBA_CACHE_DIR still wins.
if not os.environ.get("NUMBA_CACHE_DIR"):
    os.environ["NUMBA_CACHE_DIR"] = str(cache_dir() / "numba")

import numba
from numba import prange

if not numba.config.CACHE_DIR:  # numba was imported before this module set the variable
    numba.config.CACHE_DIR = os.environ["NUMBA_CACHE_DIR"]
# numba's own thread pool unless NUMBA_THREADING_LAYER says otherwise: its workers sleep
# between kernels, where OpenMP's spin and, on a CPU shared with other work, lose several
# times the kernel's time waiting for each other (the same everywhere: macOS has no OpenMP)
if not os.environ.get("NUMBA_THREADING_LAYER"):
    numba.config.THREADING_LAYER = "workqueue"

# A contribution is skipped when opacity * exp(-sigma) < 1/255; with opacity <= 1 that holds
# for every sigma above ln(255) = 5.54, so those pixels skip the exponential.
SIGMA_SKIP = 5.6
CHUNK = 2  # tiles handed to a thread at a time: tiles differ a lot in work

# the constants, passed in the inputs' precision so the arithmetic stays in it:
# 0.5, alpha threshold, alpha cap, transmittance stop, sigma beyond which alpha is below threshold
_HALF, _THRESHOLD, _CAP, _T_MIN, _SKIP = range(5)

LOCK = threading.Lock()  # numba's workqueue pool must not be entered from two threads at once


def compiled(parallel: bool = False) -> Callable[[Callable[..., Any]], Any]:
    """``numba.njit`` with an on-disk cache, or without one where no cache folder can be
    written (numba refuses to cache then; the function is compiled in each process)."""

    def wrap(fn: Callable[..., Any]) -> Any:
        try:
            return numba.njit(parallel=parallel, cache=True, nogil=True)(fn)
        except RuntimeError:
            return numba.njit(parallel=parallel, nogil=True)(fn)

    return wrap


def constants(dtype: np.dtype, alpha_threshold: float, max_alpha: float, t_min: float) -> np.ndarray:
    return np.array([0.5, alpha_threshold, max_alpha, t_min, SIGMA_SKIP], dtype=dtype)


@compiled(parallel=True)
def bin_tiles(
    depths: np.ndarray, keys: np.ndarray, valid: np.ndarray, rect: np.ndarray, tiles_x: int, tiles_y: int
) -> tuple[np.ndarray, np.ndarray]:
    """Tile lists, each sorted front to back.

    The Gaussians are listed per tile in index order (reading the inputs in order), then
    each tile's list is sorted on its own by (depth key, index), as one integer each, and
    entries whose keys tie are ordered by their exact depths. Ties of exact
    depth keep index order, as in the reference's one stable sort of every Gaussian.

    Args:
        depths: (C, N); keys: (C, N) uint32 that order like the depths rounded to float32
            (see :func:`depth_keys`); valid: (C, N) bool; rect: (C, N, 4) int32, the first
            and last tile column and row each valid Gaussian touches (x0, x1, y0, y1).

    Returns:
        tile_start (C * T + 1,) int64 and tile_ids (K,) int64 rows of the flattened (C * N) arrays.
    """
    c_count, n = depths.shape
    t_count = tiles_x * tiles_y
    counts = np.zeros(c_count * t_count, dtype=np.int64)
    for c in prange(c_count):
        base = c * t_count
        for g in range(n):
            if valid[c, g]:
                for ty in range(rect[c, g, 2], rect[c, g, 3] + 1):
                    for tx in range(rect[c, g, 0], rect[c, g, 1] + 1):
                        counts[base + ty * tiles_x + tx] += 1
    tile_start = np.zeros(c_count * t_count + 1, dtype=np.int64)
    for t in range(c_count * t_count):
        tile_start[t + 1] = tile_start[t] + counts[t]
    packed = np.empty(tile_start[-1], dtype=np.uint64)
    for c in prange(c_count):
        base = c * t_count
        cursor = tile_start[base : base + t_count].copy()
        for g in range(n):
            if valid[c, g]:
                entry = (np.uint64(keys[c, g]) << np.uint64(32)) | np.uint64(c * n + g)
                for ty in range(rect[c, g, 2], rect[c, g, 3] + 1):
                    for tx in range(rect[c, g, 0], rect[c, g, 1] + 1):
                        t = ty * tiles_x + tx
                        packed[cursor[t]] = entry
                        cursor[t] += 1
    tile_ids = np.empty(len(packed), dtype=np.int64)
    flat = depths.reshape(-1)
    low, shift = np.uint64(0xFFFFFFFF), np.uint64(32)
    for t in prange(c_count * t_count):
        s, e = tile_start[t], tile_start[t + 1]
        packed[s:e].sort()
        for j in range(s, e):
            tile_ids[j] = np.int64(packed[j] & low)
        j = s
        while j < e:  # a run of equal keys: by exact depth, then index (only float64 depths differ here)
            r = j + 1
            while r < e and packed[r] >> shift == packed[j] >> shift:
                r += 1
            for a in range(j + 1, r):
                g = tile_ids[a]
                i = a
                while i > j and (flat[tile_ids[i - 1]] > flat[g] or (flat[tile_ids[i - 1]] == flat[g] and tile_ids[i - 1] > g)):
                    tile_ids[i] = tile_ids[i - 1]
                    i -= 1
                tile_ids[i] = g
            j = r
    return tile_start, tile_ids


def depth_keys(depths: np.ndarray) -> np.ndarray:
    """(C, N) uint32 that sort like ``depths`` rounded to float32 (sign flipped for
    positives, every bit for negatives)."""
    bits = np.ascontiguousarray(depths, dtype=np.float32).view(np.uint32)
    return np.where(bits >> 31 == 1, ~bits, bits | np.uint32(0x80000000))


@compiled(parallel=True)
def composite_forward(
    tile_start: np.ndarray,
    tile_ids: np.ndarray,
    means2d: np.ndarray,
    conics: np.ndarray,
    opacities: np.ndarray,
    colors: np.ndarray,
    centres: np.ndarray,
    consts: np.ndarray,
    tile_size: int,
    tiles_x: int,
    tiles_y: int,
    out_color: np.ndarray,
    out_trans: np.ndarray,
    out_last: np.ndarray,
) -> None:
    """Alpha-composite every tile, front to back.

    Args:
        means2d: (M, 2); conics: (M, 3); opacities: (M,); colors: (M, D).
        centres: (max(W, H),) pixel centres (i + 0.5); consts: see ``constants``.

    Writes:
        out_color (C, H, W, D) the colour over black; out_trans (C, H, W) the transmittance
        left; out_last (C, H, W) int64 one past the last contributing entry of the tile list
        (the tile's start where nothing contributed).
    """
    height, width, d_count = out_color.shape[1], out_color.shape[2], out_color.shape[3]
    t_count = tiles_x * tiles_y
    half, threshold, cap, t_min, skip = consts[_HALF], consts[_THRESHOLD], consts[_CAP], consts[_T_MIN], consts[_SKIP]
    one = consts[_HALF] * 2
    for tile in prange(len(tile_start) - 1):
        cam = tile // t_count
        ty = (tile % t_count) // tiles_x
        tx = tile % tiles_x
        s, e = tile_start[tile], tile_start[tile + 1]
        n = e - s
        mx, my = np.empty(n, means2d.dtype), np.empty(n, means2d.dtype)
        ca, cb, cc = np.empty(n, conics.dtype), np.empty(n, conics.dtype), np.empty(n, conics.dtype)
        op = np.empty(n, opacities.dtype)
        col = np.empty((n, d_count), colors.dtype)
        for j in range(n):
            g = tile_ids[s + j]
            mx[j], my[j] = means2d[g, 0], means2d[g, 1]
            ca[j], cb[j], cc[j] = conics[g, 0], conics[g, 1], conics[g, 2]
            op[j] = opacities[g]
            for d in range(d_count):
                col[j, d] = colors[g, d]
        acc = np.empty(d_count, colors.dtype)
        for py in range(ty * tile_size, min((ty + 1) * tile_size, height)):
            fy = centres[py]
            for px in range(tx * tile_size, min((tx + 1) * tile_size, width)):
                fx = centres[px]
                acc[:] = 0
                trans = one
                last = 0
                for j in range(n):
                    dx = mx[j] - fx
                    dy = my[j] - fy
                    sigma = half * (ca[j] * (dx * dx) + cc[j] * (dy * dy)) + cb[j] * dx * dy
                    if sigma < 0 or sigma > skip:
                        continue
                    alpha = min(op[j] * np.exp(-sigma), cap)
                    if alpha < threshold:
                        continue
                    nxt = trans * (one - alpha)
                    if nxt <= t_min:
                        break
                    w = alpha * trans
                    for d in range(d_count):
                        acc[d] += w * col[j, d]
                    trans = nxt
                    last = j + 1
                for d in range(d_count):
                    out_color[cam, py, px, d] = acc[d]
                out_trans[cam, py, px] = trans
                out_last[cam, py, px] = s + last


@compiled(parallel=True)
def composite_backward(
    tile_start: np.ndarray,
    tile_ids: np.ndarray,
    means2d: np.ndarray,
    conics: np.ndarray,
    opacities: np.ndarray,
    colors: np.ndarray,
    centres: np.ndarray,
    consts: np.ndarray,
    tile_size: int,
    tiles_x: int,
    tiles_y: int,
    trans_final: np.ndarray,
    last: np.ndarray,
    v_color: np.ndarray,
    v_trans: np.ndarray,
    grads: np.ndarray,
) -> None:
    """Gradients of every (tile, Gaussian) pair, back to front per pixel.

    Args:
        trans_final, last: (C, H, W) from :func:`composite_forward`.
        v_color: (C, H, W, D) gradient of the colour over black; v_trans: (C, H, W) of the
            transmittance left (the background's and the alpha's part).

    Writes:
        grads (K, 6 + D): d means2d (2), d conics (3), d opacity, d colours (D) for each
        entry of ``tile_ids``.
    """
    height, width, d_count = v_color.shape[1], v_color.shape[2], v_color.shape[3]
    t_count = tiles_x * tiles_y
    half, threshold, cap, skip = consts[_HALF], consts[_THRESHOLD], consts[_CAP], consts[_SKIP]
    one = consts[_HALF] * 2
    for tile in prange(len(tile_start) - 1):
        cam = tile // t_count
        ty = (tile % t_count) // tiles_x
        tx = tile % tiles_x
        s, e = tile_start[tile], tile_start[tile + 1]
        n = e - s
        mx, my = np.empty(n, means2d.dtype), np.empty(n, means2d.dtype)
        ca, cb, cc = np.empty(n, conics.dtype), np.empty(n, conics.dtype), np.empty(n, conics.dtype)
        op = np.empty(n, opacities.dtype)
        col = np.empty((n, d_count), colors.dtype)
        for j in range(n):
            g = tile_ids[s + j]
            mx[j], my[j] = means2d[g, 0], means2d[g, 1]
            ca[j], cb[j], cc[j] = conics[g, 0], conics[g, 1], conics[g, 2]
            op[j] = opacities[g]
            for d in range(d_count):
                col[j, d] = colors[g, d]
        behind = np.empty(d_count, colors.dtype)  # colour composited behind the current entry
        vc = np.empty(d_count, colors.dtype)
        for py in range(ty * tile_size, min((ty + 1) * tile_size, height)):
            fy = centres[py]
            for px in range(tx * tile_size, min((tx + 1) * tile_size, width)):
                end = last[cam, py, px] - s
                if end <= 0:
                    continue
                fx = centres[px]
                t_fin = trans_final[cam, py, px]
                trans = t_fin
                vt = v_trans[cam, py, px]
                for d in range(d_count):
                    vc[d] = v_color[cam, py, px, d]
                    behind[d] = 0
                for j in range(end - 1, -1, -1):
                    dx = mx[j] - fx
                    dy = my[j] - fy
                    sigma = half * (ca[j] * (dx * dx) + cc[j] * (dy * dy)) + cb[j] * dx * dy
                    if sigma < 0 or sigma > skip:
                        continue
                    vis = np.exp(-sigma)
                    raw = op[j] * vis
                    alpha = min(raw, cap)
                    if alpha < threshold:
                        continue
                    ra = one / (one - alpha)
                    trans = trans * ra  # the transmittance in front of this entry
                    w = alpha * trans
                    row = s + j
                    v_alpha = -vt * t_fin * ra
                    for d in range(d_count):
                        grads[row, 6 + d] += w * vc[d]
                        v_alpha += (col[j, d] * trans - behind[d] * ra) * vc[d]
                        behind[d] += col[j, d] * w
                    if raw <= cap:
                        v_sigma = -raw * v_alpha
                        grads[row, 0] += (ca[j] * dx + cb[j] * dy) * v_sigma
                        grads[row, 1] += (cb[j] * dx + cc[j] * dy) * v_sigma
                        grads[row, 2] += half * dx * dx * v_sigma
                        grads[row, 3] += dx * dy * v_sigma
                        grads[row, 4] += half * dy * dy * v_sigma
                        grads[row, 5] += vis * v_alpha


@compiled()
def sum_rows(tile_ids: np.ndarray, grads: np.ndarray, out: np.ndarray) -> None:
    """out[tile_ids[k]] += grads[k], k in order. out: (M, 6 + D) zeros."""
    width = grads.shape[1]
    for k in range(len(tile_ids)):
        g = tile_ids[k]
        for i in range(width):
            out[g, i] += grads[k, i]


# the projection's constants, in the inputs' precision (see ``projection_constants``)
(_P_ONE, _P_TWO, _P_LIM, _P_ZMIN, _P_NEAR, _P_FAR, _P_EPS, _P_THRESH, _P_EXTEND, _P_WIDTH, _P_HEIGHT, _P_TILE, _P_NORM) = range(13)


def projection_constants(
    dtype: np.dtype, width: int, height: int, tile_size: int, near: float, far: float, eps2d: float, alpha_threshold: float
) -> np.ndarray:
    return np.array([1.0, 2.0, 0.3, 1e-8, near, far, eps2d, alpha_threshold, 3.33, width, height, tile_size, 1e-12], dtype=dtype)


@compiled(parallel=True)
def project_forward(
    means: np.ndarray,
    quats: np.ndarray,
    scales: np.ndarray,
    opacities: np.ndarray,
    viewmats: np.ndarray,
    Ks: np.ndarray,
    consts: np.ndarray,
    tiles_x: int,
    tiles_y: int,
    means2d: np.ndarray,
    conics: np.ndarray,
    depths: np.ndarray,
    radii: np.ndarray,
    valid: np.ndarray,
    rect: np.ndarray,
) -> None:
    """EWA projection without gradients, the reference's ``project`` in one pass per Gaussian.

    Args:
        means: (C, N, 3); quats: (C, N, 4); scales: (C, N, 3); opacities: (C, N);
        viewmats: (C, 4, 4); Ks: (C, 3, 3); consts: see ``projection_constants``.

    Writes:
        means2d (C, N, 2), conics (C, N, 3), depths (C, N), radii (C, N, 2) int32 (zero where
        culled), valid (C, N) bool, rect (C, N, 4) int32 the tiles touched (x0, x1, y0, y1).
    """
    c_count, n = means.shape[0], means.shape[1]
    one, two, lim, zmin = consts[_P_ONE], consts[_P_TWO], consts[_P_LIM], consts[_P_ZMIN]
    near, far, eps, thresh, extend_max = consts[_P_NEAR], consts[_P_FAR], consts[_P_EPS], consts[_P_THRESH], consts[_P_EXTEND]
    width, height, tile, norm_eps = consts[_P_WIDTH], consts[_P_HEIGHT], consts[_P_TILE], consts[_P_NORM]
    for job in prange(c_count * n):
        c, g = job // n, job % n
        v, k = viewmats[c], Ks[c]
        mx, my, mz = means[c, g, 0], means[c, g, 1], means[c, g, 2]
        x = v[0, 0] * mx + v[0, 1] * my + v[0, 2] * mz + v[0, 3]
        y = v[1, 0] * mx + v[1, 1] * my + v[1, 2] * mz + v[1, 3]
        z = v[2, 0] * mx + v[2, 1] * my + v[2, 2] * mz + v[2, 3]
        depths[c, g] = z
        # world covariance M M^T, M = R(q) diag(s), from the normalised quaternion
        qw, qx, qy, qz = quats[c, g, 0], quats[c, g, 1], quats[c, g, 2], quats[c, g, 3]
        qn = max(np.sqrt(qw * qw + qx * qx + qy * qy + qz * qz), norm_eps)
        qw, qx, qy, qz = qw / qn, qx / qn, qy / qn, qz / qn
        s0, s1, s2 = scales[c, g, 0], scales[c, g, 1], scales[c, g, 2]
        m00, m01, m02 = (one - two * (qy * qy + qz * qz)) * s0, two * (qx * qy - qw * qz) * s1, two * (qx * qz + qw * qy) * s2
        m10, m11, m12 = two * (qx * qy + qw * qz) * s0, (one - two * (qx * qx + qz * qz)) * s1, two * (qy * qz - qw * qx) * s2
        m20, m21, m22 = two * (qx * qz - qw * qy) * s0, two * (qy * qz + qw * qx) * s1, (one - two * (qx * qx + qy * qy)) * s2
        w00, w01, w02 = m00 * m00 + m01 * m01 + m02 * m02, m00 * m10 + m01 * m11 + m02 * m12, m00 * m20 + m01 * m21 + m02 * m22
        w10, w11, w12 = m10 * m00 + m11 * m01 + m12 * m02, m10 * m10 + m11 * m11 + m12 * m12, m10 * m20 + m11 * m21 + m12 * m22
        w20, w21, w22 = m20 * m00 + m21 * m01 + m22 * m02, m20 * m10 + m21 * m11 + m22 * m12, m20 * m20 + m21 * m21 + m22 * m22
        # camera covariance (V W) V^T, V the view rotation
        r00, r01, r02 = v[0, 0], v[0, 1], v[0, 2]
        r10, r11, r12 = v[1, 0], v[1, 1], v[1, 2]
        r20, r21, r22 = v[2, 0], v[2, 1], v[2, 2]
        a00, a01, a02 = r00 * w00 + r01 * w10 + r02 * w20, r00 * w01 + r01 * w11 + r02 * w21, r00 * w02 + r01 * w12 + r02 * w22
        a10, a11, a12 = r10 * w00 + r11 * w10 + r12 * w20, r10 * w01 + r11 * w11 + r12 * w21, r10 * w02 + r11 * w12 + r12 * w22
        a20, a21, a22 = r20 * w00 + r21 * w10 + r22 * w20, r20 * w01 + r21 * w11 + r22 * w21, r20 * w02 + r21 * w12 + r22 * w22
        c00, c01, c02 = a00 * r00 + a01 * r01 + a02 * r02, a00 * r10 + a01 * r11 + a02 * r12, a00 * r20 + a01 * r21 + a02 * r22
        c11, c12 = a10 * r10 + a11 * r11 + a12 * r12, a10 * r20 + a11 * r21 + a12 * r22  # (1, 0) is not needed
        c20, c21, c22 = a20 * r00 + a21 * r01 + a22 * r02, a20 * r10 + a21 * r11 + a22 * r12, a20 * r20 + a21 * r21 + a22 * r22
        fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
        tan_x, tan_y = width / two / fx, height / two / fy
        zs = zmin if abs(z) < zmin else z
        rz = one / zs
        lim_xp, lim_xn = (width - cx) / fx + lim * tan_x, cx / fx + lim * tan_x
        lim_yp, lim_yn = (height - cy) / fy + lim * tan_y, cy / fy + lim * tan_y
        tx = zs * min(lim_xp, max(-lim_xn, x * rz))
        ty = zs * min(lim_yp, max(-lim_yn, y * rz))
        j00, j02 = fx * rz, -fx * tx * rz * rz
        j11, j12 = fy * rz, -fy * ty * rz * rz
        # cov2d = (J C) J^T with J = [[j00, 0, j02], [0, j11, j12]]
        t00, t01, t02 = j00 * c00 + j02 * c20, j00 * c01 + j02 * c21, j00 * c02 + j02 * c22
        t11, t12 = j11 * c11 + j12 * c21, j11 * c12 + j12 * c22
        a = t00 * j00 + t02 * j02 + eps
        b = t01 * j11 + t02 * j12
        cv = t11 * j11 + t12 * j12 + eps
        det = a * cv - b * b
        ok = z >= near and z <= far and det > 0
        det_safe = det if ok else one
        conics[c, g, 0], conics[c, g, 1], conics[c, g, 2] = cv / det_safe, -b / det_safe, a / det_safe
        u = fx * x * rz + cx
        w = fy * y * rz + cy
        means2d[c, g, 0], means2d[c, g, 1] = u, w
        op = opacities[c, g]
        ok = ok and op >= thresh
        extend = min(np.sqrt(two * np.log(max(op, thresh) / thresh)), extend_max)
        rx = np.ceil(extend * np.sqrt(max(a, 0)))
        ry = np.ceil(extend * np.sqrt(max(cv, 0)))
        ok = ok and u + rx > 0 and u - rx < width and w + ry > 0 and w - ry < height and (rx > 0 or ry > 0)
        valid[c, g] = ok
        radii[c, g, 0] = np.int32(rx) if ok else 0
        radii[c, g, 1] = np.int32(ry) if ok else 0
        if ok:  # clamped while still floats: a far-off centre does not overflow an int
            rect[c, g, 0] = np.int32(min(max(np.floor((u - rx) / tile), 0.0), tiles_x - 1.0))
            rect[c, g, 1] = np.int32(min(max(np.floor((u + rx) / tile), 0.0), tiles_x - 1.0))
            rect[c, g, 2] = np.int32(min(max(np.floor((w - ry) / tile), 0.0), tiles_y - 1.0))
            rect[c, g, 3] = np.int32(min(max(np.floor((w + ry) / tile), 0.0), tiles_y - 1.0))


SH_CONSTANTS = (
    0.28209479177387814, 0.4886025119029199, 1.0925484305920792, 0.31539156525252005, 0.5462742152960396,
    0.5900435899266435, 2.890611442640554, 0.4570457994644658, 0.3731763325901154, 1.445305721320277,
    0.5, 1.0, 3.0, 5.0, 1e-12, 0.0,
)  # fmt: skip


@compiled(parallel=True)
def sh_forward(
    degree: int, means: np.ndarray, campos: np.ndarray, coeffs: np.ndarray, k: np.ndarray, valid: np.ndarray, out: np.ndarray
) -> None:
    """Colours max(SH(means - camera centre) + 0.5, 0), as the reference's ``eval_sh``.

    Args:
        means: (C, N, 3); campos: (C, 3); coeffs: (C, N, K, 3); k: ``SH_CONSTANTS`` in the
            inputs' precision; valid: (C, N) (other rows are left untouched). Writes out (C, N, 3).
    """
    c_count, n = means.shape[0], means.shape[1]
    half, one, three, five, tiny, zero = k[10], k[11], k[12], k[13], k[14], k[15]
    for job in prange(c_count * n):
        c, g = job // n, job % n
        if not valid[c, g]:
            continue
        f = coeffs[c, g]
        dx, dy, dz = means[c, g, 0] - campos[c, 0], means[c, g, 1] - campos[c, 1], means[c, g, 2] - campos[c, 2]
        norm = max(np.sqrt(dx * dx + dy * dy + dz * dz), tiny)
        x, y, z = dx / norm, dy / norm, dz / norm
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        for ch in range(3):
            o = k[0] * f[0, ch]
            if degree >= 1:
                o = o + k[1] * (-y * f[1, ch] + z * f[2, ch] - x * f[3, ch])
            if degree >= 2:
                o = (
                    o + k[2] * xy * f[4, ch] - k[2] * yz * f[5, ch] + k[3] * (three * zz - one) * f[6, ch]
                    - k[2] * xz * f[7, ch] + k[4] * (xx - yy) * f[8, ch]
                )  # fmt: skip
            if degree >= 3:
                o = (
                    o - k[5] * y * (three * xx - yy) * f[9, ch] + k[6] * xy * z * f[10, ch]
                    - k[7] * y * (five * zz - one) * f[11, ch] + k[8] * z * (five * zz - three) * f[12, ch]
                    - k[7] * x * (five * zz - one) * f[13, ch] + k[9] * z * (xx - yy) * f[14, ch]
                    - k[5] * x * (xx - three * yy) * f[15, ch]
                )  # fmt: skip
            out[c, g, ch] = max(o + half, zero)


@compiled(parallel=True)
def project_backward(
    means: np.ndarray,
    quats: np.ndarray,
    scales: np.ndarray,
    viewmats: np.ndarray,
    Ks: np.ndarray,
    consts: np.ndarray,
    v_means2d: np.ndarray,
    v_conics: np.ndarray,
    v_depths: np.ndarray,
    v_means: np.ndarray,
    v_quats: np.ndarray,
    v_scales: np.ndarray,
) -> None:
    """Gradients of :func:`project_forward`'s means2d, conics and depths with respect to the
    means, quaternions and scales (the camera held fixed), as autograd takes them through
    the reference's ``project``.

    Args:
        means, quats, scales, viewmats, Ks, consts: as for :func:`project_forward`.
        v_means2d: (C, N, 2); v_conics: (C, N, 3); v_depths: (C, N).

    Writes:
        v_means (C, N, 3), v_quats (C, N, 4), v_scales (C, N, 3).
    """
    c_count, n = means.shape[0], means.shape[1]
    one, two, lim, zmin, eps, norm_eps = consts[_P_ONE], consts[_P_TWO], consts[_P_LIM], consts[_P_ZMIN], consts[_P_EPS], consts[_P_NORM]
    width, height = consts[_P_WIDTH], consts[_P_HEIGHT]
    zero = one - one
    for job in prange(c_count * n):
        c, g = job // n, job % n
        v, k = viewmats[c], Ks[c]
        r00, r01, r02 = v[0, 0], v[0, 1], v[0, 2]
        r10, r11, r12 = v[1, 0], v[1, 1], v[1, 2]
        r20, r21, r22 = v[2, 0], v[2, 1], v[2, 2]
        mx, my, mz = means[c, g, 0], means[c, g, 1], means[c, g, 2]
        x = r00 * mx + r01 * my + r02 * mz + v[0, 3]
        y = r10 * mx + r11 * my + r12 * mz + v[1, 3]
        z = r20 * mx + r21 * my + r22 * mz + v[2, 3]
        fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
        near_zero = abs(z) < zmin
        zs = zmin if near_zero else z
        rz = one / zs
        # means2d and depth
        vu, vv = v_means2d[c, g, 0], v_means2d[c, g, 1]
        vx, vy = vu * fx * rz, vv * fy * rz
        vrz = vu * fx * x + vv * fy * y  # d loss / d rz, then rz's other uses below
        vz = v_depths[c, g]
        va0, vb0, vc0 = v_conics[c, g, 0], v_conics[c, g, 1], v_conics[c, g, 2]
        qg0 = qg1 = qg2 = qg3 = zero
        vs0 = vs1 = vs2 = zero
        if va0 != 0 or vb0 != 0 or vc0 != 0:
            qw, qx, qy, qz = quats[c, g, 0], quats[c, g, 1], quats[c, g, 2], quats[c, g, 3]
            qn_raw = np.sqrt(qw * qw + qx * qx + qy * qy + qz * qz)
            qn = max(qn_raw, norm_eps)
            qw, qx, qy, qz = qw / qn, qx / qn, qy / qn, qz / qn
            s0, s1, s2 = scales[c, g, 0], scales[c, g, 1], scales[c, g, 2]
            q00, q01, q02 = one - two * (qy * qy + qz * qz), two * (qx * qy - qw * qz), two * (qx * qz + qw * qy)
            q10, q11, q12 = two * (qx * qy + qw * qz), one - two * (qx * qx + qz * qz), two * (qy * qz - qw * qx)
            q20, q21, q22 = two * (qx * qz - qw * qy), two * (qy * qz + qw * qx), one - two * (qx * qx + qy * qy)
            m00, m01, m02 = q00 * s0, q01 * s1, q02 * s2
            m10, m11, m12 = q10 * s0, q11 * s1, q12 * s2
            m20, m21, m22 = q20 * s0, q21 * s1, q22 * s2
            w00, w01, w02 = m00 * m00 + m01 * m01 + m02 * m02, m00 * m10 + m01 * m11 + m02 * m12, m00 * m20 + m01 * m21 + m02 * m22
            w10, w11, w12 = m10 * m00 + m11 * m01 + m12 * m02, m10 * m10 + m11 * m11 + m12 * m12, m10 * m20 + m11 * m21 + m12 * m22
            w20, w21, w22 = m20 * m00 + m21 * m01 + m22 * m02, m20 * m10 + m21 * m11 + m22 * m12, m20 * m20 + m21 * m21 + m22 * m22
            a00, a01, a02 = r00 * w00 + r01 * w10 + r02 * w20, r00 * w01 + r01 * w11 + r02 * w21, r00 * w02 + r01 * w12 + r02 * w22
            a10, a11, a12 = r10 * w00 + r11 * w10 + r12 * w20, r10 * w01 + r11 * w11 + r12 * w21, r10 * w02 + r11 * w12 + r12 * w22
            a20, a21, a22 = r20 * w00 + r21 * w10 + r22 * w20, r20 * w01 + r21 * w11 + r22 * w21, r20 * w02 + r21 * w12 + r22 * w22
            c00, c01, c02 = a00 * r00 + a01 * r01 + a02 * r02, a00 * r10 + a01 * r11 + a02 * r12, a00 * r20 + a01 * r21 + a02 * r22
            c11, c12 = a10 * r10 + a11 * r11 + a12 * r12, a10 * r20 + a11 * r21 + a12 * r22
            c20, c21, c22 = a20 * r00 + a21 * r01 + a22 * r02, a20 * r10 + a21 * r11 + a22 * r12, a20 * r20 + a21 * r21 + a22 * r22
            c10 = a10 * r00 + a11 * r01 + a12 * r02
            tan_x, tan_y = width / two / fx, height / two / fy
            lim_xp, lim_xn = (width - cx) / fx + lim * tan_x, cx / fx + lim * tan_x
            lim_yp, lim_yn = (height - cy) / fy + lim * tan_y, cy / fy + lim * tan_y
            ux, uy = x * rz, y * rz
            in_x, in_y = -lim_xn < ux < lim_xp, -lim_yn < uy < lim_yp
            tx = zs * min(lim_xp, max(-lim_xn, ux))
            ty = zs * min(lim_yp, max(-lim_yn, uy))
            j00, j02 = fx * rz, -fx * tx * rz * rz
            j11, j12 = fy * rz, -fy * ty * rz * rz
            t00, t01, t02 = j00 * c00 + j02 * c20, j00 * c01 + j02 * c21, j00 * c02 + j02 * c22
            t11, t12 = j11 * c11 + j12 * c21, j11 * c12 + j12 * c22
            a = t00 * j00 + t02 * j02 + eps
            b = t01 * j11 + t02 * j12
            cv = t11 * j11 + t12 * j12 + eps
            det = a * cv - b * b
            det2 = det * det
            # conic (cv, -b, a) / det -> the 2D covariance's a, b (its (0, 1) entry) and c
            ga = (-cv * cv * va0 + b * cv * vb0 - b * b * vc0) / det2
            gb = (two * b * cv * va0 - (det + two * b * b) * vb0 + two * a * b * vc0) / det2
            gc = (-b * b * va0 + a * b * vb0 - a * a * vc0) / det2
            # Sigma = J C J^T: d J = (G + G^T) J C, d C = J^T G J, G = [[ga, gb], [0, gc]]
            gj00 = two * ga * (j00 * c00 + j02 * c20) + gb * (j11 * c10 + j12 * c20)
            gj02 = two * ga * (j00 * c02 + j02 * c22) + gb * (j11 * c12 + j12 * c22)
            gj11 = two * gc * (j11 * c11 + j12 * c21) + gb * (j00 * c01 + j02 * c21)
            gj12 = two * gc * (j11 * c12 + j12 * c22) + gb * (j00 * c02 + j02 * c22)
            # J^T G J, rows/columns (0, 1, 2) with J's zeros left out
            g00 = ga * j00 * j00
            g01 = gb * j00 * j11
            g02 = ga * j00 * j02 + gb * j00 * j12
            g10 = zero
            g11 = gc * j11 * j11
            g12 = gc * j11 * j12
            g20 = ga * j02 * j00
            g21 = gb * j02 * j11 + gc * j12 * j11
            g22 = ga * j02 * j02 + gb * j02 * j12 + gc * j12 * j12
            # J's entries -> x, y, z (through rz and the clamped tx, ty)
            rz2 = rz * rz
            vx += gj02 * (-fx * rz2) * (one if in_x else zero)
            vy += gj12 * (-fy * rz2) * (one if in_y else zero)
            dtx_dzs = min(lim_xp, max(-lim_xn, ux)) - (x * rz if in_x else zero)
            dty_dzs = min(lim_yp, max(-lim_yn, uy)) - (y * rz if in_y else zero)
            vzs = -fx * rz2 * dtx_dzs * gj02 - fy * rz2 * dty_dzs * gj12
            vrz += fx * gj00 + fy * gj11 - two * fx * tx * rz * gj02 - two * fy * ty * rz * gj12
            if not near_zero:
                vz += vzs
            # camera covariance R W R^T -> W: R^T G R
            h00, h01, h02 = g00 * r00 + g01 * r10 + g02 * r20, g00 * r01 + g01 * r11 + g02 * r21, g00 * r02 + g01 * r12 + g02 * r22
            h10, h11, h12 = g10 * r00 + g11 * r10 + g12 * r20, g10 * r01 + g11 * r11 + g12 * r21, g10 * r02 + g11 * r12 + g12 * r22
            h20, h21, h22 = g20 * r00 + g21 * r10 + g22 * r20, g20 * r01 + g21 * r11 + g22 * r21, g20 * r02 + g21 * r12 + g22 * r22
            e00, e01, e02 = r00 * h00 + r10 * h10 + r20 * h20, r00 * h01 + r10 * h11 + r20 * h21, r00 * h02 + r10 * h12 + r20 * h22
            e10, e11, e12 = r01 * h00 + r11 * h10 + r21 * h20, r01 * h01 + r11 * h11 + r21 * h21, r01 * h02 + r11 * h12 + r21 * h22
            e20, e21, e22 = r02 * h00 + r12 * h10 + r22 * h20, r02 * h01 + r12 * h11 + r22 * h21, r02 * h02 + r12 * h12 + r22 * h22
            # W = M M^T -> M: (E + E^T) M
            p00, p01, p02 = e00 + e00, e01 + e10, e02 + e20
            p11, p12, p22 = e11 + e11, e12 + e21, e22 + e22
            gm00, gm01, gm02 = p00 * m00 + p01 * m10 + p02 * m20, p00 * m01 + p01 * m11 + p02 * m21, p00 * m02 + p01 * m12 + p02 * m22
            gm10, gm11, gm12 = p01 * m00 + p11 * m10 + p12 * m20, p01 * m01 + p11 * m11 + p12 * m21, p01 * m02 + p11 * m12 + p12 * m22
            gm20, gm21, gm22 = p02 * m00 + p12 * m10 + p22 * m20, p02 * m01 + p12 * m11 + p22 * m21, p02 * m02 + p12 * m12 + p22 * m22
            # M = R(q) diag(s)
            vs0 = gm00 * q00 + gm10 * q10 + gm20 * q20
            vs1 = gm01 * q01 + gm11 * q11 + gm21 * q21
            vs2 = gm02 * q02 + gm12 * q12 + gm22 * q22
            k00, k01, k02 = gm00 * s0, gm01 * s1, gm02 * s2
            k10, k11, k12 = gm10 * s0, gm11 * s1, gm12 * s2
            k20, k21, k22 = gm20 * s0, gm21 * s1, gm22 * s2
            gw = two * (-qz * k01 + qy * k02 + qz * k10 - qx * k12 - qy * k20 + qx * k21)
            gx = two * (qy * k01 + qz * k02 + qy * k10 - two * qx * k11 - qw * k12 + qz * k20 + qw * k21 - two * qx * k22)
            gy = two * (-two * qy * k00 + qx * k01 + qw * k02 + qx * k10 + qz * k12 - qw * k20 + qz * k21 - two * qy * k22)
            gz = two * (-two * qz * k00 - qw * k01 + qx * k02 + qw * k10 - two * qz * k11 + qy * k12 + qx * k20 + qy * k21)
            # the quaternion was normalised first
            if qn_raw > norm_eps:
                dot = qw * gw + qx * gx + qy * gy + qz * gz
                qg0, qg1, qg2, qg3 = (gw - qw * dot) / qn, (gx - qx * dot) / qn, (gy - qy * dot) / qn, (gz - qz * dot) / qn
            else:
                qg0, qg1, qg2, qg3 = gw / qn, gx / qn, gy / qn, gz / qn
        if not near_zero:
            vz += -vrz * rz * rz
        v_means[c, g, 0] = r00 * vx + r10 * vy + r20 * vz
        v_means[c, g, 1] = r01 * vx + r11 * vy + r21 * vz
        v_means[c, g, 2] = r02 * vx + r12 * vy + r22 * vz
        v_quats[c, g, 0], v_quats[c, g, 1], v_quats[c, g, 2], v_quats[c, g, 3] = qg0, qg1, qg2, qg3
        v_scales[c, g, 0], v_scales[c, g, 1], v_scales[c, g, 2] = vs0, vs1, vs2
