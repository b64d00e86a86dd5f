"""The hidden people a capture is measured against: reference avatars that look like a person.

A capture gauge renders videos of these avatars, so unlike the generation gauge's reference
(:func:`avatarcli.evaluation.reference.reference_avatar`, procedural stripes that no face or
pose detector would take for a person) they must be found by MediaPipe's face mesh and pose
trackers, while still holding detail a photometric fit has to earn: skin with mottling,
freckles and blush over the template's eyes and lips, eyebrows, and parts off the surface.

* head: hair (a shell lifted 4 to 14 mm off the skull, strands drawn as Gaussians
  stretched along the way the hair falls) and a short beard (2 to 8 mm off the jaw, chin
  and upper lip, the lips left bare).
* body: the same skin, face and hair; a plaid shirt with three-quarter sleeves, patterned
  tights, shoes, and a pleated skirt hanging off the hips with a printed hem.

Everything is seeded and built on the CPU; the avatars are rigged like any other
(:func:`avatarcli.model.rigging.rig_gaussians`). The default seed differs from the generation
gauge's, so a capture cannot be tuned on that gauge's reference.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from scipy.spatial import cKDTree
from torch import Tensor

from avatarcli.model.avatar import Avatar
from avatarcli.model.binding import deform, rest_posed
from avatarcli.model.gaussians import Gaussians, cat, rgb_to_sh0, sh0_to_rgb
from avatarcli.model.initialize import SKIN, init_avatar, mouth_regions
from avatarcli.model.rigging import rig_gaussians
from avatarcli.rotations import matrix_to_quat
from avatarcli.templates.skeletons import SMPLX_JOINT_NAMES
from avatarcli.templates.template import Template

CAPTURE_SEED = 23  # not the generation gauge's (7)

# colours (linear RGB in [0, 1] as the renderer shows them)
SKIN_TONES = {"head": (0.80, 0.60, 0.48), "body": (0.86, 0.68, 0.57)}
HAIR_COLOURS = {"head": (0.20, 0.13, 0.08), "body": (0.45, 0.20, 0.09)}
BEARD = (0.26, 0.17, 0.10)
BROWS = (0.17, 0.11, 0.07)
SHIRT = ((0.18, 0.30, 0.55), (0.88, 0.88, 0.84), (0.70, 0.12, 0.12))  # ground, light check, thin red line
TIGHTS = (0.16, 0.16, 0.20)
SHOES = (0.40, 0.08, 0.10)
SKIRT = ((0.78, 0.58, 0.12), (0.55, 0.38, 0.06), (0.10, 0.35, 0.25))  # pleat light, pleat dark, print


# -- procedural patterns ----------------------------------------------------------------------
def _hash(cells: Tensor, seed: int) -> Tensor:
    """A repeatable value in [0, 1) per integer lattice cell (..., 3)."""
    h = (cells[..., 0] * 73856093) ^ (cells[..., 1] * 19349663) ^ (cells[..., 2] * 83492791) ^ (seed * 2654435761)
    return (h % 1_000_003).abs().float() / 1_000_003.0


def value_noise(points: Tensor, cell: float, seed: int) -> Tensor:
    """Smooth noise in [0, 1] (N,) at points (N, 3): lattice values ``cell`` metres apart,
    blended trilinearly with a smoothstep."""
    x = points.double() / cell
    base = torch.floor(x)
    f = (x - base).float()
    f = f * f * (3.0 - 2.0 * f)
    base = base.long()
    out = torch.zeros(len(points))
    for corner in range(8):
        offset = torch.tensor([(corner >> 2) & 1, (corner >> 1) & 1, corner & 1])
        w = torch.where(offset.bool(), f, 1.0 - f).prod(-1)
        out = out + w * _hash(base + offset, seed)
    return out


def fbm(points: Tensor, cell: float, seed: int, octaves: int = 3) -> Tensor:
    """Octaves of :func:`value_noise` (N,), in [0, 1], the finest ``cell / 2**(octaves-1)``."""
    total, norm = torch.zeros(len(points)), 0.0
    for k in range(octaves):
        amp = 0.5**k
        total = total + amp * value_noise(points, cell / 2**k, seed + 101 * k)
        norm += amp
    return total / norm


def spots(points: Tensor, cell: float, seed: int, density: float, radius: float) -> Tensor:
    """1 inside small round spots (freckles, prints), 0 elsewhere (N,): one spot of ``radius``
    (a fraction of ``cell``, at most 0.25) in a ``density`` share of the lattice cells, placed
    at random inside its cell."""
    x = points / cell
    cells = torch.floor(x).long()
    centre = cells.float() + 0.25 + 0.5 * torch.stack([_hash(cells, seed + i) for i in (1, 2, 3)], -1)
    return ((_hash(cells, seed) < density) & ((x - centre).norm(dim=-1) < min(radius, 0.25))).float()


# -- regions of a rest-pose template ----------------------------------------------------------
def eyes_centre(template: Template) -> Tensor:
    """The midpoint (3,) of the two eye joints at rest: the origin of the head-local frame."""
    names = template.joint_names
    eyes = [i for i, n in enumerate(names) if "eye" in n]
    return rest_posed(template).joints[0, eyes].mean(0)


def head_mask(template: Template, weights: Tensor, q: Tensor) -> Tensor:
    """Points (N,) of the head itself, not the neck or the body: head-local points ``q`` (N, 3)
    with, for bodies, their skinning weights (N, J) mostly on the head, jaw or eyes."""
    near = (q[:, 1] > -0.17) & (q[:, 1] < 0.16) & (q[:, 0].abs() < 0.12) & (q[:, 2] > -0.22)
    if template.kind == "head":
        return near
    head_joints = [SMPLX_JOINT_NAMES.index(n) for n in ("head", "jaw", "left_eye_smplhf", "right_eye_smplhf")]
    return near & (weights[:, head_joints].sum(-1) > 0.5)


def hair_region(q: Tensor) -> Tensor:
    """The scalp (N,) of head-local points ``q`` (N, 3): above a plane that runs from a
    hairline 6.8 cm above the eyes at the front down to the nape at the back, and not the
    face below the hairline or the neck."""
    above = q[:, 1] > 0.068 + 0.7 * q[:, 2].clamp(max=0.0)
    return above & (q[:, 1] > -0.06)


def beard_region(q: Tensor, lips: Tensor, lip_gap: Tensor) -> Tensor:
    """A short boxed beard (N,): jaw, chin and the upper lip, clear of the lips (``lips`` (N,)
    bool) by ``lip_gap`` (N,) bool, facing forward, above the neck."""
    front = q[:, 2] > -0.045
    jaw = (q[:, 1] < -0.065) & (q[:, 0].abs() > 0.04)
    chin = q[:, 1] < -0.095
    upper_lip = (q[:, 1] > -0.07) & (q[:, 1] < -0.052) & (q[:, 0].abs() < 0.032) & (q[:, 2] > 0.02)
    return front & (q[:, 1] > -0.165) & (jaw | chin | upper_lip) & ~lips & ~lip_gap


def brow_region(template: Template, points: Tensor) -> Tensor:
    """Which rest-pose points (N, 3) lie in the template's eyebrows, (N,) bool: within 4 mm of
    the brow contours of the face-mesh embedding (the upper and lower edges, joined end to end)."""
    contours = {n: p[0] for n, _, p in template.face_contours(rest_posed(template))}
    out = torch.zeros(len(points), dtype=torch.bool)
    for side in ("left", "right"):
        upper, lower = contours.get(f"{side}_brow_upper"), contours.get(f"{side}_brow_lower")
        if upper is None:
            continue
        line = torch.cat([upper, lower]) if lower is not None else upper
        # the edges as one closed polyline, sampled densely
        ring = torch.cat([line, line[:1]])
        t = torch.linspace(0, 1, 8)[:, None, None]
        dense = (ring[:-1] * (1 - t) + ring[1:] * t).reshape(-1, 3)
        out |= torch.cdist(points, dense).min(1).values < 0.004
    return out


def _frames_along(normals: Tensor, flow: Tensor) -> Tensor:
    """Quaternions (N, 4) of frames whose x axis follows ``flow`` (N, 3) projected onto the
    plane of ``normals`` (N, 3), z along the normal."""
    n = F.normalize(normals, dim=-1)
    x = F.normalize(flow - (flow * n).sum(-1, keepdim=True) * n + 1e-6 * torch.tensor([1.0, 0.0, 0.0]), dim=-1)
    y = torch.cross(n, x, dim=-1)
    return matrix_to_quat(torch.stack([x, y, n], dim=-1))


def _lifted(points: Tensor, normals: Tensor, lift: tuple[float, float], colors: Tensor, scales: tuple[float, float, float],
            quats: Tensor | None, generator: torch.Generator) -> Gaussians:  # fmt: skip
    """Gaussians (world space) at ``points`` (N, 3) lifted along ``normals`` by ``lift`` metres
    (uniform in the range), coloured ``colors`` (N, 3), with axis scales ``scales``."""
    n = len(points)
    h = lift[0] + (lift[1] - lift[0]) * torch.rand(n, 1, generator=generator)
    q = torch.tensor([[1.0, 0.0, 0.0, 0.0]]).expand(n, -1).clone() if quats is None else quats
    return Gaussians(
        points + F.normalize(normals, dim=-1) * h,
        torch.log(torch.tensor(scales)).expand(n, 3).clone(),
        q,
        torch.full((n,), 3.0),
        rgb_to_sh0(colors.clamp(0.0, 1.0))[:, None],
    )


def surface_samples(template: Template, count: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Random rest-pose surface points and their normals, area-weighted, (count, 3) each."""
    v, f = template.v_template.cpu(), template.faces.cpu()
    tri = v[f]
    cross = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    idx = torch.multinomial(cross.norm(dim=-1), count, replacement=True, generator=generator)
    r1, r2 = torch.rand(count, generator=generator).sqrt(), torch.rand(count, generator=generator)
    bary = torch.stack([1 - r1, r1 * (1 - r2), r1 * r2], -1)
    return (tri[idx] * bary[..., None]).sum(1), F.normalize(cross[idx], dim=-1)


