"""The pose gauge's reference: its look follows its pose (and does not without effects); its
captures run capture's trainer with and without the model; its scores (tiny sizes: the real
numbers are bench/pose_dependent.py's, on a GPU)."""

from __future__ import annotations

import torch

from avatarcli.capture.fit import CaptureSettings
from avatarcli.evaluation.pose_gauge import (
    CREASES,
    GaugeSetup,
    J,
    gauge_motion,
    known_pose_capture,
    novel_views,
    pose_reference,
    score,
)
from avatarcli.model.gaussians import sh0_to_rgb


def _bent(template, joint: str, angle: float, axis: int):  # type: ignore[no-untyped-def]
    pose = template.zero_pose(1)
    pose.rotations[0, J[joint], axis] = angle
    return pose


def test_body_creases_darken_with_the_bend_and_the_skirt_follows_the_hips(body_template):
    ref = pose_reference(body_template, True, 1)
    assert ref.crease.shape == (len(ref.avatar), len(CREASES)) and float(ref.skirt.max()) > 0.9
    rest = ref.posed(body_template, body_template.zero_pose(1))
    plain = ref.avatar.posed(body_template)
    assert torch.allclose(rest.sh[0], plain.sh) and torch.allclose(rest.means, plain.means, atol=1e-6)  # straight: no effect
    elbow = ref.crease[:, 0] > 0.3
    shade = []
    for angle in (0.4, 0.9, 1.6):
        pg = ref.posed(body_template, _bent(body_template, "left_elbow", -angle, 1))
        shade.append(float(sh0_to_rgb(pg.sh[0, elbow, 0]).mean()))
    assert shade[0] > shade[1] > shade[2]  # deeper with the bend
    knee = ref.crease[:, 2] > 0.3
    assert torch.allclose(pg.sh[0, knee], plain.sh[knee])  # only the bent joint's crease
    swung = ref.offsets(_both_hips(body_template, -0.6))
    moved = swung.means[0].norm(dim=-1)
    assert float(moved[ref.skirt > 0.8].mean()) > 0.05 and float(moved[ref.skirt == 0].max()) == 0.0


def _both_hips(template, angle: float):  # type: ignore[no-untyped-def]
    pose = template.zero_pose(1)
    pose.rotations[0, J["left_hip"], 0] = pose.rotations[0, J["right_hip"], 0] = angle
    return pose


def test_head_lines_come_with_the_smile_the_jaw_and_raised_brows(head_template):
    ref = pose_reference(head_template, True, 1)
    plain = pose_reference(head_template, False, 1)
    for kind, weights in (("smile", ref.smile), ("brows", ref.brows), ("jaw", ref.jaw)):
        pose = head_template.zero_pose(1)
        if kind == "jaw":
            pose.rotations[0, 2, 0] = 0.3
        else:
            pose.expression[0, 0 if kind == "smile" else 3] = 1.2
        o = ref.offsets(pose).sh0[0]
        lines = weights > 0.3
        assert int(lines.sum()) > 20, kind
        assert float(o[lines].mean()) < -0.1 and float(o[weights == 0].abs().max()) == 0.0, kind
        assert float(plain.offsets(pose).sh0.abs().max()) == 0.0


def test_novel_poses_are_not_the_training_poses():
    train, novel = gauge_motion("body", 40, 31), gauge_motion("body", 40, 1031)
    assert float(torch.cdist(novel.rotations.flatten(1), train.rotations.flatten(1)).min()) > 0.3
    head = gauge_motion("head", 40, 31)
    assert float(head.expression[:, 0].max()) > 1.0 and float(head.rotations[:, 2, 0].max()) > 0.25  # it smiles and talks


def test_a_tiny_capture_with_and_without_the_model_is_scored(head_template):
    setup = GaugeSetup(size=32, frames=8, novel=2)
    ref = pose_reference(head_template, True, 1)
    poses, cams = novel_views("head", head_template, setup)
    assert poses.batch == len(cams) == 4
    perfect = score(ref.avatar, pose_reference(head_template, False, 1), head_template, setup)
    assert perfect["psnr"] == 100.0  # the plain reference scored against itself
    for model in (True, False):
        settings = CaptureSettings(steps=3, batch=2, resolution=32, points_per_triangle=1, pose_dependent=model)
        captured = known_pose_capture(ref, head_template, setup, settings)
        assert (captured.pose_dependent is not None) == model
        s = score(captured, ref, head_template, setup)
        assert 5.0 < s["psnr"] < 60.0 and s["views"] == 4.0
