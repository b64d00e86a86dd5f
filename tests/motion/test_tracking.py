"""``avatar track`` end to end: our own mannequin rendered with a known motion (``avatar animate``),
tracked back, and compared with that motion; and one clear line for every bad input.

Tests that run MediaPipe skip where it is not installed (the ``[track]`` extra). The videos are
small (128-160 pixels, about a second at 10 fps) so the CPU renderer makes them in seconds;
tracking larger videos is no less accurate (bench/RESULTS.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from avatarcli.evaluation.tracking import body_accuracy, head_accuracy
from avatarcli.model import avatar_file
from avatarcli.motion.builtin import builtin_motion
from avatarcli.motion.readers import read_motion

from helpers import run_cli


@pytest.fixture
def mediapipe():
    return pytest.importorskip("mediapipe")


def _render(tmp: Path, avatar, motion: str, size: int, end: float) -> Path:  # type: ignore[no-untyped-def]
    path = tmp / f"{avatar.kind}.avatar"
    avatar_file.save(avatar, path)
    video = tmp / f"{motion}.mp4"
    r = run_cli("animate", str(path), motion, "--size", str(size), "--fps", "10", "--end", str(end), "-o", str(video))
    assert r.code == 0, r.stderr
    return video


@pytest.fixture(scope="module")
def talk_video(tmp_path_factory, head_avatar) -> Path:
    pytest.importorskip("mediapipe")
    return _render(tmp_path_factory.mktemp("talk"), head_avatar, "talk", 128, 1.5)


@pytest.fixture(scope="module")
def wave_video(tmp_path_factory, body_avatar) -> Path:
    pytest.importorskip("mediapipe")
    return _render(tmp_path_factory.mktemp("wave"), body_avatar, "wave", 384, 1.0)


def _one_line_error(r, *fragments: str) -> None:  # type: ignore[no-untyped-def]
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert r.code == 2 and len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


def test_head_track_recovers_the_talk(tmp_path, talk_video, head_template):
    """Measured (2026-11-22, 128 px, 10 fps, 16 frames, camera as animate's, 30 degrees):
    neck 3.2 deg mean, jaw 1.4 deg mean (true opening up to 11.7 deg, correlation 0.90),
    expression landmarks 3.8 mm after re-posing against 4.4 mm for a face that stays still."""
    out = tmp_path / "talk.npz"
    r = run_cli("track", str(talk_video), "--model", "head", "--fov", "30", "-o", str(out))
    assert r.code == 0, r.stderr
    assert "frames/s" in r.stderr
    fit = read_motion(out)
    assert fit.kind == "head" and fit.fps == 10.0 and len(fit) == 16
    acc = head_accuracy(fit, builtin_motion("talk", "head"), head_template).summary()
    assert acc["neck_deg_mean"] < 5.0 and acc["neck_deg_p95"] < 7.0, acc
    assert acc["jaw_deg_mean"] < 2.5 and acc["jaw_correlation"] > 0.8, acc
    assert acc["expression_mm_mean"] < 0.95 * acc["still_face_mm_mean"], acc
    # and it drives an avatar
    r = run_cli("animate", str(talk_video.parent / "head.avatar"), str(out), "--size", "32", "--end", "0.2", "-o", str(tmp_path / "back"))
    assert r.code == 0, r.stderr


def test_body_track_recovers_the_wave(tmp_path, wave_video, body_template):
    """Measured (2026-11-22, 384 px, 10 fps, 11 frames): limb directions 14.2 deg mean (the waving
    arm 15.0 / 18.2 deg, the legs, whose depth the image leaves open, 14-20 deg), elbow and knee
    bends 6.1 deg, root turn 6.6 deg, root path within 8 cm of still (the fit leans the whole body
    about 11 deg towards the camera). At 192 px MediaPipe's pose reads the raised-arm frames of this
    small figure turned round or side-on, and the fit follows (root 51 deg off): bodies want a
    figure a few hundred pixels tall, as phone and webcam videos have."""
    out = tmp_path / "wave.npz"
    r = run_cli("track", str(wave_video), "--model", "body", "--fov", "30", "-o", str(out))
    assert r.code == 0, r.stderr
    fit = read_motion(out)
    assert fit.kind == "body" and fit.fps == 10.0 and len(fit) == 11
    acc = body_accuracy(fit, builtin_motion("wave", "body"), body_template).summary()
    assert acc["limb_deg_mean"] < 18.0 and acc["bend_deg_mean"] < 8.0 and acc["root_deg_mean"] < 10.0, acc
    assert acc["right_upper_arm_deg"] < 20.0 and acc["right_forearm_deg"] < 20.0, acc  # the waving arm
    assert acc["path_m_max"] < 0.10, acc


def _grey_clip(path: Path, frames: int, fps: float, size: int = 64) -> Path:
    data = np.full((frames, size, size, 3), 200, np.uint8)
    iio.imwrite(path, data, plugin="FFMPEG", fps=fps, codec="libx264", macro_block_size=1)
    return path


def test_bad_videos_are_refused_in_one_line(tmp_path, mediapipe, talk_video):
    out = tmp_path / "m.npz"
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    _one_line_error(run_cli("track", str(text), "-o", str(out)), "cannot read notes.mp4 as a video")
    _one_line_error(
        run_cli("track", str(_grey_clip(tmp_path / "empty.mp4", 8, 10)), "-o", str(out)), "no face found in any of the 8 frames"
    )
    _one_line_error(
        run_cli("track", str(_grey_clip(tmp_path / "long.mp4", 601, 1, 16)), "-o", str(out)), "up to 10 minutes", "--start/--end"
    )
    # the face leaves for 0.7 s: the message names those frames
    frames = iio.imread(talk_video, plugin="FFMPEG")
    frames[4:11] = 255
    gap = tmp_path / "gap.mp4"
    iio.imwrite(gap, frames, plugin="FFMPEG", fps=10, codec="libx264", macro_block_size=1)
    _one_line_error(run_cli("track", str(gap), "--model", "head", "-o", str(out)), "no face found in frames 4-10 of gap.mp4")
    _one_line_error(run_cli("track", str(gap), "--model", "head", "-o", str(tmp_path / "m.txt")), ".npz")
    # a face filling the frame: the pose tracker "finds" a person, but no shoulders or hips
    _one_line_error(run_cli("track", str(talk_video), "--model", "body", "-o", str(out)), "no person (a shoulder and a hip) in view")
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["empty.mp4", "gap.mp4", "long.mp4", "notes.mp4"]


def test_without_mediapipe_it_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # import mediapipe raises ImportError
    out = tmp_path / "m.npz"
    r = run_cli("track", str(_grey_clip(tmp_path / "a.mp4", 4, 10)), "-o", str(out))
    _one_line_error(r, "pip install 'avatarcli[track]'")
    assert not out.exists()


def test_a_body_needs_its_shoulders_and_hips_in_view():
    """Frames where the pose tracker sees no shoulder, or no hip, do not count as a body found
    (MediaPipe guesses a whole person on a head-and-shoulders clip); side-on, one of each is
    enough."""
    from avatarcli.motion.landmarks import POSE_POINTS, TORSO, BodyLandmarks, with_torso_in_view

    t = 5
    visibility = np.full((t, POSE_POINTS), 0.99, np.float32)
    visibility[0, [TORSO[1], TORSO[3]]] = 0.1  # side-on: the far shoulder and hip hidden
    visibility[1, [TORSO[2], TORSO[3]]] = 0.0  # no hip
    visibility[2, [TORSO[0], TORSO[1]]] = (0.07, 0.24)  # no shoulder (a head-and-shoulders clip's values)
    body = BodyLandmarks(
        image=np.zeros((t, POSE_POINTS, 3), np.float32), world=np.zeros((t, POSE_POINTS, 3), np.float32), visibility=visibility,
        hands=np.full((t, 2, 21, 3), np.nan, np.float32), hands_found=np.zeros((t, 2), bool),
        found=np.array([True, True, True, True, False]), width=64, height=64,
    )  # fmt: skip
    assert with_torso_in_view(body).found.tolist() == [True, False, False, True, False]
    assert body.found.tolist() == [True, True, True, True, False]  # the input is left as it was
