"""Triangle quality: measure it, repair slivers, and refuse a mesh that still has one.

Quadric decimation keeps the shape, not the triangles' shape: it leaves a few dozen slivers
(a corner of about 175 degrees, or one edge far shorter than the others) on each mannequin.
Anything that divides by a triangle's area or solves in its frame (triangle bindings, surface
queries, cotangent weights) is then at the mercy of rounding, and rounding differs from one
machine to the next. :func:`repair_slivers` removes them by local edge flips and edge
collapses that never move the surface by more than a set distance, and
:func:`check_quality` makes a mesh that still has one an error at build time, so it never
reaches the template cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avatarcli.geometry import closest_point_on_triangles

# Every triangle of a built-in template is at least this good (1 equilateral, 0 degenerate).
# 0.15 is a corner of about 160 degrees, or an edge about a tenth of the others.
MIN_QUALITY = 0.15


def triangle_quality(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """``4 sqrt(3) area / (sum of squared edge lengths)`` per face (F,): 1 for an equilateral
    triangle, 0 for a degenerate one (two corners together, or three in a line)."""
    tri = np.asarray(verts, dtype=np.float64)[np.asarray(faces)]
    e0, e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 1], tri[:, 0] - tri[:, 2]
    area2 = np.linalg.norm(np.cross(e0, -e2), axis=1)  # twice the area
    squares = (e0 * e0).sum(1) + (e1 * e1).sum(1) + (e2 * e2).sum(1)
    return 2.0 * np.sqrt(3.0) * area2 / np.where(squares > 0, squares, 1.0)


def check_quality(verts: np.ndarray, faces: np.ndarray, name: str, min_quality: float = MIN_QUALITY) -> None:
    """Raise ``ValueError`` unless every triangle's quality is at least ``min_quality``."""
    q = triangle_quality(verts, faces)
    if len(q) and q.min() < min_quality:
        worst = int(q.argmin())
        raise ValueError(
            f"{name}: {(q < min_quality).sum()} triangles below quality {min_quality} "
            f"(worst: face {worst}, {q[worst]:.3g}); the mesh would bind and query unreliably"
        )


class _Mesh:
    """A triangle mesh that edge flips and collapses edit in place (faces are marked dead,
    never moved, until :meth:`compact`)."""

    def __init__(self, verts: np.ndarray, faces: np.ndarray) -> None:
        self.v = np.array(verts, dtype=np.float64)
        self.f = np.array(faces, dtype=np.int64)
        self.alive = np.ones(len(self.f), dtype=bool)
        self.vf: list[set[int]] = [set() for _ in range(len(self.v))]
        for i, face in enumerate(self.f):
            for x in face:
                self.vf[x].add(i)
        edges = np.sort(np.concatenate([self.f[:, [0, 1]], self.f[:, [1, 2]], self.f[:, [2, 0]]]), axis=1)
        uniq, counts = np.unique(edges, axis=0, return_counts=True)
        self.boundary = set(uniq[counts == 1].ravel().tolist())

    def edge_faces(self, a: int, b: int) -> list[int]:
        return sorted(self.vf[a] & self.vf[b])

    def neighbours(self, a: int) -> set[int]:
        return {int(x) for f in self.vf[a] for x in self.f[f]} - {a}

    def quality(self, faces: np.ndarray, verts: np.ndarray | None = None) -> np.ndarray:
        return triangle_quality(self.v if verts is None else verts, faces)

    def normals(self, faces: np.ndarray, verts: np.ndarray | None = None) -> np.ndarray:
        tri = (self.v if verts is None else verts)[faces]
        n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        return n / np.linalg.norm(n, axis=1, keepdims=True).clip(1e-300)

    def replace(self, old: list[int], edited: dict[int, np.ndarray]) -> None:
        """Faces ``old`` in ``edited`` get new corners; the others die."""
        for i in old:
            for x in self.f[i]:
                self.vf[x].discard(i)
            if i in edited:
                self.f[i] = edited[i]
                for x in self.f[i]:
                    self.vf[x].add(i)
            else:
                self.alive[i] = False

    def compact(self) -> tuple[np.ndarray, np.ndarray]:
        faces = self.f[self.alive]
        used = np.unique(faces)
        remap = np.full(len(self.v), -1, dtype=np.int64)
        remap[used] = np.arange(len(used))
        return self.v[used], remap[faces]


