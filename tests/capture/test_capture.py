"""``avatar capture`` end to end on a video of a known avatar, and one line for every bad input.

The video is the built-in head with a look of its own (darker skin, dark hair on the scalp)
rendered by ``avatar animate`` at 128 px and 10 fps; capture starts from the template's plain
colours, so what it learns shows on the frames it never saw. Tests that run MediaPipe skip
where it is not installed (the ``[track]`` extra).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from avatarcli.model import avatar_file
from avatarcli.model.binding import deform, rest_posed
from avatarcli.model.gaussians import rgb_to_sh0, sh0_to_rgb
from avatarcli.model.initialize import init_avatar

from helpers import run_cli

FAST = ("--steps", "150", "--resolution", "128", "--batch", "2", "-k", "1", "--device", "cpu", "--checkpoint-every", "0")


def _one_line_error(r, *fragments: str) -> None:  # type: ignore[no-untyped-def]
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert r.code == 2 and len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


def made_up_head(template):  # type: ignore[no-untyped-def]
    """The built-in head with a look of its own: tanned skin and dark hair over the scalp."""
    av = init_avatar(template, 2, 0)
    world = deform(av.gaussians, av.binding, template, rest_posed(template))
    y = world.means[0, :, 1]
    rgb = sh0_to_rgb(av.gaussians.sh[:, 0]) * torch.tensor([0.85, 0.62, 0.48])
    hair = (y > 0.045) & (world.means[0, :, 2] < 0.07)
    rgb[hair] = torch.tensor([0.16, 0.10, 0.06])
    av.gaussians.sh[:, 0] = rgb_to_sh0(rgb.clamp(0, 1))
    return av


@pytest.fixture(scope="module")
def head_video(tmp_path_factory, head_template) -> Path:
    pytest.importorskip("mediapipe")
    tmp = tmp_path_factory.mktemp("capture")
    avatar_file.save(made_up_head(head_template), tmp / "ref.avatar")
    video = tmp / "talk.mp4"
    r = run_cli("animate", str(tmp / "ref.avatar"), "talk", "--size", "128", "--fps", "10", "--end", "2.4", "-o", str(video))
    assert r.code == 0, r.stderr
    return video


def test_capture_learns_the_look_of_a_head_it_never_saw_from_these_frames(tmp_path, head_video):
    out = tmp_path / "me.avatar"
    r = run_cli("capture", str(head_video), "--model", "head", "--fov", "30", "--holdout", "0.2", *FAST, "-o", str(out))
    assert r.code == 0, r.stderr
    assert "held out" in r.stderr and "PSNR" in r.stderr
    av = avatar_file.load(out)
    meta = av.meta
    assert meta["stage"] == "captured" and av.kind == "head" and meta["prompt"] is None
    video = meta["capture"]["video"]
    assert video["name"] == head_video.name and video["sha256"] == hashlib.sha256(head_video.read_bytes()).hexdigest()
    assert video["trained_frames"] + video["held_out_frames"] == video["frames"] == 25 and video["held_out_frames"] == 5
    held = meta["capture"]["holdout"]
    assert held["frames"] == 5
    # the template's own colours on those frames score about 17-18 dB (measured); the capture learns the skin and hair
    assert held["psnr_masked"] > 21.0 and held["ssim"] > 0.8, held
    assert any("avatar capture" in h["command"] for h in meta["history"])
    assert not out.with_suffix(".unfinished.avatar").exists() and out.with_suffix(".ckpt").exists()
    # an ordinary avatar: it animates
    r = run_cli("animate", str(out), "nod", "--size", "32", "--end", "0.2", "-o", str(tmp_path / "nod"))
    assert r.code == 0, r.stderr


def test_a_span_too_short_to_fit_is_refused(tmp_path, head_video):
    r = run_cli("capture", str(head_video), "--end", "0.5", *FAST, "-o", str(tmp_path / "x.avatar"))
    _one_line_error(r, "at least 1 s")
    assert list(tmp_path.iterdir()) == []


def test_a_video_without_a_face_is_refused(tmp_path):
    pytest.importorskip("mediapipe")
    import imageio.v3 as iio

    noise = (np.random.default_rng(0).random((20, 64, 64, 3)) * 255).astype(np.uint8)
    video = tmp_path / "noise.mp4"
    iio.imwrite(video, noise, fps=10)
    out = tmp_path / "x.avatar"
    r = run_cli("capture", str(video), *FAST, "-o", str(out))
    _one_line_error(r, "no face found")
    assert not out.exists() and not out.with_suffix(".ckpt").exists()


def test_refusals_before_any_work(tmp_path, head_video):
    _one_line_error(run_cli("capture", str(tmp_path / "none.mp4"), "-o", str(tmp_path / "a.avatar")), "does not exist")
    (tmp_path / "text.mp4").write_text("not a video")
    _one_line_error(run_cli("capture", str(tmp_path / "text.mp4"), "-o", str(tmp_path / "a.avatar")), "video")
    _one_line_error(run_cli("capture", str(head_video), "--holdout", "0.9", "-o", str(tmp_path / "a.avatar")), "held-out fraction")
    _one_line_error(run_cli("capture", str(head_video), "-o", str(tmp_path / "a.ply")), "NAME.avatar")
    _one_line_error(run_cli("capture", str(head_video), "-o", "-"), "not '-'")
    _one_line_error(run_cli("capture", str(head_video), "--resume", "-o", str(tmp_path / "a.avatar")), "no checkpoint")
    _one_line_error(run_cli("capture", str(head_video), "--model", "cat", "-o", str(tmp_path / "a.avatar")), "head or body")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["text.mp4"]


def test_a_person_the_segmenter_cannot_find_is_refused(tmp_path, head_video, monkeypatch):
    from avatarcli.motion import segmentation

    monkeypatch.setattr(segmentation.PersonSegmenter, "_process", lambda self, frame: np.zeros(frame.shape[:2], np.float32))
    r = run_cli("capture", str(head_video), *FAST, "-o", str(tmp_path / "x.avatar"))
    _one_line_error(r, "finds nobody")


@pytest.mark.slow
def test_an_interrupted_capture_resumes_where_it_stopped(tmp_path, head_video):
    """SIGTERM after a checkpoint: exit 130 with the checkpoint and the avatar so far saved;
    --resume then finishes the run bit for bit as an uninterrupted one does (the pose-dependent model too)."""
    from helpers import run_process, sigterm_when

    short = ("--steps", "40", "--resolution", "96", "--batch", "2", "-k", "1", "--device", "cpu", "--fov", "30", "--holdout", "0.2",
             "--pose-dependent")  # fmt: skip
    whole = tmp_path / "whole.avatar"
    # every run in a fresh process on one thread, as the interrupted one must be: runs on
    # different thread counts add their floats in different orders and drift apart
    code, stderr = run_process(["capture", str(head_video), *short, "--checkpoint-every", "0", "-o", str(whole)], tmp_path)
    assert code == 0, stderr
    out = tmp_path / "cut.avatar"
    args = ["capture", str(head_video), *short, "--checkpoint-every", "10", "-o", str(out)]
    code, stderr = sigterm_when(args, tmp_path, lambda: out.with_suffix(".ckpt").exists(), "a first checkpoint")
    assert code == 130 and "--resume" in stderr, stderr
    assert out.with_suffix(".unfinished.avatar").exists() and not out.exists()
    code, stderr = run_process([*args, "--resume"], tmp_path)
    assert code == 0, stderr
    a, b = avatar_file.load(whole), avatar_file.load(out)
    assert len(a) == len(b) and a.pose_dependent is not None and b.pose_dependent is not None
    assert torch.equal(a.pose_dependent.latents, b.pose_dependent.latents)
    for name in ("means", "log_scales", "quats", "opacity_logits", "sh"):
        assert torch.equal(getattr(a.gaussians, name), getattr(b.gaussians, name)), name
    assert a.meta["capture"]["holdout"]["psnr"] == pytest.approx(b.meta["capture"]["holdout"]["psnr"], abs=1e-3)


@pytest.mark.slow
def test_a_body_video_captures(tmp_path, body_template):
    """A body's tracking fits no face; its frames still train the template's expressions
    (the gauge's body video, small)."""
    pytest.importorskip("mediapipe")
    from avatarcli.evaluation.capture_video import make_capture_video

    video = make_capture_video("body", tmp_path / "gauge", size=160, fps=10, seconds=3.0, template=body_template)
    out = tmp_path / "body.avatar"
    fast = ("--steps", "20", "--resolution", "96", "--batch", "2", "-k", "1", "--device", "cpu", "--checkpoint-every", "0")
    r = run_cli("capture", str(video.video), "--model", "body", "--fov", str(video.camera.fov), "--holdout", "0.2", *fast, "-o", str(out))
    assert r.code == 0, r.stderr
    av = avatar_file.load(out)
    assert av.kind == "body" and av.meta["stage"] == "captured" and av.meta["capture"]["holdout"]["frames"] > 0
