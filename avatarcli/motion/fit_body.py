"""Fitting an SMPL-X-layout body to pose landmarks: root turn and path, joints, hands where seen.

MediaPipe's 33 pose points pair with the template's joints (shoulders, elbows, wrists, hips,
knees, ankles), smplx's extra joints on the surface (nose, eyes, ears, heels, big toes) and
the hands' first knuckles; its 21 points per hand (holistic tracker) with the template's
OpenPose hand keypoints, in the same order. Two kinds of evidence:

* the image points through the camera: where the body is, and how its limbs lie across
  the image;
* MediaPipe's metric 3D points, compared as bone directions (scale free, so a person of any
  size compares with the template): which way the limbs point towards or away from the
  camera, which a single image leaves open.

The spine's three joints share one turn, as do the neck and the head; knees bend about x
only and elbows about y and z, neither backwards; collars and toes stay at rest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from avatarcli.motion.builtin import soft_hands
from avatarcli.motion.fitting import Camera, Fitted, PointModel, fill_missing, fit_device, fitting_on, minimise, robust, roughness
from avatarcli.motion.landmarks import HAND_POINTS, POSE, BodyLandmarks
from avatarcli.motion.motion import Motion, relaxed_body_pose
from avatarcli.rotations import axis_angle_to_matrix
from avatarcli.templates.skeletons import OPENPOSE_HAND_FROM_SMPLX, SMPLX_EXTRA_JOINT_NAMES, SMPLX_JOINT_NAMES
from avatarcli.templates.template import Template

J = {n: i for i, n in enumerate(SMPLX_JOINT_NAMES)}
X = {n: 55 + i for i, n in enumerate(SMPLX_EXTRA_JOINT_NAMES)}
# MediaPipe pose point -> (template point: a joint or one of smplx's extra joints, weight)
PAIRS: tuple[tuple[str, int, float], ...] = (
    ("nose", X["nose"], 0.5), ("left_eye", X["leye"], 0.5), ("right_eye", X["reye"], 0.5),
    ("left_ear", X["lear"], 0.5), ("right_ear", X["rear"], 0.5),
    ("left_shoulder", J["left_shoulder"], 1.0), ("right_shoulder", J["right_shoulder"], 1.0),
    ("left_elbow", J["left_elbow"], 1.0), ("right_elbow", J["right_elbow"], 1.0),
    ("left_wrist", J["left_wrist"], 1.0), ("right_wrist", J["right_wrist"], 1.0),
    ("left_index", J["left_index1"], 0.3), ("right_index", J["right_index1"], 0.3),
    ("left_pinky", J["left_pinky1"], 0.3), ("right_pinky", J["right_pinky1"], 0.3),
    ("left_hip", J["left_hip"], 1.0), ("right_hip", J["right_hip"], 1.0),
    ("left_knee", J["left_knee"], 1.0), ("right_knee", J["right_knee"], 1.0),
    ("left_ankle", J["left_ankle"], 1.0), ("right_ankle", J["right_ankle"], 1.0),
    ("left_heel", X["LHeel"], 0.5), ("right_heel", X["RHeel"], 0.5),
    ("left_foot_index", X["LBigToe"], 0.5), ("right_foot_index", X["RBigToe"], 0.5),
)  # fmt: skip
# bones compared as 3D directions, by MediaPipe names (both ends among PAIRS): the limbs, and
# the hips' line for the body's turn. (MediaPipe's depth of the torso, shoulders, feet and
# head is the least sure: left to the image.)
BONES: tuple[tuple[str, str], ...] = (
    ("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"), ("right_shoulder", "right_elbow"),
    ("right_elbow", "right_wrist"), ("left_hip", "left_knee"), ("left_knee", "left_ankle"), ("right_hip", "right_knee"),
    ("right_knee", "right_ankle"), ("right_hip", "left_hip"),
)  # fmt: skip
NOISE = 0.02  # metres: the image error that costs 1
BONE_WEIGHT = 1.0
STEPS = (80, 320)
OFFSET_PRIOR = 0.3  # per frame, what moving a point's place on the template by NOISE costs
LIMBS = ("hip", "knee", "ankle", "shoulder", "elbow", "wrist")


@dataclass
class BodyTargets:
    """Template points paired with pose (and hand) landmarks.

    Attributes:
        model: poses the points (its vertices, then its joints).
        order: (P + 42,) the model's points in the order of PAIRS, then 21 per hand (left, right).
        index: (P,) MediaPipe pose point of each of the first P points.
        weight: (P,) how much each counts.
        bones: (B, 2) pairs of positions among the first P points.
    """

    model: PointModel
    order: Tensor
    index: Tensor
    weight: Tensor
    bones: Tensor


def body_targets(template: Template) -> BodyTargets:
    """The template's points for the pose landmarks and both hands."""
    wanted = [t for _, t, _ in PAIRS] + list(OPENPOSE_HAND_FROM_SMPLX["left"]) + list(OPENPOSE_HAND_FROM_SMPLX["right"])
    # the model gives its vertices, then its joints: where each wanted point lands
    extra = template.extra_joints_idxs.cpu()
    vertices = [int(extra[t - 55]) for t in wanted if t >= 55]
    joints = [t for t in wanted if t < 55]
    order, v_seen, j_seen = [], 0, 0
    for t in wanted:
        if t >= 55:
            order.append(v_seen)
            v_seen += 1
        else:
            order.append(len(vertices) + j_seen)
            j_seen += 1
    model = PointModel(template, vertices=torch.tensor(vertices), joints=torch.tensor(joints))
    names = [n for n, _, _ in PAIRS]
    bones = torch.tensor([(names.index(a), names.index(b)) for a, b in BONES])
    return BodyTargets(model, torch.tensor(order), torch.tensor([POSE[n] for n in names]), torch.tensor([w for _, _, w in PAIRS]), bones)


