"""Skinned glTF 2.0 binary (.glb): the template mesh with colours baked from the Gaussians, a
joint hierarchy, skinning weights and, optionally, a motion as a glTF animation.

trimesh reads and writes glTF meshes but not skins or skeletal animation, so the container
is assembled here: one JSON chunk and one binary buffer, as the glTF 2.0 specification lays
them out.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree

from avatarcli.fileio import atomic_path
from avatarcli.model.avatar import Avatar
from avatarcli.model.binding import rest_posed
from avatarcli.model.gaussians import sh0_to_rgb
from avatarcli.motion.motion import Motion, to_template_poses
from avatarcli.rotations import axis_angle_to_quat
from avatarcli.templates.template import Template

FLOAT, UINT8, UINT16, UINT32 = 5126, 5121, 5123, 5125
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963


class _Buffer:
    """Collects binary views and accessors."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.views: list[dict] = []
        self.accessors: list[dict] = []

    def add(
        self, array: np.ndarray, component: int, kind: str, target: int | None = None, minmax: bool = False, normalized: bool = False
    ) -> int:
        while len(self.data) % 4:
            self.data.append(0)
        raw = np.ascontiguousarray(array).tobytes()
        view = {"buffer": 0, "byteOffset": len(self.data), "byteLength": len(raw)}
        if target is not None:
            view["target"] = target
        self.data.extend(raw)
        self.views.append(view)
        acc: dict = {"bufferView": len(self.views) - 1, "componentType": component, "count": int(array.shape[0]), "type": kind}
        if normalized:
            acc["normalized"] = True
        if minmax:
            flat = array.reshape(array.shape[0], -1)
            acc["min"] = flat.min(0).tolist()
            acc["max"] = flat.max(0).tolist()
        self.accessors.append(acc)
        return len(self.accessors) - 1


def bake_vertex_colors(vertices: np.ndarray, means: np.ndarray, colors: np.ndarray, opacities: np.ndarray, k: int = 8) -> np.ndarray:
    """Colour per vertex (V, 3): opacity- and distance-weighted mean of the k nearest Gaussians."""
    d, idx = cKDTree(means).query(vertices, k=min(k, len(means)), workers=-1)
    d, idx = d.reshape(len(vertices), -1), idx.reshape(len(vertices), -1)
    sigma = np.maximum(np.median(d[:, :1]), 1e-4) * 2.0 + d[:, :1]
    w = opacities[idx] * np.exp(-0.5 * (d / sigma) ** 2) + 1e-8
    return (colors[idx] * w[..., None]).sum(1) / w.sum(1, keepdims=True)


