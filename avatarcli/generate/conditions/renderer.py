"""ControlNet condition images drawn from the posed template.

* Bodies: the OpenPose-18 skeleton (COCO order, the standard ControlNet colours, limbs at 60 %
  opacity) and both hands (21 points each, rainbow edges, blue points), for
  ``lllyasviel/control_v11p_sd15_openpose``.
* Heads: the MediaPipe face-mesh contours (face oval, brows, eyes, lips) and pupils in the
  colours ``CrucibleAI/ControlNetMediaPipeFace`` was trained with.

Body keypoints the camera cannot see (behind the body, another limb in front) are not drawn;
face-mesh contours are drawn whole from the front and only the face oval from behind
(:meth:`ConditionRenderer._face_mesh` says why). Widths are the annotators' pixel widths at 512 px, scaled with the image.
"""

from __future__ import annotations

import colorsys
import functools
from functools import cached_property

import torch
from torch import Tensor

from avatarcli.generate.conditions import draw
from avatarcli.generate.conditions.visibility import visible
from avatarcli.render.cameras import Cameras
from avatarcli.templates.template import Posed, Template

# OpenPose-18: limbs as keypoint pairs and one colour per limb / keypoint
OPENPOSE_LIMBS = (
    (1, 2),
    (1, 5),
    (2, 3),
    (3, 4),
    (5, 6),
    (6, 7),
    (1, 8),
    (8, 9),
    (9, 10),
    (1, 11),
    (11, 12),
    (12, 13),
    (1, 0),
    (0, 14),
    (14, 16),
    (0, 15),
    (15, 17),
)
OPENPOSE_COLORS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0), (0, 255, 85),
    (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255),
    (255, 0, 170), (255, 0, 85),
)  # fmt: skip
HAND_EDGES = tuple((0, 4 * f + 1) if k == 0 else (4 * f + k, 4 * f + k + 1) for f in range(5) for k in range(4))
HAND_POINT_COLOR = (0, 0, 255)
# Sizes in pixels at 512 x 512, as the OpenPose ControlNet's annotator draws them
# (lllyasviel/ControlNet-v1-1-nightly annotator/openpose/util.py): limbs as ellipses of
# half-width ``stickwidth`` 4 and joints as discs of radius 4 (draw_bodypose); hand edges as
# lines 2 px thick and hand keypoints as discs of radius 4 (draw_handpose). DreamWaltz-G draws
# the same sizes (core/human/open_pose.py, adaptive_draw_poses).
LIMB_HALF_WIDTH = 4.0
JOINT_RADIUS = 4.0
HAND_EDGE_HALF_WIDTH = 1.0
HAND_POINT_RADIUS = 4.0
# MediaPipe face mesh, RGB
FACE_COLORS = {
    "face_oval": (10, 200, 10),
    "lips": (10, 180, 10),
    "left_eye": (10, 200, 180),
    "left_brow": (10, 220, 180),
    "left_iris": (10, 200, 250),
    "right_eye": (180, 200, 10),
    "right_brow": (180, 220, 10),
    "right_iris": (250, 200, 10),
}


def _constant(values: tuple, device: torch.device, dtype: torch.dtype) -> Tensor:
    """A small constant table on ``device``, made once (each copy to a GPU stalls it); in
    compiled code, a constant of the compiled graph."""
    if torch.compiler.is_compiling():
        return torch.tensor(values, dtype=dtype, device=device)
    return _cached_constant(values, device, dtype)


@functools.lru_cache(maxsize=64)
def _cached_constant(values: tuple, device: torch.device, dtype: torch.dtype) -> Tensor:
    return torch.tensor(values, dtype=dtype, device=device)


def _rgb(values: tuple[tuple[int, int, int], ...] | list[tuple[int, int, int]], device: torch.device) -> Tensor:
    return _constant(tuple(values), device, torch.float32) / 255.0


def _index(values: tuple[int, ...] | list[int], device: torch.device) -> Tensor:
    return _constant(tuple(values), device, torch.long)


def hand_edge_colors() -> list[tuple[int, int, int]]:
    out = []
    for i in range(len(HAND_EDGES)):
        r, g, b = colorsys.hsv_to_rgb(i / len(HAND_EDGES), 1.0, 1.0)
        out.append((int(r * 255), int(g * 255), int(b * 255)))
    return out