@dataclass
class BodyParameters:
    """What the body fit changes, per frame (T, ...)."""

    root: Tensor  # (T, 3)
    trans: Tensor  # (T, 3) metres, world
    spine: Tensor  # (T, 3) shared by spine1-3
    neck: Tensor  # (T, 3) shared by neck and head
    limbs: Tensor  # (T, 2, 6, 3): left/right x hip, knee, ankle, shoulder, elbow, wrist
    fingers: Tensor  # (T, 30, 3)

    def rotations(self, sl: slice | None = None) -> Tensor:
        """SMPL-X rotations (b, 55, 3) of frames ``sl``."""
        s = slice(None) if sl is None else sl
        limbs = self.limbs[s]
        b = limbs.shape[0]
        x = limbs.new_zeros(b, 1)
        # knees bend about x only, elbows about y and z
        knee = torch.cat([limbs[:, :, 1, :1], x[:, None].expand(b, 2, 2)], dim=-1)
        elbow = torch.cat([x[:, None].expand(b, 2, 1), limbs[:, :, 4, 1:]], dim=-1)
        cols: list[Tensor | None] = [None] * 55
        cols[0] = self.root[s]
        for k in ("spine1", "spine2", "spine3"):
            cols[J[k]] = self.spine[s] / 3
        for k in ("neck", "head"):
            cols[J[k]] = self.neck[s] / 2
        for side, i in (("left", 0), ("right", 1)):
            cols[J[f"{side}_hip"]] = limbs[:, i, 0]
            cols[J[f"{side}_knee"]] = knee[:, i]
            cols[J[f"{side}_ankle"]] = limbs[:, i, 2]
            cols[J[f"{side}_shoulder"]] = limbs[:, i, 3]
            cols[J[f"{side}_elbow"]] = elbow[:, i]
            cols[J[f"{side}_wrist"]] = limbs[:, i, 5]
        fingers = self.fingers[s]
        for k in range(30):
            cols[25 + k] = fingers[:, k]
        zero = limbs.new_zeros(b, 3)
        return torch.stack([c if c is not None else zero for c in cols], dim=1)


