"""The capture gauge's videos: they hold what they say (frames, sizes, the true masks, the
motion and camera that made them), the background moves, the same seed makes the same video,
and MediaPipe finds the face or the person in them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from avatarcli.errors import AvatarError
from avatarcli.evaluation.capture_reference import capture_reference
from avatarcli.evaluation.capture_video import (
    FILES,
    Backdrop,
    detection_rate,
    load_capture_video,
    make_capture_video,
    moving_body,
    render_layers,
    talking_head,
    truth_frames,
)
from avatarcli.evaluation.metrics import psnr
from avatarcli.fileio import read_arrays
from avatarcli.motion.fitting import DEFAULT_FOV
from avatarcli.motion.readers import read_motion
from avatarcli.motion.video import probe_video, read_frames


def _decoded(video) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.stack(list(read_frames(probe_video(video.video))))


def test_the_folder_holds_the_video_and_its_truth(head_gauge):
    v = head_gauge
    assert sorted(p.name for p in v.folder.iterdir()) == sorted(FILES)
    info = probe_video(v.video)
    assert (info.width, info.height, info.fps) == (128, 128, 1.0)
    frames = _decoded(v)
    assert frames.shape == (9, 128, 128, 3) and v.frames == 9
    masks = read_arrays(v.folder / "masks.npz")["masks"]
    fg = read_arrays(v.folder / "foreground.npz")["foreground"]
    assert masks.shape == (9, 128, 128) and masks.dtype == np.uint8 and fg.shape == (9, 128, 128, 3)
    spec = json.loads((v.folder / "camera.json").read_text())
    assert spec["tracker_camera"] == {"width": 128, "height": 128, "fov": DEFAULT_FOV, "elevation": 0.0}
    back = load_capture_video(v.folder)
    assert back.camera == v.camera and back.backdrop == v.backdrop and len(back.reference) == len(v.reference)
    # the motion round-trips: one world-space frame per video frame
    m = read_motion(v.folder / "motion.npz")
    assert len(m) == 9 and m.fps == 1.0
    assert torch.allclose(m.rotations, v.motion.rotations) and torch.allclose(m.translation, v.motion.translation)
    # the encoded frames are the clean frames, but for the encoder's loss
    clean, alpha, _ = truth_frames(v, range(9))
    assert psnr(torch.from_numpy(frames).float() / 255, clean) > 28
    assert torch.allclose(alpha, torch.from_numpy(masks.copy()).float() / 255)
    with pytest.raises(AvatarError, match="not empty"):
        make_capture_video("head", v.folder, size=32, fps=1.0, seconds=1.0)


def test_the_masks_are_the_alpha_of_the_true_motion_and_camera(head_gauge, head_template):
    v = load_capture_video(head_gauge.folder)
    idx = [3]
    fg, alpha = render_layers(v.reference, head_template, v.poses(head_template, idx), v.camera.cameras(1))
    masks = read_arrays(v.folder / "masks.npz")["masks"][idx]
    assert float((alpha - torch.from_numpy(masks).float() / 255).abs().max()) <= 1.0 / 255
    stored = read_arrays(v.folder / "foreground.npz")["foreground"][idx]
    assert float((fg - torch.from_numpy(stored).float() / 255).abs().max()) <= 1.0 / 255
    # the person stands in front of the camera, framed as a phone video frames a head
    rows = np.flatnonzero((masks[0] > 127).any(1))
    cols = np.flatnonzero((masks[0] > 127).any(0))
    assert 0.5 < (rows[-1] - rows[0]) / 128 < 0.9 and abs((cols[0] + cols[-1]) / 2 - 64) < 20
    assert rows[0] > 0 and rows[-1] < 127


def test_the_background_moves(head_gauge):
    frames = _decoded(head_gauge).astype(np.float32) / 255
    masks = read_arrays(head_gauge.folder / "masks.npz")["masks"]
    room = (masks[:-1] == 0) & (masks[1:] == 0)  # pixels the person covers in neither frame
    change = np.abs(frames[1:] - frames[:-1]).mean(-1)[room]
    assert change.mean() > 0.05
    bd = Backdrop(64, 64, 30.0)
    a, b = bd.frames([0, 1]), bd.frames([0, 1])
    assert torch.equal(a, b) and float((a[0] - a[1]).abs().mean()) > 0.0
    assert float((bd.frames([0])[0] - bd.frames([90])[0]).abs().mean()) > 0.1
    # textured: neighbouring pixels differ, and its colours include the skin's
    assert float((a[0, 1:] - a[0, :-1]).abs().mean()) > 0.01
    skin = torch.tensor([0.8, 0.62, 0.5])
    assert float(((bd.frames([0])[0] - skin).norm(dim=-1) < 0.1).float().mean()) > 0.01


def test_the_motions_move_as_described():
    head = talking_head(16.0, 10.0)
    yaw = head.rotations[:, 1, 1]
    assert float(yaw.max()) > 0.5 and float(yaw.min()) < -0.5 and float(head.rotations[:, 2, 0].max()) > 0.15  # looks round, talks
    assert float(head.expression[:, 5].max()) > 0.9  # blinks
    body = moving_body(12.0, 10.0)
    root = body.rotations[:, 0, 1]
    assert float(root[-1] - root[0]) == pytest.approx(2 * np.pi, abs=1e-4) and float(root.diff().min()) >= -1e-6  # one full turn
    assert float(moving_body(24.0, 10.0).rotations[-1, 0, 1]) == pytest.approx(0.0, abs=1e-4)  # and back on the next round
    assert torch.equal(talking_head(3.0, 10.0, seed=1).rotations, talking_head(3.0, 10.0, seed=1).rotations)
    assert not torch.equal(talking_head(3.0, 10.0, seed=1).rotations, talking_head(3.0, 10.0, seed=2).rotations)


def test_the_same_seed_makes_the_same_video(tmp_path, head_template):
    ref = capture_reference(head_template, points_per_triangle=1)
    ref = ref.select(torch.arange(0, len(ref), 4))

    def make(name: str, seed: int):  # type: ignore[no-untyped-def]
        return make_capture_video("head", tmp_path / name, size=32, fps=1.0, seconds=1.0, seed=seed, template=head_template, reference=ref)

    a, b, c = make("a", 5), make("b", 5), make("c", 6)
    for name in ("masks.npz", "foreground.npz"):
        x, y = read_arrays(a.folder / name), read_arrays(b.folder / name)
        assert all(np.array_equal(x[k], y[k]) for k in x)
    assert np.array_equal(_decoded(a), _decoded(b)) and not np.array_equal(_decoded(a), _decoded(c))
    assert torch.equal(a.motion.rotations, b.motion.rotations) and not torch.equal(a.motion.rotations, c.motion.rotations)


@pytest.fixture
def mediapipe():
    return pytest.importorskip("mediapipe")


def test_mediapipe_finds_the_face(mediapipe, head_gauge):
    """Measured (128 px, 9 frames over a whole look round): found in all 9."""
    rate = detection_rate("head", _decoded(head_gauge), 128, 128)
    assert rate["frames"] == 9 and rate["found"] >= 8 / 9, rate


@pytest.mark.slow
def test_mediapipe_finds_the_person(mediapipe, tmp_path, body_template):
    """Measured (256 px, one frame a second through the whole 12 s routine, the back turned
    included): found in all 13. The whole figure stays in frame."""
    v = make_capture_video("body", tmp_path / "body", size=256, fps=1.0, seconds=12.0, template=body_template, points_per_triangle=1)
    rate = detection_rate("body", _decoded(v), 256, 256)
    assert rate["frames"] == 13 and rate["found"] >= 12 / 13, rate
    masks = read_arrays(v.folder / "masks.npz")["masks"]
    assert masks[:, 0].max() == 0 and masks[:, -1].max() == 0 and masks[:, :, 0].max() == 0 and masks[:, :, -1].max() == 0
