"""The built-in mannequins: official file layouts, smplx parity, skeleton, face rig."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
import smplx
import torch
from smplx.joint_names import JOINT_NAMES

from avatarcli.errors import AvatarError
from avatarcli.templates.loading import builtin_root, load_template
from avatarcli.templates.skeletons import FLAME_PARENTS, OPENPOSE18_FROM_SMPLX, SMPLX_JOINT_NAMES, SMPLX_PARENTS

from helpers import random_pose, run_cli


def _quiet_create(root, **kw):
    with contextlib.redirect_stdout(io.StringIO()):
        return smplx.create(str(root), **kw)


def _official(kind: str, folder: Path) -> Path:
    """The built-in template in the official file layout that smplx reads (as a user's
    download has it), written into ``folder``; returns the folder of the model file."""
    from avatarcli.templates.loading import _cached_arrays
    from avatarcli.templates.model_files import write_smplx_files

    return write_smplx_files(folder, kind, *_cached_arrays(builtin_root(kind), kind)).parent


def test_files_load_through_smplx_create(tmp_path):
    """The cached arrays, in the official layouts, load through smplx.create."""
    _official("head", tmp_path)
    _official("body", tmp_path)
    head = _quiet_create(tmp_path, model_type="flame", ext="npz", use_face_contour=True)
    body = _quiet_create(tmp_path, model_type="smplx", ext="npz", use_pca=False)
    out_h, out_b = head(), body()
    assert out_h.vertices.shape[1] > 3000 and torch.isfinite(out_h.vertices).all()
    assert out_b.vertices.shape[1] > 8000 and torch.isfinite(out_b.vertices).all()
    assert head.NUM_JOINTS == 5 and body.NUM_JOINTS == 54


@pytest.mark.parametrize("kind", ["head", "body"])
def test_posing_matches_smplx(kind, head_template, body_template):
    tpl = head_template if kind == "head" else body_template
    pose = random_pose(tpl, 3, seed=1)
    betas = torch.randn(tpl.num_betas, generator=torch.Generator().manual_seed(2))
    ours = tpl.pose(pose, betas)
    verts, joints = tpl.smplx_forward(pose, betas)
    assert (ours.vertices - verts).abs().max() < 1e-5
    assert (ours.joints - joints[:, : tpl.num_joints]).abs().max() < 1e-5
    # the transforms skin the unposed vertices into the posed ones
    from avatarcli.templates.template import skin_points

    again = skin_points(ours.unposed, tpl.weights, ours.transforms)
    assert (again - verts).abs().max() < 1e-5


@pytest.mark.parametrize("kind", ["head", "body"])
def test_forward_kinematics_matches_smplx_helper(kind, head_template, body_template):
    from smplx.lbs import batch_rigid_transform, batch_rodrigues

    from avatarcli.templates.template import rigid_transforms

    tpl = head_template if kind == "head" else body_template
    pose = random_pose(tpl, 4, seed=5)
    rot = batch_rodrigues(pose.rotations.reshape(-1, 3)).view(4, -1, 3, 3)
    joints = torch.randn(4, tpl.num_joints, 3, generator=torch.Generator().manual_seed(6))
    want_joints, want = batch_rigid_transform(rot, joints, tpl.parents)
    got_joints, got = rigid_transforms(rot, joints, tpl.levels)
    assert (got_joints - want_joints).abs().max() < 1e-5 and (got - want).abs().max() < 1e-5


@pytest.mark.parametrize("kind", ["head", "body"])
def test_irises_sit_one_eye_radius_in_front_of_the_shaped_posed_eyes(kind, head_template, body_template):
    tpl = head_template if kind == "head" else body_template
    betas = 2.0 * torch.randn(tpl.num_betas, generator=torch.Generator().manual_seed(8))
    posed = tpl.pose(random_pose(tpl, 3, seed=9), betas)
    irises = tpl.irises(posed)
    eyes = [tpl.joint_names.index(n) for n in (("left_eye", "right_eye") if kind == "head" else ("left_eye_smplhf", "right_eye_smplhf"))]
    offset = irises - posed.joints[:, eyes]
    assert torch.allclose(offset.norm(dim=-1), torch.full((3, 2), tpl.eye_radius), atol=1e-6)
    # along the eye joint's turned forward axis
    forward = posed.transforms[:, eyes, :3, :3] @ torch.tensor([0.0, 0.0, 1.0])
    assert torch.allclose(offset / tpl.eye_radius, forward, atol=1e-5)


def test_tree_levels_refuse_a_child_before_its_parent():
    from avatarcli.templates.template import tree_levels

    levels = tree_levels((-1, 0, 1, 1, 0))
    assert [lv[0].tolist() for lv in levels] == [[1, 4], [2, 3]] and [lv[1].tolist() for lv in levels] == [[0, 0], [1, 1]]
    with pytest.raises(AvatarError, match="parents must come before"):
        tree_levels((-1, 2, 0))


def test_joint_order_and_parents_are_official(body_template, head_template):
    assert tuple(JOINT_NAMES[:55]) == SMPLX_JOINT_NAMES
    assert tuple(body_template.parents.tolist()) == (-1, *SMPLX_PARENTS[1:])
    assert tuple(head_template.parents.tolist()) == (-1, *FLAME_PARENTS[1:])
    # the kinematic tree of the official SMPL-X release, spelled out by name
    names = SMPLX_JOINT_NAMES
    parent = {names[i]: names[p] for i, p in enumerate(SMPLX_PARENTS) if p >= 0}
    assert parent["left_elbow"] == "left_shoulder" and parent["left_wrist"] == "left_elbow"
    assert parent["jaw"] == "head" and parent["left_eye_smplhf"] == "head"
    assert parent["left_index1"] == "left_wrist" and parent["right_thumb3"] == "right_thumb2"
    assert parent["neck"] == "spine3" and parent["left_collar"] == "spine3"


def test_body_joints_sit_where_a_body_has_them(body_template):
    j = body_template._rest_joints()
    n = SMPLX_JOINT_NAMES
    y = {name: float(j[n.index(name), 1]) for name in n}
    assert y["left_ankle"] < y["left_knee"] < y["left_hip"] < y["spine1"] < y["spine3"] < y["neck"] < y["head"]
    assert float(j[n.index("left_wrist"), 0]) > float(j[n.index("left_elbow"), 0]) > float(j[n.index("left_shoulder"), 0]) > 0
    assert float(j[n.index("right_wrist"), 0]) < 0
    verts = body_template.v_template
    height = float(verts[:, 1].max() - verts[:, 1].min())
    assert 1.5 < height < 1.9


def test_openpose_and_hands_follow_the_smplx_map(body_template):
    posed = body_template.pose(random_pose(body_template, 2, seed=3))
    op = body_template.openpose18(posed)
    assert op.shape == (2, 18, 3)
    assert torch.allclose(op[:, 1], posed.joints[:, 12])  # neck
    assert torch.allclose(op[:, 4], posed.joints[:, 21])  # right wrist
    hands = body_template.hand_keypoints(posed)
    assert hands.shape == (2, 2, 21, 3)
    assert torch.allclose(hands[:, 0, 0], posed.joints[:, 20])  # left wrist first
    assert OPENPOSE18_FROM_SMPLX[0] == 55  # nose, the first of smplx's extra joints


def test_extra_joints_are_on_the_right_body_parts(body_template):
    v = body_template.v_template
    idx = body_template.extra_joints_idxs
    nose, reye, leye, rear, lear = (v[i] for i in idx[:5])
    assert nose[2] > leye[2] > lear[2]  # nose in front of eyes in front of ears
    assert leye[0] > 0 > reye[0] and lear[0] > 0 > rear[0]
    ltoe, rtoe = v[idx[5]], v[idx[8]]
    assert ltoe[1] < -0.9 and ltoe[0] > 0 > rtoe[0]
    ltips = v[idx[11:16]]
    assert (ltips[:, 0] > 0.75).all()  # fingertips far out on the left arm


def test_eyes_turn_with_their_joints(head_template):
    tpl = head_template
    pose = tpl.zero_pose(1)
    rest = tpl.pose(pose).vertices[0]
    pose.rotations[0, 3] = torch.tensor([0.0, 0.5, 0.0])
    moved = tpl.pose(pose).vertices[0]
    eye = tpl.weights[:, 3] > 0.99
    assert eye.sum() > 100
    assert (moved[eye] - rest[eye]).norm(dim=-1).max() > 0.004
    assert (moved[~eye] - rest[~eye]).norm(dim=-1).max() < 1e-6
    # the iris point turns towards +x (the head's left)
    iris = tpl.irises(tpl.pose(pose))[0, 0]
    assert iris[0] > tpl._rest_joints()[3, 0] + 0.004


def test_expressions_are_not_jaw_rotation(head_template):
    tpl = head_template
    rest = tpl.v_template
    region = {
        "mouth": (rest[:, 1] < -0.05) & (rest[:, 1] > -0.09) & (rest[:, 2] > 0.07),
        "brow": (rest[:, 1] > 0.015) & (rest[:, 1] < 0.045) & (rest[:, 2] > 0.06),
        "lids": ((rest - torch.tensor([0.032, 0.005, 0.0575])).norm(dim=-1) < 0.016) & (rest[:, 1] > 0.008),
        "cheek": (rest[:, 0].abs() > 0.03) & (rest[:, 1] < -0.03) & (rest[:, 1] > -0.08) & (rest[:, 2] > 0.04),
    }
    dirs = tpl.exprdirs.norm(dim=1)  # (V, E)
    moving = {name: dirs[mask].max(0).values > 1e-3 for name, mask in region.items()}
    for name, m in moving.items():
        assert m.any(), f"no expression moves the {name}"
    # jaw rotation moves the chin but leaves the brow and lids; expressions do the opposite
    pose = tpl.zero_pose(1)
    pose.rotations[0, 2, 0] = 0.3
    jaw = (tpl.pose(pose).vertices[0] - rest).norm(dim=-1)
    assert jaw[region["brow"]].max() < 1e-3 and jaw[region["lids"]].max() < 1e-3  # under a millimetre
    assert jaw[(rest[:, 1] < -0.10) & (rest[:, 2] > 0.05)].max() > 0.01
    assert moving["brow"].sum() >= 2 and moving["lids"].sum() >= 1


def test_landmarks_and_contours_sit_on_the_face(head_template, body_template):
    for tpl in (head_template, body_template):
        posed = tpl.pose(tpl.zero_pose(1))
        lm = tpl.landmarks68(posed)[0]
        assert lm.shape == (68, 3)
        assert lm[36:48, 1].mean() > lm[48:68, 1].mean()  # eyes above the mouth
        assert lm[30, 2] == lm[:, 2].max()  # the nose tip is the most forward landmark
        groups = {n: pts for n, _, pts in tpl.face_contours(posed)}
        assert {"face_oval", "left_eye", "right_eye", "lips_outer", "lips_inner"} <= set(groups)
        assert groups["left_eye"][0, :, 0].mean() > 0 > groups["right_eye"][0, :, 0].mean()


def test_builds_are_deterministic():
    from avatarcli.templates.mannequin import head as head_mannequin

    a, b = head_mannequin.build(), head_mannequin.build()
    assert np.array_equal(a.faces, b.faces)
    assert np.array_equal(a.v_template, b.v_template)
    assert np.array_equal(a.weights, b.weights)


def test_user_template_errors_name_what_is_missing(tmp_path):
    with pytest.raises(AvatarError, match="does not exist"):
        load_template("body", tmp_path / "nope")
    with pytest.raises(AvatarError, match="SMPLX_NEUTRAL"):
        load_template("body", tmp_path)
    flame = tmp_path / "flame"
    flame.mkdir()
    (flame / "FLAME_NEUTRAL.npz").write_bytes((builtin_root("head") / "flame" / "FLAME_NEUTRAL.npz").read_bytes())
    with pytest.raises(AvatarError, match="flame_static_embedding"):
        load_template("head", flame)
    with pytest.raises(AvatarError, match="unknown model kind"):
        load_template("tail")


def test_user_files_drop_in_with_the_same_layout(tmp_path):
    import shutil

    shutil.copytree(builtin_root("body") / "smplx", tmp_path / "smplx")
    tpl = load_template("body", tmp_path / "smplx" / "SMPLX_NEUTRAL.npz")
    assert tpl.num_joints == 55 and tpl.name == "SMPLX_NEUTRAL"
    head = load_template("head", _official("head", tmp_path))
    assert head.num_joints == 5


class _Evil:
    """Unpickling this runs a shell command (what a hostile template file could do)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def _fake_chumpy(monkeypatch):
    """A stand-in ``chumpy.ch.Ch`` so the test can write pickles shaped like the official releases'."""
    import copyreg
    import sys
    import types

    module = types.ModuleType("chumpy.ch")

    class Ch:
        def __init__(self, x):
            self.x = x

        def __reduce__(self):
            return (copyreg._reconstructor, (Ch, object, None), {"x": self.x})

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    module.Ch = Ch
    monkeypatch.setitem(sys.modules, "chumpy", types.ModuleType("chumpy"))
    monkeypatch.setitem(sys.modules, "chumpy.ch", module)
    return Ch


