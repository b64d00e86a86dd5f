"""The built-in body: a procedural mannequin in the SMPL-X layout.

55 joints in the official order and tree, five-fingered hands, 10 shape and 10 expression
components, bone-heat skinning, and the vertex ids of smplx's extra joints (nose, eyes,
ears, toes, heels, fingertips) stored with the file.
"""

from __future__ import annotations

import numpy as np

from avatarcli.templates.mannequin import body_shape as B
from avatarcli.templates.mannequin import head_shape as H
from avatarcli.templates.mannequin import mesher, repair, skinning
from avatarcli.templates.mannequin.head import contour_extras, ibug_embedding
from avatarcli.templates.model_files import TemplateArrays
from avatarcli.templates.skeletons import SMPLX_EXTRA_JOINT_NAMES, SMPLX_JOINT_NAMES, SMPLX_PARENTS

VOXEL = 0.0028
SKIN_FACES = 20000
EYE_SUBDIVISIONS = 2
NAMES = SMPLX_JOINT_NAMES
SHAPE_NAMES = (
    "size", "girth", "shoulders", "hips", "legs",
    "arms", "torso", "belly", "chest", "head",
)  # fmt: skip


def _lenses() -> tuple[mesher.Lens, ...]:
    hands = tuple(mesher.Lens((0.735 * s, 0.437, -0.020), 0.11, 2.4, 0.50) for s in (1.0, -1.0))
    face = mesher.Lens(tuple(B.HEAD_OFFSET + np.array([0.0, -0.02, 0.05])), 0.09, 1.8, 0.30)
    return (*hands, face)


def _labels(skin_v: np.ndarray) -> np.ndarray:
    """Joint index per skin vertex: the piece whose surface is nearest, the face split by region."""
    import torch

    p = torch.as_tensor(skin_v, dtype=torch.float64)
    pieces = B.parts()
    dists = []
    for part in pieces:
        d = part.sdf(p).abs().numpy()
        if part.axis is not None:
            a, b = part.axis
            behind = ((skin_v - a) @ (b - a)) < 0.0
            d[behind] = np.inf
        dists.append(d)
    head_d = H.head_sdf(p - torch.as_tensor(B.HEAD_OFFSET, dtype=torch.float64), solid_neck=True).abs().numpy()
    dists.append(head_d)
    owner = np.argmin(np.stack(dists), axis=0)
    labels = np.array([NAMES.index(part.joint) for part in pieces] + [-1])[owner]
    on_head = owner == len(pieces)
    region = H.face_regions(skin_v[on_head] - B.HEAD_OFFSET)
    labels[on_head] = np.select(
        [region == H.REGION_JAW, region == H.REGION_HEAD], [NAMES.index("jaw"), NAMES.index("head")], default=NAMES.index("neck")
    )
    return labels


