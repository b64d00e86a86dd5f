"""The built-in head: a procedural mannequin in the FLAME layout.

Joints (FLAME order): global (neck base), neck, jaw, left eye, right eye. 10 shape and 10
expression components (smplx reads a 20-component ``shapedirs`` as 10 + 10).
"""

from __future__ import annotations

import numpy as np
import trimesh

from avatarcli.templates.mannequin import head_shape as H
from avatarcli.templates.mannequin import mesher, repair, skinning
from avatarcli.templates.mannequin.embedding import snap
from avatarcli.templates.model_files import TemplateArrays
from avatarcli.templates.skeletons import FLAME_PARENTS

VOXEL = 0.001
SKIN_FACES = 9000
EYE_SUBDIVISIONS = 3
GLOBAL_JOINT = np.array([0.0, -0.150, -0.030])
NECK_JOINT = np.array([0.0, -0.058, -0.024])


REGION_HEAD, REGION_JAW, REGION_NECK, REGION_LOWER_NECK = (
    H.REGION_HEAD, H.REGION_JAW, H.REGION_NECK, H.REGION_LOWER_NECK,
)  # fmt: skip


def regions(points: np.ndarray) -> np.ndarray:
    """The part of the built-in head each point (N, 3) (head-local metres) belongs to, as the
    skinning sees it: REGION_HEAD, REGION_JAW, REGION_NECK or REGION_LOWER_NECK."""
    return H.face_regions(points)


def contour_extras(mesh: trimesh.Trimesh, offset: np.ndarray) -> dict[str, np.ndarray]:
    """Embed the face-condition contour groups on ``mesh`` (head placed at ``offset``)."""
    names, sizes, closed, faces, bary = [], [], [], [], []
    for name, (is_closed, targets, front) in H.contour_targets().items():
        f, b = snap(mesh, targets + offset, np.full(len(targets), front))
        names.append(name)
        sizes.append(len(f))
        closed.append(is_closed)
        faces.append(f)
        bary.append(b)
    return {
        "avatarcli_contour_names": np.asarray(names),
        "avatarcli_contour_sizes": np.asarray(sizes, dtype=np.int64),
        "avatarcli_contour_closed": np.asarray(closed),
        "avatarcli_contour_faces": np.concatenate(faces).astype(np.int64),
        "avatarcli_contour_bary": np.concatenate(bary),
    }


def ibug_embedding(mesh: trimesh.Trimesh, offset: np.ndarray) -> tuple[np.ndarray, ...]:
    """Static (51) and dynamic (79 x 17) landmark embeddings in the smplx layout."""
    targets, front = H.ibug68_targets()
    faces, bary = snap(mesh, targets + offset, front)
    dyn_faces = np.tile(faces[None, :17], (79, 1))
    dyn_bary = np.tile(bary[None, :17], (79, 1, 1))
    return faces[17:], bary[17:], dyn_faces, dyn_bary


def build() -> TemplateArrays:
    """Sculpt, mesh, rig and embed the head. Takes a few seconds.

    The same on any machine (:func:`mesher.reproducible`, :func:`mesher.sample_grid`); no
    triangle of it is below ``repair.MIN_QUALITY``.

    Raises:
        ValueError: a triangle below that quality: the template would bind and query
            unreliably, and must not reach the cache.
    """
    with mesher.reproducible():
        return _build()


def _build() -> TemplateArrays:
    b = H.HeadBounds()
    skin = mesher.sdf_to_mesh(H.head_sdf, np.array(b.lo), np.array(b.hi), VOXEL, SKIN_FACES)
    skin_v = np.asarray(skin.vertices)
    verts, faces = [skin_v], [np.asarray(skin.faces)]
    eye_ranges = {}
    start = len(skin_v)
    for name in ("left", "right"):
        v, f = H.eyeball_mesh(H.EYE_CENTERS[name], EYE_SUBDIVISIONS)
        verts.append(v)
        faces.append(f + start)
        eye_ranges[name] = np.arange(start, start + len(v))
        start += len(v)
    v_all = np.concatenate(verts)
    f_all = np.concatenate(faces)
    repair.check_quality(v_all, f_all, "the built-in head")
    n_skin = len(skin_v)

    joints = np.stack(
        [GLOBAL_JOINT, NECK_JOINT, np.asarray(H.JAW_PIVOT), np.asarray(H.EYE_CENTERS["left"]), np.asarray(H.EYE_CENTERS["right"])]
    )
    # skin: bone heat over the skin; eyeballs: rigid on their eye joints
    region = H.face_regions(skin_v)
    labels = np.select(
        [region == H.REGION_JAW, region == H.REGION_HEAD],
        [2, 1],
        default=0,
    )
    chin = np.array([0.0, -0.110, 0.060])
    crown = np.array([0.0, 0.050, -0.010])
    bone_start = joints.copy()
    bone_end = np.stack([NECK_JOINT, crown, chin, joints[3], joints[4]])
    weights = np.zeros((len(v_all), 5))
    weights[:n_skin] = skinning.bone_heat_weights(
        skin_v, faces[0], labels, bone_start, bone_end, 5, sharpness=np.array([1.0, 40.0, 40.0, 1.0, 1.0])
    )
    weights[eye_ranges["left"], 3] = 1.0
    weights[eye_ranges["right"], 4] = 1.0

    skin_idx = np.arange(n_skin)
    lower = skin_idx[region == H.REGION_LOWER_NECK]
    neckish = skin_idx[(region == H.REGION_NECK) | (region == H.REGION_LOWER_NECK)]
    tmj = [skinning.ring_around(v_all, skin_idx, np.array([s * 0.055, H.JAW_PIVOT[1], H.JAW_PIVOT[2]]), 16) for s in (1.0, -1.0)]
    groups = [
        skinning.ring_around(v_all, lower, GLOBAL_JOINT, 48),
        skinning.ring_around(v_all, neckish, NECK_JOINT, 48),
        np.concatenate(tmj),
        eye_ranges["left"],
        eye_ranges["right"],
    ]
    regressor = skinning.joint_regressor(v_all, joints, groups)

    shapedirs = np.zeros((len(v_all), 3, 20))
    shapedirs[:n_skin, :, :10] = H.head_shape_basis(skin_v)
    shapedirs[:n_skin, :, 10:] = H.expression_basis(skin_v)
    for name, idx in eye_ranges.items():
        # eyeballs move rigidly with the socket they sit in
        shapedirs[idx, :, :10] = H.head_shape_basis(np.asarray(H.EYE_CENTERS[name])[None])[0]

    lmk_f, lmk_b, dyn_f, dyn_b = ibug_embedding(skin, np.zeros(3))
    extras = contour_extras(skin, np.zeros(3))
    extras["avatarcli_eye_radius"] = np.asarray(H.EYE_RADIUS)
    return TemplateArrays(
        v_template=v_all,
        faces=f_all,
        shapedirs=shapedirs,
        weights=weights,
        joint_regressor=regressor,
        parents=FLAME_PARENTS,
        lmk_faces_idx=lmk_f,
        lmk_bary_coords=lmk_b,
        dynamic_lmk_faces_idx=dyn_f,
        dynamic_lmk_bary_coords=dyn_b,
        extras=extras,
    )
