"""Fitting a FLAME-layout head to face-mesh landmarks: turn, place, jaw, gaze, expression.

The template's points and MediaPipe's are paired explicitly: the built-in templates' face
contours (embedded MediaPipe-style) index by index with :data:`landmarks.FACE_CONTOURS`,
other templates' iBUG-68 points with :data:`landmarks.IBUG68`; the nose (iBUG 27-35) and the
irises always. Points on a contour count their error across the contour fully and along it
a quarter (two drawings of one outline rarely space their points alike).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from avatarcli.motion.fitting import (
    Camera,
    Fitted,
    PointModel,
    fill_missing,
    fit_device,
    fitting_on,
    minimise,
    robust,
    roughness,
    similarity,
)
from avatarcli.motion.landmarks import FACE_CONTOURS, IBUG68, IRISES, FaceLandmarks
from avatarcli.motion.motion import Motion
from avatarcli.rotations import matrix_to_axis_angle
from avatarcli.templates.template import IBUG_GROUPS, Template

# how much each group's points count
WEIGHTS = {
    "face_oval": 0.3, "left_eye": 1.0, "right_eye": 1.0, "left_brow_upper": 0.5, "left_brow_lower": 0.5,
    "right_brow_upper": 0.5, "right_brow_lower": 0.5, "lips_outer": 1.0, "lips_inner": 1.0, "nose": 1.0, "irises": 1.0,
}  # fmt: skip
ALONG = 0.25  # weight of the error along a contour relative to across it
NOISE = 0.001  # metres: the landmark error that costs 1
STEPS = (60, 240)  # Adam steps: the head alone, then everything
OFFSET_PRIOR = 10.0  # how much a millimetre of moving a template point's embedding costs, per frame


@dataclass
class HeadTargets:
    """Template points paired with face-mesh landmarks.

    Attributes:
        model: poses the L points (surface points, then the two irises).
        index: (L,) MediaPipe landmark per point.
        weight: (L,) how much each counts.
        before, after: (L,) the neighbouring points on the same contour (itself at an open
            end; both itself for points on no contour).
    """

    model: PointModel
    index: Tensor
    weight: Tensor
    before: Tensor
    after: Tensor


CLOSED = {"face_oval", "left_eye", "right_eye", "lips_outer", "lips_inner"}


def _neighbours(n: int, closed: bool) -> tuple[Tensor, Tensor]:
    """Each of ``n`` points' neighbours along a contour (itself at an open end)."""
    k = torch.arange(n)
    if closed:
        return (k - 1) % n, (k + 1) % n
    return (k - 1).clamp(min=0), (k + 1).clamp(max=n - 1)


def head_targets(template: Template) -> HeadTargets:
    """The pairs for ``template``: its face contours if they are MediaPipe-style groups (the
    built-in heads and bodies), otherwise its iBUG-68 points; with the nose, then the irises."""
    eyes = torch.tensor([template.joint_names.index(n) for n in ("left_eye", "right_eye")])
    groups = template.face_embedding()
    mediapipe_style = all(len(f) == len(FACE_CONTOURS.get(name, ())) for name, _, f, _ in groups)
    lm_faces, lm_bary = template.landmarks68_embedding()
    if mediapipe_style:
        chosen = [(name, c, f, b, torch.tensor(FACE_CONTOURS[name])) for name, c, f, b in groups]
    else:
        ibug = torch.tensor(IBUG68)
        chosen = [(name, c, lm_faces[s:e], lm_bary[s:e], ibug[s:e]) for name, c, (s, e) in IBUG_GROUPS]
    nose = slice(27, 36)
    chosen.append(("nose", False, lm_faces[nose], lm_bary[nose], torch.tensor(IBUG68[nose])))
    parts: dict[str, list[Tensor]] = {"faces": [], "bary": [], "index": [], "weight": [], "before": [], "after": []}
    start = 0
    for name, closed, f, b, idx in chosen:
        prev, nxt = _neighbours(len(f), closed) if name != "nose" else (torch.arange(len(f)), torch.arange(len(f)))
        for key, value in (("faces", f), ("bary", b), ("index", idx), ("weight", torch.full((len(f),), WEIGHTS.get(name, 1.0))),
                           ("before", prev + start), ("after", nxt + start)):  # fmt: skip
            parts[key].append(value)
        start += len(f)
    faces, bary, index, weight, before, after = (torch.cat(parts[k]) for k in ("faces", "bary", "index", "weight", "before", "after"))
    n = start
    k = torch.arange(n, n + 2)
    model = PointModel(template, faces, bary, eyes=eyes)
    return HeadTargets(
        model, torch.cat([index, torch.tensor(IRISES)]), torch.cat([weight, torch.full((2,), WEIGHTS["irises"])]),
        torch.cat([before, k]), torch.cat([after, k]),
    )  # fmt: skip


def _rotations(head: Tensor, jaw: Tensor, gaze: Tensor) -> Tensor:
    """FLAME rotations (B, 5, 3): global still, neck ``head`` (B, 3), jaw opening ``jaw`` (B, 1)
    about x, both eyes turned by ``gaze`` (B, 2) about x and y."""
    z = torch.zeros_like(jaw)
    eye = torch.cat([gaze, z], dim=1)
    return torch.stack([torch.zeros_like(head), head, torch.cat([jaw, z, z], dim=1), eye, eye], dim=1)