def _vertex_normals(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    n = np.zeros_like(v)
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    for k in range(3):
        np.add.at(n, f[:, k], fn)
    return n / np.linalg.norm(n, axis=1, keepdims=True).clip(1e-12)


def build_glb(avatar: Avatar, template: Template, motion: Motion | None = None) -> bytes:
    """The avatar as a skinned .glb (bytes); with ``motion``, its animation too."""
    av = avatar.to(template.device)
    with torch.no_grad():
        rest = rest_posed(template, av.shape)
        verts = rest.vertices[0].double().cpu().numpy()
        joints = rest.joints[0].double().cpu().numpy()
        pg = av.posed(template)
        means = pg.means[0].double().cpu().numpy()
        colors = sh0_to_rgb(pg.sh[:, 0]).double().cpu().numpy().clip(0, 1)
        opac = pg.opacities.double().cpu().numpy()
    faces = template.faces.cpu().numpy().astype(np.uint32)
    parents = template.parents.cpu().numpy()
    names = template.joint_names
    vcol = bake_vertex_colors(verts, means, colors, opac)
    weights = template.weights.double().cpu().numpy()
    top = np.argsort(-weights, axis=1)[:, :4]
    w4 = np.take_along_axis(weights, top, axis=1)
    w4 = w4 / w4.sum(1, keepdims=True)

    buf = _Buffer()
    a_pos = buf.add(verts.astype(np.float32), FLOAT, "VEC3", ARRAY_BUFFER, minmax=True)
    a_nrm = buf.add(_vertex_normals(verts, faces.astype(np.int64)).astype(np.float32), FLOAT, "VEC3", ARRAY_BUFFER)
    a_col = buf.add(vcol.astype(np.float32), FLOAT, "VEC3", ARRAY_BUFFER)
    a_jnt = buf.add(top.astype(np.uint8 if len(names) < 256 else np.uint16), UINT8 if len(names) < 256 else UINT16, "VEC4", ARRAY_BUFFER)
    a_wgt = buf.add(w4.astype(np.float32), FLOAT, "VEC4", ARRAY_BUFFER)
    a_idx = buf.add(faces.reshape(-1), UINT32, "SCALAR", ELEMENT_ARRAY_BUFFER)
    # joints are at rest with identity rotations, so inverse bind = translate by -joint
    ibm = np.tile(np.eye(4), (len(names), 1, 1))
    ibm[:, :3, 3] = -joints
    a_ibm = buf.add(ibm.transpose(0, 2, 1).reshape(len(names), 16).astype(np.float32), FLOAT, "MAT4")  # column-major

    first_joint = 1
    nodes: list[dict] = [{"name": "avatar", "mesh": 0, "skin": 0}]
    for j, name in enumerate(names):
        p = parents[j]
        local = joints[j] - (joints[p] if p >= 0 else 0.0)
        nodes.append({"name": name, "translation": local.tolist()})
    for j in range(len(names)):
        kids = [first_joint + c for c in range(len(names)) if parents[c] == j]
        if kids:
            nodes[first_joint + j]["children"] = kids
    roots = [first_joint + j for j in range(len(names)) if parents[j] < 0]

    gltf: dict = {
        "asset": {"version": "2.0", "generator": "avatarcli"},
        "scene": 0,
        "scenes": [{"nodes": [0, *roots]}],
        "nodes": nodes,
        "meshes": [
            {
                "name": f"{avatar.kind}-avatar",
                "primitives": [
                    {
                        "attributes": {"POSITION": a_pos, "NORMAL": a_nrm, "COLOR_0": a_col, "JOINTS_0": a_jnt, "WEIGHTS_0": a_wgt},
                        "indices": a_idx,
                        "material": 0,
                    }
                ],
            }
        ],
        "materials": [
            {"name": "baked", "pbrMetallicRoughness": {"baseColorFactor": [1, 1, 1, 1], "metallicFactor": 0.0, "roughnessFactor": 0.85}}
        ],
        "skins": [{"joints": [first_joint + j for j in range(len(names))], "inverseBindMatrices": a_ibm, "skeleton": roots[0]}],
    }
    if motion is not None:
        poses, _ = to_template_poses(motion, template)
        t = np.arange(poses.batch, dtype=np.float32) / np.float32(motion.fps)
        a_time = buf.add(t, FLOAT, "SCALAR", minmax=True)
        quats = axis_angle_to_quat(poses.rotations.double().cpu()).numpy()[..., [1, 2, 3, 0]]  # glTF wants x, y, z, w
        channels, samplers = [], []
        for j in range(len(names)):
            samplers.append({"input": a_time, "output": buf.add(quats[:, j].astype(np.float32), FLOAT, "VEC4"), "interpolation": "LINEAR"})
            channels.append({"sampler": len(samplers) - 1, "target": {"node": first_joint + j, "path": "rotation"}})
        trans = poses.translation.double().cpu().numpy()
        root_pos = joints[0] + trans - trans[:1]
        samplers.append({"input": a_time, "output": buf.add(root_pos.astype(np.float32), FLOAT, "VEC3"), "interpolation": "LINEAR"})
        channels.append({"sampler": len(samplers) - 1, "target": {"node": roots[0], "path": "translation"}})
        gltf["animations"] = [{"name": motion.source or "motion", "channels": channels, "samplers": samplers}]

    while len(buf.data) % 4:
        buf.data.append(0)
    gltf["buffers"] = [{"byteLength": len(buf.data)}]
    gltf["bufferViews"] = buf.views
    gltf["accessors"] = buf.accessors
    js = json.dumps(gltf, separators=(",", ":")).encode()
    js += b" " * (-len(js) % 4)
    total = 12 + 8 + len(js) + 8 + len(buf.data)
    out = bytearray(struct.pack("<III", 0x46546C67, 2, total))
    out += struct.pack("<II", len(js), 0x4E4F534A) + js
    out += struct.pack("<II", len(buf.data), 0x004E4942) + bytes(buf.data)
    return bytes(out)


def write_glb(avatar: Avatar, template: Template, path: str | Path, motion: Motion | None = None) -> None:
    data = build_glb(avatar, template, motion)
    with atomic_path(path, suffix=".glb") as tmp:
        tmp.write_bytes(data)


def read_glb_json(data: bytes) -> tuple[dict, bytes]:
    """The JSON and binary chunks of a .glb (for checks and tests)."""
    magic, version, length = struct.unpack("<III", data[:12])
    if magic != 0x46546C67 or version != 2 or length != len(data):
        raise ValueError("not a glTF 2.0 binary")
    n, _ = struct.unpack("<II", data[12:20])
    js = json.loads(data[20 : 20 + n])
    m, _ = struct.unpack("<II", data[20 + n : 28 + n])
    return js, data[28 + n : 28 + n + m]