def _surface_area(template: Template) -> float:
    tri = template.v_template.cpu()[template.faces.cpu()]
    return float(torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1).norm(dim=-1).sum() / 2)


# -- appearance -------------------------------------------------------------------------------
def skin_colors(points: Tensor, shade: Tensor, q: Tensor, tone: tuple[float, float, float], seed: int) -> Tensor:
    """Skin colours (N, 3) of rest-pose points (N, 3): ``tone`` under the template's baked light
    ``shade`` (N,), mottled at 1-3 cm, with freckles on the face and blush on the cheeks (the
    points' head-local places ``q`` (N, 3) say where those are)."""
    base = torch.tensor(tone)[None] * shade[:, None]
    mottle = 0.9 + 0.2 * fbm(points, 0.03, seed, 3)
    rgb = base * mottle[:, None]
    tint = fbm(points, 0.05, seed + 9, 2)
    rgb = rgb * (1.0 + 0.08 * (tint[:, None] - 0.5) * torch.tensor([1.0, -0.4, -0.8]))
    face = (q[:, 2] > 0.0) & (q[:, 1] > -0.09) & (q[:, 1] < 0.05)
    freckles = spots(points, 0.007, seed + 5, 0.35, 0.22) * face.float()
    rgb = rgb * (1.0 - 0.22 * freckles[:, None] * torch.tensor([0.8, 1.0, 1.1]))
    for side in (-1.0, 1.0):  # blush: soft red on each cheek
        d = (q - torch.tensor([0.045 * side, -0.035, 0.06])).norm(dim=-1)
        rgb = rgb + 0.10 * torch.exp(-((d / 0.018) ** 2))[:, None] * torch.tensor([0.6, -0.25, -0.2])
    return rgb.clamp(0.0, 1.0)


