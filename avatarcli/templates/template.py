"""One interface to a body model, whatever file it came from.

Loading, blend shapes, joint regression and skinning all go through ``smplx`` (its model
classes read the files; its ``lbs`` helpers pose them). ``smplx``'s own forward returns
vertices and joints but not the per-joint transforms that Gaussians need, so
:meth:`Template.pose` runs the same steps with those helpers and keeps the intermediates.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from smplx.lbs import batch_rodrigues, blend_shapes, vertices2joints
from torch import Tensor

from avatarcli.devices import to_device
from avatarcli.errors import AvatarError
from avatarcli.templates.skeletons import FLAME_JOINT_NAMES, OPENPOSE18_FROM_SMPLX, OPENPOSE_HAND_FROM_SMPLX, SMPLX_JOINT_NAMES

Kind = Literal["head", "body"]
IBUG_GROUPS: tuple[tuple[str, bool, tuple[int, int]], ...] = (
    ("face_oval", False, (0, 17)),
    ("right_brow_upper", False, (17, 22)),
    ("left_brow_upper", False, (22, 27)),
    ("right_eye", True, (36, 42)),
    ("left_eye", True, (42, 48)),
    ("lips_outer", True, (48, 60)),
    ("lips_inner", True, (60, 68)),
)


@dataclass
class Pose:
    """A batch of template poses.

    Attributes:
        rotations: (B, J, 3) axis-angle rotation of every joint, in the template's joint order
            (FLAME: global, neck, jaw, left eye, right eye; SMPL-X: the 55 official joints).
        expression: (B, E) expression coefficients.
        translation: (B, 3) added to everything after posing.
    """

    rotations: Tensor
    expression: Tensor
    translation: Tensor

    @property
    def batch(self) -> int:
        return self.rotations.shape[0]

    def to(self, device: torch.device | str) -> Pose:
        return Pose(to_device(self.rotations, device), to_device(self.expression, device), to_device(self.translation, device))

    def index(self, idx: Tensor | slice | list[int]) -> Pose:
        return Pose(self.rotations[idx], self.expression[idx], self.translation[idx])


@dataclass
class Posed:
    """A posed batch of templates.

    Attributes:
        vertices: (B, V, 3) skinned vertices.
        joints: (B, J, 3) posed joint positions.
        transforms: (B, J, 4, 4) per-joint skinning transforms (rest joint subtracted,
            translation included): ``vertices = sum_j w_j transforms_j @ unposed``.
        unposed: (B, V, 3) rest-pose vertices with shape, expression and pose-corrective
            offsets applied, before skinning.
    """

    vertices: Tensor
    joints: Tensor
    transforms: Tensor
    unposed: Tensor


class Template:
    """A FLAME-layout head or SMPL-X-layout body loaded through ``smplx``.

    Args:
        kind: "head" (FLAME layout) or "body" (SMPL-X layout).
        model: the loaded ``smplx.FLAME`` / ``smplx.SMPLX`` module.
        name: a short name for messages and files ("mannequin-head", or the file's name).
        source: the model file.
        sha256: digest of the model file.
        extras: arrays from the file that smplx does not read (``avatarcli_*`` keys).
    """

    def __init__(
        self,
        kind: Kind,
        model: torch.nn.Module,
        name: str,
        source: Path,
        sha256: str,
        extras: dict[str, np.ndarray],
    ) -> None:
        self.kind: Kind = kind
        self.model = model
        self.name = name
        self.source = source
        self.sha256 = sha256
        self.joint_names = FLAME_JOINT_NAMES if kind == "head" else SMPLX_JOINT_NAMES
        m = model
        self.device = torch.device("cpu")
        self.v_template: Tensor = m.v_template.detach().clone()
        self.faces: Tensor = m.faces_tensor.detach().clone()
        self.shapedirs: Tensor = m.shapedirs.detach().clone()
        self.exprdirs: Tensor = m.expr_dirs.detach().clone()
        self.posedirs: Tensor = m.posedirs.detach().clone()
        self.j_regressor: Tensor = m.J_regressor.detach().clone()
        self.parents: Tensor = m.parents.detach().clone()
        self.weights: Tensor = m.lbs_weights.detach().clone()
        self.lmk_faces_idx: Tensor = m.lmk_faces_idx.detach().clone()
        self.lmk_bary: Tensor = m.lmk_bary_coords.detach().clone()
        dyn = getattr(m, "dynamic_lmk_faces_idx", None)
        self.contour_faces_idx: Tensor | None = None if dyn is None else dyn[dyn.shape[0] // 2].detach().clone()
        dyn_b = getattr(m, "dynamic_lmk_bary_coords", None)
        self.contour_bary: Tensor | None = None if dyn_b is None else dyn_b[dyn_b.shape[0] // 2].detach().clone()
        self.extra_joints_idxs: Tensor = m.vertex_joint_selector.extra_joints_idxs.detach().clone()
        self.extras = extras
        self._contours = self._contour_embedding(extras)
        self.eye_radius = float(extras["avatarcli_eye_radius"]) if "avatarcli_eye_radius" in extras else self._measure_eye_radius()
        # index tensors that move with the template, so that posing and keypoints never copy
        # a Python list to the GPU (each such copy makes the CPU wait for the GPU)
        self.levels = tree_levels(tuple(int(p) for p in m.parents))
        eyes = ("left_eye", "right_eye") if kind == "head" else ("left_eye_smplhf", "right_eye_smplhf")
        self._eye_idx = torch.tensor([self.joint_names.index(n) for n in eyes])
        self._openpose_idx: Tensor | None = None
        self._hand_idx: Tensor | None = None
        if kind == "body":
            self._openpose_idx = torch.tensor(OPENPOSE18_FROM_SMPLX)
            self._hand_idx = torch.tensor([OPENPOSE_HAND_FROM_SMPLX[s] for s in ("left", "right")])
        self._blend_dirs = torch.cat([self.shapedirs, self.exprdirs], dim=-1)

    # -- sizes -------------------------------------------------------------------------
    @property
    def num_joints(self) -> int:
        return int(self.parents.shape[0])

    @property
    def num_betas(self) -> int:
        return int(self.shapedirs.shape[-1])

    @property
    def num_expression(self) -> int:
        return int(self.exprdirs.shape[-1])

    @property
    def num_vertices(self) -> int:
        return int(self.v_template.shape[0])

    def to(self, device: torch.device | str) -> Template:
        """A copy of the template with its tensors (not the smplx module) on ``device``."""
        if torch.device(device) == self.device:
            return self
        out = copy.copy(self)
        out._move(torch.device(device))
        return out

    def _move(self, device: torch.device) -> None:
        self.device = device
        for key in ("v_template", "faces", "shapedirs", "exprdirs", "posedirs", "j_regressor", "parents", "weights",
                    "lmk_faces_idx", "lmk_bary", "contour_faces_idx", "contour_bary", "extra_joints_idxs",
                    "_eye_idx", "_openpose_idx", "_hand_idx", "_blend_dirs"):  # fmt: skip
            value = getattr(self, key)
            if value is not None:
                setattr(self, key, value.to(self.device))
        self._contours = [(n, c, f.to(self.device), b.to(self.device)) for n, c, f, b in self._contours]
        self.levels = [(idx.to(device), par.to(device)) for idx, par in self.levels]

    # -- posing ------------------------------------------------------------------------
    def zero_pose(self, batch: int = 1) -> Pose:
        d = self.device
        return Pose(
            torch.zeros(batch, self.num_joints, 3, device=d),
            torch.zeros(batch, self.num_expression, device=d),
            torch.zeros(batch, 3, device=d),
        )

    def rest_vertices(self, betas: Tensor | None = None) -> Tensor:
        """Rest-pose vertices (V, 3) for shape ``betas`` (S,) (zeros when None)."""
        if betas is None:
            return self.v_template
        return self.v_template + blend_shapes(betas[None], self.shapedirs)[0]

    def pose(self, pose: Pose, betas: Tensor | None = None) -> Posed:
        """Pose the template: blend shapes, joint regression, pose correctives, skinning.

        Args:
            pose: a batch of B poses.
            betas: (S,) or (B, S) shape coefficients; zeros when None.
        """
        b = pose.batch
        dt = self.v_template.dtype
        if betas is None:
            betas = torch.zeros(b, self.num_betas, device=self.device, dtype=dt)
        elif betas.dim() == 1:
            betas = betas[None].expand(b, -1)
        coeffs = torch.cat([betas, pose.expression], dim=-1)
        v_shaped = self.v_template + blend_shapes(coeffs, self._blend_dirs)
        joints = vertices2joints(self.j_regressor, v_shaped)
        rot = batch_rodrigues(pose.rotations.reshape(-1, 3)).view(b, -1, 3, 3)
        eye = torch.eye(3, device=self.device, dtype=dt)
        pose_feature = (rot[:, 1:] - eye).reshape(b, -1)
        unposed = v_shaped + (pose_feature @ self.posedirs).view(b, -1, 3)
        posed_joints, rel = rigid_transforms(rot, joints, self.levels)
        rel = rel.clone()
        rel[:, :, :3, 3] += pose.translation[:, None]
        verts = skin_points(unposed, self.weights, rel)
        return Posed(verts, posed_joints + pose.translation[:, None], rel, unposed)

    def smplx_forward(self, pose: Pose, betas: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The same pose through ``smplx``'s own forward (CPU): vertices (B, V, 3), joints (B, J', 3)."""
        p = pose.to("cpu")
        b = p.batch
        r = p.rotations
        kw: dict[str, Tensor] = dict(global_orient=r[:, 0], expression=p.expression, transl=p.translation)
        if betas is not None:
            kw["betas"] = (betas[None] if betas.dim() == 1 else betas).expand(b, -1).cpu()
        if self.kind == "head":
            kw.update(neck_pose=r[:, 1], jaw_pose=r[:, 2], leye_pose=r[:, 3], reye_pose=r[:, 4])
        else:
            kw.update(
                body_pose=r[:, 1:22].reshape(b, 63),
                jaw_pose=r[:, 22],
                leye_pose=r[:, 23],
                reye_pose=r[:, 24],
                left_hand_pose=r[:, 25:40].reshape(b, 45),
                right_hand_pose=r[:, 40:55].reshape(b, 45),
            )
        with torch.no_grad():
            out = self.model(**kw)
        return out.vertices, out.joints

    # -- keypoints -----------------------------------------------------------------------
    def openpose18(self, posed: Posed) -> Tensor:
        """OpenPose-18 body keypoints (B, 18, 3) (bodies only)."""
        allj = self._with_extra_joints(posed)
        return allj[:, self._openpose_idx]

    def hand_keypoints(self, posed: Posed) -> Tensor:
        """OpenPose hand keypoints (B, 2, 21, 3): left hand, then right (bodies only)."""
        allj = self._with_extra_joints(posed)
        return allj[:, self._hand_idx]

    def _with_extra_joints(self, posed: Posed) -> Tensor:
        if self.kind != "body":
            raise ValueError("body keypoints need a body template")
        extra = posed.vertices[:, self.extra_joints_idxs]
        return torch.cat([posed.joints, extra], dim=1)

    def landmarks68(self, posed: Posed) -> Tensor:
        """iBUG-68 face landmarks (B, 68, 3) from the template's landmark embedding."""
        faces, bary = self.landmarks68_embedding()
        return surface_points(posed.vertices, self.faces, faces, bary)

    def landmarks68_embedding(self) -> tuple[Tensor, Tensor]:
        """Where the iBUG-68 landmarks sit on the mesh: triangle index (68,) and barycentric
        coordinates (68, 3) (the jaw line is the embedding's frontal contour)."""
        if self.contour_faces_idx is None or self.contour_bary is None:
            raise ValueError(f"template {self.name} has no face-contour embedding")
        return torch.cat([self.contour_faces_idx, self.lmk_faces_idx]), torch.cat([self.contour_bary, self.lmk_bary])

    def face_contours(self, posed: Posed) -> list[tuple[str, bool, Tensor]]:
        """Face-mesh contour polylines: (group name, closed, points (B, n, 3)) per group.

        Built-in templates carry a MediaPipe-style embedding (face oval, brows, eyes, lips);
        other templates fall back to their iBUG-68 landmarks grouped the same way.
        """
        return [(n, c, surface_points(posed.vertices, self.faces, f, bary)) for n, c, f, bary in self.face_embedding()]

    def face_embedding(self) -> list[tuple[str, bool, Tensor, Tensor]]:
        """Where :meth:`face_contours` sit on the mesh: (group name, closed, triangle index (n,),
        barycentric coordinates (n, 3)) per group."""
        if self._contours:
            return list(self._contours)
        faces, bary = self.landmarks68_embedding()
        return [(n, c, faces[s:e], bary[s:e]) for n, c, (s, e) in IBUG_GROUPS]

    def irises(self, posed: Posed) -> Tensor:
        """Iris centres (B, 2, 3), left then right: the front of each eyeball as it turns."""
        # the eye joint's posed place, plus the eyeball's radius along the joint's turned +z
        return posed.joints[:, self._eye_idx] + posed.transforms[:, self._eye_idx, :3, 2] * self.eye_radius

    def _rest_joints(self) -> Tensor:
        return vertices2joints(self.j_regressor, self.v_template[None])[0]

    # -- helpers -------------------------------------------------------------------------
    def _contour_embedding(self, extras: dict[str, np.ndarray]) -> list[tuple[str, bool, Tensor, Tensor]]:
        if "avatarcli_contour_names" not in extras:
            return []
        names = [str(n) for n in extras["avatarcli_contour_names"]]
        sizes = extras["avatarcli_contour_sizes"]
        closed = extras["avatarcli_contour_closed"]
        faces = torch.as_tensor(extras["avatarcli_contour_faces"], dtype=torch.long)
        bary = torch.as_tensor(extras["avatarcli_contour_bary"], dtype=torch.float32)
        out, start = [], 0
        for n, size, c in zip(names, sizes, closed, strict=True):
            out.append((n, bool(c), faces[start : start + size], bary[start : start + size]))
            start += int(size)
        return out

    def _measure_eye_radius(self) -> float:
        names = self.joint_names
        j = names.index("left_eye" if self.kind == "head" else "left_eye_smplhf")
        eye_verts = self.weights[:, j] > 0.9
        if not bool(eye_verts.any()):
            return 0.012
        center = self._rest_joints()[j]
        return float((self.v_template[eye_verts] - center).norm(dim=-1).mean())


def skin_points(points: Tensor, weights: Tensor, transforms: Tensor) -> Tensor:
    """Linear blend skinning of points.

    Args:
        points: (B, N, 3) or (N, 3) rest-pose points.
        weights: (N, J) skinning weights.
        transforms: (B, J, 4, 4) per-joint transforms.

    Returns:
        (B, N, 3) posed points.
    """
    b = transforms.shape[0]
    if points.dim() == 2:
        points = points[None].expand(b, -1, -1)
    t = torch.einsum("nj,bjk->bnk", weights, transforms.reshape(b, -1, 16)).reshape(b, -1, 4, 4)
    return (t[..., :3, :3] @ points[..., None])[..., 0] + t[..., :3, 3]


def surface_points(vertices: Tensor, faces: Tensor, face_idx: Tensor, bary: Tensor) -> Tensor:
    """Points embedded on a mesh (triangle + barycentric coordinates), for a batch of poses.

    Args:
        vertices: (B, V, 3); faces: (F, 3) long; face_idx: (L,) long; bary: (L, 3).

    Returns:
        (B, L, 3)
    """
    corners = vertices[:, faces[face_idx]]  # (B, L, 3, 3)
    return (corners * bary[None, :, :, None].to(vertices.dtype)).sum(dim=2)


def tree_levels(parents: tuple[int, ...]) -> list[tuple[Tensor, Tensor]]:
    """The joints of a kinematic tree by depth below the root: (joints, their parents) per level."""
    depth = [0] * len(parents)
    for j, p in enumerate(parents):
        if j > 0:
            if not 0 <= p < j:
                raise AvatarError(f"joint {j} of the template has parent {p}: parents must come before their children")
            depth[j] = depth[p] + 1
    out = []
    for level in range(1, max(depth, default=0) + 1):
        joints = [j for j, d in enumerate(depth) if d == level]
        out.append((torch.tensor(joints), torch.tensor([parents[j] for j in joints])))
    return out


def rigid_transforms(rot: Tensor, joints: Tensor, levels: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Forward kinematics: posed joints (B, J, 3) and skinning transforms (B, J, 4, 4).

    The arithmetic of ``smplx.lbs.batch_rigid_transform``, written here because that helper
    indexes a Python list with elements of a device tensor: on CUDA each joint makes the CPU
    wait for the GPU (55 waits per call for SMPL-X). This walks the tree a depth level at a
    time with index tensors that stay on the device.

    Args:
        rot: (B, J, 3, 3) joint rotations; joints: (B, J, 3) rest joint positions.
        levels: the tree from ``tree_levels``, on the device of ``rot``.
    """
    b, j = joints.shape[:2]
    rel = joints.clone()  # each joint relative to its parent; the root stays where it is
    for idx, par in levels:
        rel[:, idx] = joints[:, idx] - joints[:, par]
    local = torch.zeros(b, j, 4, 4, dtype=rot.dtype, device=rot.device)
    local[..., :3, :3] = rot
    local[..., :3, 3] = rel
    local[..., 3, 3] = 1.0
    chain = local.clone()
    for idx, par in levels:
        chain[:, idx] = chain[:, par] @ local[:, idx]
    posed_joints = chain[..., :3, 3]
    # the transform that takes a rest-pose point (not a joint-relative one) to its posed place
    skin = chain.clone()
    skin[..., :3, 3] = chain[..., :3, 3] - (chain[..., :3, :3] @ joints[..., None])[..., 0]
    return posed_joints, skin