def fit_head(
    face: FaceLandmarks,
    template: Template,
    camera: Camera,
    fps: float,
    name: str = "video",
    smoothing: float = 1.0,
    on_step: Callable[[], None] | None = None,
    device: torch.device | str | None = None,
) -> Fitted:
    """A head motion (FLAME layout) whose posed template matches ``face`` frame by frame,
    with where the head stood and its shape.

    Args:
        face: the clip's landmarks (every frame found or bridged, see ``check_found``).
        template: the head template to fit through.
        camera: the video's camera.
        fps: the video's frame rate (recorded in the motion; scales the smoothness).
        smoothing: multiplies the temporal smoothness weights.
        on_step: called after each optimisation step (``sum(STEPS)`` in all).
        device: where the optimisation runs (default the CPU, on one thread; a GPU pays
            for clips of thousands of frames).
    """
    dev = fit_device(device)
    with fitting_on(dev):
        # the template wherever it lives: the fit reads it on the CPU and moves what it builds to ``dev``
        return _fit(face, template.to("cpu"), camera, fps, name, smoothing, on_step, dev)


def _fit(
    face: FaceLandmarks,
    template: Template,
    camera: Camera,
    fps: float,
    name: str,
    smoothing: float,
    on_step: Callable[[], None] | None,
    device: torch.device,
) -> Fitted:
    tg = head_targets(template)
    t_frames = len(face.found)
    found = torch.from_numpy(face.found)
    obs = torch.from_numpy(np.nan_to_num(face.points[:, tg.index.numpy()])).float()  # (T, L, 3)
    obs = fill_missing(obs, found)
    uv = obs[..., :2]
    along = uv[:, tg.after] - uv[:, tg.before]
    along = along / along.norm(dim=-1, keepdim=True).clamp_min(1e-6)  # (T, L, 2) unit, zero off contours
    e = template.num_expression
    cam_rot = camera.rotation()

    # start: a similarity per frame between the rest points and MediaPipe's 3D points
    with torch.no_grad():
        rest = tg.model(template.zero_pose(1).rotations, torch.zeros(1, e), torch.zeros(1, 3), torch.zeros(tg.model.num_betas))[0]
        neck = tg.model.j_template[1]
        rot_c, scale, _ = similarity(rest, obs, tg.weight)
        head0 = matrix_to_axis_angle(cam_rot.T @ rot_c)
        w = (tg.weight / tg.weight.sum())[None, :, None]
        centroid_rest = (rest[None] * w).sum(1)[0]
        centroid_uv = (uv * w).sum(1)
        per_metre = scale  # pixels per metre at the face
        centre_cam = camera.ray(centroid_uv, camera.focal / per_metre)
        rot_h = cam_rot.T @ rot_c
        trans0 = centre_cam @ cam_rot - ((rot_h @ (centroid_rest - neck)[:, None])[..., 0] + neck)
        per_metre = fill_missing(per_metre, found)

    tg.model.to(device)
    uv, along, per_metre, cam_rot = uv.to(device), along.to(device), per_metre.to(device), cam_rot.to(device)
    head = head0.to(device).requires_grad_(True)
    trans = trans0.to(device).requires_grad_(True)
    jaw = torch.zeros(t_frames, 1, device=device, requires_grad=True)
    gaze = torch.zeros(t_frames, 2, device=device, requires_grad=True)
    expr = torch.zeros(t_frames, e, device=device, requires_grad=True)
    betas = torch.zeros(tg.model.num_betas, device=device, requires_grad=True)
    offsets = torch.zeros(tg.model.sizes[0], 3, device=device, requires_grad=True)
    weight = tg.weight[None].to(device)
    present = found.float().to(device)

    def data(sl: slice) -> Tensor:
        pts = tg.model(_rotations(head[sl], jaw[sl], gaze[sl]), expr[sl], trans[sl], betas, offsets)
        px = camera.project(pts @ cam_rot.T)
        r = (px - uv[sl]) / per_metre[sl, None, None]  # metres at the face
        a = (r * along[sl]).sum(-1)
        sq = r.pow(2).sum(-1) - (1.0 - ALONG) * a.pow(2)
        cost = (weight * robust(sq, 3 * NOISE)).sum(-1) / NOISE**2
        prior = 0.3 * expr[sl].pow(2).sum(-1) + 30.0 * torch.relu(-jaw[sl]).pow(2).sum(-1) + 3.0 * gaze[sl].pow(2).sum(-1)
        return (cost * present[sl]).sum() + prior.sum()

    def whole(full: bool) -> Callable[[], Tensor]:
        def terms() -> Tensor:
            k = smoothing
            smooth = 3e3 * roughness(head, fps) + 1e6 * roughness(trans, fps)
            if full:
                smooth = smooth + 30.0 * roughness(jaw, fps) + 10.0 * roughness(expr, fps) + 100.0 * roughness(gaze, fps)
            return k * smooth + t_frames * (0.1 * betas.pow(2).sum() + OFFSET_PRIOR * offsets.pow(2).sum() / NOISE**2)

        return terms

    minimise([([head], 0.02), ([trans], 0.005)], t_frames, data, whole(False), STEPS[0], on_step)
    groups = [([head], 0.01), ([trans], 0.003), ([jaw, gaze], 0.01), ([expr], 0.03), ([betas], 0.03), ([offsets], 3e-4)]
    minimise(groups, t_frames, data, whole(True), STEPS[1], on_step)
    with torch.no_grad():
        rot = _rotations(head, jaw, gaze).cpu()
        translation = (trans - trans[:1]).cpu()
    motion = Motion("head", rot, expr.detach().cpu(), translation, float(fps), f"{name} (tracked)")
    return Fitted(motion, trans[0].detach().cpu(), betas.detach().cpu())