def openpose_image(body: Tensor, body_vis: Tensor, hands: Tensor | None, hands_vis: Tensor | None, height: int, width: int) -> Tensor:
    """Draw OpenPose skeletons.

    Args:
        body: (B, 18, 2) pixel coordinates; body_vis: (B, 18) bool.
        hands: (B, 2, 21, 2) or None; hands_vis: (B, 2, 21).

    Returns:
        (B, H, W, 3) images in [0, 1] on black.
    """
    dev = body.device
    scale = min(height, width) / 512.0
    pix = draw.pixel_grid(height, width, dev)
    canvas = torch.zeros(body.shape[0], height, width, 3, device=dev)
    a = _index([i for i, _ in OPENPOSE_LIMBS], dev)
    b = _index([j for _, j in OPENPOSE_LIMBS], dev)
    limb_vis = body_vis[:, a] & body_vis[:, b]
    cover = draw.stroke(pix, body[:, a], body[:, b], LIMB_HALF_WIDTH * scale, limb_vis)
    canvas = draw.paint_layer(canvas, cover, _rgb(OPENPOSE_COLORS[: len(OPENPOSE_LIMBS)], dev), opacity=0.6)
    canvas = draw.paint_layer(canvas, draw.discs(pix, body, JOINT_RADIUS * scale, body_vis), _rgb(OPENPOSE_COLORS, dev))
    if hands is not None and hands_vis is not None:
        ea = _index([i for i, _ in HAND_EDGES], dev)
        eb = _index([j for _, j in HAND_EDGES], dev)
        bsz, nh = hands.shape[:2]
        pts, vis = hands.reshape(bsz * nh, 21, 2), hands_vis.reshape(bsz * nh, 21)
        edges = draw.stroke(pix, pts[:, ea], pts[:, eb], HAND_EDGE_HALF_WIDTH * scale, vis[:, ea] & vis[:, eb])
        edges = edges.reshape(bsz, nh * len(HAND_EDGES), height, width)
        canvas = draw.paint_layer(canvas, edges, _rgb(hand_edge_colors() * nh, dev))
        dots = draw.discs(pix, pts, HAND_POINT_RADIUS * scale, vis).reshape(bsz, nh * 21, height, width).amax(1, keepdim=True)
        canvas = draw.paint_layer(canvas, dots, _rgb([HAND_POINT_COLOR], dev))
    return canvas


def _face_group_color(name: str) -> str:
    if name.startswith("lips"):
        return "lips"
    if name.endswith("_brow_upper") or name.endswith("_brow_lower"):
        return name.rsplit("_", 1)[0]
    return name


def facemesh_image(contours: list[tuple[str, bool, Tensor, Tensor]], irises: Tensor, irises_vis: Tensor, height: int, width: int) -> Tensor:
    """Draw face-mesh contours and pupils.

    Args:
        contours: (name, closed, points (B, n, 2), visible (B, n)) per group.
        irises: (B, 2, 2) pupil centres, left then right; irises_vis: (B, 2).

    Returns:
        (B, H, W, 3) images in [0, 1] on black.
    """
    dev = irises.device
    scale = min(height, width) / 512.0
    pix = draw.pixel_grid(height, width, dev)
    canvas = torch.zeros(irises.shape[0], height, width, 3, device=dev)
    starts, ends, visible, colors = [], [], [], []
    for name, closed, pts, vis in contours:
        nxt = torch.roll(torch.arange(pts.shape[1], device=dev), -1)
        if not closed:
            nxt = nxt[:-1]
        cur = torch.arange(len(nxt), device=dev)
        starts.append(pts[:, cur])
        ends.append(pts[:, nxt])
        visible.append(vis[:, cur] & vis[:, nxt])
        colors += [FACE_COLORS[_face_group_color(name)]] * len(cur)
    if starts:
        cover = draw.stroke(pix, torch.cat(starts, 1), torch.cat(ends, 1), 1.0 * scale, torch.cat(visible, 1))
        canvas = draw.paint_layer(canvas, cover, _rgb(colors, dev))
    iris_colors = _rgb([FACE_COLORS["left_iris"], FACE_COLORS["right_iris"]], dev)
    canvas = draw.paint_layer(canvas, draw.squares(pix, irises, 2.0 * scale, irises_vis), iris_colors)
    return canvas