def plaid(points: Tensor, seed: int, period: float = 0.07) -> Tensor:
    """A shirt's plaid: colours (N, 3) of rest-pose points (N, 3) in :data:`SHIRT`'s colours,
    light checks and thin red lines on the ground along the rest pose's x (across) and y (up)
    axes, with the weave's noise."""
    ground, light, line = (torch.tensor(c) for c in SHIRT)
    u, v = (points[:, 0] / period) % 1.0, (points[:, 1] / period) % 1.0
    bu, bv = (u < 0.35).float(), (v < 0.35).float()
    rgb = ground[None] * (1 - 0.5 * (bu + bv)[:, None]) + light[None] * (0.5 * (bu + bv))[:, None]
    thin = ((u - 0.67).abs() < 0.04) | ((v - 0.67).abs() < 0.04)
    rgb = torch.where(thin[:, None], line[None].expand_as(rgb), rgb)
    return rgb * (0.88 + 0.24 * value_noise(points, 0.004, seed + 31))[:, None]


def _pick(mask: Tensor, *tensors: Tensor) -> list[Tensor]:
    return [t[mask] for t in tensors]


def capture_reference(template: Template, seed: int = CAPTURE_SEED, points_per_triangle: int = 6) -> Avatar:
    """The hidden person a capture gauge's videos show (CPU, deterministic; see the module docstring).

    Args:
        template: the head or body template it hangs on.
        seed: makes the patterns and the off-surface parts' sampling repeatable.
        points_per_triangle: Gaussians per template triangle on the skin and clothes; the
            off-surface parts get as many per area.
    """
    tpl = template.to("cpu")
    g = torch.Generator().manual_seed(seed)
    base = init_avatar(tpl, points_per_triangle, seed)
    world = deform(base.gaussians, base.binding, tpl, rest_posed(tpl)).gaussians()
    pts = world.means
    init_rgb = sh0_to_rgb(world.sh[:, 0]).clamp(0.0, 1.0)
    shade = (init_rgb / SKIN[None]).mean(-1)  # the baked light where init painted skin
    corners = tpl.faces[base.binding.face_idx]
    weights = tpl.weights[corners].mean(1)  # (N, J) rest skinning weights of each point's triangle
    eye_joints = [i for i, n in enumerate(tpl.joint_names) if "eye" in n]
    on_eye = weights[:, eye_joints].sum(-1) > 0.5
    lips, mouth = mouth_regions(tpl, pts)
    centre = eyes_centre(tpl)
    q = pts - centre
    kind = tpl.kind

    rgb = skin_colors(pts, shade, q, SKIN_TONES[kind], seed)
    keep = on_eye | mouth
    rgb[keep] = init_rgb[keep]
    rgb[lips] = (init_rgb[lips] * torch.tensor([1.0, 0.92, 0.95])).clamp(0, 1)
    in_head = head_mask(tpl, weights, q)
    brows = brow_region(tpl, pts) & in_head & ~on_eye
    rgb[brows] = torch.tensor(BROWS)[None] * (0.85 + 0.3 * value_noise(pts[brows], 0.002, seed + 3))[:, None]
    if kind == "body":
        rgb = _clothes(rgb, pts, weights, tpl, seed)
    world.sh = rgb_to_sh0(rgb)[:, None]

    # the parts off the surface, as dense per area as the skin
    area = _surface_area(tpl)
    spacing = math.sqrt(area / len(world))
    samples = int(1.2 * len(world))
    sp, sn = surface_samples(tpl, samples, g)
    sq = sp - centre
    sw = _sample_weights(tpl, sp)
    s_lips, s_mouth = mouth_regions(tpl, sp)
    near_lips = _near(sp, sp[s_lips | s_mouth], 0.004)
    s_head = head_mask(tpl, sw, sq)
    extra = [_hair(sp[s_head & hair_region(sq)], sn[s_head & hair_region(sq)], sq[s_head & hair_region(sq)], kind, spacing, seed, g)]
    if kind == "head":
        bm = s_head & beard_region(sq, s_lips | s_mouth, near_lips)
        p, n_ = _pick(bm, sp, sn)
        col = torch.tensor(BEARD)[None] * (0.7 + 0.6 * fbm(p, 0.004, seed + 41, 2))[:, None]
        extra.append(_lifted(p, n_, (0.002, 0.008), col, (spacing * 1.1,) * 3, None, g))
    else:
        extra.append(_skirt(len(world), spacing, seed, g))
    av, _ = rig_gaussians(cat([world, *extra]), tpl, max_distance=1.0)
    av.meta.update(stage="reference", prompt=None, seed=seed, reference="capture gauge")
    return av