def _same_posing(a, b):
    pose = random_pose(a, 2, seed=4)
    return (a.pose(pose).vertices - b.pose(pose).vertices).abs().max() < 1e-6


def test_user_pickles_are_read_for_their_arrays_only(tmp_path, monkeypatch, head_template, body_template):
    import pickle

    import scipy.sparse

    ch = _fake_chumpy(monkeypatch)
    flame = _official("head", tmp_path)
    with np.load(flame / "FLAME_NEUTRAL.npz") as data:
        model = {k: data[k] for k in data.files}
    model["shapedirs"] = ch(model["shapedirs"])  # as in the official FLAME pickles
    model["J_regressor"] = scipy.sparse.csc_matrix(model["J_regressor"])
    model["bs_style"] = "lbs"
    (flame / "FLAME_NEUTRAL.npz").unlink()
    (flame / "generic_model.pkl").write_bytes(pickle.dumps(model, protocol=2))
    head = load_template("head", flame)
    assert head.source == flame / "generic_model.pkl" and _same_posing(head, head_template)

    body_dir = tmp_path / "smplx"
    body_dir.mkdir()
    with np.load(builtin_root("body") / "smplx" / "SMPLX_NEUTRAL.npz") as data:
        body = {k: data[k] for k in data.files}
    body["joint2num"] = {"pelvis": 0}  # a dict the official files carry; not needed, not loaded
    (body_dir / "SMPLX_NEUTRAL.pkl").write_bytes(pickle.dumps(body, protocol=2))
    assert _same_posing(load_template("body", body_dir), body_template)