def _bones(joints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per joint, the segment its heat is measured from."""
    children: dict[int, list[int]] = {}
    for j, parent in enumerate(SMPLX_PARENTS):
        if parent >= 0:
            children.setdefault(parent, []).append(j)
    ends = joints.copy()
    for j in range(len(NAMES)):
        kids = [k for k in children.get(j, []) if "eye" not in NAMES[k]]
        if kids:
            ends[j] = joints[kids].mean(0)
    tips = B.fingertips()
    for side in ("left", "right"):
        for finger in ("thumb", "index", "middle", "ring", "pinky"):
            ends[NAMES.index(f"{side}_{finger}3")] = tips[f"{side[0]}{finger}"]
        ends[NAMES.index(f"{side}_foot")] = joints[NAMES.index(f"{side}_foot")] + np.array([0.0, -0.005, 0.06])
    ends[NAMES.index("head")] = B.HEAD_OFFSET + np.array([0.0, 0.05, -0.01])
    ends[NAMES.index("jaw")] = B.HEAD_OFFSET + np.array([0.0, -0.11, 0.06])
    return joints, ends


def _shape_basis(v: np.ndarray, labels: np.ndarray, joints: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Identity (shape) displacements (V, 3, 10) at coefficient 1, SHAPE_NAMES order."""
    x, y = v[:, 0], v[:, 1]
    ax = np.abs(x)
    side = np.sign(x) + (x == 0)
    out = np.zeros((len(v), 3, len(SHAPE_NAMES)))
    feet_y = v[:, 1].min()
    out[:, :, 0] = 0.05 * (v - np.array([0.0, feet_y, 0.0]))
    # girth: away from the bone the vertex hangs on (not hands and face)
    lab = np.clip(labels, 0, None)
    a, b = joints[lab], ends[lab]
    ab = b - a
    t = (((v - a) * ab).sum(1) / (ab * ab).sum(1).clip(1e-12)).clip(0, 1)
    radial = v - (a + t[:, None] * ab)
    soft = ~np.isin(
        labels,
        [
            NAMES.index(n)
            for n in NAMES
            if any(k in n for k in ("index", "middle", "ring", "pinky", "thumb", "wrist", "head", "jaw", "eye"))
        ],
    )
    out[:, :, 1] = 0.15 * radial * soft[:, None]
    shoulder_zone = H._smoothstep(0.10, 0.20, ax) * H._smoothstep(0.30, 0.38, y)
    out[:, 0, 2] = side * 0.025 * shoulder_zone
    hip_zone = H._smoothstep(0.04, 0.14, ax) * H._smoothstep(0.12, 0.0, y)
    out[:, 0, 3] = side * 0.02 * hip_zone
    hip_y = joints[NAMES.index("left_hip"), 1]
    out[:, 1, 4] = 0.06 * np.minimum(y - hip_y, 0.0) * H._smoothstep(hip_y + 0.05, hip_y - 0.05, y)
    sh_x = joints[NAMES.index("left_shoulder"), 0]
    out[:, 0, 5] = 0.06 * side * np.maximum(ax - sh_x, 0.0)
    out[:, 1, 6] = 0.06 * np.clip(y - 0.05, 0.0, 0.45) * H._smoothstep(-0.05, 0.05, y)
    belly = H._bump(v, (0.0, 0.07, 0.06), (0.09, 0.08, 0.05))
    out[:, 2, 7] = 0.03 * belly
    chest = H._bump(np.c_[ax, v[:, 1:]], (0.065, 0.34, 0.07), (0.05, 0.05, 0.04))
    out[:, 2, 8] = 0.025 * chest
    head_zone = H._smoothstep(0.50, 0.56, y)
    neck = joints[NAMES.index("head")]
    out[:, :, 9] = 0.08 * (v - neck) * head_zone[:, None]
    return out


def _extra_joint_ids(verts: np.ndarray, n_skin: int, eye_front: dict[str, int]) -> np.ndarray:
    tips = B.fingertips()
    off = B.HEAD_OFFSET
    targets = {
        "nose": off + np.array([0.0, -0.033, 0.114]),
        "rear": off + np.array([-0.086, -0.006, -0.013]),
        "lear": off + np.array([0.086, -0.006, -0.013]),
        "LBigToe": np.array([0.088, -0.962, 0.170]),
        "LSmallToe": np.array([0.136, -0.963, 0.140]),
        "LHeel": np.array([0.096, -0.968, -0.080]),
        "RBigToe": np.array([-0.088, -0.962, 0.170]),
        "RSmallToe": np.array([-0.136, -0.963, 0.140]),
        "RHeel": np.array([-0.096, -0.968, -0.080]),
        **tips,
    }
    ids = []
    for name in SMPLX_EXTRA_JOINT_NAMES:
        if name in ("reye", "leye"):
            ids.append(eye_front[name])
            continue
        ids.append(int(np.argmin(np.linalg.norm(verts[:n_skin] - targets[name], axis=1))))
    return np.asarray(ids, dtype=np.int64)


def relaxed_hands() -> np.ndarray:
    """A gently curled hand pose (2, 45) for smplx's ``hands_mean``: left, then right."""
    out = np.zeros((2, 15, 3))
    for h, sign in ((0, -1.0), (1, 1.0)):
        for f in range(4):  # index, middle, pinky, ring
            for k, angle in enumerate((0.15, 0.20, 0.10)):
                out[h, 3 * f + k] = (0.0, 0.0, sign * angle)
        out[h, 12:] = (0.0, 0.0, sign * 0.05)
    return out.reshape(2, 45)


def build() -> TemplateArrays:
    """Sculpt, mesh, rig and embed the body. Takes well under a minute.

    The same on any machine (:func:`mesher.reproducible`, :func:`mesher.sample_grid`); no
    triangle of it is below ``repair.MIN_QUALITY``.

    Raises:
        ValueError: a triangle below that quality: the template would bind and query
            unreliably, and must not reach the cache.
    """
    with mesher.reproducible():
        return _build()


def _build() -> TemplateArrays:
    skin = mesher.sdf_to_mesh(B.body_sdf, B.BODY_LO, B.BODY_HI, VOXEL, SKIN_FACES, lenses=_lenses())
    skin_v = np.asarray(skin.vertices)
    n_skin = len(skin_v)
    verts, faces = [skin_v], [np.asarray(skin.faces)]
    eye_ranges, eye_front = {}, {}
    start = n_skin
    for name in ("left", "right"):
        v, f = H.eyeball_mesh(H.EYE_CENTERS[name], EYE_SUBDIVISIONS)
        v = v + B.HEAD_OFFSET
        verts.append(v)
        faces.append(f + start)
        eye_ranges[name] = np.arange(start, start + len(v))
        eye_front[f"{name[0]}eye"] = start + int(np.argmax(v[:, 2]))
        start += len(v)
    v_all = np.concatenate(verts)
    f_all = np.concatenate(faces)
    repair.check_quality(v_all, f_all, "the built-in body")

    joints = B.joint_positions()
    labels = _labels(skin_v)
    starts, ends = _bones(joints)
    sharp = np.ones(len(NAMES))
    sharp[[NAMES.index("head"), NAMES.index("jaw")]] = 40.0
    # the torso's bones lie deep under the skin; without this, leg and arm weights would
    # diffuse far up the belly and chest
    torso = ["pelvis", "spine1", "spine2", "spine3", "neck", "left_collar", "right_collar"]
    sharp[[NAMES.index(n) for n in torso]] = 8.0
    weights = np.zeros((len(v_all), len(NAMES)))
    weights[:n_skin] = skinning.bone_heat_weights(skin_v, faces[0], labels, starts, ends, len(NAMES), sharpness=sharp)
    weights[eye_ranges["left"], NAMES.index("left_eye_smplhf")] = 1.0
    weights[eye_ranges["right"], NAMES.index("right_eye_smplhf")] = 1.0

    skin_idx = np.arange(n_skin)
    groups = []
    for j, name in enumerate(NAMES):
        if name.endswith("eye_smplhf"):
            groups.append(eye_ranges[name.split("_")[0]])
            continue
        if name == "jaw":
            pivot = B.HEAD_OFFSET + np.asarray(H.JAW_PIVOT)
            groups.append(
                np.concatenate([skinning.ring_around(v_all, skin_idx, pivot + np.array([s * 0.055, 0, 0]), 16) for s in (1.0, -1.0)])
            )
            continue
        near = [j, SMPLX_PARENTS[j]] + [k for k, pa in enumerate(SMPLX_PARENTS) if pa == j]
        cand = skin_idx[np.isin(labels, near)]
        small = any(k in name for k in ("index", "middle", "ring", "pinky", "thumb"))
        groups.append(skinning.ring_around(v_all, cand, joints[j], 20 if small else 48))
    regressor = skinning.joint_regressor(v_all, joints, groups)

    shapedirs = np.zeros((len(v_all), 3, 20))
    shapedirs[:n_skin, :, :10] = _shape_basis(skin_v, labels, starts, ends)
    head_skin = np.isin(labels, [NAMES.index("head"), NAMES.index("jaw"), NAMES.index("neck")])
    expr = H.expression_basis(skin_v - B.HEAD_OFFSET)
    shapedirs[:n_skin, :, 10:] = expr * head_skin[:, None, None]
    for name, idx in eye_ranges.items():
        c = B.HEAD_OFFSET + np.asarray(H.EYE_CENTERS[name])
        shapedirs[idx, :, :10] = _shape_basis(c[None], np.array([NAMES.index("head")]), starts, ends)[0]

    lmk_f, lmk_b, dyn_f, dyn_b = ibug_embedding(skin, B.HEAD_OFFSET)
    extras = contour_extras(skin, B.HEAD_OFFSET)
    extras["avatarcli_eye_radius"] = np.asarray(H.EYE_RADIUS)
    extras["avatarcli_extra_joints_idxs"] = _extra_joint_ids(v_all, n_skin, eye_front)
    return TemplateArrays(
        v_template=v_all,
        faces=f_all,
        shapedirs=shapedirs,
        weights=weights,
        joint_regressor=regressor,
        parents=SMPLX_PARENTS,
        lmk_faces_idx=lmk_f,
        lmk_bary_coords=lmk_b,
        dynamic_lmk_faces_idx=dyn_f,
        dynamic_lmk_bary_coords=dyn_b,
        extras=extras,
    )