def _third(face: np.ndarray, a: int, b: int) -> int:
    return int(next(x for x in face if x != a and x != b))


def _directed(face: np.ndarray, a: int, b: int) -> bool:
    """Whether the face runs a -> b."""
    i = int(np.nonzero(face == a)[0][0])
    return int(face[(i + 1) % 3]) == b


def _deviation(points: np.ndarray, verts: np.ndarray, faces: np.ndarray) -> float:
    """Largest distance from ``points`` (P, 3) to the surface ``faces`` (over ``verts``)."""
    tri = np.tile(verts[faces], (len(points), 1, 1))
    pr = np.repeat(points, len(faces), axis=0)
    cl, _ = closest_point_on_triangles(pr, tri[:, 0], tri[:, 1], tri[:, 2])
    return float(np.linalg.norm(cl - pr, axis=1).reshape(len(points), len(faces)).min(1).max())


@dataclass
class _Change:
    """One local edit: faces ``edited`` get new corners, the rest of ``old`` die, vertex
    ``moved[0]`` goes to ``moved[1]``. ``gain``: how much it raises the worst quality of
    the faces it touches. ``probes``: (points, verts, faces) whose distance to that surface
    must stay within the allowed deviation (checked only for the change that is chosen)."""

    gain: float
    old: list[int]
    edited: dict[int, np.ndarray]
    moved: tuple[int, np.ndarray] | None
    probes: list[tuple[np.ndarray, np.ndarray, np.ndarray]]

    def within(self, max_deviation: float) -> bool:
        return all(_deviation(p, v, f) <= max_deviation for p, v, f in self.probes)


def _flip(mesh: _Mesh, a: int, b: int, min_cos: float) -> list[_Change]:
    """Replace edge a-b by the edge between its two opposite corners."""
    faces = mesh.edge_faces(a, b)
    if len(faces) != 2:
        return []
    fa, fb = faces if _directed(mesh.f[faces[0]], a, b) else faces[::-1]
    if not _directed(mesh.f[fa], a, b) or not _directed(mesh.f[fb], b, a):
        return []  # inconsistent winding: leave it alone
    o, r = _third(mesh.f[fa], a, b), _third(mesh.f[fb], a, b)
    if o == r or mesh.vf[o] & mesh.vf[r]:
        return []  # the new edge exists already
    new = np.array([[a, r, o], [r, b, o]])
    old = np.array([mesh.f[fa], mesh.f[fb]])
    n_old = mesh.normals(old).sum(0)
    n_old /= max(np.linalg.norm(n_old), 1e-300)
    if (mesh.normals(new) @ n_old).min() < min_cos:
        return []
    # the surface moves by the tetrahedron between the two diagonals
    t = np.array([0.25, 0.5, 0.75])[:, None]
    on_new, on_old = mesh.v[o] + t * (mesh.v[r] - mesh.v[o]), mesh.v[a] + t * (mesh.v[b] - mesh.v[a])
    gain = float(mesh.quality(new).min() - mesh.quality(old).min())
    return [_Change(gain, [fa, fb], {fa: new[0], fb: new[1]}, None, [(on_new, mesh.v, old), (on_old, mesh.v, new)])]


def _collapse(mesh: _Mesh, a: int, b: int, min_cos: float) -> list[_Change]:
    """Merge b into a, at the edge's midpoint or either end; a corner on the open border
    stays where it is."""
    if b in mesh.boundary:
        a, b = b, a
    if b in mesh.boundary:
        return []
    shared = mesh.edge_faces(a, b)
    if len(shared) != 2:
        return []
    # link condition: a and b have no common neighbours but the two opposite corners
    if mesh.neighbours(a) & mesh.neighbours(b) != {_third(mesh.f[f], a, b) for f in shared}:
        return []
    ring = sorted((mesh.vf[a] | mesh.vf[b]) - set(shared))
    old_faces = mesh.f[ring]
    edited = np.where(old_faces == b, a, old_faces)
    n_old = mesh.normals(old_faces)
    before = mesh.f[sorted(mesh.vf[a] | mesh.vf[b])]
    worst_before = float(mesh.quality(before).min())
    out = []
    spots = (mesh.v[a],) if a in mesh.boundary else (0.5 * (mesh.v[a] + mesh.v[b]), mesh.v[a], mesh.v[b])
    for x in spots:
        verts = mesh.v.copy()
        verts[a] = x
        if np.einsum("ij,ij->i", mesh.normals(edited, verts), n_old).min() < min_cos:
            continue
        gain = float(mesh.quality(edited, verts).min()) - worst_before
        probes = [(mesh.v[[a, b]], verts, edited), (x[None], mesh.v, before)]
        out.append(_Change(gain, [*ring, *shared], dict(zip(ring, edited, strict=True)), (a, x), probes))
    return out


