"""avatar rig: splats and avatars bound to templates; the round trip through .ply."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from plyfile import PlyData, PlyElement

from avatarcli import api
from avatarcli.errors import AvatarError
from avatarcli.formats.ply import read_ply
from avatarcli.model import avatar_file
from avatarcli.model.binding import deform
from avatarcli.model.gaussians import Gaussians, cat
from avatarcli.model.rigging import rest_world_gaussians, rig_avatar, rig_gaussians, rig_splat
from avatarcli.motion.builtin import builtin_motion
from avatarcli.render.clip import AnimateOptions, plan_frames, render_frames
from avatarcli.templates.skeletons import SMPLX_JOINT_NAMES

from helpers import random_pose, run_cli


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return 99.0 if mse == 0 else 10 * math.log10(255.0**2 / mse)


@pytest.mark.parametrize("kind, motion", [("head", "talk"), ("body", "wave")])
def test_ply_round_trip_animates_the_same(kind, motion, head_avatar, body_avatar, head_template, body_template, tmp_path):
    av, tpl = (head_avatar, head_template) if kind == "head" else (body_avatar, body_template)
    api.export(av, tmp_path / "rest.ply")
    rigged, report = rig_splat(read_ply(tmp_path / "rest.ply"), tpl)
    assert report.count == len(av) and report.far == 0
    clip = builtin_motion(motion, kind, fps=2)
    opts = AnimateOptions(size=(64, 64))
    a = np.concatenate(list(render_frames(av, tpl, plan_frames(av, tpl, clip, opts), torch.ones(3))))
    b = np.concatenate(list(render_frames(rigged, tpl, plan_frames(rigged, tpl, clip, opts), torch.ones(3))))
    assert min(_psnr(x, y) for x, y in zip(a, b, strict=True)) >= 40.0


def test_rerigging_changes_nothing(head_avatar, body_avatar, head_template, body_template):
    for av, tpl in ((head_avatar, head_template), (body_avatar, body_template)):
        again, _ = rig_avatar(av, tpl)
        posed = tpl.pose(random_pose(tpl, 2, seed=4))
        x = deform(av.gaussians, av.binding, tpl, posed)
        y = deform(again.gaussians, again.binding, tpl, posed)
        assert (x.means - y.means).abs().max() < 2e-5
        assert (x.scales - y.scales).abs().max() < 2e-5


def test_weights_sum_to_one_and_smoothing_glues_loose_parts(body_template):
    g = torch.Generator().manual_seed(0)
    # a loose skirt: a ring of Gaussians 12 cm outside the hips, spanning pelvis and both thighs
    ang = torch.rand(3000, generator=g) * 2 * math.pi
    y = -0.05 - 0.25 * torch.rand(3000, generator=g)
    pts = torch.stack([0.28 * torch.sin(ang), y, 0.22 * torch.cos(ang)], -1)
    world = Gaussians(pts, torch.full((3000, 3), -4.5), torch.tensor([[1.0, 0, 0, 0]]).expand(3000, -1).clone(),
                      torch.zeros(3000), torch.zeros(3000, 1, 3))  # fmt: skip
    plain, _ = rig_gaussians(world, body_template, smooth=False, max_distance=0.4)
    smooth, _ = rig_gaussians(world, body_template, smooth=True, max_distance=0.4)
    for av in (plain, smooth):
        assert torch.allclose(av.binding.weights.sum(1), torch.ones(3000), atol=1e-5)
    from scipy.spatial import cKDTree

    _, idx = cKDTree(pts.numpy()).query(pts.numpy(), k=8)

    def roughness(w: torch.Tensor) -> float:
        return float((w[:, None, :] - w[torch.from_numpy(idx)]).abs().sum(-1).mean())

    assert roughness(smooth.binding.weights) < 0.5 * roughness(plain.binding.weights)


def test_a_gaussian_off_the_elbow_bends_with_it(body_template, body_avatar):
    tpl = body_template
    elbow = SMPLX_JOINT_NAMES.index("left_elbow")
    joints = tpl._rest_joints()
    j, wrist = joints[elbow], joints[SMPLX_JOINT_NAMES.index("left_wrist")]
    spot = j + 0.04 * torch.nn.functional.normalize(wrist - j, dim=0) + torch.tensor([0.0, 0.0, 0.05])
    rest = tpl.v_template
    near = (rest - spot).norm(dim=-1).argmin()  # skin on the front of the arm just past the elbow
    axis = j + torch.dot(rest[near] - j, wrist - j) / torch.dot(wrist - j, wrist - j) * (wrist - j)
    normal = torch.nn.functional.normalize(rest[near] - axis, dim=0)
    point = rest[near] + 0.01 * normal  # 1 cm off the skin
    world = rest_world_gaussians(body_avatar, tpl)
    extra = Gaussians(point[None], torch.full((1, 3), -5.0), torch.tensor([[1.0, 0, 0, 0]]), torch.zeros(1), torch.zeros(1, 1, 3))
    av, _ = rig_gaussians(cat([world, extra]), tpl)
    pose = tpl.zero_pose(1)
    pose.rotations[0, elbow] = torch.tensor([0.0, -1.5, 0.0])  # bend the left elbow 86 degrees
    posed = tpl.pose(pose)
    moved = deform(av.gaussians, av.binding, tpl, posed).means[0, -1]
    skin = posed.vertices[0, near]
    assert (moved - point).norm() > 0.02  # it moved with the arm
    assert abs(float((moved - skin).norm()) - 0.01) < 0.004  # and stayed 1 cm off the same skin


def _write_ply(path, fields: dict[str, np.ndarray]) -> None:
    n = len(next(iter(fields.values())))
    arr = np.empty(n, dtype=[(k, "<f4") for k in fields])
    for k, v in fields.items():
        arr[k] = v
    PlyData([PlyElement.describe(arr, "vertex")]).write(str(path))


def test_bad_splats(tmp_path, head_avatar, head_template):
    _write_ply(tmp_path / "points.ply", {"x": np.zeros(5), "y": np.zeros(5), "z": np.zeros(5)})
    (tmp_path / "empty.ply").write_bytes(b"")
    api.export(head_avatar, tmp_path / "h.ply")
    data = PlyData.read(str(tmp_path / "h.ply"))
    v = data["vertex"].data.copy()
    v["x"][7] = np.nan
    PlyData([PlyElement.describe(v, "vertex")]).write(str(tmp_path / "nan.ply"))
    big = data["vertex"].data.copy()
    for axis in ("x", "y", "z"):
        big[axis] *= 3.0
    PlyData([PlyElement.describe(big, "vertex")]).write(str(tmp_path / "big.ply"))
    for name, message in (("points", "missing"), ("empty", "readable"), ("nan", "NaN"), ("big", "--fit")):
        out = tmp_path / f"{name}.avatar"
        r = run_cli("rig", str(tmp_path / f"{name}.ply"), "-m", "head", "-o", str(out))
        assert r.code == 2 and message in r.stderr, (name, r.stderr)
        assert not out.exists()
    # with --fit the oversized splat lands on the template and the transform is reported
    r = run_cli("rig", str(tmp_path / "big.ply"), "-m", "head", "--fit", "-o", str(tmp_path / "fit.avatar"))
    assert r.code == 0, r.stderr
    assert "scale 0.33" in r.stderr
    fitted = avatar_file.load(tmp_path / "fit.avatar")
    assert len(fitted) == len(head_avatar)


def test_far_gaussians_are_reported_and_dropped(head_template, head_avatar):
    world = rest_world_gaussians(head_avatar, head_template)
    stray = Gaussians(torch.tensor([[0.0, 0.6, 0.0], [0.5, 0.0, 0.0]]), torch.full((2, 3), -5.0),
                      torch.tensor([[1.0, 0, 0, 0]]).expand(2, -1).clone(), torch.zeros(2), torch.zeros(2, 1, 3))  # fmt: skip
    both = cat([world, stray])
    _, report = rig_gaussians(both, head_template)
    assert report.far == 2 and report.count == len(both)
    av, report = rig_gaussians(both, head_template, drop_far=True)
    assert report.dropped == 2 and report.far == 2 and len(av) == len(world)
    with pytest.raises(AvatarError):
        rig_gaussians(both, head_template, max_distance=-1.0)
