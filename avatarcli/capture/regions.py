"""Which pixels of a frame a captured avatar answers for.

The segmenter finds the whole person; a head avatar is a head and a neck. Person pixels near
the head but past the base of the neck (where the neck goes on into the shoulders) carry no
weight, so the avatar is not asked to grow a torso. Person pixels far from the tracked head
(the shoulders and chest, a raised hand) are :data:`CLEAR`: the avatar must be transparent
there, whatever the segmenter says, so Gaussians cannot spread where no frame holds them in
check. Everything else counts as it is: background pixels near the head and the person's
hair and beard beyond the bare template (within :data:`HEAD_MARGIN`). A body avatar answers
for the whole person.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from avatarcli.render.cameras import Cameras
from avatarcli.render.rasterize import rasterize
from avatarcli.templates.template import Pose, Template

HEAD_MARGIN = 0.05  # metres around the bare head that hair, a beard or a hat may fill
NECK_BASE = 0.05  # the lowest fraction of the head template's vertices: the cut of the neck
PERSON = 0.25  # a pixel is the person's above this probability
# pixel weights: counted as the frame shows it, ignored, or background whatever the frame shows
COUNT, IGNORE, CLEAR = 255, 0, 128


@torch.no_grad()
def template_silhouettes(template: Template, poses: Pose, betas: Tensor | None, cameras: Cameras, batch: int = 16) -> Tensor:
    """Coverage (T, H, W) in [0, 1] of the posed template's surface in each frame.

    The template's vertices are drawn as small round Gaussians (as wide as its edges), which
    covers the surface without gaps.

    Args:
        poses: T poses; cameras: one camera (seeing every frame) or T.
    """
    device = template.device
    faces = template.faces
    rest = template.rest_vertices(betas)
    edge = (rest[faces[:, 0]] - rest[faces[:, 1]]).norm(dim=-1).mean()
    n = template.num_vertices
    quats = torch.zeros(n, 4, device=device)
    quats[:, 0] = 1.0
    scales = torch.full((n, 3), float(edge) * 0.6, device=device)
    opac = torch.full((n,), 0.99, device=device)
    colors = torch.zeros(n, 1, device=device)
    out = []
    for s in range(0, poses.batch, batch):
        idx = list(range(s, min(s + batch, poses.batch)))
        posed = template.pose(poses.index(idx).to(device), betas)
        cams = cameras.index([0] * len(idx) if len(cameras) == 1 else idx).to(device)
        b = len(idx)
        _, alphas, _ = rasterize(
            posed.vertices, quats[None].expand(b, -1, -1), scales[None].expand(b, -1, -1), opac[None].expand(b, -1),
            colors[None].expand(b, -1, -1), cams,
        )  # fmt: skip
        out.append(alphas[..., 0].clamp(0, 1).cpu())
    return torch.cat(out) if out else torch.zeros(0, cameras.height, cameras.width)


def dilate(masks: Tensor, radius: int) -> Tensor:
    """Boolean masks (T, H, W) grown by ``radius`` pixels (a square neighbourhood)."""
    if radius <= 0:
        return masks
    k = 2 * radius + 1
    return F.max_pool2d(masks.float()[:, None], k, stride=1, padding=radius)[:, 0] > 0.5


@torch.no_grad()
def head_weights(template: Template, poses: Pose, betas: Tensor | None, cameras: Cameras, person: Tensor) -> Tensor:
    """Pixel weights (T, H, W) uint8 for a head avatar: :data:`IGNORE` on person pixels near
    the head below the neck's cut, :data:`CLEAR` on person pixels away from the head,
    :data:`COUNT` elsewhere.

    Args:
        poses: T poses in the camera's world; cameras: the video camera (one).
        person: (T, H, W) uint8 person probability x 255.
    """
    tpl = template
    head = template_silhouettes(tpl, poses, betas, cameras) > 0.5
    t, h, w = person.shape
    # the margin in pixels at the head's distance
    posed = tpl.pose(poses.to(tpl.device), betas)
    pix, depth = cameras.to(tpl.device).index([0] * t).project(posed.vertices)
    focal = float(cameras.Ks[0, 0, 0])
    radius = max(1, round(HEAD_MARGIN * focal / float(depth.median().clamp_min(1e-3))))
    near = dilate(head, radius)
    # the neck's cut: the line through its lowest ring, across the direction to the head
    rest_y = tpl.rest_vertices(betas)[:, 1]
    ring = rest_y <= torch.quantile(rest_y, NECK_BASE)
    base = pix[:, ring].mean(1).cpu()  # (T, 2)
    centre = pix.mean(1).cpu()
    up = centre - base
    up = up / up.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32) + 0.5, torch.arange(w, dtype=torch.float32) + 0.5, indexing="ij")
    along = (xs[None] - base[:, 0, None, None]) * up[:, 0, None, None] + (ys[None] - base[:, 1, None, None]) * up[:, 1, None, None]
    below = along < 0
    is_person = person > round(PERSON * 255)
    out = torch.full(person.shape, COUNT, dtype=torch.uint8)
    out[is_person & near & below] = IGNORE
    out[is_person & ~near] = CLEAR
    return out
