"""The pose-dependent model: the training poses' basis and its clipping, offsets in the
binding's local space, per-pose opacities and colours, copies, and folding it into a static avatar."""

from __future__ import annotations

import math

import pytest
import torch

from avatarcli.errors import AvatarError
from avatarcli.model.binding import deform
from avatarcli.model.gaussians import Gaussians
from avatarcli.model.pose_dependent import (
    CLIP,
    PoseDependent,
    new_pose_dependent,
    offset_penalty,
    pose_features,
    principal_directions,
)
from avatarcli.templates.template import Pose

from helpers import random_pose, with_pose_model


def test_the_basis_is_the_training_poses_principal_directions():
    g = torch.Generator().manual_seed(0)
    u = torch.linalg.qr(torch.randn(12, 12, generator=g))[0][:, :2].T  # two orthonormal directions (2, 12)
    coeffs = torch.randn(500, 2, generator=g) * torch.tensor([3.0, 1.0])
    mean = torch.randn(12, generator=g)
    feats = mean + coeffs @ u
    m, d, s = principal_directions(feats, 4)
    assert torch.allclose(m, feats.mean(0), atol=1e-5) and float((m - mean).norm()) < 0.3
    assert abs(float(s[0]) - 3.0) < 0.3 and abs(float(s[1]) - 1.0) < 0.1
    assert abs(float((d[0] * u[0]).sum())) > 0.999 and abs(float((d[1] * u[1]).sum())) > 0.999
    assert float(d[2:].abs().max()) == 0.0 and torch.equal(s[2:], torch.ones(2))  # nothing else varied: no direction
    # each direction's sign is fixed: its largest entry is positive
    assert all(float(row[row.abs().argmax()]) > 0 for row in d[:2])


def test_a_pose_beyond_what_training_showed_is_clipped_and_what_it_never_varied_is_dropped(body_avatar, body_template):
    """Training bent the left elbow (up to 1 radian) and the right knee: a far bend of the
    elbow is clipped at two standard deviations; a turn of a shoulder, which training never
    moved, changes no coefficient; nor do the expression and the hands, which are no part
    of a body's feature."""
    g = torch.Generator().manual_seed(0)
    poses = body_template.zero_pose(200)
    poses.rotations[:, 18, 1] = -torch.rand(200, generator=g)  # left elbow
    poses.rotations[:, 5, 0] = torch.rand(200, generator=g) * 1.5  # right knee
    rest = body_avatar.posed(body_template).means[0]
    net = new_pose_dependent("body", body_template.num_expression, poses, rest, 0.5).network
    assert int((net.std != 1).sum()) >= 2 and float(net.directions[4:].abs().max()) == 0.0  # the joints' bends: a few directions
    far = body_template.zero_pose(1)
    far.rotations[0, 18, 1] = -3.0
    assert float(net.coefficients(far).abs().max()) == pytest.approx(CLIP)
    seen = body_template.zero_pose(1)
    seen.rotations[0, 18, 1] = -0.5
    odd = body_template.zero_pose(1)
    odd.rotations[0, 18, 1] = -0.5
    odd.rotations[0, 16] = torch.tensor([0.3, -0.4, 0.5])  # a shoulder
    odd.expression[:] = 5.0
    odd.rotations[0, 30] = 1.0  # a finger
    assert torch.allclose(net.coefficients(odd), net.coefficients(seen), atol=1e-6)
    assert not torch.allclose(net.coefficients(seen), net.coefficients(body_template.zero_pose(1)))
    assert pose_features("body", far).shape == (1, 189)


@pytest.mark.parametrize("kind", ["head", "body"])
def test_a_new_model_changes_nothing(kind, head_avatar, body_avatar, head_template, body_template):
    av, tpl = (head_avatar, head_template) if kind == "head" else (body_avatar, body_template)
    model = with_pose_model(av, tpl, live=False)
    pose = random_pose(tpl, 3, 0.3, seed=4)
    plain, posed = av.posed(tpl, pose), model.posed(tpl, pose)
    assert posed.per_pose and posed.opacities.shape == (3, len(av)) and posed.sh.shape == (3, len(av), 1, 3)
    assert torch.allclose(plain.means, posed.means) and torch.allclose(plain.scales, posed.scales)
    assert torch.allclose(plain.opacities[None].expand(3, -1), posed.opacities)
    assert torch.allclose(plain.sh[None].expand(3, -1, -1, -1), posed.sh)


@pytest.mark.parametrize("kind", ["head", "body"])
def test_offsets_are_added_in_the_bindings_space_before_posing(kind, head_avatar, body_avatar, head_template, body_template):
    """Posing with the model is posing Gaussians whose local values are the avatar's plus
    that pose's offsets: triangle-local for heads, the rest space for bodies."""
    av, tpl = (head_avatar, head_template) if kind == "head" else (body_avatar, body_template)
    model = with_pose_model(av, tpl)
    pose = random_pose(tpl, 2, 0.3, seed=5)
    with torch.no_grad():
        posed = model.posed(tpl, pose)
        o = model.pose_dependent.offsets(pose)
    assert float(o.means.abs().max()) > 0 and float(o.sh0.abs().max()) > 0 and float(o.opacity_logits.abs().max()) > 0
    for b in range(2):
        g = av.gaussians
        moved = Gaussians(g.means + o.means[b], g.log_scales + o.log_scales[b], g.quats, g.opacity_logits + o.opacity_logits[b],
                          torch.cat([g.sh[:, :1] + o.sh0[b][:, None], g.sh[:, 1:]], 1))  # fmt: skip
        want = deform(moved, av.binding, tpl, tpl.pose(pose.index([b])))
        assert torch.allclose(posed.means[b], want.means[0], atol=1e-6)
        assert torch.allclose(posed.scales[b], want.scales[0], rtol=1e-5)
        assert torch.allclose(posed.opacities[b], want.opacities) and torch.allclose(posed.sh[b], want.sh)
    # the two poses look different: opacities and colours are per pose
    assert float((posed.sh[0] - posed.sh[1]).abs().max()) > 1e-3


