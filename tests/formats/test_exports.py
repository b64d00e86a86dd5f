"""Exports: INRIA .ply round trip, motion frames, sequences, .splat, compressed .ply, skinned .glb
with expression morph targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh
from plyfile import PlyData
from scipy.spatial import cKDTree

from avatarcli import api
from avatarcli.errors import AvatarError
from avatarcli.formats.glb import accessor_array, read_glb_json
from avatarcli.formats.gltf import build_glb, top4_weights
from avatarcli.formats.ply import drop_empty_ply_elements, ply_fields, read_ply
from avatarcli.model.binding import deform
from avatarcli.model.gaussians import sh0_to_rgb
from avatarcli.motion.builtin import builtin_motion
from avatarcli.motion.motion import to_template_poses
from avatarcli.rotations import quat_to_matrix
from avatarcli.templates.mannequin.head_shape import EXPRESSION_NAMES


def test_ply_has_the_inria_layout_and_round_trips(head_avatar, head_template, tmp_path):
    out = tmp_path / "h.ply"
    api.export(head_avatar, out)
    ply = PlyData.read(str(out))
    names = list(ply["vertex"].data.dtype.names)
    assert names == ply_fields(16)  # x y z nx ny nz f_dc_* f_rest_0..44 opacity scale_* rot_*
    assert ply.elements[0].count == len(head_avatar)
    back = read_ply(out)
    pg = head_avatar.posed(head_template)
    want = pg.gaussians()
    for name in ("means", "log_scales", "quats", "opacity_logits"):
        assert torch.allclose(getattr(back, name), getattr(want, name), atol=1e-6), name
    assert torch.allclose(back.sh[:, :1], want.sh[:, :1], atol=1e-6)
    assert back.sh.shape[1] == 16 and back.sh[:, 1:].abs().max() == 0


def test_ply_at_a_motion_frame(body_avatar, body_template, tmp_path):
    motion = builtin_motion("wave", fps=10)
    out = tmp_path / "f.ply"
    api.export(body_avatar, out, motion=motion, frame=12, sh_degree=0)
    back = read_ply(out)
    poses, _ = to_template_poses(motion, body_template)
    poses.translation = poses.translation - poses.translation[:1]
    posed = body_template.pose(poses.index([12]))
    want = deform(body_avatar.gaussians, body_avatar.binding, body_template, posed)
    assert torch.allclose(back.means, want.means[0], atol=1e-5)
    assert torch.allclose(quat_to_matrix(back.quats), quat_to_matrix(want.quats[0]), atol=1e-5)
    with pytest.raises(AvatarError, match="out of range"):
        api.export(body_avatar, tmp_path / "x.ply", motion=motion, frame=999)


def test_sequence_writes_a_ply_per_frame(head_avatar, head_template, tmp_path):
    motion = builtin_motion("blink", fps=5)
    files = api.export(head_avatar, tmp_path / "seq", motion=motion, sequence=True, sh_degree=0)
    assert len(files) == len(motion) and all(f.exists() for f in files)
    first, mid = read_ply(files[0]), read_ply(files[len(files) // 2])
    assert not torch.equal(first.means, mid.means)


def test_gaussian_exports_at_a_frame_carry_the_pose_dependent_look(head_avatar, head_template, tmp_path):
    """.ply, .splat.glb and a sequence at a motion frame are the avatar posed with that
    frame's offsets: colours, opacities and places differ from the rest pose's."""
    from avatarcli.formats.splat_gltf import sh_attribute

    from helpers import with_pose_model

    av = with_pose_model(head_avatar, head_template)
    motion = builtin_motion("smile", "head", fps=5)
    poses, _ = to_template_poses(motion, head_template)
    api.export(av, tmp_path / "f.ply", motion=motion, frame=3, sh_degree=0)
    api.export(av, tmp_path / "f.splat.glb", motion=motion, frame=3)
    files = api.export(av, tmp_path / "seq", motion=motion, sequence=True, sh_degree=0)
    with torch.no_grad():
        want = av.posed(head_template, poses.index([3])).gaussians(0)
        rest = av.posed(head_template).gaussians(0)
    for back in (read_ply(tmp_path / "f.ply"), read_ply(files[3])):
        assert torch.allclose(back.means, want.means, atol=1e-5)
        assert torch.allclose(back.sh[:, 0], want.sh[:, 0], atol=1e-5)
        assert torch.allclose(back.opacity_logits, want.opacity_logits, atol=1e-4)
        assert float((back.sh[:, 0] - rest.sh[:, 0]).abs().max()) > 1e-2
    js, binary = read_glb_json((tmp_path / "f.splat.glb").read_bytes())
    attrs = js["meshes"][0]["primitives"][0]["attributes"]
    assert np.allclose(accessor_array(js, binary, attrs[sh_attribute(0)]), want.sh[:, 0].numpy(), atol=1e-5)


def test_the_skinned_glb_and_the_player_show_a_pose_dependent_look_at_rest(head_avatar, head_template):
    from avatarcli.formats.web_player import player_data

    from helpers import with_pose_model

    av = with_pose_model(head_avatar, head_template)
    rest = av.static(head_template)
    assert build_glb(av, head_template) == build_glb(rest, head_template)
    assert build_glb(av, head_template) != build_glb(head_avatar, head_template)  # the rest pose's offsets are in it
    a, b = player_data(av, head_template, None), player_data(rest, head_template, None)
    assert np.array_equal(a.arrays["colors"], b.arrays["colors"]) and np.array_equal(a.arrays["centers"], b.arrays["centers"])


def test_splat_file_size(head_avatar, tmp_path):
    api.export(head_avatar, tmp_path / "h.splat")
    assert (tmp_path / "h.splat").stat().st_size == 32 * len(head_avatar)


def _decode_compressed_ply(path):
    """SuperSplat's compressed .ply back to float values (its published layout): chunks of
    256 Gaussians with min/max bounds; 11-10-11 bit positions and log-scales, the rotation as
    its three smallest components in 10 bits each plus the index of the largest, 8-bit colour
    and opacity."""
    ply = PlyData.read(str(path))
    ch, v = ply["chunk"].data, ply["vertex"].data
    c = np.arange(len(v)) // 256

    def lerp(lo, hi, t):
        return ch[lo][c] + t * (ch[hi][c] - ch[lo][c])

    def unpack_111011(x):
        x = x.astype(np.int64)
        return ((x >> 21) & 2047) / 2047, ((x >> 11) & 1023) / 1023, (x & 2047) / 2047

    px, py, pz = unpack_111011(v["packed_position"])
    means = np.stack([lerp("min_x", "max_x", px), lerp("min_y", "max_y", py), lerp("min_z", "max_z", pz)], 1)
    steps = np.stack([(ch[f"max_{a}"] - ch[f"min_{a}"])[c] / n for a, n in zip("xyz", (2047, 1023, 2047), strict=True)], 1)
    sx, sy, sz = unpack_111011(v["packed_scale"])
    log_scales = np.stack([lerp(f"min_scale_{a}", f"max_scale_{a}", t) for a, t in zip("xyz", (sx, sy, sz), strict=True)], 1)
    col = v["packed_color"].astype(np.int64)
    rgb = np.stack([lerp(f"min_{a}", f"max_{a}", ((col >> s) & 255) / 255) for a, s in (("r", 24), ("g", 16), ("b", 8))], 1)
    opacity = (col & 255) / 255
    rot = v["packed_rotation"].astype(np.int64)
    small = np.stack([((rot >> s) & 1023) / 1023 for s in (20, 10, 0)], 1)
    small = (small - 0.5) / (np.sqrt(2) * 0.5)
    largest = rot >> 30
    quats = np.zeros((len(v), 4))
    others = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])[largest]
    np.put_along_axis(quats, others, small, axis=1)
    quats[np.arange(len(v)), largest] = np.sqrt(np.clip(1 - (small**2).sum(1), 0, 1))
    return ply, means, steps, log_scales, quats, opacity, rgb


def test_compressed_ply_declares_no_empty_element_and_round_trips(head_avatar, head_template, tmp_path):
    out = tmp_path / "h.compressed.ply"
    api.export(head_avatar, out)
    assert head_avatar.gaussians.sh_degree == 0
    ply, means, steps, log_scales, quats, opacity, rgb = _decode_compressed_ply(out)
    # every element declares a property: the empty `element sh N` made readers refuse the file
    assert [e.name for e in ply.elements] == ["chunk", "vertex"]
    assert all(len(e.properties) > 0 for e in ply.elements)
    assert b"element sh" not in out.read_bytes()[:2000]
    want = head_avatar.posed(head_template).gaussians()
    assert len(means) == len(want)
    # the writer reorders the Gaussians (Morton order): match them by position
    _, idx = cKDTree(want.means.double().numpy()).query(means)
    assert len(np.unique(idx)) == len(idx)
    assert (np.abs(means - want.means.double().numpy()[idx]) <= 0.5 * steps + 1e-6).all()  # half a quantisation step
    assert np.abs(log_scales - want.log_scales.double().numpy()[idx]).max() < 0.02
    assert np.abs(opacity - torch.sigmoid(want.opacity_logits).double().numpy()[idx]).max() < 1 / 255 + 1e-6
    assert np.abs(rgb - sh0_to_rgb(want.sh[:, 0]).double().numpy()[idx]).max() < 1 / 255 + 1e-6
    wq = torch.nn.functional.normalize(want.quats.double(), dim=-1).numpy()[idx]
    assert np.abs((quats * wq).sum(1)).min() > 0.999


def test_drop_empty_ply_elements_keeps_the_data():
    body = bytes(range(24))
    header = b"ply\nformat binary_little_endian 1.0\nelement vertex 2\nproperty float a\nproperty float b\nproperty float c\n"
    data = header + b"element sh 2\ncomment nothing here\nend_header\n" + body
    out = drop_empty_ply_elements(data)
    assert out == header + b"end_header\n" + body
    assert drop_empty_ply_elements(out) == out


def _quat_xyzw_to_matrix(q):
    return quat_to_matrix(torch.from_numpy(np.asarray(q, dtype=np.float64)[[3, 0, 1, 2]])).numpy()


def _skinned_glb_frame(js, binary, k):
    """What a game engine draws at key frame k: node transforms from the animation, morph
    targets weighted by the animated weights, then the skin."""
    skin = js["skins"][0]
    prim = js["meshes"][0]["primitives"][0]
    nodes = js["nodes"]
    anim = js["animations"][0]
    local, morph = {}, None
    for ch in anim["channels"]:
        out = accessor_array(js, binary, anim["samplers"][ch["sampler"]]["output"])
        if ch["target"]["path"] == "weights":
            morph = out.reshape(-1, len(prim["targets"]))[k]
        else:
            local.setdefault(ch["target"]["node"], {})[ch["target"]["path"]] = out[k]
    world = {}

    def visit(n, parent):
        t = np.eye(4)
        t[:3, 3] = local.get(n, {}).get("translation", nodes[n].get("translation", [0, 0, 0]))
        r = np.eye(4)
        if "rotation" in local.get(n, {}):
            r[:3, :3] = _quat_xyzw_to_matrix(local[n]["rotation"])
        world[n] = parent @ t @ r
        for c in nodes[n].get("children", []):
            visit(c, world[n])

    visit(skin["skeleton"], np.eye(4))
    ibm = accessor_array(js, binary, skin["inverseBindMatrices"]).reshape(-1, 4, 4).transpose(0, 2, 1)
    mats = np.stack([world[n] @ ibm[i] for i, n in enumerate(skin["joints"])])
    pos = accessor_array(js, binary, prim["attributes"]["POSITION"]).astype(np.float64)
    for w, target in zip(morph, prim["targets"], strict=True):
        pos = pos + w * accessor_array(js, binary, target["POSITION"])
    jnt = accessor_array(js, binary, prim["attributes"]["JOINTS_0"]).astype(np.int64)
    weights = accessor_array(js, binary, prim["attributes"]["WEIGHTS_0"]).astype(np.float64)
    blended = (mats[jnt] * weights[..., None, None]).sum(1)
    return (blended[:, :3, :3] @ pos[..., None])[..., 0] + blended[:, :3, 3]


def test_glb_skin_and_morph_targets_pose_like_the_template(body_avatar, body_template, tmp_path):
    motion = builtin_motion("wave", fps=6)
    data = build_glb(body_avatar, body_template, motion)
    (tmp_path / "b.glb").write_bytes(data)
    scene = trimesh.load(tmp_path / "b.glb")
    mesh = next(iter(scene.geometry.values()))
    assert len(mesh.vertices) == body_template.num_vertices
    js, binary = read_glb_json(data)
    assert len(js["skins"][0]["joints"]) == 55
    weights = accessor_array(js, binary, js["meshes"][0]["primitives"][0]["attributes"]["WEIGHTS_0"])
    assert np.allclose(weights.sum(1), 1.0, atol=1e-5)
    poses, _ = to_template_poses(motion, body_template)
    poses.translation = poses.translation - poses.translation[:1]
    k = 20  # the hand is up and smiling
    want = body_template.pose(poses.index([k])).vertices[0].double().numpy()
    no_face = poses.index([k])
    no_face.expression = torch.zeros_like(no_face.expression)
    assert np.abs(want - body_template.pose(no_face).vertices[0].double().numpy()).max() > 2e-3  # the smile shows
    assert np.abs(_skinned_glb_frame(js, binary, k) - want).max() < 1e-4


@pytest.mark.parametrize("kind", ["head", "body"])
def test_glb_points_zero_weights_at_joint_zero(kind, request):
    avatar, template = request.getfixturevalue(f"{kind}_avatar"), request.getfixturevalue(f"{kind}_template")
    js, binary = read_glb_json(build_glb(avatar, template))
    prim = js["meshes"][0]["primitives"][0]
    jnt = accessor_array(js, binary, prim["attributes"]["JOINTS_0"])
    weights = accessor_array(js, binary, prim["attributes"]["WEIGHTS_0"])
    assert (weights == 0).any()  # the template has vertices on fewer than four joints
    assert (jnt[weights == 0] == 0).all()  # ACCESSOR_JOINTS_USED_ZERO_WEIGHT otherwise
    # and no joint twice among the weighted slots
    used = np.where(weights > 0, jnt.astype(np.int64), -1 - np.arange(4))
    assert all(len(set(row)) == 4 for row in used)


def test_top4_weights():
    w = np.array([[0.0, 0.7, 0.0, 0.3, 0.0, 0.0], [0.1, 0.2, 0.3, 0.2, 0.1, 0.1]])
    joints, w4 = top4_weights(w)
    assert joints[0].tolist() == [1, 3, 0, 0] and np.allclose(w4[0], [0.7, 0.3, 0, 0])
    assert joints[1].tolist() == [2, 1, 3, 0] and np.allclose(w4[1], np.array([0.3, 0.2, 0.2, 0.1]) / 0.8)
    assert np.allclose(w4.sum(1), 1.0)


def test_glb_carries_expressions_as_morph_targets_and_a_weights_channel(head_avatar, head_template):
    motion = builtin_motion("talk", fps=10)
    js, binary = read_glb_json(build_glb(head_avatar, head_template, motion))
    mesh = js["meshes"][0]
    targets = mesh["primitives"][0]["targets"]
    e = head_template.num_expression
    assert len(targets) == e == len(mesh["weights"])
    assert mesh["extras"]["targetNames"] == list(EXPRESSION_NAMES)
    for k, target in enumerate(targets):
        acc = js["accessors"][target["POSITION"]]
        delta = accessor_array(js, binary, target["POSITION"])
        assert np.allclose(delta, head_template.exprdirs[:, :, k].numpy(), atol=1e-7)
        assert np.allclose(acc["min"], delta.min(0)) and np.allclose(acc["max"], delta.max(0))  # glTF requires them
    anim = js["animations"][0]
    (ch,) = [c for c in anim["channels"] if c["target"]["path"] == "weights"]
    assert ch["target"]["node"] == 0 and "mesh" in js["nodes"][0]
    sampler = anim["samplers"][ch["sampler"]]
    times = accessor_array(js, binary, sampler["input"])
    w = accessor_array(js, binary, sampler["output"]).reshape(len(times), e)
    assert len(times) == len(motion)
    assert np.allclose(w, motion.expression.numpy(), atol=1e-6)
    blink = w[:, EXPRESSION_NAMES.index("blink")]
    assert blink.max() > 0.9 and blink.min() < 0.05  # the lids close and open again


def test_glb_colours_come_from_the_gaussians(head_avatar, head_template):
    js, binary = read_glb_json(build_glb(head_avatar, head_template))
    colors = accessor_array(js, binary, js["meshes"][0]["primitives"][0]["attributes"]["COLOR_0"])
    assert colors.shape == (head_template.num_vertices, 3)
    skin_tone = head_avatar.gaussians.colors.mean(0).numpy()
    assert np.abs(np.median(colors, 0) - skin_tone).max() < 0.15
    assert colors.min() < 0.2  # the pupils are dark
