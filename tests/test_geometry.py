"""Mesh queries: closest points are exact, whatever the triangles' sizes and shapes."""

from __future__ import annotations

import numpy as np

from avatarcli.geometry import SurfaceQuery, closest_point_on_triangles


def _brute_force(points: np.ndarray, verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Distance from each point to the nearest triangle, trying every triangle."""
    tri = verts[faces]
    out = np.empty(len(points))
    for i, p in enumerate(points):
        pr = np.repeat(p[None], len(tri), axis=0)
        cl, _ = closest_point_on_triangles(pr, tri[:, 0], tri[:, 1], tri[:, 2])
        out[i] = np.linalg.norm(cl - pr, axis=1).min()
    return out


def _fan_over_big_triangle() -> tuple[np.ndarray, np.ndarray]:
    """A big triangle in z = 0 and, 3 mm above a spot of it, a fan of 24 tiny triangles:
    the fan's many samples crowd the big triangle's out of the nearest few."""
    big = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    hub = np.array([0.02, 0.02, 0.003])
    angles = np.linspace(0.0, 2.0 * np.pi, 25)[:-1]
    rim = hub + 0.002 * np.stack([np.cos(angles), np.sin(angles), np.zeros_like(angles)], axis=1)
    verts = np.concatenate([big, hub[None], rim])
    fan = np.stack([np.full(24, 3), 4 + np.arange(24), 4 + (np.arange(24) + 1) % 24], axis=1)
    return verts, np.concatenate([np.array([[0, 1, 2]]), fan])


def test_closest_is_exact_where_small_triangles_crowd_a_big_one():
    verts, faces = _fan_over_big_triangle()
    rng = np.random.default_rng(0)
    under_fan = np.array([0.02, 0.02, 0.0]) + rng.uniform(-0.004, 0.004, (50, 3)) * np.array([1.0, 1.0, 0.0])
    around = rng.uniform([-0.1, -0.1, -0.05], [0.6, 0.6, 0.05], (200, 3))
    points = np.concatenate([under_fan, around])
    face, bary, dist = SurfaceQuery(verts, faces).closest(points)
    assert np.allclose(dist, _brute_force(points, verts, faces), atol=1e-12)
    assert (face[:50] == 0).all() and dist[:50].max() < 1e-12  # on the big triangle, under the fan
    nearest = (bary[:, :, None] * verts[faces[face]]).sum(1)
    assert np.allclose(np.linalg.norm(nearest - points, axis=1), dist, atol=1e-12)


def test_closest_points_on_degenerate_triangles():
    """Two corners together, or three in a line: the triangle is the segment its corners span."""
    a = np.array([0.1, 0.2, 0.3])
    b = a + np.array([0.01, 0.02, -0.01])
    c = a + 2.0 * (b - a)
    cases = [([a, a, b], (a, b)), ([a, b, a + 0.5 * (b - a)], (a, b)), ([a, b, b], (a, b)), ([b, a, c], (a, c)), ([a, a, a], (a, a))]
    rng = np.random.default_rng(1)
    for corners, (start, end) in cases:
        points = a + rng.normal(scale=0.02, size=(100, 3))
        tri = np.repeat(np.asarray(corners)[None], len(points), axis=0)
        closest, bary = closest_point_on_triangles(points, tri[:, 0], tri[:, 1], tri[:, 2])
        assert np.isfinite(bary).all() and np.allclose(bary.sum(1), 1.0) and (bary >= 0.0).all()
        d = end - start
        t = (((points - start) @ d) / max(d @ d, 1e-300)).clip(0.0, 1.0)
        assert np.allclose(closest, start + t[:, None] * d, atol=1e-12)


def test_closest_on_the_head_matches_brute_force(head_template):
    verts = head_template.v_template.double().numpy()
    faces = head_template.faces.numpy()
    rng = np.random.default_rng(2)
    on = verts[faces[rng.integers(0, len(faces), 300)]].mean(1)
    points = np.concatenate([on, on + rng.normal(scale=0.01, size=on.shape)])
    _, _, dist = SurfaceQuery(verts, faces).closest(points)
    assert np.allclose(dist, _brute_force(points, verts, faces), atol=1e-12)
