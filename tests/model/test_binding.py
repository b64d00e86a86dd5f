"""Bindings: bound Gaussians follow the surface exactly, and their orientation follows too."""

from __future__ import annotations

import torch

from avatarcli.model.binding import (
    SkinningBinding,
    TriangleBinding,
    deform,
    rest_posed,
    skinning_from_surface,
    triangle_frames,
    world_to_triangle_local,
)
from avatarcli.model.gaussians import Gaussians
from avatarcli.rotations import axis_angle_to_matrix, quat_to_matrix

from helpers import random_pose


def _random_quats(n: int, seed: int) -> torch.Tensor:
    q = torch.randn(n, 4, generator=torch.Generator().manual_seed(seed))
    return q / q.norm(dim=-1, keepdim=True)


def _on_first_vertex(template, faces: torch.Tensor, quats: torch.Tensor, kind: str):
    """Gaussians sitting exactly on the first vertex of each given face, with rest rotations ``quats``."""
    rest = rest_posed(template)
    pos = rest.vertices[0, template.faces[faces, 0]]
    log_scales = torch.full((len(faces), 3), -5.0)
    op = torch.zeros(len(faces))
    sh = torch.zeros(len(faces), 1, 3)
    if kind == "triangle":
        lm, lq, ls = world_to_triangle_local(pos, quats, log_scales, faces, rest, template)
        return Gaussians(lm, ls, lq, op, sh), TriangleBinding(faces)
    bary = torch.tensor([[1.0, 0.0, 0.0]]).expand(len(faces), -1)
    return Gaussians(pos, log_scales, quats, op, sh), SkinningBinding(skinning_from_surface(template, faces, bary), faces, bary)


def test_triangle_frame_columns_are_edge_normal_cross(head_template):
    posed = rest_posed(head_template)
    centers, rot, k = triangle_frames(posed.vertices, head_template.faces)
    tri = posed.vertices[0, head_template.faces]
    edge = tri[:, 1] - tri[:, 0]
    normal = torch.cross(edge, tri[:, 2] - tri[:, 0], dim=-1)
    r = rot[0]
    assert torch.allclose(r[:, :, 0], edge / edge.norm(dim=-1, keepdim=True), atol=1e-5)
    assert torch.allclose(r[:, :, 1], normal / normal.norm(dim=-1, keepdim=True), atol=1e-5)
    assert torch.allclose(torch.linalg.det(r), torch.ones(len(r)), atol=1e-4)
    assert torch.allclose(k[0] ** 2, 0.5 * normal.norm(dim=-1), rtol=1e-4)
    assert torch.allclose(centers[0], tri.mean(1), atol=1e-7)


def test_vertex_gaussians_follow_vertices_under_random_poses(head_template, body_template):
    for tpl, kind in ((head_template, "triangle"), (body_template, "skinning")):
        faces = torch.randperm(tpl.faces.shape[0], generator=torch.Generator().manual_seed(0))[:200]
        g, binding = _on_first_vertex(tpl, faces, _random_quats(len(faces), 1), kind)
        pose = random_pose(tpl, 4, scale=0.5, seed=5)
        betas = torch.randn(tpl.num_betas, generator=torch.Generator().manual_seed(6))
        posed = tpl.pose(pose, betas)
        out = deform(g, binding, tpl, posed)
        target = posed.vertices[:, tpl.faces[faces, 0]]
        assert (out.means - target).abs().max() < 1e-5, kind


def test_orientation_follows_the_surface(head_template, body_template):
    """Under a rigid rotation G of the whole template every Gaussian must turn by exactly G.

    Composing the triangle rotation on the wrong side of the Gaussian's own rotation, or
    storing the frame as rows, breaks this for any Gaussian not aligned with its triangle.
    """
    g_rot = torch.tensor([[0.3, -1.1, 0.7]])
    G = axis_angle_to_matrix(g_rot)[0]
    for tpl, kind in ((head_template, "triangle"), (body_template, "skinning")):
        faces = torch.arange(0, tpl.faces.shape[0], 97)
        q = _random_quats(len(faces), 2)
        g, binding = _on_first_vertex(tpl, faces, q, kind)
        pose = tpl.zero_pose(1)
        pose.rotations[0, 0] = g_rot[0]
        out = deform(g, binding, tpl, tpl.pose(pose))
        got = quat_to_matrix(out.quats[0])
        want = G @ quat_to_matrix(q)
        assert (got - want).abs().max() < 1e-4, kind


