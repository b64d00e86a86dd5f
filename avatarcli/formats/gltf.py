"""Skinned glTF 2.0 binary (.glb): the template mesh with colours baked from the Gaussians, a
joint hierarchy, skinning weights, the template's expression blend shapes as morph targets
and, optionally, a motion as a glTF animation (joint rotations, root translation and the
expression coefficients as morph-target weights).

Containers are packed by :mod:`avatarcli.formats.glb`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree

from avatarcli.fileio import atomic_path
from avatarcli.formats.glb import ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER, FLOAT, UINT8, UINT16, UINT32, GlbBuffer, read_glb_json
from avatarcli.model.avatar import Avatar
from avatarcli.model.binding import rest_posed
from avatarcli.model.gaussians import sh0_to_rgb
from avatarcli.motion.motion import Motion, to_template_poses
from avatarcli.rotations import axis_angle_to_quat
from avatarcli.templates.mannequin.head_shape import EXPRESSION_NAMES
from avatarcli.templates.template import Template

__all__ = ["build_glb", "expression_names", "read_glb_json", "top4_weights", "write_glb"]


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


def expression_names(template: Template) -> list[str]:
    """Names of the template's expression components: the mannequins' named shapes (smile,
    blink, ...), or ``expression_NNN`` for a user's FLAME / SMPL-X file (PCA components)."""
    e = template.num_expression
    if template.name.startswith("mannequin-") and e == len(EXPRESSION_NAMES):
        return list(EXPRESSION_NAMES)
    return [f"expression_{k:03d}" for k in range(e)]


def top4_weights(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The four largest skinning weights of each row of ``weights`` (N, J), renormalised.

    Returns:
        joints (N, 4) int64 and weights (N, 4) float64 summing to one. A slot whose weight is
        zero points at joint 0, as glTF asks (the validator warns of any other joint there).
    """
    top = np.argsort(-weights, axis=1, kind="stable")[:, :4]
    w4 = np.take_along_axis(weights, top, axis=1)
    w4 = w4 / w4.sum(1, keepdims=True)
    top = np.where(w4 > 0, top, 0)
    return top, w4


def build_glb(avatar: Avatar, template: Template, motion: Motion | None = None) -> bytes:
    """The avatar as a skinned .glb (bytes) with expression morph targets; with ``motion``, its
    animation too. A pose-dependent appearance is baked at the rest pose: the animation moves
    the mesh, not its colours."""
    av = avatar.to(template.device).static(template)
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
    top, w4 = top4_weights(template.weights.double().cpu().numpy())

    buf = GlbBuffer()
    a_pos = buf.add(verts.astype(np.float32), FLOAT, "VEC3", ARRAY_BUFFER, minmax=True)
    a_nrm = buf.add(_vertex_normals(verts, faces.astype(np.int64)).astype(np.float32), FLOAT, "VEC3", ARRAY_BUFFER)
    a_col = buf.add(vcol.astype(np.float32), FLOAT, "VEC3", ARRAY_BUFFER)
    a_jnt = buf.add(top.astype(np.uint8 if len(names) < 256 else np.uint16), UINT8 if len(names) < 256 else UINT16, "VEC4", ARRAY_BUFFER)
    a_wgt = buf.add(w4.astype(np.float32), FLOAT, "VEC4", ARRAY_BUFFER)
    a_idx = buf.add(faces.reshape(-1), UINT32, "SCALAR", ELEMENT_ARRAY_BUFFER)
    # expression blend shapes, (V, 3, E): one morph target of position offsets each; glTF
    # applies morph targets before skinning, as the template applies blend shapes
    exprdirs = template.exprdirs.double().cpu().numpy()
    targets = [{"POSITION": buf.add(exprdirs[:, :, k].astype(np.float32), FLOAT, "VEC3", ARRAY_BUFFER, minmax=True)}
               for k in range(exprdirs.shape[2])]  # fmt: skip
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

    primitive: dict = {
        "attributes": {"POSITION": a_pos, "NORMAL": a_nrm, "COLOR_0": a_col, "JOINTS_0": a_jnt, "WEIGHTS_0": a_wgt},
        "indices": a_idx,
        "material": 0,
    }
    mesh: dict = {"name": f"{avatar.kind}-avatar", "primitives": [primitive]}
    if targets:
        primitive["targets"] = targets
        mesh["weights"] = [0.0] * len(targets)
        mesh["extras"] = {"targetNames": expression_names(template)}  # read by Blender, three.js and Babylon.js
    gltf: dict = {
        "asset": {"version": "2.0", "generator": "avatarcli"},
        "scene": 0,
        "scenes": [{"nodes": [0, *roots]}],
        "nodes": nodes,
        "meshes": [mesh],
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

        def channel(output: int, node: int, path: str) -> None:
            samplers.append({"input": a_time, "output": output, "interpolation": "LINEAR"})
            channels.append({"sampler": len(samplers) - 1, "target": {"node": node, "path": path}})

        for j in range(len(names)):
            channel(buf.add(quats[:, j].astype(np.float32), FLOAT, "VEC4"), first_joint + j, "rotation")
        trans = poses.translation.double().cpu().numpy()
        root_pos = joints[0] + trans - trans[:1]
        channel(buf.add(root_pos.astype(np.float32), FLOAT, "VEC3"), roots[0], "translation")
        if targets:  # per key frame, one weight per morph target
            channel(buf.add(poses.expression.cpu().numpy().astype(np.float32).reshape(-1), FLOAT, "SCALAR"), 0, "weights")
        gltf["animations"] = [{"name": motion.source or "motion", "channels": channels, "samplers": samplers}]
    return buf.glb(gltf)


def write_glb(avatar: Avatar, template: Template, path: str | Path, motion: Motion | None = None) -> None:
    data = build_glb(avatar, template, motion)
    with atomic_path(path, suffix=".glb") as tmp:
        tmp.write_bytes(data)