def _relax(mesh: _Mesh, a: int, min_cos: float) -> list[_Change]:
    """Slide corner a (not on the border) towards the middle of its neighbours, within its
    tangent plane, so that the angles around it even out."""
    if a in mesh.boundary:
        return []
    ring = sorted(mesh.vf[a])
    faces = mesh.f[ring]
    n_old = mesh.normals(faces)
    normal = n_old.sum(0)
    normal /= max(np.linalg.norm(normal), 1e-300)
    step = np.mean(mesh.v[sorted(mesh.neighbours(a))], axis=0) - mesh.v[a]
    step -= (step @ normal) * normal
    worst_before = float(mesh.quality(faces).min())
    out = []
    for t in (1.0, 0.5, 0.25):
        verts = mesh.v.copy()
        verts[a] = mesh.v[a] + t * step
        if np.einsum("ij,ij->i", mesh.normals(faces, verts), n_old).min() < min_cos:
            continue
        gain = float(mesh.quality(faces, verts).min()) - worst_before
        probes = [(verts[a][None], mesh.v, faces), (mesh.v[a][None], verts, faces)]
        out.append(_Change(gain, [], {}, (a, verts[a]), probes))
    return out


def repair_slivers(
    verts: np.ndarray, faces: np.ndarray, min_quality: float, max_deviation: float, max_turn_degrees: float = 45.0
) -> tuple[np.ndarray, np.ndarray]:
    """Flip, collapse and slide until no triangle's quality is below ``min_quality``.

    Each sliver, worst first, gets the best of: flipping one of its edges, collapsing one
    of its edges (to the edge's midpoint or one of its ends), or sliding one of its corners
    in the surface towards the middle of its neighbours; among the changes that keep the
    mesh manifold (the link condition) and its open border where it is, turn no triangle by
    more than ``max_turn_degrees``, move the surface by at most ``max_deviation`` (metres)
    and raise the worst quality of the triangles they touch. Slivers that no such change
    helps are left for :func:`check_quality` to report. Deterministic.

    Returns:
        verts (V', 3), faces (F', 3): the repaired mesh, in the old order less the faces and
        vertices that collapses removed.
    """
    mesh = _Mesh(verts, faces)
    min_cos = float(np.cos(np.radians(max_turn_degrees)))
    for _ in range(20):
        live = np.nonzero(mesh.alive)[0]
        q = mesh.quality(mesh.f[live])
        bad = live[np.argsort(q, kind="stable")][: int((q < min_quality).sum())]
        changed = False
        for f in bad:
            if not mesh.alive[f] or mesh.quality(mesh.f[[f]])[0] >= min_quality:
                continue
            corners = [int(x) for x in mesh.f[f]]
            options: list[_Change] = []
            for i in range(3):
                a, b = corners[i], corners[(i + 1) % 3]
                options += _flip(mesh, a, b, min_cos) + _collapse(mesh, a, b, min_cos) + _relax(mesh, a, min_cos)
            # the best that improves and stays close to the surface (stable: ties keep their order)
            for change in sorted((c for c in options if c.gain > 0.0), key=lambda c: -c.gain):
                if change.within(max_deviation):
                    if change.moved is not None:
                        mesh.v[change.moved[0]] = change.moved[1]
                    mesh.replace(change.old, change.edited)
                    changed = True
                    break
        if not changed:
            break
    return mesh.compact()
