"""Motion readers on files in the real key layouts, resampling, retargeting, built-ins."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch

from avatarcli.errors import AvatarError
from avatarcli.motion.builtin import BUILTINS, builtin_motion
from avatarcli.motion.motion import Motion, resample, to_template_poses
from avatarcli.motion.readers import read_motion, write_motion
from avatarcli.rotations import axis_angle_to_matrix

T = 12


def _rng(seed=0):
    return np.random.default_rng(seed)


def test_amass_packed_is_turned_y_up(tmp_path):
    poses = _rng().normal(0, 0.2, (T, 165)).astype(np.float32)
    poses[:, :3] = [math.pi / 2, 0, 0]  # standing upright in AMASS's z-up world
    trans = _rng(1).normal(0, 1, (T, 3)).astype(np.float32)
    np.savez(tmp_path / "a.npz", poses=poses, trans=trans, betas=np.zeros(16), gender="neutral", mocap_frame_rate=120.0)
    m = read_motion(tmp_path / "a.npz")
    assert m.kind == "body" and m.fps == 120.0 and len(m) == T
    assert torch.allclose(axis_angle_to_matrix(m.rotations[:, 0]), torch.eye(3).expand(T, 3, 3), atol=1e-5)
    assert torch.allclose(m.translation, torch.from_numpy(trans[:, [0, 2, 1]] * np.array([1, 1, -1], dtype=np.float32)), atol=1e-6)
    assert torch.allclose(m.rotations[:, 1:22].reshape(T, 63), torch.from_numpy(poses[:, 3:66]))
    assert torch.allclose(m.rotations[:, 22], torch.from_numpy(poses[:, 66:69]))  # jaw
    assert torch.allclose(m.rotations[:, 25:55].reshape(T, 90), torch.from_numpy(poses[:, 75:165]))


def test_amass_split_keys_and_legacy_smplh(tmp_path):
    r = _rng(2)
    np.savez(tmp_path / "s.npz", root_orient=r.normal(size=(T, 3)), pose_body=r.normal(size=(T, 63)), pose_hand=r.normal(size=(T, 90)),
             pose_jaw=r.normal(size=(T, 3)), pose_eye=r.normal(size=(T, 6)), trans=r.normal(size=(T, 3)), mocap_framerate=60)  # fmt: skip
    m = read_motion(tmp_path / "s.npz")
    eyes = torch.from_numpy(np.load(tmp_path / "s.npz")["pose_eye"]).float()
    assert m.fps == 60 and torch.allclose(m.rotations[:, 23:25].reshape(T, 6), eyes)
    h = r.normal(size=(T, 156)).astype(np.float32)
    np.savez(tmp_path / "h.npz", poses=h, trans=np.zeros((T, 3)), mocap_framerate=30)
    m = read_motion(tmp_path / "h.npz")
    assert torch.allclose(m.rotations[:, 25:55].reshape(T, 90), torch.from_numpy(h[:, 66:156]))
    assert m.rotations[:, 22:25].abs().max() == 0  # SMPL+H has no jaw or eyes


def test_motionx_and_talkshow_npy(tmp_path):
    r = _rng(3)
    mx = r.normal(0, 0.1, (T, 322)).astype(np.float32)
    mx[:, 0:3] = [math.pi, 0, 0]  # fitted in camera coordinates: y down
    np.save(tmp_path / "mx.npy", mx)
    m = read_motion(tmp_path / "mx.npy")
    assert m.fps == 30 and m.expression.shape == (T, 50)
    up = axis_angle_to_matrix(m.rotations[:, 0])[:, :, 1]
    assert (up[:, 1] > 0.99).all()  # turned upright
    assert torch.allclose(m.rotations[:, 22], torch.from_numpy(mx[:, 156:159]))
    ts = r.normal(0, 0.1, (T, 265)).astype(np.float32)
    np.save(tmp_path / "ts.npy", ts)
    m = read_motion(tmp_path / "ts.npy", fps=25)
    assert m.fps == 25 and m.expression.shape == (T, 100)
    assert torch.allclose(m.rotations[:, 22], torch.from_numpy(ts[:, 0:3]))
    assert torch.allclose(m.rotations[:, 1:22].reshape(T, 63), torch.from_numpy(ts[:, 12:75]))


def test_flame_sequence(tmp_path):
    r = _rng(4)
    np.savez(tmp_path / "f.npz", expression=r.normal(size=(T, 50)), jaw_pose=r.normal(size=(T, 3)), neck_pose=r.normal(size=(T, 3)),
             eye_pose=r.normal(size=(T, 6)), global_pose=r.normal(size=(T, 3)), fps=25)  # fmt: skip
    m = read_motion(tmp_path / "f.npz")
    data = np.load(tmp_path / "f.npz")
    assert m.kind == "head" and m.fps == 25 and m.expression.shape == (T, 50)
    assert torch.allclose(m.rotations[:, 2], torch.from_numpy(data["jaw_pose"]).float())
    assert torch.allclose(m.rotations[:, 3:5].reshape(T, 6), torch.from_numpy(data["eye_pose"]).float())


def test_canonical_round_trip(tmp_path):
    m = builtin_motion("wave")
    write_motion(m, tmp_path / "w.npz")
    back = read_motion(tmp_path / "w.npz")
    assert back.kind == m.kind and back.fps == m.fps
    assert torch.equal(back.rotations, m.rotations) and torch.equal(back.translation, m.translation)
    with np.load(tmp_path / "w.npz", allow_pickle=False) as d:  # plain arrays only
        assert "rotations" in d.files


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: pickle.dump({"poses": np.zeros((3, 165))}, open(p.with_suffix(".pkl"), "wb")) or p.with_suffix(".pkl"), "pickled"),
        (lambda p: np.savez(p, poses=np.array([{"a": 1}], dtype=object)) or p, "pickled"),
        (lambda p: np.savez(p, poses=np.full((4, 165), np.nan), trans=np.zeros((4, 3)), mocap_framerate=30) or p, "NaN"),
        (lambda p: np.savez(p, poses=np.zeros((4, 100)), mocap_framerate=30) or p, "165"),
        (lambda p: np.savez(p, poses=np.zeros((0, 165)), mocap_framerate=30) or p, "no frames"),
        (lambda p: np.savez(p, poses=np.zeros((4, 165)), mocap_framerate=0) or p, "between 1 and 1000"),
        (lambda p: np.savez(p, poses=np.zeros((4, 165)), trans=np.zeros((5, 3)), mocap_framerate=30) or p, "frames"),
        (lambda p: np.savez(p, something=np.zeros(3)) or p, "not a motion"),
        (lambda p: (p.write_bytes(b"PK\x03\x04garbage"), p)[1], "not a readable .npz"),
        (lambda p: np.save(p.with_suffix(".npy"), np.zeros((5, 7))) or p.with_suffix(".npy"), "Motion-X"),
    ],
)
def test_bad_motion_files(tmp_path, make, message):
    path = make(tmp_path / "m.npz")
    with pytest.raises(AvatarError, match=message):
        read_motion(path)


def test_the_refusal_names_a_conversion_that_works(tmp_path):
    import shlex
    import subprocess
    import sys

    folder = tmp_path / "it's my data"
    folder.mkdir()
    path = folder / "walk.pkl"
    with open(path, "wb") as fh:
        pickle.dump({"poses": np.zeros((4, 165)), "trans": np.zeros((4, 3)), "mocap_framerate": 30.0}, fh)
    with pytest.raises(AvatarError) as err:
        read_motion(path)
    command = str(err.value).split("convert it once with: ", 1)[1].rsplit(" and pass the .npz", 1)[0]
    argv = shlex.split(command)
    assert argv[0] == "python"
    subprocess.run([sys.executable, *argv[1:]], check=True)
    assert len(read_motion(path.with_suffix(".npz"))) == 4


def test_resampling_is_exact_for_steady_turns():
    fps_in, fps_out, omega = 30.0, 48.0, 1.3  # rad/s about a fixed axis
    t_in = torch.arange(31) / fps_in
    axis = torch.tensor([0.3, -0.5, 0.81])
    axis = axis / axis.norm()
    rot = (omega * t_in)[:, None, None] * axis.expand(31, 55, 3)
    trans = torch.stack([t_in, 2 * t_in, -t_in], -1)
    m = Motion("body", rot, torch.zeros(31, 4), trans, fps_in).validate()
    out = resample(m, fps_out)
    t_out = torch.arange(len(out)) / fps_out
    assert len(out) == 49 and out.fps == fps_out
    want = (omega * t_out)[:, None, None] * axis.expand(len(out), 55, 3)
    assert (out.rotations - want).abs().max() < 1e-5
    assert (out.translation - torch.stack([t_out, 2 * t_out, -t_out], -1)).abs().max() < 1e-5


def test_retargeting_between_kinds(head_template, body_template):
    body = builtin_motion("walk", fps=10)
    poses, note = to_template_poses(body, head_template)
    assert poses.rotations.shape == (len(body), 5, 3) and note.converted_from
    head = builtin_motion("talk", fps=10)
    poses, note = to_template_poses(head, body_template)
    assert torch.allclose(poses.rotations[:, 22], head.rotations[:, 2])  # the jaw drives the jaw
    assert poses.expression.shape[1] == body_template.num_expression
    long = Motion("head", torch.zeros(3, 5, 3), torch.ones(3, 100), torch.zeros(3, 3), 30.0).validate()
    poses, note = to_template_poses(long, head_template)
    assert poses.expression.shape == (3, head_template.num_expression) and note.expression_from == 100


def test_builtins_cover_what_users_expect():
    assert {"talk", "smile", "blink", "nod", "turn"} <= set(BUILTINS["head"])
    assert {"idle", "walk", "wave", "dance", "turn"} <= set(BUILTINS["body"])
    for kind, group in BUILTINS.items():
        for name in group:
            m = builtin_motion(name, kind, fps=15)
            assert m.kind == kind and len(m) > 10
            assert m.rotations.abs().max() > 0.05 or m.expression.abs().max() > 0.5  # it moves
    walk = builtin_motion("walk")
    assert walk.translation[-1, 2] - walk.translation[0, 2] > 4.0  # walks forward
    with pytest.raises(AvatarError, match="both"):
        builtin_motion("turn")
