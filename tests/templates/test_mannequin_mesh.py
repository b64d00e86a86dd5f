"""Mannequin meshing: grids every machine computes alike, slivers repaired, bad meshes refused,
caches keyed by what builds them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from avatarcli.geometry import SurfaceQuery
from avatarcli.templates.mannequin import mesher
from avatarcli.templates.mannequin import sdf as S
from avatarcli.templates.mannequin.repair import MIN_QUALITY, check_quality, repair_slivers, triangle_quality


def test_triangle_quality():
    equilateral = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.5, np.sqrt(0.75), 0.0]])
    flat = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.5, 0.0, 0.0]])
    q = triangle_quality(np.concatenate([equilateral, flat, np.zeros((3, 3))]), np.arange(9).reshape(3, 3))
    assert np.allclose(q, [1.0, 0.0, 0.0])


def _slivered_cap() -> tuple[np.ndarray, np.ndarray]:
    """A sphere (radius 0.1 m) cut open at the top, with needles (an edge split 3% from its
    end) and caps (a corner 1% from the middle of the opposite edge) put into it."""
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.1)
    v, f = np.asarray(sphere.vertices), np.asarray(sphere.faces)
    f = f[v[f].mean(1)[:, 2] < 0.07]
    v, f = [*v], [list(x) for x in f]
    rng = np.random.default_rng(0)
    for face in rng.choice(len(f), 12, replace=False):
        a, b, c = f[face]
        if face % 2:  # cap: a new corner just inside the middle of edge a-b
            v.append(0.99 * (0.5 * v[a] + 0.5 * v[b]) + 0.01 * v[c])
            p = len(v) - 1
            f[face] = [a, b, p]
            f += [[b, c, p], [c, a, p]]
        else:  # needle: split edge a-b near a, and the face across it (which runs b -> a) too
            v.append(0.97 * v[a] + 0.03 * v[b])
            p = len(v) - 1
            across = next(i for i, g in enumerate(f) if i != face and a in g and b in g)
            d = next(x for x in f[across] if x not in (a, b))
            f[face] = [a, p, c]
            f.append([p, b, c])
            f[across] = [b, p, d]
            f.append([p, a, d])
    return np.asarray(v), np.asarray(f)


def _edges(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    return np.unique(edges, axis=0, return_counts=True)


def test_repair_removes_slivers_and_keeps_the_surface():
    v, f = _slivered_cap()
    before = trimesh.Trimesh(v, f, process=False)
    assert before.is_winding_consistent and triangle_quality(v, f).min() < 0.05
    with pytest.raises(ValueError, match="below quality"):
        check_quality(v, f, "the test cap")

    v2, f2 = repair_slivers(v, f, 0.2, max_deviation=3e-4)
    check_quality(v2, f2, "the repaired cap")
    assert triangle_quality(v2, f2).min() >= 0.2
    after = trimesh.Trimesh(v2, f2, process=False)
    assert after.is_winding_consistent and len(np.unique(np.sort(f2, axis=1), axis=0)) == len(f2)
    edges, counts = _edges(f2)
    assert counts.max() == 2  # still a manifold
    # the open border is where it was, corner for corner
    old_edges, old_counts = _edges(f)
    border = lambda verts, e, c: np.unique(np.round(verts[e[c == 1]].reshape(-1, 3), 12), axis=0)  # noqa: E731
    assert np.array_equal(border(v, old_edges, old_counts), border(v2, edges, counts))
    # and the surface has moved by no more than the allowed deviation
    assert SurfaceQuery(v, f).closest(v2)[2].max() <= 3e-4 + 1e-12
    assert SurfaceQuery(v2, f2).closest(v[np.unique(f)])[2].max() <= 3e-4 + 1e-12
    assert abs(after.area - before.area) < 1e-3 * before.area


def test_built_templates_have_no_slivers(head_template, body_template):
    for tpl in (head_template, body_template):
        v, f = tpl.v_template.double().numpy(), tpl.faces.numpy()
        assert triangle_quality(v, f).min() >= MIN_QUALITY, tpl.name
        _, counts = _edges(f)
        assert counts.max() <= 2, tpl.name
        assert len(np.unique(np.sort(f, axis=1), axis=0)) == len(f), tpl.name


def test_grids_are_quantised_past_rounding_noise():
    """Two machines' float64 arithmetic differs by an ulp here and there (SIMD paths, libm):
    the quantised grid must not."""

    def sdf(p):
        d = S.smooth_union(S.sphere(p, (0.01, 0.02, 0.0), 0.05), S.capsule(p, (-0.04, 0.0, 0.0), (0.04, 0.03, 0.01), 0.02), 0.01)
        return S.ellipsoid(p, (0.0, -0.03, 0.02), (0.03, 0.02, 0.025)).minimum(d)

    gen = torch.Generator().manual_seed(0)

    def sdf_off_by_an_ulp(p):
        d = sdf(p)
        step = torch.randint(-1, 2, d.shape, generator=gen).to(d)
        return torch.where(step > 0, d.nextafter(d + 1), torch.where(step < 0, d.nextafter(d - 1), d))

    lo, hi = np.array([-0.09, -0.07, -0.06]), np.array([0.09, 0.08, 0.07])
    a = mesher.sample_grid(sdf, lo, hi, 0.002)
    b = mesher.sample_grid(sdf_off_by_an_ulp, lo, hi, 0.002)
    assert a.dtype == np.float32 and np.array_equal(a, b)
    steps = a.astype(np.float64) / mesher.QUANTUM
    assert np.array_equal(steps, np.round(steps))


def test_builds_leave_the_callers_thread_count():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        with mesher.reproducible():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(threads)


def test_cache_key_follows_the_libraries_that_build(monkeypatch):
    from avatarcli.templates import loading

    before = loading._builder_digest()
    assert loading._builder_digest() == before
    real = loading._version
    for name in loading.BUILDER_LIBRARIES:
        monkeypatch.setattr(loading, "_version", lambda n, name=name: "0.0.0-other" if n == name else real(n))
        assert loading._builder_digest() != before, name
