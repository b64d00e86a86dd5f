"""avatar init: K Gaussians per triangle, on the surface, reproducible."""

from __future__ import annotations

import pytest
import torch

from avatarcli.errors import AvatarError
from avatarcli.geometry import SurfaceQuery
from avatarcli.model.binding import deform, rest_posed
from avatarcli.model.gaussians import sh0_to_rgb
from avatarcli.model.initialize import init_avatar, triangle_samples


def test_count_and_surface(head_template, body_template):
    for tpl in (head_template, body_template):
        av = init_avatar(tpl, points_per_triangle=3, seed=1)
        assert len(av) == 3 * tpl.faces.shape[0]
        world = deform(av.gaussians, av.binding, tpl, rest_posed(tpl))
        means = world.means[0]
        _, _, dist = SurfaceQuery(tpl.v_template.numpy(), tpl.faces.numpy()).closest(means.double().numpy())
        assert dist.max() < 1e-5
        scales = world.scales[0]
        assert (scales > 0).all() and scales.max() < 0.02  # metres: about the sample spacing
        rgb = sh0_to_rgb(av.gaussians.sh[:, 0])  # unclamped: the colours init chose must already be valid
        assert ((rgb >= 0) & (rgb <= 1)).all()


def test_seeded_and_reproducible(head_template):
    a = init_avatar(head_template, 2, seed=3)
    b = init_avatar(head_template, 2, seed=3)
    c = init_avatar(head_template, 2, seed=4)
    assert torch.equal(a.gaussians.means, b.gaussians.means)
    assert not torch.equal(a.gaussians.means, c.gaussians.means)


def test_samples_are_spread_inside_triangles():
    b = triangle_samples(10, 50, torch.Generator().manual_seed(0))
    assert b.shape == (50, 10, 3)
    assert (b >= -1e-6).all() and torch.allclose(b.sum(-1), torch.ones(50, 10))
    # evenly spread: no two samples of a triangle closer than a small fraction of it
    d = torch.cdist(b[..., 1:], b[..., 1:])
    d = d + torch.eye(10) * 10
    assert d.min() > 0.03


def test_bad_k(head_template):
    with pytest.raises(AvatarError):
        init_avatar(head_template, 0)


def test_eyes_get_eye_colours(head_template):
    av = init_avatar(head_template, 2, seed=0)
    corners = head_template.faces[av.binding.face_idx]
    on_eye = head_template.weights[corners][:, :, 3:].sum(-1).mean(-1) > 0.5
    eye_colors = av.gaussians.colors[on_eye]
    assert (eye_colors.mean(-1) > 0.8).any() and (eye_colors.mean(-1) < 0.1).any()  # sclera and pupil
