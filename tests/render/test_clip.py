"""avatar animate on the CPU: frame counts, sizes, cameras, and refusals."""

from __future__ import annotations

import imageio.v2 as iio2
import imageio.v3 as iio
import numpy as np
import pytest
import torch

from avatarcli.model import avatar_file
from avatarcli.motion.builtin import builtin_motion
from avatarcli.render.clip import AnimateOptions, plan_frames, render_frames

from helpers import run_cli


@pytest.fixture(scope="module")
def head_file(tmp_path_factory, head_avatar):
    path = tmp_path_factory.mktemp("anim") / "h.avatar"
    avatar_file.save(head_avatar, path)
    return path


def test_png_folder_has_every_frame(head_file, tmp_path):
    out = tmp_path / "frames"
    r = run_cli("animate", str(head_file), "nod", "-o", str(out), "--fps", "10", "--size", "40x24", "--end", "1.0")
    assert r.code == 0, r.stderr
    files = sorted(out.iterdir())
    assert len(files) == 11  # 0.0, 0.1, ... 1.0 s
    img = iio.imread(files[0])
    assert img.shape == (24, 40, 3)
    assert img.min() < 250  # the head is there


def test_mp4_plays_with_the_right_count_and_size(head_file, tmp_path):
    out = tmp_path / "talk.mp4"
    r = run_cli("animate", str(head_file), "talk", "-o", str(out), "--fps", "12", "--size", "32", "--end", "1.5")
    assert r.code == 0, r.stderr
    reader = iio2.get_reader(out)
    frames = [f for f in reader]
    assert len(frames) == 19 and frames[0].shape == (32, 32, 3)
    assert reader.get_meta_data()["codec"] == "h264"


def test_gif(head_file, tmp_path):
    out = tmp_path / "turn.gif"
    assert run_cli("animate", str(head_file), "turn", "-o", str(out), "--fps", "5", "--size", "24").code == 0
    frames = iio.imread(out, index=None)
    assert frames.shape[0] == 21 and frames.shape[1:3] == (24, 24)


def test_frames_move(head_template, head_avatar):
    motion = builtin_motion("turn", "head", fps=4)
    plan = plan_frames(head_avatar, head_template, motion, AnimateOptions(size=(32, 32)))
    frames = np.concatenate(list(render_frames(head_avatar, head_template, plan, torch.ones(3), batch=5)))
    assert frames.shape == (len(plan), 32, 32, 3)
    assert np.abs(frames[0].astype(int) - frames[4].astype(int)).mean() > 1.0


def test_follow_camera_keeps_the_walker_in_frame(body_template, body_avatar):
    motion = builtin_motion("walk", fps=5)
    for camera in ("follow", "front"):
        plan = plan_frames(body_avatar, body_template, motion, AnimateOptions(size=(64, 64), camera=camera))
        posed = body_template.pose(plan.poses)
        px, depth = plan.cameras.project(posed.joints[:, :1])
        assert (depth > 0).all()
        assert ((px >= 0) & (px <= 64)).all(), camera
    # follow: the pelvis stays near the image centre all along the walk
    plan = plan_frames(body_avatar, body_template, motion, AnimateOptions(size=(64, 64), camera="follow"))
    px, _ = plan.cameras.project(body_template.pose(plan.poses).joints[:, :1])
    assert (px[:, 0, 0] - 32).abs().max() < 12


def _figure_heights(template, plan):
    """Height in pixels of the posed template's bounding box in every frame (T,)."""
    px, depth = plan.cameras.project(template.pose(plan.poses).vertices)
    assert (depth > 0).all()
    return px[..., 1].max(1).values - px[..., 1].min(1).values


def test_default_camera_keeps_a_walking_body_large(body_template, body_avatar):
    motion = builtin_motion("walk", fps=5)  # 5.5 m in 4.4 s
    size = 160
    plan = plan_frames(body_avatar, body_template, motion, AnimateOptions(size=(size, size)))
    assert plan.camera == "follow"
    heights = _figure_heights(body_template, plan)
    assert heights.min() > 0.6 * size, heights  # a fixed camera framing the whole walk: a third of the frame
    front = plan_frames(body_avatar, body_template, motion, AnimateOptions(size=(size, size), camera="front"))
    assert _figure_heights(body_template, front).max() < 0.45 * size


@pytest.mark.parametrize(("kind", "name"), [("body", "dance"), ("body", "wave"), ("head", "talk"), ("head", "turn")])
def test_default_camera_stays_put_for_motions_on_the_spot(kind, name, request):
    template, avatar = request.getfixturevalue(f"{kind}_template"), request.getfixturevalue(f"{kind}_avatar")
    plan = plan_frames(avatar, template, builtin_motion(name, kind, fps=4), AnimateOptions(size=(32, 32)))
    assert plan.camera == "front"
    assert torch.allclose(plan.cameras.viewmats, plan.cameras.viewmats[:1].expand_as(plan.cameras.viewmats))


@pytest.mark.parametrize(
    "args",
    [
        ("nod", "-o", "{out}.mp4", "--size", "31x32"),
        ("nod", "-o", "{out}.mp4", "--camera", "drone"),
        ("nod", "-o", "{out}.avi"),
        ("nowhere", "-o", "{out}.mp4"),
        ("{tmp}/m.pkl", "-o", "{out}.mp4"),
        ("nod", "-o", "{out}.mp4", "--fps", "0"),
        ("nod", "-o", "{out}.mp4", "--start", "50"),
        ("nod", "-o", "-"),
    ],
)
def test_bad_animate_input(head_file, tmp_path, args):
    (tmp_path / "m.pkl").write_bytes(b"\x80\x04K\x01.")
    out = tmp_path / "clip"
    r = run_cli("animate", str(head_file), *(a.format(out=out, tmp=tmp_path) for a in args))
    assert r.code == 2, r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:")
    assert not any(p.name.startswith("clip") for p in tmp_path.iterdir())


def test_motions_command_writes_editable_npz(tmp_path):
    out = tmp_path / "walk.npz"
    r = run_cli("motions", "walk", "-o", str(out), "--fps", "20")
    assert r.code == 0
    with np.load(out, allow_pickle=False) as d:
        assert d["rotations"].shape[1:] == (55, 3) and float(d["fps"]) == 20.0
    listing = run_cli("motions")
    assert "dance" in listing.stdout.decode() and "talk" in listing.stdout.decode()  # the listing is data: stdout
    assert run_cli("motions", "turn", "-o", str(tmp_path / "t.npz")).code == 2  # head or body?
    assert run_cli("motions", "turn", "-m", "head", "-o", str(tmp_path / "t.npz")).code == 0