def test_user_files_that_would_run_code_are_refused(tmp_path, monkeypatch):
    import pickle
    import shutil

    marker = tmp_path / "ran"
    flame = _official("head", tmp_path)
    (flame / "flame_static_embedding.pkl").write_bytes(pickle.dumps({"lmk_face_idx": _Evil(marker)}))
    with pytest.raises(AvatarError, match="refusing to load"):
        load_template("head", flame)
    shutil.copy(_official("head", tmp_path / "clean") / "flame_static_embedding.pkl", flame)
    np.save(flame / "flame_dynamic_embedding.npy", np.array({"lmk_face_idx": _Evil(marker)}, dtype=object), allow_pickle=True)
    with pytest.raises(AvatarError, match="refusing to load"):
        load_template("head", flame)

    body_dir = tmp_path / "smplx"
    body_dir.mkdir()
    (body_dir / "SMPLX_NEUTRAL.pkl").write_bytes(pickle.dumps({"v_template": _Evil(marker)}))
    with pytest.raises(AvatarError, match="refusing to load"):
        load_template("body", body_dir)
    # an .npz with a pickled entry: the entry is skipped, never unpickled
    (body_dir / "SMPLX_NEUTRAL.pkl").unlink()
    with np.load(builtin_root("body") / "smplx" / "SMPLX_NEUTRAL.npz") as data:
        arrays = {k: data[k] for k in data.files}
    np.savez(body_dir / "SMPLX_NEUTRAL.npz", hostile=np.array([_Evil(marker)], dtype=object), **arrays)
    assert load_template("body", body_dir).num_joints == 55
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["head", "body"])
def test_a_hostile_file_in_the_template_cache_never_runs(kind, tmp_path, monkeypatch):
    """A cache can be shared or writable by others: every file of a cached template replaced
    by one that runs code when unpickled (a flame_static_embedding.pkl that smplx unpickled
    did), and the command refuses the cache in one line without running anything."""
    import pickle
    import shutil

    built = builtin_root(kind)
    monkeypatch.setenv("AVATARCLI_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "cache" / "templates" / built.name
    shutil.copytree(built, root)
    marker = tmp_path / "ran"
    hostile = np.array([_Evil(marker)], dtype=object)
    for path in (p for p in root.rglob("*") if p.is_file()):
        if path.suffix == ".npz":
            with np.load(path) as data:
                arrays = {k: data[k] for k in data.files}
            np.savez(path.with_suffix(""), hostile=hostile, **arrays)
        elif path.suffix == ".npy":
            np.save(path, np.array({"lmk_face_idx": _Evil(marker)}, dtype=object), allow_pickle=True)
        else:
            path.write_bytes(pickle.dumps({"lmk_face_idx": _Evil(marker)}))
    r = run_cli("init", "--model", kind, "-k", "1", "-o", str(tmp_path / "a.avatar"))
    assert not marker.exists()
    assert r.code == 2 and "template cache" in r.stderr and "is damaged" in r.stderr and "pickled" in r.stderr, r.stderr
    assert not (tmp_path / "a.avatar").exists()


class _Declares:
    """Pickles as a numpy array rebuilt with the given arguments and state (what a hostile
    or damaged file can say)."""

    def __init__(self, shape, state=None):
        self.shape, self.state = shape, state

    def __reduce__(self):
        rebuild = np.zeros(1).__reduce__()[0]  # numpy's own array reconstructor: allowed
        return (rebuild, (np.ndarray, self.shape, b"b")) + ((self.state,) if self.state is not None else ())


def test_sizes_declared_in_template_files_are_bounded_before_allocating(tmp_path):
    import pickle

    import scipy.sparse

    from avatarcli.templates import safe_load

    sparse = scipy.sparse.csc_matrix(np.eye(3))
    sparse._shape = (10**6, 10**6)  # 8 TB once dense
    cases = {
        "sparse.pkl": {"J_regressor": sparse},
        "shape.pkl": {"v_template": _Declares((10**12,))},
        "state.pkl": {"v_template": _Declares((0,), (1, (10**10,), np.dtype("O"), False, [1]))},
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(pickle.dumps(content, protocol=2))
        with pytest.raises(AvatarError, match="larger than 1 GiB"):
            safe_load.plain(safe_load.load_pickle(tmp_path / name), name)
    row = [0.5] * 1000
    plane = [row] * 1000
    (tmp_path / "lists.pkl").write_bytes(pickle.dumps({"v_template": [plane] * 1000}, protocol=2))  # 8 GB from a few KB
    assert (tmp_path / "lists.pkl").stat().st_size < 20_000
    with pytest.raises(AvatarError, match="more than a template may hold"):
        safe_load.plain(safe_load.load_pickle(tmp_path / "lists.pkl"), "lists.pkl")
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000, 3), }"
    header += " " * (-(len(header) + 11) % 64) + "\n"
    (tmp_path / "huge.npy").write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode())
    with pytest.raises(AvatarError, match="truncated"):
        safe_load.load_npy(tmp_path / "huge.npy")
    np.savez(tmp_path / "ok.npz", a=np.arange(3))
    assert safe_load.load_npz(tmp_path / "ok.npz")["a"].tolist() == [0, 1, 2]


def test_an_unwritable_template_cache_is_one_line(tmp_path, monkeypatch):
    from avatarcli.templates.loading import load_template

    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder would be")
    monkeypatch.setenv("AVATARCLI_CACHE", str(blocker))
    with pytest.raises(AvatarError, match="set AVATARCLI_CACHE to a writable folder"):
        load_template("head")


def test_a_template_build_says_so_once(tmp_path, monkeypatch):
    """The first use builds the template (tens of seconds) and says why the command pauses;
    the cached folder is then reused without a word, and the builder is not run again."""
    from avatarcli.console import console
    from avatarcli.templates.loading import _cached_folder, _model_file

    err = io.StringIO()
    monkeypatch.setattr(console, "file", err)

    builds = []

    def build(folder: Path) -> None:
        builds.append(folder)
        _model_file(folder, "head").parent.mkdir(parents=True)
        _model_file(folder, "head").write_bytes(b"model")

    root = tmp_path / "templates" / "mannequin-head-test"
    assert _cached_folder(root, "head", build, "building the head template") == root
    assert "note: building the head template" in err.getvalue()
    told = err.getvalue()
    assert _cached_folder(root, "head", build, "building the head template") == root
    assert err.getvalue() == told and len(builds) == 1