def _near(points: Tensor, others: Tensor, distance: float) -> Tensor:
    """Whether each point (N, 3) is within ``distance`` of any of ``others`` (M, 3), (N,) bool."""
    if len(others) == 0:
        return torch.zeros(len(points), dtype=torch.bool)
    d, _ = cKDTree(others.double().numpy()).query(points.double().numpy(), distance_upper_bound=distance, workers=-1)
    return torch.from_numpy(d < distance)


def _sample_weights(template: Template, points: Tensor) -> Tensor:
    """Rest skinning weights (N, J) of the template vertex nearest each point (N, 3)."""
    _, idx = cKDTree(template.v_template.cpu().double().numpy()).query(points.double().numpy(), workers=-1)
    return template.weights.cpu()[torch.from_numpy(idx)]


def _hair(points: Tensor, normals: Tensor, q: Tensor, kind: str, spacing: float, seed: int, g: torch.Generator) -> Gaussians:
    """Hair on the scalp: strands falling from the crown, stretched Gaussians 4-14 mm off it."""
    crown = torch.tensor([0.0, 0.11, -0.04])
    flow = torch.tensor([0.0, -1.0, 0.0]).expand_as(q) + 0.6 * F.normalize(q - crown, dim=-1)
    quats = _frames_along(normals, flow)
    azimuth = torch.atan2(q[:, 0], q[:, 2])
    strands = 0.5 + 0.5 * torch.sin(azimuth * 70.0 + 6.0 * fbm(q, 0.03, seed + 51, 2))
    tone = torch.tensor(HAIR_COLOURS[kind])[None]
    lit = 0.75 + 0.5 * strands[:, None] * (0.6 + 0.8 * fbm(points, 0.01, seed + 53, 2))[:, None]
    highlight = (q[:, 1] > 0.08).float()[:, None] * 0.08
    col = tone * lit + highlight
    return _lifted(points, normals, (0.004, 0.014), col, (spacing * 2.6, spacing * 0.8, spacing * 0.8), quats, g)