def test_triangle_gaussians_turn_with_their_triangle(head_template):
    """Non-rigid case: the world rotation is the posed frame times the rest frame's inverse."""
    tpl = head_template
    faces = torch.arange(0, tpl.faces.shape[0], 53)
    q = _random_quats(len(faces), 3)
    g, binding = _on_first_vertex(tpl, faces, q, "triangle")
    posed = tpl.pose(random_pose(tpl, 2, seed=9))
    out = deform(g, binding, tpl, posed)
    _, r0, _ = triangle_frames(rest_posed(tpl).vertices, tpl.faces)
    _, r1, _ = triangle_frames(posed.vertices, tpl.faces)
    want = r1[:, faces] @ r0[0, faces].transpose(-1, -2) @ quat_to_matrix(q)
    assert (quat_to_matrix(out.quats) - want).abs().max() < 1e-4


def test_skinning_weights_come_from_the_surface(body_template):
    faces = torch.tensor([10, 500, 4000])
    bary = torch.tensor([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])
    w = skinning_from_surface(body_template, faces, bary)
    corners = body_template.faces[faces]
    want = sum(bary[:, k, None] * body_template.weights[corners[:, k]] for k in range(3))
    assert torch.allclose(w, want)
    assert torch.allclose(w.sum(1), torch.ones(3), atol=1e-5)


def _lone_triangles(corners: torch.Tensor):
    """Separate triangles (T, 3, 3) as a posed batch of one and the faces they use."""
    from types import SimpleNamespace

    faces = torch.arange(3 * len(corners)).reshape(-1, 3)
    return SimpleNamespace(vertices=corners.reshape(1, -1, 3)), SimpleNamespace(faces=faces)


def test_triangle_binding_round_trips_on_slivers_and_degenerate_triangles():
    """Points on any triangle come back exactly through world_to_triangle_local and deform,
    with local coordinates no larger than the triangle's own (no rounding blown up)."""
    a = torch.tensor([0.31, 0.42, 0.27], dtype=torch.float64)
    u = torch.tensor([0.006, -0.002, 0.004], dtype=torch.float64)
    w = torch.tensor([-0.001, 0.005, 0.002], dtype=torch.float64)
    across = torch.linalg.cross(u, w)
    across = torch.linalg.cross(across, u) / (across.norm() * u.norm())  # in the plane, across u
    corners = torch.stack(
        [
            torch.stack([a, a + u, a + w]),  # healthy
            torch.stack([a, a + u, a + 0.4 * u + 1e-9 * across]),  # a sliver: 1 nm thick
            torch.stack([a, a + u, a + 0.4 * u]),  # three corners in a line
            torch.stack([a, a, a + w]),  # two corners together
            torch.stack([a, a + u, a + u]),
            torch.tensor([[0.25, 0.5, 0.125], [0.375, 0.5, 0.125], [0.3125, 0.5, 0.125]], dtype=torch.float64),  # exactly in a line
        ]
    ).float()
    posed, tpl = _lone_triangles(corners)
    bary = torch.tensor([[1 / 3, 1 / 3, 1 / 3], [0.7, 0.2, 0.1], [0.05, 0.05, 0.9], [0.0, 0.5, 0.5], [1.0, 0.0, 0.0]])
    t, k = len(corners), len(bary)
    face_idx = torch.arange(t).repeat_interleave(k)
    means = (corners[face_idx] * bary.repeat(t, 1)[..., None]).sum(1)
    quats = torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(len(means), -1)
    lm, lq, ls = world_to_triangle_local(means, quats, torch.full((len(means), 3), -6.0), face_idx, posed, tpl)
    assert torch.isfinite(lm).all() and torch.isfinite(lq).all() and torch.isfinite(ls).all()
    assert lm.abs().max() <= 1.0  # a point on a triangle sits within its edges of the centroid
    out = deform(Gaussians(lm, ls, lq, torch.zeros(len(lm)), torch.zeros(len(lm), 1, 3)), TriangleBinding(face_idx), tpl, posed)
    assert (out.means[0] - means).abs().max() < 2e-7  # float32 rounding of coordinates near 0.5 m
