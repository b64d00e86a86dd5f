"""The capture gauge's reference people: repeatable, not the generation gauge's, skin where a
face is, and parts off the surface (hair, a beard, a skirt)."""

from __future__ import annotations

import inspect

import pytest
import torch

from avatarcli.evaluation.capture_reference import CAPTURE_SEED, capture_reference, eyes_centre, value_noise
from avatarcli.evaluation.reference import reference_avatar
from avatarcli.model.binding import nearest_surface


@pytest.fixture(scope="module")
def head_ref(head_template):
    return capture_reference(head_template, points_per_triangle=1)


def _rest(avatar, template):
    with torch.no_grad():
        posed = avatar.posed(template)
    return posed.means[0].cpu(), avatar.gaussians.colors.cpu()


def test_it_is_repeatable_and_its_own(head_template, head_ref):
    assert CAPTURE_SEED != inspect.signature(reference_avatar).parameters["seed"].default
    again = capture_reference(head_template, points_per_triangle=1)
    assert torch.equal(again.gaussians.means, head_ref.gaussians.means) and torch.equal(again.gaussians.sh, head_ref.gaussians.sh)
    other = capture_reference(head_template, seed=CAPTURE_SEED + 1, points_per_triangle=1)
    assert not torch.equal(other.gaussians.sh[: len(head_ref)], head_ref.gaussians.sh[: len(other)])
    assert head_ref.meta["seed"] == CAPTURE_SEED and head_ref.kind == "head"


def test_the_head_has_skin_hair_and_a_beard(head_template, head_ref):
    means, rgb = _rest(head_ref, head_template)
    _, _, dist = nearest_surface(head_template, means.double().numpy())
    dist = torch.from_numpy(dist).float()
    q = means - eyes_centre(head_template)
    off = dist > 0.003
    scalp = off & (q[:, 1] > 0.08)
    chin = off & (q[:, 1] < -0.11) & (q[:, 2] > 0.0)
    assert int(scalp.sum()) > 500 and int(chin.sum()) > 50
    assert float(dist[scalp].max()) > 0.01  # a shell of hair, not a painted scalp
    assert (rgb[scalp].mean(0) < 0.35).all()  # dark hair
    # the cheeks and forehead: skin, red above green above blue, not stripes
    cheek = ~off & (q[:, 2] > 0.02) & (q[:, 1] > -0.05) & (q[:, 1] < -0.02) & (q[:, 0].abs() > 0.03) & (q[:, 0].abs() < 0.06)
    skin = rgb[cheek].mean(0)
    assert int(cheek.sum()) > 15 and skin[0] > skin[1] > skin[2] and 0.45 < float(skin[0]) < 0.95
    assert float(rgb[cheek].std(0).max()) < 0.12
    # no beard on the lips: nothing lifted right in front of the mouth's middle
    mouth = (q[:, 0].abs() < 0.01) & ((q[:, 1] + 0.074).abs() < 0.004) & (q[:, 2] > 0.02)
    assert int(mouth.sum()) > 0 and float(dist[mouth].max()) < 0.003


def test_the_body_wears_clothes_and_a_skirt(body_template):
    ref = capture_reference(body_template, points_per_triangle=1)
    means, rgb = _rest(ref, body_template)
    _, _, dist = nearest_surface(body_template, means.double().numpy())
    dist = torch.from_numpy(dist).float()
    skirt = (dist > 0.03) & (means[:, 1] < -0.1) & (means[:, 1] > -0.4)
    assert int(skirt.sum()) > 200
    hair = (dist > 0.003) & (means[:, 1] > 0.72)
    assert int(hair.sum()) > 100
    chest = (dist < 0.003) & (means[:, 1] > 0.25) & (means[:, 1] < 0.4) & (means[:, 2] > 0.05) & (means[:, 0].abs() < 0.1)
    face = (dist < 0.003) & ((means[:, 1] - 0.62).abs() < 0.02) & (means[:, 2] > 0.08)
    assert float(rgb[chest].std(0).mean()) > 0.1  # the shirt's plaid
    assert not torch.allclose(rgb[chest].mean(0), rgb[face].mean(0), atol=0.1)


def test_value_noise_is_smooth_and_bounded():
    p = torch.rand(2000, 3, generator=torch.Generator().manual_seed(0))
    v = value_noise(p, 0.2, 1)
    assert float(v.min()) >= 0 and float(v.max()) < 1 and float(v.std()) > 0.05
    near = value_noise(p + 1e-4, 0.2, 1)
    assert float((near - v).abs().max()) < 0.01
