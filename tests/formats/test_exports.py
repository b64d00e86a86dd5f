"""Exports: INRIA .ply round trip, motion frames, sequences, .splat, compressed .ply, skinned .glb."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh
from plyfile import PlyData

from avatarcli import api
from avatarcli.errors import AvatarError
from avatarcli.formats.gltf import build_glb, read_glb_json
from avatarcli.formats.ply import ply_fields, read_ply
from avatarcli.model.binding import deform
from avatarcli.motion.builtin import builtin_motion
from avatarcli.motion.motion import to_template_poses
from avatarcli.rotations import quat_to_matrix


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


def test_splat_and_compressed_ply(head_avatar, head_template, tmp_path):
    api.export(head_avatar, tmp_path / "h.splat")
    assert (tmp_path / "h.splat").stat().st_size == 32 * len(head_avatar)
    api.export(head_avatar, tmp_path / "h.compressed.ply")
    ply = PlyData.read(str(tmp_path / "h.compressed.ply"))
    names = [e.name for e in ply.elements]
    assert "chunk" in names and ply["vertex"].count == len(head_avatar)


def _glb_accessor(js, binary, i):
    acc = js["accessors"][i]
    view = js["bufferViews"][acc["bufferView"]]
    dtype = {5126: np.float32, 5121: np.uint8, 5123: np.uint16, 5125: np.uint32}[acc["componentType"]]
    width = {"SCALAR": 1, "VEC3": 3, "VEC4": 4, "MAT4": 16}[acc["type"]]
    data = np.frombuffer(binary, dtype=dtype, count=acc["count"] * width, offset=view["byteOffset"])
    return data.reshape(acc["count"], width) if width > 1 else data


def _quat_xyzw_to_matrix(q):
    return quat_to_matrix(torch.from_numpy(np.asarray(q, dtype=np.float64)[[3, 0, 1, 2]])).numpy()


def test_glb_skin_poses_like_the_template(body_avatar, body_template, tmp_path):
    motion = builtin_motion("wave", fps=6)
    data = build_glb(body_avatar, body_template, motion)
    (tmp_path / "b.glb").write_bytes(data)
    scene = trimesh.load(tmp_path / "b.glb")
    mesh = next(iter(scene.geometry.values()))
    assert len(mesh.vertices) == body_template.num_vertices
    js, binary = read_glb_json(data)
    skin = js["skins"][0]
    assert len(skin["joints"]) == 55
    prim = js["meshes"][0]["primitives"][0]
    weights = _glb_accessor(js, binary, prim["attributes"]["WEIGHTS_0"])
    assert np.allclose(weights.sum(1), 1.0, atol=1e-5)
    # a game engine's view of frame k: node transforms from the animation, joint matrices, skinning
    k = 10
    nodes = js["nodes"]
    anim = js["animations"][0]
    local = {}
    for ch in anim["channels"]:
        out = _glb_accessor(js, binary, anim["samplers"][ch["sampler"]]["output"])[k]
        local.setdefault(ch["target"]["node"], {})[ch["target"]["path"]] = out
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
    ibm = _glb_accessor(js, binary, skin["inverseBindMatrices"]).reshape(-1, 4, 4).transpose(0, 2, 1)
    mats = np.stack([world[n] @ ibm[i] for i, n in enumerate(skin["joints"])])
    pos = _glb_accessor(js, binary, prim["attributes"]["POSITION"]).astype(np.float64)
    jnt = _glb_accessor(js, binary, prim["attributes"]["JOINTS_0"]).astype(np.int64)
    blended = (mats[jnt] * weights[..., None, None]).sum(1)
    skinned = (blended[:, :3, :3] @ pos[..., None])[..., 0] + blended[:, :3, 3]
    poses, _ = to_template_poses(motion, body_template)
    poses.translation = poses.translation - poses.translation[:1]
    poses.expression = torch.zeros_like(poses.expression)  # the .glb carries the skeleton, not the face
    want = body_template.pose(poses.index([k])).vertices[0].double().numpy()
    assert np.abs(skinned - want).max() < 1e-4


def test_glb_colours_come_from_the_gaussians(head_avatar, head_template):
    js, binary = read_glb_json(build_glb(head_avatar, head_template))
    colors = _glb_accessor(js, binary, js["meshes"][0]["primitives"][0]["attributes"]["COLOR_0"])
    assert colors.shape == (head_template.num_vertices, 3)
    skin_tone = head_avatar.gaussians.colors.mean(0).numpy()
    assert np.abs(np.median(colors, 0) - skin_tone).max() < 0.15
    assert colors.min() < 0.2  # the pupils are dark