def _torso_frames(world: Tensor) -> Tensor:
    """The torso's orientation (T, 3, 3) in camera axes from MediaPipe's 3D points (T, 33, 3):
    columns are the subject's left, up and forward."""
    hips = (world[:, POSE["left_hip"]] + world[:, POSE["right_hip"]]) / 2
    shoulders = (world[:, POSE["left_shoulder"]] + world[:, POSE["right_shoulder"]]) / 2
    across = world[:, POSE["left_hip"]] - world[:, POSE["right_hip"]] + world[:, POSE["left_shoulder"]] - world[:, POSE["right_shoulder"]]
    up = shoulders - hips
    across = across / across.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    up = up - (up * across).sum(-1, keepdim=True) * across
    up = up / up.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    forward = torch.cross(across, up, dim=-1)
    return torch.stack([across, up, forward], dim=-1)


def swing(u: Tensor, v: Tensor) -> Tensor:
    """The smallest rotations (T, 3) (axis-angle) turning direction ``u`` (3,) onto directions
    ``v`` (T, 3) (neither need be unit length)."""
    u = u / u.norm().clamp_min(1e-9)
    v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    axis = torch.cross(u.expand_as(v), v, dim=-1)
    sin = axis.norm(dim=-1, keepdim=True)
    angle = torch.atan2(sin, (v * u).sum(-1, keepdim=True))
    return axis / sin.clamp_min(1e-9) * angle


def limbs_from_directions(template_joints: Tensor, root: Tensor, directions: dict[str, Tensor]) -> Tensor:
    """Hips, knees, shoulders and elbows (T, 2, 6, 3) that point the limbs along ``directions``
    (name from the LIMB_CHAINS -> (T, 3) world direction), twisting nothing, with the root
    turned by ``root`` (T, 3) and the spine and collars at rest. Ankles and wrists stay at rest."""
    t = root.shape[0]
    out = torch.zeros(t, 2, 6, 3)
    g_root = axis_angle_to_matrix(root)
    for i, side in enumerate(("left", "right")):
        for first, second, a, b, c in (("hip", "knee", "hip", "knee", "ankle"), ("shoulder", "elbow", "shoulder", "elbow", "wrist")):
            ja, jb, jc = (J[f"{side}_{n}"] for n in (a, b, c))
            r1 = swing(template_joints[jb] - template_joints[ja], (g_root.transpose(1, 2) @ directions[f"{side}_{a}"][..., None])[..., 0])
            g1 = g_root @ axis_angle_to_matrix(r1)
            r2 = swing(template_joints[jc] - template_joints[jb], (g1.transpose(1, 2) @ directions[f"{side}_{b}"][..., None])[..., 0])
            out[:, i, LIMBS.index(first)] = r1
            out[:, i, LIMBS.index(second)] = r2
    return out


def fit_body(
    body: BodyLandmarks,
    template: Template,
    camera: Camera,
    fps: float,
    name: str = "video",
    smoothing: float = 1.0,
    on_step: Callable[[], None] | None = None,
    device: torch.device | str | None = None,
) -> Fitted:
    """A body motion (SMPL-X layout) whose posed template matches ``body`` frame by frame,
    with where the body stood and its shape.

    Args:
        body: the clip's landmarks (every frame found or bridged, see ``check_found``).
        template: the body template to fit through.
        camera: the video's camera.
        fps: the video's frame rate (recorded in the motion; scales the smoothness).
        smoothing: multiplies the temporal smoothness weights.
        on_step: called after each optimisation step (``sum(STEPS)`` in all).
        device: where the optimisation runs (default the CPU, on one thread).
    """
    dev = fit_device(device)
    with fitting_on(dev):
        # the template wherever it lives: the fit reads it on the CPU and moves what it builds to ``dev``
        return _fit(body, template.to("cpu"), camera, fps, name, smoothing, on_step, dev)


