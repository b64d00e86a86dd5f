"""Skinning weights and joint regressors for the procedural mannequins.

Weights come from bone heat (Baran and Popovic, "Automatic rigging and animation of 3D
characters", 2007): each joint's weight is the steady state of heat that its own part of the
skin emits, diffused over the surface, so it fades over a band about as wide as the limb is
thick and never jumps across a gap (between fingers, between lips) that the surface does
not cross. Joint regressors are the SMPL-style sparse averages of skin vertices that put each
joint exactly where the skeleton was designed, and move it sensibly when the shape changes.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import splu


def cotangent_laplacian(verts: np.ndarray, faces: np.ndarray) -> tuple[sp.csc_matrix, np.ndarray]:
    """Positive semi-definite cotangent Laplacian (V, V) and lumped vertex areas (V,).

    Negative cotangents (obtuse triangles) are clamped to zero, which keeps the heat solve
    monotone: weights stay within [0, 1].
    """
    v0, v1, v2 = (verts[faces[:, i]] for i in range(3))
    cots = []
    for a, b, c in ((v0, v1, v2), (v1, v2, v0), (v2, v0, v1)):
        u, w = b - a, c - a
        cross = np.linalg.norm(np.cross(u, w), axis=1).clip(1e-12)
        cots.append(((u * w).sum(1) / cross).clip(0.0, 1e3))
    n = len(verts)
    # the cotangent at corner k weighs the opposite edge
    rows = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])
    cols = np.concatenate([faces[:, 2], faces[:, 0], faces[:, 1]])
    vals = 0.5 * np.concatenate(cots)
    w = sp.coo_matrix((vals, (rows, cols)), shape=(n, n)).tocsr()
    w = w + w.T
    lap = sp.diags(np.asarray(w.sum(axis=1)).ravel()) - w
    area = 0.5 * np.linalg.norm(np.cross(v1 - v0, v2 - v0), axis=1)
    mass = np.bincount(faces.ravel(), weights=np.repeat(area / 3.0, 3), minlength=n)
    return lap.tocsc(), mass


def point_segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance from points (N, 3) to segments a-b given per point (N, 3) each."""
    ab = b - a
    t = ((p - a) * ab).sum(1) / (ab * ab).sum(1).clip(1e-12)
    closest = a + t.clip(0.0, 1.0)[:, None] * ab
    return np.linalg.norm(p - closest, axis=1)


def bone_heat_weights(
    verts: np.ndarray,
    faces: np.ndarray,
    labels: np.ndarray,
    bone_start: np.ndarray,
    bone_end: np.ndarray,
    num_joints: int,
    max_influences: int = 4,
    min_weight: float = 0.01,
    sharpness: np.ndarray | None = None,
) -> np.ndarray:
    """Skinning weights (V, J) by bone heat.

    Args:
        verts: rest vertices (V, 3); faces: (F, 3).
        labels: the joint each vertex belongs to (V,), -1 for vertices that are only
            diffused into (none in practice).
        bone_start, bone_end: per joint, the segment its heat is measured from (J, 3) each.
        num_joints: J.
        max_influences: keep at most this many joints per vertex (SMPL keeps 4).
        min_weight: drop smaller weights before renormalising.
        sharpness: (J,) multiplies each joint's heat; above 1 narrows the band over which
            its weight fades (a jaw that should not drag the upper lip along).

    Returns:
        weights: (V, J), rows summing to one.
    """
    lap, mass = cotangent_laplacian(verts, faces)
    lab = np.clip(labels, 0, None)
    dist = point_segment_distance(verts, bone_start[lab], bone_end[lab]).clip(2e-3)
    heat = mass / dist**2
    if sharpness is not None:
        heat = heat * np.asarray(sharpness)[lab]
    heat[labels < 0] = 0.0
    solver = splu((lap + sp.diags(heat)).tocsc())
    rhs = np.zeros((len(verts), num_joints))
    ok = labels >= 0
    rhs[np.nonzero(ok)[0], labels[ok]] = heat[ok]
    used = np.unique(labels[ok])
    weights = np.zeros((len(verts), num_joints))
    weights[:, used] = solver.solve(rhs[:, used])
    weights = weights.clip(0.0, None)
    # keep the strongest influences
    if max_influences < num_joints:
        kth = np.partition(weights, -max_influences, axis=1)[:, -max_influences][:, None]
        weights[weights < kth] = 0.0
    weights[weights < min_weight] = 0.0
    total = weights.sum(1, keepdims=True)
    lonely = total[:, 0] <= 0
    weights[lonely, lab[lonely]] = 1.0
    return weights / weights.sum(1, keepdims=True)


def joint_regressor(verts: np.ndarray, joints: np.ndarray, groups: list[np.ndarray], ridge: float = 1e-8) -> np.ndarray:
    """A regressor (J, V) with ``regressor @ verts == joints`` at rest.

    Each joint averages its own group of vertices (e.g. a ring of skin around an elbow, an
    eyeball), with weights as close to uniform as the affine constraint allows:
    minimise ||w - 1/n||^2 subject to sum(w) = 1 and sum(w_i v_i) = joint.
    """
    reg = np.zeros((len(joints), len(verts)))
    for j, (idx, target) in enumerate(zip(groups, joints, strict=True)):
        pts = verts[idx]
        n = len(idx)
        u = np.full(n, 1.0 / n)
        a = np.vstack([pts.T, np.ones((1, n))])  # (4, n)
        b = np.append(target, 1.0)
        lam = np.linalg.solve(a @ a.T + ridge * np.eye(4), b - a @ u)
        reg[j, idx] = u + a.T @ lam
    return reg


def ring_around(verts: np.ndarray, candidates: np.ndarray, center: np.ndarray, count: int = 48) -> np.ndarray:
    """The ``count`` candidate vertices nearest ``center``: the skin that surrounds a joint."""
    d = np.linalg.norm(verts[candidates] - center, axis=1)
    return candidates[np.argsort(d)[:count]]
