"""How close a tracked motion is to the motion that made the video.

Videos rendered from a known motion (``avatar animate``) and tracked back (``avatar track``)
are compared frame by frame, after the known motion is resampled to the video's rate:

* heads: the neck's turn (degrees, geodesic), the jaw's opening (degrees), the gaze
  (degrees), and the face's landmarks after re-posing: the template posed with the true head
  turn and, once, the tracked jaw, gaze and expression, once the true ones; the iBUG-68
  landmarks' distance (millimetres) is the expression error, whatever coefficients made it.
* bodies: each limb's direction in the world (upper arms, forearms, thighs, shins; degrees),
  elbow and knee bend (degrees), the root's turn (degrees) and the root's path (metres, both
  paths starting at the origin).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from avatarcli.motion.motion import Motion, resample, to_template_poses
from avatarcli.rotations import axis_angle_to_matrix
from avatarcli.templates.skeletons import SMPLX_JOINT_NAMES
from avatarcli.templates.template import Pose, Template

_J = {n: i for i, n in enumerate(SMPLX_JOINT_NAMES)}
LIMBS = {
    "left_upper_arm": ("left_shoulder", "left_elbow"), "left_forearm": ("left_elbow", "left_wrist"),
    "right_upper_arm": ("right_shoulder", "right_elbow"), "right_forearm": ("right_elbow", "right_wrist"),
    "left_thigh": ("left_hip", "left_knee"), "left_shin": ("left_knee", "left_ankle"),
    "right_thigh": ("right_hip", "right_knee"), "right_shin": ("right_knee", "right_ankle"),
}  # fmt: skip
BENDS = {"left_elbow": ("left_upper_arm", "left_forearm"), "right_elbow": ("right_upper_arm", "right_forearm"),
         "left_knee": ("left_thigh", "left_shin"), "right_knee": ("right_thigh", "right_shin")}  # fmt: skip


def rotation_degrees(a: Tensor, b: Tensor) -> Tensor:
    """Geodesic angle (...) in degrees between axis-angle rotations ``a`` and ``b`` (..., 3)."""
    r = axis_angle_to_matrix(a.double()).transpose(-1, -2) @ axis_angle_to_matrix(b.double())
    cos = ((r.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0) / 2.0).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.arccos(cos)).float()


def _aligned(tracked: Motion, truth: Motion) -> tuple[Motion, Motion, int]:
    """Both motions at the tracked one's rate, cut to the frames both have."""
    true = resample(truth, tracked.fps)
    n = min(len(tracked), len(true))
    return tracked, true, n


@dataclass
class HeadAccuracy:
    """Per-frame errors (T,) of a tracked head motion, and summaries.

    Attributes:
        neck: neck turn error, degrees.
        jaw: jaw opening error, degrees (signed: tracked minus true).
        gaze: gaze error, degrees.
        expression: mean iBUG-68 landmark distance after re-posing, millimetres.
        still_face: the same for a motion with the true head turn but no jaw, gaze or
            expression (what tracking nothing of the face would score).
        jaw_true: the true jaw opening, degrees.
    """

    neck: Tensor
    jaw: Tensor
    gaze: Tensor
    expression: Tensor
    still_face: Tensor
    jaw_true: Tensor

    def summary(self) -> dict[str, float]:
        jaw_fit = self.jaw + self.jaw_true
        corr = float(torch.corrcoef(torch.stack([jaw_fit, self.jaw_true]))[0, 1]) if self.jaw_true.std() > 1e-6 else float("nan")
        return {
            "neck_deg_mean": float(self.neck.mean()), "neck_deg_p95": float(self.neck.quantile(0.95)),
            "jaw_deg_mean": float(self.jaw.abs().mean()), "jaw_deg_max": float(self.jaw.abs().max()),
            "jaw_true_deg_max": float(self.jaw_true.max()), "jaw_correlation": corr,
            "gaze_deg_mean": float(self.gaze.mean()),
            "expression_mm_mean": float(self.expression.mean()), "expression_mm_p95": float(self.expression.quantile(0.95)),
            "still_face_mm_mean": float(self.still_face.mean()),
        }  # fmt: skip