def _clothes(rgb: Tensor, points: Tensor, weights: Tensor, template: Template, seed: int) -> Tensor:
    """A body's clothes painted over the skin colours ``rgb`` (N, 3) of rest-pose points
    ``points`` (N, 3) with skinning ``weights`` (N, J): shirt, tights, shoes."""
    j = {n: i for i, n in enumerate(SMPLX_JOINT_NAMES)}
    owner = weights.argmax(-1)
    rest = rest_posed(template).joints[0]

    def on(*names: str) -> Tensor:
        return torch.isin(owner, torch.tensor([j[n] for n in names]))

    out = rgb.clone()
    shirt = on("spine1", "spine2", "spine3", "left_collar", "right_collar", "left_shoulder", "right_shoulder")
    shirt |= on("pelvis") & (points[:, 1] > -0.03)
    for side in ("left", "right"):  # three-quarter sleeves
        forearm = on(f"{side}_elbow") & ((points - rest[j[f"{side}_elbow"]]).norm(dim=-1) < 0.11)
        shirt |= forearm
    out[shirt] = plaid(points[shirt], seed)
    legs = on("left_hip", "right_hip", "left_knee", "right_knee") | (on("pelvis") & (points[:, 1] <= -0.03))
    diamonds = ((points[:, 1] / 0.03) % 1.0 - 0.5).abs() + ((torch.atan2(points[:, 0], points[:, 2]) * 3.0) % 1.0 - 0.5).abs() < 0.18
    tights = torch.tensor(TIGHTS)[None] * (0.9 + 0.2 * value_noise(points, 0.01, seed + 61))[:, None]
    tights = torch.where(diamonds[:, None], tights * 1.9, tights)
    out[legs] = tights[legs]
    feet = on("left_ankle", "right_ankle", "left_foot", "right_foot")
    out[feet] = torch.tensor(SHOES)[None] * (0.8 + 0.4 * value_noise(points[feet], 0.02, seed + 67))[:, None]
    return out.clamp(0.0, 1.0)


def _skirt(count: int, spacing: float, seed: int, g: torch.Generator) -> Gaussians:
    """A pleated skirt from the waist to above the knees, flaring away from the legs, with a
    printed band near the hem. Gaussians in the body template's rest space."""
    height = 0.36
    area = 2 * math.pi * 0.22 * height
    n = max(200, int(area / spacing**2))
    drop = height * torch.rand(n, generator=g)
    ang = 2 * math.pi * torch.rand(n, generator=g)
    pleat = 0.5 + 0.5 * torch.sin(ang * 16)
    rx, rz = 0.178 + 0.25 * drop, 0.128 + 0.24 * drop
    r = 1.0 + 0.03 * pleat * drop / height
    y = -drop
    pts = torch.stack([rx * r * torch.sin(ang), y, rz * r * torch.cos(ang) - 0.013], -1)
    light, dark, printed = (torch.tensor(c) for c in SKIRT)
    col = light[None] * pleat[:, None] + dark[None] * (1 - pleat[:, None])
    band = (drop > height - 0.09) & (drop < height - 0.03)
    zig = ((ang * 24 / (2 * math.pi)) % 1.0 - 0.5).abs() * 0.06 - (drop - (height - 0.06)).abs() > -0.008
    col = torch.where((band & zig)[:, None], printed[None].expand_as(col), col)
    col = col * (0.9 + 0.2 * value_noise(pts, 0.006, seed + 71))[:, None]
    normals = F.normalize(torch.stack([pts[:, 0] / rx**2, torch.zeros(n), (pts[:, 2] + 0.013) / rz**2], -1), dim=-1)
    down = torch.tensor([0.0, -1.0, 0.0]).expand(n, 3)
    return _lifted(pts, normals, (0.0, 0.0), col, (spacing * 1.8, spacing * 0.9, spacing * 0.6), _frames_along(normals, down), g)