def _fit(
    body: BodyLandmarks,
    template: Template,
    camera: Camera,
    fps: float,
    name: str,
    smoothing: float,
    on_step: Callable[[], None] | None,
    device: torch.device,
) -> Fitted:
    tg = body_targets(template)
    t_frames = len(body.found)
    found = torch.from_numpy(body.found)
    idx = tg.index.numpy()
    uv = fill_missing(torch.from_numpy(np.nan_to_num(body.image[:, idx, :2])).float(), found)  # (T, P, 2)
    world = fill_missing(torch.from_numpy(np.nan_to_num(body.world)).float(), found)  # (T, 33, 3)
    vis = fill_missing(torch.from_numpy(body.visibility[:, idx]).float(), found) * found[:, None]  # (T, P)
    hands_uv = torch.from_numpy(np.nan_to_num(body.hands[..., :2])).float()  # (T, 2, 21, 2)
    hands_seen = torch.from_numpy(body.hands_found).float() * found[:, None]  # (T, 2)
    mp_bones = world[:, idx][:, tg.bones[:, 1]] - world[:, idx][:, tg.bones[:, 0]]
    mp_bones = mp_bones / mp_bones.norm(dim=-1, keepdim=True).clamp_min(1e-6)  # (T, B, 3)
    bone_vis = vis[:, tg.bones[:, 0]] * vis[:, tg.bones[:, 1]]
    cam_rot = camera.rotation()
    p = len(tg.index)

    # start: the torso's turn from MediaPipe's 3D points, the place from the image's scale
    with torch.no_grad():
        # upright, turned as MediaPipe's hips and shoulders face (their depth is unsure)
        across = (cam_rot.T @ _torso_frames(world)[..., 0:1])[..., 0]  # the subject's left, in the world
        yaw = torch.atan2(-across[:, 2], across[:, 0])
        root0 = torch.stack([torch.zeros_like(yaw), yaw, torch.zeros_like(yaw)], dim=-1)
        torso = [POSE[n] for n in ("left_shoulder", "right_shoulder", "left_hip", "right_hip", "left_knee", "right_knee")]
        img = torch.from_numpy(np.nan_to_num(body.image[:, torso, :2])).float()
        wxy = world[:, torso, :2]
        per_metre = (img - img.mean(1, keepdim=True)).norm(dim=-1).sum(1) / (wxy - wxy.mean(1, keepdim=True)).norm(dim=-1).sum(1).clamp_min(
            1e-6
        )
        per_metre = fill_missing(per_metre, found)
        hip_px = fill_missing(img[:, 2:4].mean(1), found)
        pelvis = tg.model.j_template[0]
        trans0 = camera.ray(hip_px, camera.focal / per_metre) @ cam_rot - pelvis

        # the limbs pointing as MediaPipe's 3D points say (a start the image then corrects)
        w_idx = {n: POSE[n] for n in POSE}
        directions = {}
        for side in ("left", "right"):
            for a, b in (("hip", "knee"), ("knee", "ankle"), ("shoulder", "elbow"), ("elbow", "wrist")):
                d = world[:, w_idx[f"{side}_{b}"]] - world[:, w_idx[f"{side}_{a}"]]
                directions[f"{side}_{a}"] = d @ cam_rot  # camera axes to the world's
        limbs0 = limbs_from_directions(tg.model.j_template, root0, directions)
        limbs0[:, :, 1, 1:] = 0.0  # knees bend about x only
        limbs0[:, :, 4, 0] = 0.0  # elbows do not twist

    relaxed = relaxed_body_pose(1)
    soft_hands(relaxed)
    finger_rest = relaxed[0, 25:55]
    tg.model.to(device)
    tg = BodyTargets(tg.model, tg.order.to(device), tg.index, tg.weight.to(device), tg.bones.to(device))
    uv, vis, hands_uv, hands_seen = uv.to(device), vis.to(device), hands_uv.to(device), hands_seen.to(device)
    mp_bones, bone_vis, per_metre, cam_rot = mp_bones.to(device), bone_vis.to(device), per_metre.to(device), cam_rot.to(device)
    finger_rest = finger_rest.to(device)
    par = BodyParameters(
        root0.clone(), trans0.clone(), torch.zeros(t_frames, 3), torch.zeros(t_frames, 3), limbs0.clone(),
        finger_rest[None].repeat(t_frames, 1, 1).cpu(),
    )  # fmt: skip
    for k, v in vars(par).items():
        setattr(par, k, v.to(device).requires_grad_(True))
    betas = torch.zeros(tg.model.num_betas, device=device, requires_grad=True)
    offsets = torch.zeros(len(tg.order), 3, device=device, requires_grad=True)
    e = template.num_expression
    side_sign = torch.tensor([1.0, -1.0], device=device)  # left elbows bend towards -y, right towards +y: the other way costs

    def data(sl: slice) -> Tensor:
        rot = par.rotations(sl)
        b = rot.shape[0]
        pts = tg.model(rot, rot.new_zeros(b, e), par.trans[sl], betas, offsets)[:, tg.order]
        cam = pts @ cam_rot.T
        px = camera.project(cam)
        scale = per_metre[sl, None]
        r = (px[:, :p] - uv[sl]) / scale[..., None]
        cost = (tg.weight * vis[sl] * robust(r.pow(2).sum(-1), 3 * NOISE)).sum(-1) / NOISE**2
        hands = px[:, p:].reshape(b, 2, HAND_POINTS, 2)
        rh = (hands - hands_uv[sl]) / scale[..., None, None]
        cost = cost + (hands_seen[sl] * robust(rh.pow(2).sum(-1), 0.5 * NOISE).sum(-1)).sum(-1) / (0.25 * NOISE) ** 2 * 0.2
        bones = cam[:, :p][:, tg.bones[:, 1]] - cam[:, :p][:, tg.bones[:, 0]]
        bones = bones / bones.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        cost = cost + BONE_WEIGHT * (bone_vis[sl] * (bones - mp_bones[sl]).pow(2).sum(-1)).sum(-1)
        limbs = par.limbs[sl]
        prior = (
            0.1 * limbs.pow(2).sum((1, 2, 3))
            + 1.0 * (limbs[:, :, 2].pow(2).sum((1, 2)) + limbs[:, :, 5].pow(2).sum((1, 2)))
            + 100.0 * torch.relu(-limbs[:, :, 1, 0]).pow(2).sum(-1)
            + 100.0 * torch.relu(side_sign * limbs[:, :, 4, 1]).pow(2).sum(-1)
            + 0.5 * (par.spine[sl].pow(2).sum(-1) + par.neck[sl].pow(2).sum(-1))
            + 1.0 * (par.fingers[sl] - finger_rest).pow(2).sum((1, 2))
        )
        return cost.sum() + prior.sum()

    def whole(full: bool) -> Callable[[], Tensor]:
        def terms() -> Tensor:
            smooth = 3e3 * roughness(par.root, fps) + 1e5 * roughness(par.trans, fps)
            if full:
                smooth = smooth + 3e2 * (roughness(par.spine, fps) + roughness(par.neck, fps) + roughness(par.limbs, fps))
                smooth = smooth + 30.0 * roughness(par.fingers, fps)
            return smoothing * smooth + t_frames * (1.0 * betas.pow(2).sum() + OFFSET_PRIOR * offsets.pow(2).sum() / NOISE**2)

        return terms

    minimise([([par.root], 0.02), ([par.trans], 0.01)], t_frames, data, whole(False), STEPS[0], on_step)
    groups = [([par.root], 0.01), ([par.trans], 0.005), ([par.spine, par.neck, par.limbs], 0.02), ([par.fingers], 0.02), ([betas], 0.02),
              ([offsets], 0.002)]  # fmt: skip
    minimise(groups, t_frames, data, whole(True), STEPS[1], on_step)
    with torch.no_grad():
        rot = par.rotations().cpu()
        translation = (par.trans - par.trans[:1]).cpu()
    motion = Motion("body", rot, torch.zeros(t_frames, 0), translation, float(fps), f"{name} (tracked)")
    return Fitted(motion, par.trans[0].detach().cpu(), betas.detach().cpu())
