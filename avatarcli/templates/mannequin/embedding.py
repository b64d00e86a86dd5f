"""Place landmark points on a mesh as (triangle, barycentric) pairs, the way FLAME and SMPL-X
store their landmark embeddings, so they follow the surface through every deformation."""

from __future__ import annotations

import numpy as np
import trimesh

from avatarcli.geometry import SurfaceQuery, ray_first_hit


def snap(mesh: trimesh.Trimesh, targets: np.ndarray, from_front: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Embed target points (N, 3) on ``mesh``.

    Args:
        mesh: the surface to embed on.
        targets: points near the surface, or for ``from_front`` rows an (x, y) with any z.
        from_front: (N,) bool. True: the first surface hit by a ray along -z through (x, y)
            (what a camera in front of the face sees). False: the closest surface point.

    Returns:
        face_idx: (N,) int64 triangle per point; bary: (N, 3) barycentric coordinates.
    """
    verts, faces = np.asarray(mesh.vertices), np.asarray(mesh.faces)
    targets = np.asarray(targets, dtype=np.float64)
    from_front = np.asarray(from_front, dtype=bool)
    face_idx = np.zeros(len(targets), dtype=np.int64)
    bary = np.zeros((len(targets), 3))
    near = ~from_front
    if near.any():
        face_idx[near], bary[near], _ = SurfaceQuery(verts, faces).closest(targets[near])
    if from_front.any():
        origins = targets[from_front].copy()
        origins[:, 2] = verts[:, 2].max() + 0.1
        dirs = np.tile([0.0, 0.0, -1.0], (len(origins), 1))
        t, f = ray_first_hit(origins, dirs, verts, faces)
        if (f < 0).any():
            raise ValueError("a landmark ray misses the mesh")
        hits = origins + t[:, None] * dirs
        tri = verts[faces[f]]
        b = trimesh.triangles.points_to_barycentric(tri, hits)
        face_idx[from_front], bary[from_front] = f, b
    bary = np.clip(bary, 0.0, None)
    return face_idx, bary / bary.sum(1, keepdims=True)
