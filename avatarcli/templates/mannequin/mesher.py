"""Turn a signed distance function into a clean triangle mesh.

Marching cubes (scikit-image) on a grid that is evaluated exactly only near the surface,
Taubin smoothing to remove the staircase, then quadric decimation (trimesh +
fast-simplification) to a target size: decimation keeps triangles small where the surface
curves (fingers, nose, lips) and large where it is flat (back, thighs), which is the density
a template mesh wants. Decimation also leaves slivers, which :mod:`.repair` then removes.

The grid is computed in float64 and quantised, and the build runs on one thread
(:func:`reproducible`), so that machines with different CPUs build the same mesh.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
import trimesh
from skimage.measure import marching_cubes
from torch import Tensor

from avatarcli.templates.mannequin import repair

SDF = Callable[[Tensor], Tensor]
# Slivers are repaired up to this quality (above repair.MIN_QUALITY, which a build must meet),
# moving the surface by at most this many voxels.
REPAIR_QUALITY = 0.2
REPAIR_DEVIATION_VOXELS = 0.3


@contextmanager
def reproducible() -> Iterator[None]:
    """Run a mannequin build on one torch thread: no result can then depend on how a machine
    splits the work (the build is cached, so the time this costs is paid once)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# Grid values are multiples of this (metres, about 0.06 micrometres): far below a voxel, far
# above the rounding by which two machines' float64 arithmetic differs (SIMD paths, libm), so
# both round to the same grid and mesh it alike (float32 rounding is not: the same SDF on the
# same machine, evaluated in float32 with and without vector instructions, differed by up to
# 0.04 micrometres in a third of the head's voxels, and gave another mesh).
QUANTUM = 2.0**-24
# Values are clamped to this many voxels either side of the surface (marching cubes reads only
# their signs there); a clamped multiple of QUANTUM is exactly a float32.
CLAMP_VOXELS = 16


def quantise_(values: Tensor, voxel: float) -> Tensor:
    """Clamp ``values`` (float64) to ``CLAMP_VOXELS`` voxels and round them to a multiple of
    ``QUANTUM``, in place; returns them."""
    limit = CLAMP_VOXELS * voxel
    return values.clamp_(-limit, limit).div_(QUANTUM).round_().mul_(QUANTUM)


def sample_grid(sdf: SDF, lo: np.ndarray, hi: np.ndarray, voxel: float, block: int = 8, chunk: int = 1 << 20) -> np.ndarray:
    """Signed distances on the grid ``lo + voxel * (i, j, k)`` covering the box ``[lo, hi]``.

    Exact values are computed only in blocks of ``block``^3 voxels that can contain the surface
    (judged from a coarse grid); elsewhere the coarse values are interpolated, which keeps
    the sign right and is all marching cubes reads there. Everything is computed in float64
    and quantised (:func:`quantise_`), so that the grid, and the mesh made from it, are the
    same on any machine.

    Returns:
        volume: float32 array (nx, ny, nz), every value a multiple of ``QUANTUM``.
    """
    dt = torch.float64
    lo = np.asarray(lo, dtype=np.float64)
    dims = np.ceil((np.asarray(hi) - lo) / voxel).astype(int) + 1
    cdims = (dims + block - 1) // block + 1
    coarse_step = voxel * block
    axes = [torch.arange(n, dtype=dt) * coarse_step + float(o) for n, o in zip(cdims, lo, strict=True)]
    cpts = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)
    coarse = quantise_(torch.cat([sdf(c) for c in cpts.split(chunk)]).reshape(*cdims), coarse_step)

    fine = F.interpolate(coarse[None, None], scale_factor=block, mode="trilinear", align_corners=True)[0, 0]
    # align_corners upsampling gives (c - 1) * block + 1 samples per axis
    fine = fine[: dims[0], : dims[1], : dims[2]].contiguous()

    # If a block holds a surface point, its nearest corner lies within half the block's
    # diagonal of it; 1.3 allows for distance bounds that are not exact.
    reach = 1.3 * 0.5 * coarse_step * np.sqrt(3.0)
    corner_min = coarse.abs()
    near = (
        torch.stack(
            [corner_min[i : i + cdims[0] - 1, j : j + cdims[1] - 1, k : k + cdims[2] - 1] for i in (0, 1) for j in (0, 1) for k in (0, 1)]
        )
        .min(dim=0)
        .values
        < reach
    )
    # Voxel (i, j, k) is exact when any block touching it is near the surface.
    mask = near.repeat_interleave(block, 0).repeat_interleave(block, 1).repeat_interleave(block, 2)
    mask = F.pad(mask[None, None].float(), (1, 0, 1, 0, 1, 0))[0, 0]
    mask = F.max_pool3d(mask[None, None], kernel_size=2, stride=1)[0, 0] > 0
    mask = F.pad(mask, (0, 1, 0, 1, 0, 1))
    idx = mask[: dims[0], : dims[1], : dims[2]].nonzero()
    pts = (idx.to(dt) * voxel + torch.as_tensor(lo, dtype=dt)).contiguous()
    vals = torch.cat([sdf(c) for c in pts.split(chunk)])
    fine[idx[:, 0], idx[:, 1], idx[:, 2]] = vals
    return quantise_(fine, voxel).to(torch.float32).numpy()