def head_accuracy(tracked: Motion, truth: Motion, template: Template) -> HeadAccuracy:
    """Compare a tracked head motion with the true one on ``template`` (a head template)."""
    fit, true, n = _aligned(tracked, truth)
    pf, _ = to_template_poses(fit, template)
    pt, _ = to_template_poses(true, template)
    rf, rt = pf.rotations[:n].cpu(), pt.rotations[:n].cpu()
    ef, et = pf.expression[:n].cpu(), pt.expression[:n].cpu()
    neck = rotation_degrees(rf[:, 1], rt[:, 1])
    jaw = torch.rad2deg(rf[:, 2, 0] - rt[:, 2, 0])
    gaze = rotation_degrees(rf[:, 3], rt[:, 3])

    def landmarks(jaw_eyes: Tensor, expression: Tensor) -> Tensor:
        rot = rt.clone()
        rot[:, 2:] = jaw_eyes
        with torch.no_grad():
            return template.landmarks68(template.pose(Pose(rot, expression, torch.zeros(n, 3)).to(template.device))).cpu()

    true_lm = landmarks(rt[:, 2:], et)
    expression = (landmarks(rf[:, 2:], ef) - true_lm).norm(dim=-1).mean(-1) * 1000
    still = (landmarks(torch.zeros_like(rt[:, 2:]), torch.zeros_like(et)) - true_lm).norm(dim=-1).mean(-1) * 1000
    return HeadAccuracy(neck, jaw, gaze, expression, still, torch.rad2deg(rt[:, 2, 0]))


@dataclass
class BodyAccuracy:
    """Per-frame errors of a tracked body motion, and summaries.

    Attributes:
        limbs: (T, 8) limb direction errors in the world, degrees (order of LIMBS).
        bends: (T, 4) elbow and knee bend errors, degrees (order of BENDS).
        root: (T,) root turn error, degrees.
        path: (T,) distance between the root paths, metres.
        path_length: metres the true root travels.
    """

    limbs: Tensor
    bends: Tensor
    root: Tensor
    path: Tensor
    path_length: float

    def summary(self) -> dict[str, float]:
        out = {
            "limb_deg_mean": float(self.limbs.mean()), "limb_deg_p95": float(self.limbs.flatten().quantile(0.95)),
            "bend_deg_mean": float(self.bends.mean()), "root_deg_mean": float(self.root.mean()),
            "path_m_mean": float(self.path.mean()), "path_m_max": float(self.path.max()), "path_length_m": self.path_length,
        }  # fmt: skip
        out.update({f"{name}_deg": float(self.limbs[:, i].mean()) for i, name in enumerate(LIMBS)})
        out.update({f"{name}_bend_deg": float(self.bends[:, i].mean()) for i, name in enumerate(BENDS)})
        return out


def body_accuracy(tracked: Motion, truth: Motion, template: Template) -> BodyAccuracy:
    """Compare a tracked body motion with the true one on ``template`` (a body template)."""
    fit, true, n = _aligned(tracked, truth)

    def directions(m: Motion) -> tuple[Tensor, Tensor]:
        pose, _ = to_template_poses(m, template)
        pose = pose.index(slice(0, n))
        pose.translation = torch.zeros_like(pose.translation)
        with torch.no_grad():
            joints = template.pose(pose).joints.cpu()
        d = torch.stack([joints[:, _J[b]] - joints[:, _J[a]] for a, b in LIMBS.values()], dim=1)
        return d / d.norm(dim=-1, keepdim=True).clamp_min(1e-9), pose.rotations[:, 0].cpu()

    df, rootf = directions(fit)
    dt, roott = directions(true)
    limbs = torch.rad2deg(torch.arccos((df * dt).sum(-1).clamp(-1.0, 1.0)))
    names = list(LIMBS)

    def bend(d: Tensor) -> Tensor:
        return torch.stack([torch.arccos((d[:, names.index(a)] * d[:, names.index(b)]).sum(-1).clamp(-1, 1)) for a, b in BENDS.values()], 1)

    bends = torch.rad2deg((bend(df) - bend(dt)).abs())
    path_f = fit.translation[:n] - fit.translation[:1]
    path_t = true.translation[:n] - true.translation[:1]
    length = float((path_t[1:] - path_t[:-1]).norm(dim=-1).sum()) if n > 1 else 0.0
    return BodyAccuracy(limbs, bends, rotation_degrees(rootf, roott), (path_f - path_t).norm(dim=-1), length)
