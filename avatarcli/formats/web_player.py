"""A shareable animated avatar in one file: a web page (.html) that plays the avatar driven by a
motion, skinning the Gaussians on the GPU every frame, with no network and no install.

The page is the bundled player (``formats/web/player.js``: three.js and Spark, built from
``web/`` at the repository's top) and the avatar's data, both inline. The player moves the
rest-pose Gaussians each frame as avatarcli's body binding does:

    c' = c + sum_k e_k D_k                     expression offsets, rest space (heads and faces)
    c  = (sum_i w_i A_i) [c'; 1]               linear-blend skinning of the centre
    q  = normalize(sum_i w_i q_i) * q_rest     the blended joint rotation turns the Gaussian

with A_i the skinning transforms forward kinematics gives from the motion's joint rotations
(interpolated between frames) and q_i their rotations, signs agreeing with the parent's.
Bodies follow this exactly but for pose-corrective offsets and the smallest weights, left out
once the kept ones hold ``WEIGHT_MASS`` of each Gaussian's total (a learnt weight correction
may spread a Gaussian over dozens of joints, so no fixed count of joints would do). Head
Gaussians ride their triangles in avatarcli; here they take the triangle's
skinning weights at their foot point and their expression offsets (finite differences of
the real binding), a close approximation (``player_pose`` evaluates the page's formula).
Scales and higher SH bands are not animated (the page shows the diffuse colour), nor is a
pose-dependent appearance: the page shows the Gaussians as they are at the rest pose.

The data is one little-endian blob (base64 in the page) and a JSON description, arrays:

    centers    float32 (N, 3)  rest-pose centres, metres, y up (Gaussians with expression
                               offsets first: the first ``numExprSplats``)
    scales     float16 (N, 3)  linear scales
    quats      float16 (N, 4)  rest rotations x, y, z, w
    colors     uint8   (N, 4)  diffuse colour (display sRGB) and opacity
    influences uint8   (N,)    how many joints move each Gaussian (uint16 past 255 joints)
    influenceJoints  uint8   (I,)  those joints, Gaussian after Gaussian (uint16 past 255)
    influenceWeights float16 (I,)  their weights (the player renormalises each Gaussian's)
    expr       float16 (M, K, 3)  offsets of the first M Gaussians per expression coefficient
    restJoints float32 (J, 3)  rest joint positions; ``parents`` in the JSON
    rotations  float32 (F, J, 4)  local joint rotations x, y, z, w per frame
    translation float32 (F, 3) root translation per frame (the first is zero)
    expression float32 (F, K)  the coefficients of the K expression components the motion uses
    eyes, targets float32 (F, 3)  the camera ``avatar animate`` would use (position, look-at)
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from avatarcli.errors import AvatarError
from avatarcli.fileio import atomic_path
from avatarcli.model.avatar import Avatar
from avatarcli.model.binding import SkinningBinding, TriangleBinding, rest_posed
from avatarcli.model.gaussians import sh0_to_rgb
from avatarcli.motion.motion import JOINTS, Motion
from avatarcli.render.clip import AnimateOptions, FramePlan, plan_frames
from avatarcli.rotations import axis_angle_to_quat, quat_multiply, quat_to_matrix
from avatarcli.templates.template import Template

EXPR_EPS = 1e-6  # metres: a Gaussian whose offsets all stay below this has none
WEIGHT_MASS = 0.999  # each Gaussian keeps its largest skinning weights until they sum to this
FORMAT_VERSION = 1


@dataclass
class PlayerData:
    """What the page carries: ``meta`` (JSON-ready) and named arrays (see the module doc);
    ``order`` (N,) is the avatar's Gaussian index of each of the page's Gaussians."""

    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]
    order: np.ndarray

    def pack(self) -> tuple[dict[str, Any], bytes]:
        """The JSON description (with each array's offset, type and shape) and the blob, every
        array starting at a multiple of 4 bytes so typed-array views can read it."""
        blob = bytearray()
        layout = {}
        for name, a in self.arrays.items():
            blob.extend(b"\0" * (-len(blob) % 4))
            a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
            layout[name] = {"offset": len(blob), "dtype": a.dtype.name, "shape": list(a.shape)}
            blob.extend(a.tobytes())
        return {**self.meta, "arrays": layout}, bytes(blob)


def _foot_barycentrics(local_means: Tensor) -> Tensor:
    """Barycentric coordinates (N, 3) of a triangle-bound Gaussian's foot on its triangle.

    The binding places a Gaussian at ``centroid + a e1 + b e2 + c k n`` (e1 = v1 - v0,
    e2 = v2 - v0), so its foot is ``(1/3 - a - b) v0 + (1/3 + a) v1 + (1/3 + b) v2``; kept
    inside the triangle.
    """
    a, b = local_means[:, 0], local_means[:, 1]
    bary = torch.stack([1 / 3 - a - b, 1 / 3 + a, 1 / 3 + b], dim=1).clamp_min(0)
    return bary / bary.sum(1, keepdim=True).clamp_min(1e-12)


def skinning_weights(avatar: Avatar, template: Template) -> Tensor:
    """Per-Gaussian skinning weights (N, J): the binding's own for bodies; for heads the
    template's vertex weights blended at each Gaussian's foot on its triangle."""
    b = avatar.binding
    if isinstance(b, SkinningBinding):
        return b.effective_weights(avatar.gaussians.means)
    assert isinstance(b, TriangleBinding)
    corners = template.faces[b.face_idx]  # (N, 3)
    return (template.weights[corners] * _foot_barycentrics(avatar.gaussians.means)[..., None]).sum(1)


def sparse_weights(weights: np.ndarray, mass: float = WEIGHT_MASS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The largest weights of each row of ``weights`` (N, J) that together hold ``mass`` of
    the row's sum (at least one), renormalised.

    Returns:
        counts (N,), then joints (I,) and weights (I,) row after row, largest first.
    """
    order = np.argsort(-weights, axis=1, kind="stable")
    w = np.take_along_axis(weights, order, axis=1)
    w = w / w.sum(1, keepdims=True)
    before = np.cumsum(w, axis=1) - w  # the mass held by the larger weights
    keep = (before < mass) & (w > 0)
    keep[:, 0] = True
    kept = np.where(keep, w, 0)
    kept /= kept.sum(1, keepdims=True)
    return keep.sum(1), order[keep], kept[keep]


def expression_offsets(avatar: Avatar, template: Template, components: list[int]) -> Tensor:
    """How each rest-pose Gaussian centre moves per unit of each expression component: (N, K, 3).

    Taken from the binding itself (the avatar posed at rest with one unit coefficient, minus
    the rest pose), exact for bodies, whose offsets are linear in the coefficients.
    """
    n = len(avatar)
    if not components:
        return torch.zeros(n, 0, 3)
    pose = template.zero_pose(len(components) + 1)
    for row, k in enumerate(components):
        pose.expression[row + 1, k] = 1.0
    means = avatar.posed(template, pose).means.double()
    return (means[1:] - means[:1]).permute(1, 0, 2).float()


def camera_path(plan: FramePlan) -> tuple[np.ndarray, np.ndarray]:
    """Camera positions and look-at points (F, 3) of a clip's plan."""
    assert plan.targets is not None
    return plan.cameras.centers.double().cpu().numpy(), plan.targets.double().cpu().numpy()


@torch.no_grad()
def player_data(avatar: Avatar, template: Template, motion: Motion | None) -> PlayerData:
    """The page's data for ``avatar`` on ``template`` driven by ``motion`` (None: the rest pose)."""
    parents = [int(p) for p in template.parents.tolist()]
    if any(p >= j for j, p in enumerate(parents)):
        raise AvatarError(f"template {template.name} lists a joint before its parent: the web player cannot pose it")
    av = avatar.to(template.device).static(template)
    if motion is None:
        motion = Motion(avatar.kind, torch.zeros(2, JOINTS[avatar.kind], 3),
                        torch.zeros(2, 0), torch.zeros(2, 3), 1.0, "rest pose")  # fmt: skip
    plan = plan_frames(av, template, motion, AnimateOptions(size=(512, 512)))
    poses = plan.poses.to("cpu")
    frames = poses.batch
    used = [int(k) for k in torch.nonzero(poses.expression.abs().amax(0) > 0).flatten()]

    rest = av.posed(template)
    offsets = expression_offsets(av, template, used).cpu()
    moving = offsets.abs().amax(dim=(1, 2)) > EXPR_EPS if used else torch.zeros(len(av), dtype=torch.bool)
    order = torch.cat([torch.nonzero(moving).flatten(), torch.nonzero(~moving).flatten()]).numpy()
    m = int(moving.sum())
    counts, joints, weights = sparse_weights(skinning_weights(av, template).double().cpu().numpy()[order])
    index = np.uint8 if template.num_joints < 256 else np.uint16

    centers = rest.means[0].double().cpu().numpy()[order]
    quats = rest.quats[0].double().cpu()[order]
    quats = torch.nn.functional.normalize(quats, dim=-1).numpy()[:, [1, 2, 3, 0]]
    rgb = sh0_to_rgb(rest.sh[:, 0]).double().cpu().numpy().clip(0, 1)[order]
    alpha = rest.opacities.double().cpu().numpy()[order]
    rest_joints = rest_posed(template, av.shape).joints[0].double().cpu().numpy()
    local = axis_angle_to_quat(poses.rotations.double())[..., [1, 2, 3, 0]].numpy()
    eyes, targets = camera_path(plan)
    arrays = {
        "centers": centers.astype(np.float32),
        "scales": rest.scales[0].cpu().numpy()[order].astype(np.float16),
        "quats": quats.astype(np.float16),
        "colors": np.round(np.concatenate([rgb, alpha[:, None]], 1) * 255).astype(np.uint8),
        "influences": counts.astype(index),
        "influenceJoints": joints.astype(index),
        "influenceWeights": weights.astype(np.float16),
        "expr": offsets.numpy()[order[:m]].astype(np.float16),
        "restJoints": rest_joints.astype(np.float32),
        "rotations": local.astype(np.float32),
        "translation": poses.translation.numpy().astype(np.float32),
        "expression": poses.expression[:, used].numpy().astype(np.float32),
        "eyes": eyes.astype(np.float32),
        "targets": targets.astype(np.float32),
    }
    meta = {
        "format": "avatarcli-player",
        "version": FORMAT_VERSION,
        "kind": avatar.kind,
        "numSplats": len(av),
        "numExprSplats": m,
        "numJoints": template.num_joints,
        "numExpr": len(used),
        "numFrames": frames,
        "fps": plan.fps,
        "parents": parents,
        "fovy": AnimateOptions().fovy,
        "camera": plan.camera,
        "motion": motion.source,
        "background": [1.0, 1.0, 1.0],
    }
    return PlayerData(meta, arrays, order)


def forward_kinematics(local: Tensor, rest_joints: Tensor, parents: list[int], translation: Tensor) -> tuple[Tensor, Tensor]:
    """What the page computes each frame, in PyTorch (the reference its tests hold it to).

    Args:
        local: (F, J, 4) local joint rotations w, x, y, z.
        rest_joints: (J, 3) rest joint positions.
        parents: J parent indices (-1 for the root; parents come before their children).
        translation: (F, 3) root translation.

    Returns:
        skinning transforms (F, J, 4, 4), ``A_j = G_j T(-J_j)`` with G the joints' world
        transforms (as :meth:`Template.pose` builds them), and the joints' world rotations
        (F, J, 4) w, x, y, z, each sign agreeing with its parent's.
    """
    f, j = local.shape[:2]
    r = quat_to_matrix(local)
    world = torch.zeros(f, j, 4, 4, dtype=local.dtype)
    quats = torch.zeros(f, j, 4, dtype=local.dtype)
    for i in range(j):
        p = parents[i]
        t = torch.eye(4, dtype=local.dtype).repeat(f, 1, 1)
        t[:, :3, :3] = r[:, i]
        t[:, :3, 3] = rest_joints[i] - rest_joints[p] if p >= 0 else rest_joints[i] + translation
        world[:, i] = world[:, p] @ t if p >= 0 else t
        q = quat_multiply(quats[:, p], local[:, i]) if p >= 0 else local[:, i]
        if p >= 0:
            q = torch.where(((q * quats[:, p]).sum(-1, keepdim=True) < 0), -q, q)
        quats[:, i] = q
    skin = world.clone()
    skin[..., :3, 3] -= (world[..., :3, :3] @ rest_joints[None, :, :, None])[..., 0]
    return skin, quats


def player_pose(data: PlayerData, frames: list[int]) -> tuple[Tensor, Tensor]:
    """The page's Gaussians at key frames: centres (F, N, 3) and rotations (F, N, 4) w, x, y, z,
    in the page's order (``data.order``)."""
    a, meta = data.arrays, data.meta
    m = meta["numExprSplats"]
    local = torch.from_numpy(a["rotations"][frames]).double()[..., [3, 0, 1, 2]]
    trans = torch.from_numpy(a["translation"][frames]).double()
    skin, jq = forward_kinematics(local, torch.from_numpy(a["restJoints"]).double(), meta["parents"], trans)
    c = torch.from_numpy(a["centers"]).double()[None].repeat(len(frames), 1, 1)
    if m:
        e = torch.from_numpy(a["expression"][frames]).double()
        c[:, :m] += torch.einsum("fk,nkd->fnd", e, torch.from_numpy(a["expr"].astype(np.float64)))
    counts = torch.from_numpy(a["influences"].astype(np.int64))
    owner = torch.repeat_interleave(torch.arange(len(counts)), counts)  # the Gaussian of each influence
    joint = torch.from_numpy(a["influenceJoints"].astype(np.int64))
    w = torch.from_numpy(a["influenceWeights"].astype(np.float64))
    w = w / torch.zeros(len(counts), dtype=w.dtype).index_add_(0, owner, w)[owner]
    blend = torch.stack([torch.zeros(len(counts), 4, 4, dtype=w.dtype).index_add_(0, owner, s[joint] * w[:, None, None]) for s in skin])
    q_sum = torch.stack([torch.zeros(len(counts), 4, dtype=w.dtype).index_add_(0, owner, q[joint] * w[:, None]) for q in jq])
    centres = (blend[..., :3, :3] @ c[..., None])[..., 0] + blend[..., :3, 3]
    q_rest = torch.from_numpy(a["quats"].astype(np.float64))[:, [3, 0, 1, 2]]
    q_blend = torch.nn.functional.normalize(q_sum, dim=-1)
    return centres, quat_multiply(q_blend, q_rest[None].expand_as(q_blend))


def _bundle() -> str:
    return resources.files("avatarcli.formats").joinpath("web/player.js").read_text(encoding="utf-8")


def build_html(data: PlayerData, title: str) -> str:
    """The page: the data and the player, inline, with no reference to anything outside it."""
    meta, blob = data.pack()
    js = _bundle()
    if "</script" in js.lower():
        raise ValueError("the player bundle holds '</script' and cannot be inlined")
    meta_json = json.dumps(meta, separators=(",", ":")).replace("</", "<\\/")
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n"
        '<meta name="viewport" content="width=device-width,initial-scale=1">\n'
        f'<meta name="generator" content="avatarcli">\n</head><body>\n'
        f'<script type="application/json" id="avatar-meta">{meta_json}</script>\n'
        f'<script type="application/octet-stream" id="avatar-data">{base64.b64encode(blob).decode("ascii")}</script>\n'
        f"<script>{js}</script>\n</body></html>\n"
    )


def write_html(avatar: Avatar, template: Template, path: str | Path, motion: Motion | None = None) -> None:
    """Write the player page for ``avatar`` driven by ``motion`` to ``path`` atomically."""
    data = player_data(avatar, template, motion)
    title = f"{avatar.meta.get('prompt') or avatar.kind + ' avatar'} - {data.meta['motion']}"
    with atomic_path(path, suffix=".html") as tmp:
        tmp.write_text(build_html(data, title), encoding="utf-8")
