"""The fits' machinery: the template posed at a few points, the camera, the optimiser's pieces,
and both fits on exact landmarks (what the fitting alone can recover, detector aside)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from avatarcli.errors import AvatarError
from avatarcli.evaluation.tracking import body_accuracy, head_accuracy
from avatarcli.motion.builtin import builtin_motion
from avatarcli.motion.fit_body import body_targets, fit_body
from avatarcli.motion.fit_head import head_targets
from avatarcli.motion.fitting import Camera, PointModel, check_found, fill_missing, frame_ranges, roughness, similarity
from avatarcli.motion.landmarks import BodyLandmarks, FaceLandmarks
from avatarcli.motion.motion import to_template_poses
from avatarcli.rotations import axis_angle_to_matrix
from avatarcli.templates.template import surface_points

from helpers import random_head_motion, random_pose


def test_point_model_poses_like_the_template(head_template, body_template):
    tpl = head_template
    pose = random_pose(tpl, 4, scale=0.3, seed=1)
    betas = torch.randn(tpl.num_betas) * 0.5
    faces, bary = tpl.landmarks68_embedding()
    model = PointModel(tpl, faces, bary, eyes=torch.tensor([3, 4]))
    got = model(pose.rotations, pose.expression, pose.translation, betas)
    posed = tpl.pose(pose, betas)
    want = torch.cat([surface_points(posed.vertices, tpl.faces, faces, bary), tpl.irises(posed)], dim=1)
    assert torch.allclose(got, want, atol=1e-5)

    tpl = body_template
    pose = random_pose(tpl, 3, scale=0.2, seed=2)
    tg = body_targets(tpl)
    got = tg.model(pose.rotations, pose.expression, pose.translation, torch.zeros(tpl.num_betas))[:, tg.order]
    posed = tpl.pose(pose)
    op, hands = tpl.openpose18(posed), tpl.hand_keypoints(posed)
    assert torch.allclose(got[:, 5], op[:, 5], atol=1e-5)  # left shoulder
    assert torch.allclose(got[:, 0], op[:, 0], atol=1e-5)  # nose, a vertex
    assert torch.allclose(got[:, len(tg.index) :].reshape(3, 2, 21, 3), hands, atol=1e-5)


def test_offsets_turn_with_the_head(head_template):
    tpl = head_template
    faces, bary = tpl.landmarks68_embedding()
    model = PointModel(tpl, faces[:1], bary[:1])
    pose = tpl.zero_pose(2)
    pose.rotations[1, 1] = torch.tensor([0.0, math.pi / 2, 0.0])  # the neck turned a quarter
    offsets = torch.tensor([[0.001, 0.0, 0.0]])
    moved = model(pose.rotations, pose.expression, pose.translation, torch.zeros(tpl.num_betas), offsets)
    still = model(pose.rotations, pose.expression, pose.translation, torch.zeros(tpl.num_betas))
    d = moved - still
    assert torch.allclose(d[0, 0], torch.tensor([0.001, 0.0, 0.0]), atol=1e-6)
    assert torch.allclose(d[1, 0], torch.tensor([0.0, 0.0, -0.001]), atol=1e-5)


def test_camera_matches_the_renderers():
    from avatarcli.render.cameras import intrinsics, look_at

    cam = Camera(320, 240, fov=35.0, elevation=12.0)
    r = cam.rotation()
    assert torch.allclose(r @ r.T, torch.eye(3), atol=1e-6)
    e = math.radians(12.0)
    eye = torch.tensor([[0.0, 0.0, 0.0]])
    view = look_at(eye, torch.tensor([[0.0, -math.sin(e), -math.cos(e)]]))
    assert torch.allclose(view[0, :3, :3], r, atol=1e-6)
    k = intrinsics(torch.tensor([35.0]), 320, 240)[0]
    assert cam.focal == pytest.approx(float(k[1, 1]))
    pts = torch.tensor([[0.1, -0.2, 2.0], [-0.3, 0.1, 4.0]])
    px = cam.project(pts)
    assert torch.allclose(px, (pts[:, :2] / pts[:, 2:]) * cam.focal + torch.tensor([160.0, 120.0]))
    assert torch.allclose(cam.ray(px, pts[:, 2]), pts, atol=1e-5)


def test_similarity_recovers_a_turn_scale_and_shift():
    g = torch.Generator().manual_seed(0)
    src = torch.randn(30, 3, generator=g)
    rot = axis_angle_to_matrix(torch.randn(4, 3, generator=g))
    scale = torch.tensor([0.5, 1.0, 2.0, 300.0])
    shift = torch.randn(4, 3, generator=g)
    dst = scale[:, None, None] * (src @ rot.transpose(1, 2)) + shift[:, None]
    r, s, t = similarity(src, dst, torch.rand(30, generator=g) + 0.1)
    assert torch.allclose(r, rot, atol=1e-4) and torch.allclose(s, scale, rtol=1e-4) and torch.allclose(t, shift, atol=1e-2)


def test_gaps_are_bridged_and_long_ones_refused():
    found = np.ones(60, dtype=bool)
    found[[3, 4, 20]] = False
    check_found(found, 30.0, "face", "clip.mp4")  # short gaps are bridged
    assert frame_ranges(np.array([0, 1, 2, 5, 9, 10])) == "0-2, 5, 9-10"
    found[30:50] = False
    with pytest.raises(AvatarError, match=r"no face found in frames 3-4, 20, 30-49 of clip.mp4"):
        check_found(found, 30.0, "face", "clip.mp4")
    with pytest.raises(AvatarError, match="no person found in any of the 60 frames"):
        check_found(np.zeros(60, dtype=bool), 30.0, "person", "clip.mp4")
    values = torch.arange(6.0)[:, None]
    assert fill_missing(values, torch.tensor([False, True, True, False, False, True]))[:, 0].tolist() == [1, 1, 2, 2, 5, 5]
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):  # against the plain definition: the nearest found frame, the earlier on a tie
        found_r = torch.rand(40, generator=gen) < 0.3
        found_r[int(torch.randint(40, (1,), generator=gen))] = True
        ok = torch.nonzero(found_r)[:, 0]
        want = ok[(torch.arange(40)[:, None] - ok[None]).abs().argmin(1)]
        assert torch.equal(fill_missing(torch.arange(40.0)[:, None], found_r)[:, 0].long(), want)


def test_smoothness_costs_the_same_motion_alike_at_any_rate():
    def cost(fps: float) -> float:
        t = torch.arange(round(2 * fps)) / fps
        return float(roughness(torch.sin(2 * math.pi * t)[:, None], fps)) / fps

    assert cost(15.0) == pytest.approx(cost(60.0), rel=0.1)


def _exact_face(motion, template, camera: Camera) -> FaceLandmarks:
    """The landmarks a perfect detector would give for ``motion`` 0.55 m in front of ``camera``."""
    tg = head_targets(template)
    poses, _ = to_template_poses(motion, template)
    with torch.no_grad():
        pts = tg.model(
            poses.rotations, poses.expression, poses.translation + torch.tensor([0.0, 0.0, -0.55]), torch.zeros(template.num_betas)
        )
        cam = pts @ camera.rotation().T
    points = np.full((len(motion), 478, 3), np.nan, np.float32)
    idx = tg.index.numpy()
    points[:, idx, :2] = camera.project(cam).numpy()
    depth = cam[..., 2]
    points[:, idx, 2] = ((depth - depth.mean(1, keepdim=True)) * camera.focal / depth.mean(1, keepdim=True)).numpy()
    return FaceLandmarks(points, np.ones(len(motion), dtype=bool), camera.width, camera.height)


def test_head_fit_recovers_a_random_motion_from_exact_landmarks(head_template):
    """On perfect landmarks the fit is limited by its priors and smoothing only: measured
    (2026-11-22) neck 0.13 deg, jaw 0.21 deg, gaze 0.45 deg, expression 0.31 mm."""
    from avatarcli.motion.fit_head import fit_head

    truth = random_head_motion(1.0, 15.0, seed=3)
    camera = Camera(256, 256, fov=30.0)
    fit = fit_head(_exact_face(truth, head_template, camera), head_template, camera, 15.0).motion
    acc = head_accuracy(fit, truth, head_template).summary()
    assert fit.kind == "head" and len(fit) == len(truth) and fit.fps == 15.0
    assert acc["neck_deg_mean"] < 0.5 and acc["jaw_deg_mean"] < 0.6 and acc["gaze_deg_mean"] < 1.5, acc
    assert acc["expression_mm_mean"] < 0.6 < 3 < acc["still_face_mm_mean"], acc


def test_body_fit_recovers_a_wave_from_exact_landmarks(body_template):
    """Measured (2026-11-22): limbs 0.5 deg, bends 0.6 deg, root 0.9 deg."""
    tpl = body_template
    truth = builtin_motion("wave", "body", seconds=1.5, fps=10.0)
    camera = Camera(256, 256, fov=30.0, elevation=8.0)
    tg = body_targets(tpl)
    poses, _ = to_template_poses(truth, tpl)
    with torch.no_grad():
        pts = tg.model(poses.rotations, poses.expression, poses.translation + torch.tensor([0.0, -0.3, -4.0]), torch.zeros(tpl.num_betas))
        cam = pts[:, tg.order] @ camera.rotation().T
    t, p = len(truth), len(tg.index)
    idx = tg.index.numpy()
    image = np.full((t, 33, 3), np.nan, np.float32)
    image[:, idx, :2] = camera.project(cam[:, :p]).numpy()
    hips = (cam[:, list(idx).index(23)] + cam[:, list(idx).index(24)]) / 2
    world = np.zeros((t, 33, 3), np.float32)
    world[:, idx] = (cam[:, :p] - hips[:, None]).numpy()
    visibility = np.zeros((t, 33), np.float32)
    visibility[:, idx] = 1.0
    hands = np.full((t, 2, 21, 3), np.nan, np.float32)
    body = BodyLandmarks(image, world, visibility, hands, np.zeros((t, 2), dtype=bool), np.ones(t, dtype=bool), 256, 256)
    fitted = fit_body(body, tpl, camera, 10.0)
    fit = fitted.motion
    acc = body_accuracy(fit, truth, tpl).summary()
    # where the body stood in the camera's world, not only how it moved (what capture renders)
    placed = fitted.world_poses(tpl).translation - (poses.translation + torch.tensor([0.0, -0.3, -4.0]))
    assert float(placed.norm(dim=-1).max()) < 0.05, placed
    assert fitted.betas.shape == (tpl.num_betas,)
    assert fit.kind == "body" and fit.rotations.shape == (t, 55, 3)
    assert acc["limb_deg_mean"] < 2.0 and acc["bend_deg_mean"] < 2.0 and acc["root_deg_mean"] < 2.0, acc
    assert acc["path_m_max"] < 0.03, acc