@dataclass(frozen=True)
class Lens:
    """A region that decimation should keep finer: magnified ``power`` times within ``radius``
    of ``center``, back to scale at ``outer`` (> power * radius, so the map stays one-to-one)."""

    center: tuple[float, float, float]
    radius: float
    power: float
    outer: float

    def _profile(self, r: np.ndarray) -> np.ndarray:
        inner = self.power * self.radius
        slope = (self.outer - inner) / (self.outer - self.radius)
        return np.where(r < self.radius, self.power * r, np.where(r < self.outer, inner + (r - self.radius) * slope, r))

    def forward(self, x: np.ndarray) -> np.ndarray:
        d = x - np.asarray(self.center)
        r = np.linalg.norm(d, axis=1, keepdims=True).clip(1e-12)
        return np.asarray(self.center) + d / r * self._profile(r)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        d = y - np.asarray(self.center)
        r = np.linalg.norm(d, axis=1, keepdims=True).clip(1e-12)
        inner = self.power * self.radius
        slope = (self.outer - inner) / (self.outer - self.radius)
        src = np.where(r < inner, r / self.power, np.where(r < self.outer, self.radius + (r - inner) / slope, r))
        return np.asarray(self.center) + d / r * src


def sdf_to_mesh(
    sdf: SDF,
    lo: np.ndarray,
    hi: np.ndarray,
    voxel: float,
    target_faces: int,
    smooth_iterations: int = 10,
    lenses: tuple[Lens, ...] = (),
) -> trimesh.Trimesh:
    """Mesh the zero level set of ``sdf`` inside the box ``[lo, hi]``.

    Args:
        sdf: maps points (M, 3) to signed distances (M,), negative inside.
        lo, hi: corners of the box (3,), metres. Surfaces that leave the box stay open there.
        voxel: grid spacing in metres.
        target_faces: face count after decimation.
        smooth_iterations: Taubin smoothing passes before decimation.
        lenses: regions kept finer by decimation (applied in order, undone in reverse).

    Returns:
        A mesh whose normals point out of the solid, with no triangle below
        ``REPAIR_QUALITY`` that a repair within ``REPAIR_DEVIATION_VOXELS`` could mend. Only
        its largest connected piece is kept.
    """
    volume = sample_grid(sdf, lo, hi, voxel)
    verts, faces, _, _ = marching_cubes(volume, level=0.0, spacing=(voxel, voxel, voxel))
    mesh = trimesh.Trimesh(verts + np.asarray(lo), faces, process=True)
    pieces = mesh.split(only_watertight=False)
    mesh = max(pieces, key=lambda m: len(m.faces))
    trimesh.smoothing.filter_taubin(mesh, iterations=smooth_iterations)
    if len(mesh.faces) > target_faces:
        # Quadric decimation keeps error in metres; magnifying a region first makes the same
        # error budget buy it smaller triangles (fast-simplification takes no per-vertex weights).
        v = np.asarray(mesh.vertices)
        for lens in lenses:
            v = lens.forward(v)
        mesh = trimesh.Trimesh(v, mesh.faces, process=False).simplify_quadric_decimation(face_count=target_faces)
        v = np.asarray(mesh.vertices)
        for lens in reversed(lenses):
            v = lens.inverse(v)
        mesh = trimesh.Trimesh(v, mesh.faces, process=True)
        trimesh.smoothing.filter_taubin(mesh, iterations=3)
    mesh.remove_unreferenced_vertices()
    mesh.merge_vertices()
    v, f = repair.repair_slivers(mesh.vertices, mesh.faces, REPAIR_QUALITY, REPAIR_DEVIATION_VOXELS * voxel)
    return trimesh.Trimesh(v, f, process=False)