class ConditionRenderer:
    """Condition images for one template: OpenPose for bodies, face mesh for heads.

    Args:
        template: the template whose posed keypoints are drawn.
        compile: run the ray tests and the drawing through ``torch.compile``. Drawn eagerly,
            every shape's distance field is a full-size image per operation; compiled, each
            step of the drawing is one fused kernel (bench/RESULTS.md: 22 -> 3 ms for 8 views
            at 512x512 on an H200). Costs a compilation the first time.
    """

    def __init__(self, template: Template, compile: bool = False) -> None:
        self.template = template
        wrap = (lambda f: torch.compile(f, dynamic=False)) if compile else (lambda f: f)
        self._visible = wrap(visible)
        self._openpose = wrap(openpose_image)
        self._facemesh = wrap(facemesh_image)

    @cached_property
    def _joint_reach(self) -> Tensor:
        """Per OpenPose keypoint (18 + 42): how deep under the skin it sits, plus a margin."""
        tpl = self.template
        posed = tpl.pose(tpl.zero_pose(1))
        pts = torch.cat([tpl.openpose18(posed), tpl.hand_keypoints(posed).reshape(1, 42, 3)], dim=1)[0]
        depth = torch.cdist(pts, posed.vertices[0]).min(dim=1).values
        return 1.5 * depth + 0.01

    def __call__(self, posed: Posed, cameras: Cameras) -> Tensor:
        """Condition images (B, H, W, 3) for B posed templates seen by B cameras."""
        tpl = self.template
        centers = cameras.centers
        h, w = cameras.height, cameras.width
        if tpl.kind == "body":
            pts3 = torch.cat([tpl.openpose18(posed), tpl.hand_keypoints(posed).reshape(posed.vertices.shape[0], 42, 3)], dim=1)
            vis = self._visible(centers, pts3, self._joint_reach, posed.vertices, tpl.faces)
            px, depth = cameras.project(pts3)
            vis = vis & (depth > 0)
            b = pts3.shape[0]
            return self._openpose(px[:, :18], vis[:, :18], px[:, 18:].reshape(b, 2, 21, 2), vis[:, 18:].reshape(b, 2, 21), h, w)
        return self._face_mesh(posed, cameras)

    @cached_property
    def _face_joint(self) -> int:
        """The joint that carries the face: the one the face-oval triangles are skinned to most."""
        tpl = self.template
        posed = tpl.pose(tpl.zero_pose(1))
        _, _, oval = tpl.face_contours(posed)[0]
        near = torch.cdist(oval[0], posed.vertices[0]).argmin(dim=1)
        return int(tpl.weights[near].sum(0).argmax())

    def _face_mesh(self, posed: Posed, cameras: Cameras) -> Tensor:
        """MediaPipe face-mesh maps for B posed heads seen by B cameras.

        No landmark is culled as self-occluded. MediaPipe's face mesh returns every landmark
        of a face it detects, hidden ones included (the far cheek's oval in a three-quarter
        view, an eye behind the nose), and ``CrucibleAI/ControlNetMediaPipeFace``'s training
        annotations draw all of them: a map with the oval broken at the cheeks is one the
        ControlNet never saw. So a view within 90 degrees of the face draws every contour
        and both pupils whole; from behind, where MediaPipe finds no face, only the face oval
        is drawn (the rule of the public head recipe).
        """
        tpl = self.template
        h, w = cameras.height, cameras.width
        groups = tpl.face_contours(posed)
        pts3 = torch.cat([g[2] for g in groups], dim=1)
        facing = posed.transforms[:, self._face_joint, :3, 2]  # the face looks along the joint's +z at rest
        to_cam = cameras.centers - pts3.mean(dim=1)
        front = (facing * to_cam).sum(-1) > 0  # (B,)
        px, depth = cameras.project(pts3)
        ahead = depth > 0
        contours, start = [], 0
        for name, closed, pts in groups:
            n = pts.shape[1]
            shown = ahead[:, start : start + n] & (front[:, None] | (name == "face_oval"))
            contours.append((name, closed, px[:, start : start + n], shown))
            start += n
        ipx, idepth = cameras.project(tpl.irises(posed))
        return self._facemesh(contours, ipx, (idepth > 0) & front[:, None], h, w)
