"""avatar init: K Gaussians per triangle, on the surface, reproducible."""

from __future__ import annotations

import pytest
import torch

from avatarcli.errors import AvatarError
from avatarcli.geometry import SurfaceQuery
from avatarcli.model.binding import deform, rest_posed
from avatarcli.model.gaussians import sh0_to_rgb
from avatarcli.model.initialize import init_avatar, mouth_regions, triangle_samples


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


def test_lips_are_red_and_the_opening_jaw_shows_a_dark_mouth(head_template):
    """A face shows a dark mouth when the jaw opens (what face trackers follow): the line
    between the lips and the cavity are dark, the lips redder than the skin, and opening the
    jaw by 0.25 rad makes the dark area in front of the mouth several times larger."""
    from avatarcli.render.cameras import Cameras, intrinsics, look_at
    from avatarcli.render.rasterize import render_gaussians

    av = init_avatar(head_template, 2, seed=0)
    colors = av.gaussians.colors
    points = deform(av.gaussians, av.binding, head_template, rest_posed(head_template)).means[0]
    lips, mouth = mouth_regions(head_template, points)
    assert int(lips.sum()) > 50 and int(mouth.sum()) > 50, (int(lips.sum()), int(mouth.sum()))
    skin = colors[~lips & ~mouth & (points[:, 2] > 0.05)]
    assert colors[mouth].mean() < 0.2 < skin.mean()
    redness = lambda c: (c[:, 0] - c[:, 1:].mean(1)).mean()  # noqa: E731
    assert redness(colors[lips]) > redness(skin) + 0.05

    pose = head_template.zero_pose(2)
    pose.rotations[1, 2, 0] = 0.25
    center = torch.tensor([0.0, -0.07, 0.09])
    view = look_at((center + torch.tensor([0.0, 0.0, 0.3]))[None].expand(2, 3), center[None].expand(2, 3))
    with torch.no_grad():
        images, _, _ = render_gaussians(
            av.posed(head_template, pose), Cameras(view, intrinsics(torch.full((2,), 20.0), 96, 96), 96, 96), torch.ones(3)
        )
    dark = (images.mean(-1) < 0.25).flatten(1).sum(1)
    assert dark[0] > 5 and dark[1] > 4 * dark[0], dark.tolist()
