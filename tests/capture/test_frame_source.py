"""The video's frames as training views: draws, corrections, their prior, checkpoints, the camera."""

from __future__ import annotations

import torch

from avatarcli.capture.frames import FrameSource, video_cameras
from avatarcli.motion.fitting import Camera
from avatarcli.templates.template import Pose


def _poses(t: int = 10, joints: int = 5, expr: int = 4) -> Pose:
    g = torch.Generator().manual_seed(0)
    return Pose(torch.randn(t, joints, 3, generator=g) * 0.1, torch.randn(t, expr, generator=g), torch.randn(t, 3, generator=g))


def _source(seed: int = 3) -> FrameSource:
    cams = video_cameras(Camera(64, 48, fov=40.0), 32, 24)
    return FrameSource(_poses(), cams, torch.arange(7), seed)


def test_the_video_camera_is_the_trackers():
    """A point the tracker projects to a pixel lands on the same pixel of the training image
    (scaled), elevation included."""
    cam = Camera(640, 480, fov=50.0, elevation=12.0)
    g = torch.Generator().manual_seed(1)
    world = torch.randn(20, 3, generator=g) * 0.3 + torch.tensor([0.0, 0.0, -2.5])
    tracker = cam.project(world @ cam.rotation().T)
    cams = video_cameras(cam, 320, 240)
    pixels, depth = cams.project(world[None])
    assert torch.allclose(pixels[0], tracker * 0.5, atol=1e-3) and bool((depth > 0).all())


def test_draws_are_training_frames_and_differ_within_a_step():
    src = _source()
    for _ in range(20):
        d = src.draw(4, "animate")
        assert d.frames is not None and len(set(d.frames.tolist())) == 4 and int(d.frames.max()) < 7
    many = src.draw(10, "animate")  # more views than frames: each frame before any repeats
    assert many.frames is not None and set(many.frames[:7].tolist()) == set(range(7))


def test_poses_are_tracked_plus_corrections_with_a_prior_towards_the_tracked():
    src = _source()
    d = src.draw(3, "animate")
    assert d.frames is not None
    assert torch.allclose(src.pose(d, slice(None)).rotations, src.tracked.rotations[d.frames])
    assert float(src.prior().detach()) == 0.0
    pose = src.pose(d, slice(0, 2))
    (pose.rotations.sum() + pose.translation.sum() + pose.expression.sum()).backward()
    assert src.rotations.grad is not None and float(src.rotations.grad[d.frames[:2]].abs().min()) == 1.0
    untouched = [f for f in range(10) if f not in d.frames[:2].tolist()]
    assert float(src.rotations.grad[untouched].abs().max()) == 0.0
    with torch.no_grad():
        src.rotations[d.frames[0]] += 0.1
    assert float(src.prior().detach()) > 0.0
    assert set(src.trainables()) == {"rotations", "translation", "expression"}


def test_a_checkpointed_source_continues_exactly():
    a = _source()
    a.draw(4, "animate")
    with torch.no_grad():
        a.translation += 0.01
    state = {k: v.clone() for k, v in a.state().items()}
    b = _source(seed=99)  # another seed: the state, not the seed, decides what comes next
    b.load_state(state)
    da, db = a.draw(4, "animate"), b.draw(4, "animate")
    assert torch.equal(da.frames, db.frames)
    assert torch.equal(a.corrected().translation, b.corrected().translation)