def test_without_a_model_posing_shares_opacities_and_colours(head_avatar, head_template):
    posed = head_avatar.posed(head_template, random_pose(head_template, 4, 0.3))
    assert not posed.per_pose and posed.opacities.shape == (len(head_avatar),)
    assert posed.sh is head_avatar.gaussians.sh  # no copy per pose
    one = posed.frame(2)
    assert one.means.shape[0] == 1 and one.sh is posed.sh


def test_frames_and_gaussians_of_a_batch_are_that_poses(head_avatar, head_template):
    model = with_pose_model(head_avatar, head_template)
    posed = model.posed(head_template, random_pose(head_template, 3, 0.3, seed=2))
    one = posed.frame(1)
    assert one.per_pose and torch.equal(one.sh[0], posed.sh[1]) and torch.equal(one.opacities[0], posed.opacities[1])
    g = posed.gaussians(2)
    assert torch.equal(g.sh, posed.sh[2])
    assert torch.allclose(torch.sigmoid(g.opacity_logits), posed.opacities[2].clamp(1e-6, 1 - 1e-6), atol=1e-6)


def test_copies_carry_the_model_and_share_nothing(body_avatar, body_template):
    model = with_pose_model(body_avatar, body_template)
    part = model.select(torch.arange(10))
    assert part.pose_dependent.latents.shape == (10, model.pose_dependent.network.rank)
    assert torch.equal(part.pose_dependent.latents, model.pose_dependent.latents[:10])
    assert part.pose_dependent.network is not model.pose_dependent.network
    moved = model.to("meta")
    assert all(p.device.type == "meta" for p in moved.pose_dependent.network.parameters())
    assert all(p.device.type == "cpu" for p in model.pose_dependent.network.parameters())


def test_static_folds_a_poses_offsets_into_the_gaussians(head_avatar, head_template):
    model = with_pose_model(head_avatar, head_template)
    model.meta["pose_dependent"] = model.pose_dependent.network.config
    rest = model.static(head_template)
    assert rest.pose_dependent is None and "pose_dependent" not in rest.meta
    a, b = rest.posed(head_template), model.posed(head_template)
    assert torch.allclose(a.means, b.means, atol=1e-6) and torch.allclose(a.sh, b.sh[0]) and torch.allclose(a.opacities, b.opacities[0])
    pose = random_pose(head_template, 1, 0.3, seed=7)
    at = model.static(head_template, pose)
    assert torch.allclose(at.posed(head_template, pose).sh, model.posed(head_template, pose).sh[0])
    assert head_avatar.static(head_template) is head_avatar  # nothing to fold


def test_the_penalty_is_the_mean_square_in_output_units(head_avatar, head_template):
    model = with_pose_model(head_avatar, head_template)
    o = model.pose_dependent.offsets(random_pose(head_template, 2, 0.3))
    s = model.pose_dependent.network.config["scales"]
    groups = (o.means / s["position"], o.sh0 / s["color"], o.log_scales / s["scale"], o.opacity_logits[..., None] / s["opacity"])
    raw = torch.cat(groups, -1)
    assert float(offset_penalty(o, model.pose_dependent.network)) == pytest.approx(float(raw.pow(2).mean()), rel=1e-5)


def test_the_latents_start_alike_for_neighbours(body_avatar, body_template):
    model = with_pose_model(body_avatar, body_template, live=False)
    z = model.pose_dependent.latents
    rest = body_avatar.posed(body_template).means[0]
    d = torch.cdist(rest[:200], rest)
    near = d.topk(2, largest=False).indices[:, 1]
    far = d.topk(1).indices[:, 0]
    close = (z[:200] - z[near]).norm(dim=-1).mean()
    apart = (z[:200] - z[far]).norm(dim=-1).mean()
    assert float(close) < 0.3 * float(apart)


def test_a_head_model_needs_the_template_it_was_made_for(head_avatar, head_template):
    model = with_pose_model(head_avatar, head_template)
    pd = model.pose_dependent
    pd.network.config["dims"] += 1  # as if made for a template with one more expression coefficient
    with pytest.raises(AvatarError, match="expression coefficients"):
        model.posed(head_template)


def test_head_features_are_the_jaw_and_the_expression(head_template):
    pose = head_template.zero_pose(2)
    pose.rotations[1, 2, 0] = 0.3
    pose.expression[1, 3] = 0.7
    pose.rotations[:, 1] = 0.4  # the neck is not part of it
    f = pose_features("head", pose)
    assert f.shape == (2, 9 + head_template.num_expression)
    assert float(f[0].abs().max()) == 0.0
    assert float(f[1, 4]) == pytest.approx(math.cos(0.3) - 1, abs=1e-6) and float(f[1, 9 + 3]) == pytest.approx(0.7)


def test_pose_dependent_holds_latents_per_gaussian():
    pd = PoseDependent(new_pose_dependent("head", 10, Pose(torch.zeros(4, 5, 3), torch.randn(4, 10), torch.zeros(4, 3)),
                                          torch.randn(7, 3), 0.2, rank=5).network, torch.zeros(7, 5))  # fmt: skip
    assert pd.select(torch.tensor([0, 3])).latents.shape == (2, 5)
