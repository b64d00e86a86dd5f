"""Condition images: projection, colours, and what a camera cannot see."""

from __future__ import annotations

import math

import pytest
import torch

from avatarcli.generate.conditions.renderer import FACE_COLORS, OPENPOSE_COLORS, ConditionRenderer, openpose_image
from avatarcli.render.cameras import Cameras, intrinsics, look_at, orbit


def test_a_keypoint_lands_on_the_pixel_the_camera_predicts():
    cam = Cameras(look_at(torch.tensor([[0.0, 0.0, 3.0]]), torch.zeros(1, 3)), intrinsics(torch.tensor([40.0]), 512, 512), 512, 512)
    point = torch.tensor([[[0.3, 0.2, 0.0]]])
    px, _ = cam.project(point)
    body = px[:, :1].expand(1, 18, 2).clone()
    vis = torch.zeros(1, 18, dtype=torch.bool)
    vis[0, 0] = True  # only the nose
    img = openpose_image(body, vis, None, None, 512, 512)
    lit = torch.nonzero(img[0].sum(-1) > 0.5).float()
    centre = lit.mean(0).flip(0) + 0.5  # (x, y)
    assert (centre - px[0, 0]).abs().max() < 1.0
    assert torch.allclose(img[0, int(px[0, 0, 1]), int(px[0, 0, 0])], torch.tensor(OPENPOSE_COLORS[0]) / 255.0, atol=0.02)


@pytest.mark.parametrize("size", [512, 1024])
def test_hand_keypoints_are_drawn_at_the_annotators_size(size):
    """The OpenPose ControlNet's annotator draws a hand keypoint as a disc of radius 4 px at
    512 x 512 (cv2.circle(canvas, (x, y), 4, (0, 0, 255), thickness=-1): 49 pixels); drawn
    here with the image, radius 8 at 1024."""
    centre = torch.tensor([size / 2 + 0.5, size / 3 + 0.5])  # a pixel centre
    hands = centre.expand(1, 2, 21, 2).clone()
    vis = torch.zeros(1, 2, 21, dtype=torch.bool)
    vis[0, 0, 5] = True  # one keypoint: no edge has both ends shown
    img = openpose_image(torch.zeros(1, 18, 2), torch.zeros(1, 18, dtype=torch.bool), hands, vis, size, size)[0]
    blue = (img[..., 2] > 0.5) & (img[..., :2].amax(-1) < 0.1)
    yx = torch.nonzero(blue).float() + 0.5
    radius = float((yx.flip(1) - centre).norm(dim=-1).max())
    r = 4.0 * size / 512
    assert r - 1.0 < radius <= r + 0.5
    assert abs(int(blue.sum()) - math.pi * r * r) < 0.2 * math.pi * r * r
    lit = torch.nonzero(img.sum(-1) > 0).float() + 0.5  # nothing else drawn: only the disc and its antialiased rim
    assert float((lit.flip(1) - centre).norm(dim=-1).max()) < r + 1.0


def _views(template, azimuths, size=128):
    pose = template.zero_pose(len(azimuths))
    if template.kind == "body":
        from avatarcli.motion.motion import relaxed_body_pose

        pose.rotations = relaxed_body_pose(len(azimuths))  # arms down
    posed = template.pose(pose)
    v = posed.vertices[0]
    center = (v.max(0).values + v.min(0).values) / 2
    radius = float((v.max(0).values - v.min(0).values).norm() / 2)
    return posed, orbit(center, radius * 2.4, torch.tensor(azimuths), 0.0, 40.0, size, size)


def test_a_frontal_face_mesh_draws_every_contour_whole(head_template):
    """As MediaPipe's face mesh (which the head ControlNet's annotations came from) returns
    every landmark of a face, hidden ones included, each contour is drawn whole: every
    segment's midpoint is painted, the face oval at both cheeks included."""
    posed, cams = _views(head_template, [0.0, 35.0], size=512)
    img = ConditionRenderer(head_template)(posed, cams)
    for view in range(2):
        for name, closed, pts in head_template.face_contours(posed):
            px, _ = cams.index([view]).project(pts[view : view + 1])
            px = px[0]
            ends = torch.roll(px, -1, 0) if closed else px[1:]
            mids = ((px[: len(ends)] + ends) / 2).round().long()
            lit = img[view, mids[:, 1].clamp(0, 511), mids[:, 0].clamp(0, 511)].sum(-1) > 0.1
            assert bool(lit.all()), f"{name} broken in view {view} at segments {torch.nonzero(~lit)[:, 0].tolist()}"


def test_from_behind_only_the_face_oval_is_drawn(head_template):
    posed, cams = _views(head_template, [0.0, 180.0], size=512)
    img = ConditionRenderer(head_template)(posed, cams)

    def count(image, name):
        return int(((image - torch.tensor(FACE_COLORS[name]) / 255.0).abs().sum(-1) < 0.05).sum())

    front, back = img[0], img[1]
    assert count(front, "left_eye") > 5 and count(front, "lips") > 5 and count(front, "face_oval") > 50
    assert count(back, "face_oval") > 50
    # eyes, brows and pupils have colours no shade of the oval's green can take
    assert sum(count(back, n) for n in ("left_eye", "right_eye", "left_brow", "right_brow", "left_iris", "right_iris")) == 0


def test_a_side_view_hides_the_far_arm(body_template):
    posed, cams = _views(body_template, [0.0, 90.0], size=512)
    img = ConditionRenderer(body_template)(posed, cams)
    # the elbows' discs (the wrists' lie under the hands' keypoints, drawn after the body as
    # the annotator draws them)
    right_elbow = torch.tensor(OPENPOSE_COLORS[3]) / 255.0
    left_elbow = torch.tensor(OPENPOSE_COLORS[6]) / 255.0

    def count(image, color):
        return int(((image - color).abs().sum(-1) < 0.05).sum())

    assert count(img[0], right_elbow) > 5 and count(img[0], left_elbow) > 5
    # seen from its left (+x), the torso hides the right elbow
    assert count(img[1], left_elbow) > 5 and count(img[1], right_elbow) == 0


def test_compiled_drawing_matches_eager(head_template, body_template):
    for template in (head_template, body_template):
        posed, cams = _views(template, [20.0, 200.0], size=64)
        eager = ConditionRenderer(template)(posed, cams)
        compiled = ConditionRenderer(template, compile=True)(posed, cams)
        assert eager.sum() > 1.0
        assert (eager - compiled).abs().max() < 1e-4
