"""The gauge of pose-dependent appearance: a reference whose look changes with its pose,
filmed in known poses, captured with and without the pose-dependent model, and scored on
poses the capture never saw.

The reference (:func:`pose_reference`) is the template's mannequin with a texture of its own,
and its effects are procedural, applied in its own posing (:meth:`PoseReference.posed`), not
through the model being measured:

* body: creases at the elbows and knees, banded dark folds across the limb whose shading
  deepens with the joint's bend (none when straight), and a skirt (the band from the hips
  to mid-thigh) whose hem swings with the mean turn of the two thighs (rest-space offsets
  that skinning then carries);
* head: lines at the outer corners of the eyes and folds from the nose to the mouth's
  corners that darken with the smile, and a crease under the lower lip that deepens as
  the jaw opens.

``effects=False`` gives the same reference with none of them: the control, on which the
model must do no harm. The capture runs capture's own trainer (:func:`avatarcli.capture.fit.
make_trainer`: its views, photometric loss, densification and per-frame pose corrections)
on frames rendered at known poses with exact person masks, so that what it measures is the
appearance model, not the tracker. Novel poses come from the same kind of motion with
another seed, seen from the video's camera and from the side.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from avatarcli.capture.fit import CaptureSettings, Prepared, capture_config, make_trainer
from avatarcli.capture.footage import Footage
from avatarcli.capture.frames import video_cameras
from avatarcli.capture.photometric import masked_psnr
from avatarcli.capture.regions import head_weights
from avatarcli.model.avatar import Avatar
from avatarcli.model.binding import deform, rest_posed
from avatarcli.model.gaussians import SH_C0, GaussianOffsets, PosedGaussians, rgb_to_sh0, sh0_to_rgb
from avatarcli.model.initialize import init_avatar
from avatarcli.motion.fitting import Camera, Fitted
from avatarcli.motion.motion import Motion
from avatarcli.motion.tracking import Tracked
from avatarcli.render.cameras import Cameras, intrinsics, look_at, orbit_positions
from avatarcli.render.rasterize import render_gaussians
from avatarcli.rotations import axis_angle_to_matrix
from avatarcli.templates.skeletons import SMPLX_JOINT_NAMES
from avatarcli.templates.template import Pose, Template

GAUGE_SEED = 31
J = {name: i for i, name in enumerate(SMPLX_JOINT_NAMES)}
CREASES = (("left_elbow", "left_wrist"), ("right_elbow", "right_wrist"), ("left_knee", "left_ankle"), ("right_knee", "right_ankle"))
FULL_BEND = 1.6  # radians of bend at which a crease is at its darkest
DARKEST = 0.7  # the fraction of its colour a Gaussian at the heart of a fold loses
SKIRT = (0.02, 0.40)  # metres above and below the hip joints' height
SMILE, FULL_SMILE, FULL_JAW = 0, 1.2, 0.3  # the mannequin's smile coefficient; its strongest; the jaw's widest (rad)
BROW_RAISE, FULL_BROWS = 3, 1.0  # the mannequin's brow-raise coefficient and its strongest


def _smoothstep(x: Tensor) -> Tensor:
    x = x.clamp(0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _noise(points: Tensor, cell: float, seed: int) -> Tensor:
    """Smooth pseudo-random values in [0, 1] (N,) at points (N, 3): sums of sines, ``cell`` metres across."""
    g = torch.Generator().manual_seed(seed)
    freq = torch.randn(6, 3, generator=g) * (2 * math.pi / cell)
    phase = 2 * math.pi * torch.rand(6, generator=g)
    return 0.5 + 0.5 * torch.sin(points @ freq.T + phase).mean(-1) * math.sqrt(2)


@dataclass
class PoseReference:
    """A reference avatar and the procedural effects of pose on its look.

    Attributes:
        avatar: the base avatar (its own posing has no effects).
        effects: whether the effects apply.
        crease: (N, 4) how dark each Gaussian gets in each crease of :data:`CREASES` at a full bend (bodies).
        skirt: (N,) 0 at the waist to 1 at the hem (bodies); pivot: (3,) the hips' centre, rest space.
        smile, jaw, brows: (N,) how dark each Gaussian gets at a full smile, a wide-open jaw,
            brows raised high (heads).
    """

    avatar: Avatar
    effects: bool = True
    crease: Tensor = field(default_factory=lambda: torch.zeros(0, 4))
    skirt: Tensor = field(default_factory=lambda: torch.zeros(0))
    pivot: Tensor = field(default_factory=lambda: torch.zeros(3))
    smile: Tensor = field(default_factory=lambda: torch.zeros(0))
    jaw: Tensor = field(default_factory=lambda: torch.zeros(0))
    brows: Tensor = field(default_factory=lambda: torch.zeros(0))

    def offsets(self, pose: Pose) -> GaussianOffsets:
        """The effects at a batch of B poses, as offsets of the avatar's Gaussians."""
        g = self.avatar.gaussians
        b, n = pose.batch, len(g)
        device = pose.rotations.device
        rgb = sh0_to_rgb(g.sh[:, 0]).to(device)
        dark = torch.zeros(b, n, device=device)
        means = torch.zeros(b, n, 3, device=device)
        if self.effects and self.avatar.kind == "body":
            bends = torch.stack([pose.rotations[:, J[joint]].norm(dim=-1) for joint, _ in CREASES], -1)  # (B, 4)
            dark = _smoothstep(bends / FULL_BEND) @ self.crease.to(device).T
            hips = pose.rotations[:, [J["left_hip"], J["right_hip"]]].mean(1)  # (B, 3): the mean thigh turn
            turn = axis_angle_to_matrix(hips) - torch.eye(3, device=device)
            rest = g.means.to(device) - self.pivot.to(device)
            means = 0.5 * self.skirt.to(device)[None, :, None] * torch.einsum("bij,nj->bni", turn, rest)
        elif self.effects:
            smile = _smoothstep(pose.expression[:, SMILE] / FULL_SMILE)
            jaw = _smoothstep(pose.rotations[:, 2].norm(dim=-1) / FULL_JAW)
            brows = _smoothstep(pose.expression[:, BROW_RAISE] / FULL_BROWS)
            dark = sum(s[:, None] * w.to(device)[None] for s, w in ((smile, self.smile), (jaw, self.jaw), (brows, self.brows)))
        dark = dark.clamp(0.0, DARKEST)
        sh0 = -(rgb[None] * dark[..., None]) / SH_C0  # the colour times (1 - dark), in SH units
        zeros = torch.zeros(b, n, device=device)
        return GaussianOffsets(means, torch.zeros(b, n, 3, device=device), zeros, sh0)

    def posed(self, template: Template, pose: Pose) -> PosedGaussians:
        """World-space Gaussians of a batch of poses, with the effects."""
        av = self.avatar.to(template.device)
        return deform(av.gaussians, av.binding, template, template.pose(pose, av.shape), self.offsets(pose.to(template.device)))


def pose_reference(template: Template, effects: bool = True, points_per_triangle: int = 2, seed: int = GAUGE_SEED) -> PoseReference:
    """The gauge's reference on ``template`` (CPU; see the module docstring)."""
    tpl = template.to("cpu")
    av = init_avatar(tpl, points_per_triangle, seed)
    world = deform(av.gaussians, av.binding, tpl, rest_posed(tpl))
    x = world.means[0]
    rgb = sh0_to_rgb(av.gaussians.sh[:, 0]).clamp(0, 1) * (0.85 + 0.3 * _noise(x, 0.06, seed))[:, None]
    ref = PoseReference(av, effects)
    if tpl.kind == "body":
        joints = rest_posed(tpl).joints[0]
        hip_y = float(joints[[J["left_hip"], J["right_hip"]], 1].mean())
        below = (hip_y + SKIRT[0] - x[:, 1]) / (SKIRT[0] + SKIRT[1])
        skirt = ((below >= 0) & (below <= 1) & (x[:, 0].abs() < 0.3)).float() * below.clamp(0, 1)
        pleats = 0.5 + 0.5 * torch.sin(torch.atan2(x[:, 0], x[:, 2]) * 24.0)
        skirt_rgb = torch.tensor([0.55, 0.25, 0.15]) * (0.75 + 0.25 * pleats)[:, None]
        rgb = torch.where((skirt > 0)[:, None], skirt_rgb, rgb)
        folds = []
        for joint, child in CREASES:
            p, axis = joints[J[joint]], joints[J[child]] - joints[J[joint]]
            axis = axis / axis.norm()
            along = (x - p) @ axis
            across = (x - p - along[:, None] * axis).norm(dim=-1)
            near = torch.exp(-((along / 0.06) ** 2)) * (across < 0.12).float()
            bands = torch.cos(2 * math.pi * along / 0.02).clamp_min(0.0) ** 2
            folds.append(DARKEST * near * (0.3 + 0.7 * bands))
        ref.crease, ref.skirt = torch.stack(folds, -1), skirt
        ref.pivot = joints[[J["left_hip"], J["right_hip"]]].mean(0)
    else:
        lm = tpl.landmarks68(rest_posed(tpl))[0]
        lines = torch.zeros(len(x))
        for corner in (36, 45):  # crow's feet: rays from beside each eye's outer corner
            centre = lm[corner] + torch.tensor([math.copysign(0.008, float(lm[corner, 0])), 0.0, -0.004])
            d = x - centre
            ray = torch.cos(5.0 * torch.atan2(d[:, 1], d[:, 0])).clamp_min(0.0)
            lines = torch.maximum(lines, DARKEST * ray * torch.exp(-((d.norm(dim=-1) / 0.02) ** 2)))
        for wing, mouth in ((31, 48), (35, 54)):  # folds from beside the nose to beyond the mouth's corners
            out = torch.tensor([math.copysign(0.006, float(lm[wing, 0])), 0.0, 0.0])
            a, b = lm[wing] + out, lm[mouth] + 1.5 * out
            t = ((x - a) @ (b - a) / (b - a).pow(2).sum()).clamp(0, 1)
            dist = (x - a - t[:, None] * (b - a)).norm(dim=-1)
            lines = torch.maximum(lines, DARKEST * torch.exp(-((dist / 0.006) ** 2)))
        a, b = lm[57], lm[8]
        t = (x - a) @ (b - a) / (b - a).pow(2).sum()
        chin = torch.exp(-(((t - 0.45) / 0.08) ** 2)) * ((x[:, 0] - a[0]).abs() < 0.02).float() * (x[:, 2] > a[2] - 0.02).float()
        above = lm[19:25, 1].max()  # forehead lines over the brows, deepening as they rise
        forehead = (x[:, 1] > above + 0.008) & (x[:, 1] < above + 0.05) & (x[:, 2] > 0.03)
        bands = torch.cos(2 * math.pi * (x[:, 1] - above) / 0.012).clamp_min(0.0) ** 2
        ref.smile, ref.jaw, ref.brows = lines, DARKEST * chin, DARKEST * bands * forehead.float()
    av.gaussians.sh = rgb_to_sh0(rgb.clamp(0, 1))[:, None]
    av.meta.update(stage="reference", prompt=None, seed=seed, reference="pose gauge" + ("" if effects else " (no effects)"))
    return ref


def gauge_motion(kind: str, frames: int, seed: int) -> Pose:
    """``frames`` poses of the gauge's kind of motion (local: no translation): bodies bend
    elbows, knees and hips in changing combinations while turning round once; heads talk and
    smile while turning from side to side. Another seed gives poses of the same kind never seen."""
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0.0, 1.0, frames)

    def curve(low: float, high: float) -> Tensor:
        f = 1.0 + 4.0 * torch.rand(3, generator=g)
        ph = 2 * math.pi * torch.rand(3, generator=g)
        s = (torch.sin(2 * math.pi * f[:, None] * t[None] + ph[:, None]) * torch.tensor([0.6, 0.3, 0.1])[:, None]).sum(0)
        return low + (high - low) * 0.5 * (1 + s)

    if kind == "body":
        rot = torch.zeros(frames, 55, 3)
        rot[:, 0, 1] = 2 * math.pi * t + 2 * math.pi * float(torch.rand((), generator=g))  # one turn round
        rot[:, J["left_elbow"], 1], rot[:, J["right_elbow"], 1] = -curve(0.0, 2.0), curve(0.0, 2.0)
        rot[:, J["left_knee"], 0], rot[:, J["right_knee"], 0] = curve(0.0, 1.6), curve(0.0, 1.6)
        for hip in ("left_hip", "right_hip"):
            rot[:, J[hip], 0] = -curve(-0.3, 0.9)
            rot[:, J[hip], 2] = curve(-0.25, 0.25) * (1 if hip == "left_hip" else -1)
        for shoulder, sign in (("left_shoulder", -1.0), ("right_shoulder", 1.0)):
            rot[:, J[shoulder], 2] = sign * curve(0.2, 1.1)
        return Pose(rot, torch.zeros(frames, 10), torch.zeros(frames, 3))
    rot = torch.zeros(frames, 5, 3)
    rot[:, 1, 1] = curve(-0.6, 0.6)
    rot[:, 1, 0] = curve(-0.15, 0.15)
    rot[:, 2, 0] = curve(0.0, 0.35)
    expr = torch.stack([curve(0.0, 1.4) if k in (SMILE, BROW_RAISE) else curve(0.0, 0.4) for k in range(10)], -1)
    return Pose(rot, expr, torch.zeros(frames, 3))


@dataclass(frozen=True)
class GaugeSetup:
    """How the gauge films: ``size`` pixels square, ``fov`` degrees, ``frames`` trained on, ``novel`` poses scored."""

    size: int = 512
    fov: float = 40.0
    frames: int = 120
    novel: int = 16
    seed: int = GAUGE_SEED


def _placed(kind: str, poses: Pose, template: Template, fov: float) -> Pose:
    """``poses`` in front of the camera at the origin (looking along -z), the subject filling the frame."""
    rest = rest_posed(template.to("cpu")).vertices[0]
    lo, hi = rest.min(0).values, rest.max(0).values
    reach = float((hi - lo).max()) * 0.55
    distance = reach / math.tan(math.radians(fov) / 2)
    centre = (lo + hi) / 2
    place = torch.tensor([0.0, 0.0, -distance]) - centre
    return Pose(poses.rotations, poses.expression, poses.translation + place)


@torch.no_grad()
def film(
    render: Callable[[Template, Pose], PosedGaussians], template: Template, poses: Pose, cameras: Cameras, batch: int = 8
) -> tuple[Tensor, Tensor]:
    """Frames (T, H, W, 3) over black and alphas (T, H, W) in [0, 1], on the CPU: pose t
    through camera t (or the one camera), ``render(template, pose)`` giving posed Gaussians."""
    images, alphas = [], []
    for s in range(0, poses.batch, batch):
        idx = list(range(s, min(s + batch, poses.batch)))
        cams = cameras.index(idx if len(cameras) > 1 else [0] * len(idx)).to(template.device)
        pg = render(template, poses.index(idx).to(template.device))
        img, alpha, _ = render_gaussians(pg, cams, None)
        images.append(img.clamp(0, 1).cpu())
        alphas.append(alpha[..., 0].clamp(0, 1).cpu())
    return torch.cat(images), torch.cat(alphas)


def known_pose_capture(reference: PoseReference, template: Template, setup: GaugeSetup, settings: CaptureSettings) -> Avatar:
    """Capture the reference from frames filmed at known poses, with capture's trainer
    (tracking and segmentation replaced by the truth); the captured avatar (CPU)."""
    kind = template.kind
    poses = _placed(kind, gauge_motion(kind, setup.frames, setup.seed), template, setup.fov)
    camera = Camera(setup.size, setup.size, setup.fov)
    cameras = video_cameras(camera, setup.size, setup.size)
    frames, alphas = film(reference.posed, template, poses, cameras)
    person = (alphas * 255 + 0.5).to(torch.uint8)
    footage = Footage((frames * 255 + 0.5).to(torch.uint8), person, torch.arange(setup.frames), 1, 30.0, (setup.size, setup.size))
    betas = torch.zeros(template.num_betas)
    motion = Motion(kind, poses.rotations, poses.expression, poses.translation - poses.translation[:1], 30.0, "pose gauge")
    # known poses: the tracker's result is the truth (no landmarks were needed to find it)
    tracked = Tracked(Fitted(motion, poses.translation[0], betas), None, [], camera)  # type: ignore[arg-type]
    weights = head_weights(template, poses, betas.to(template.device), cameras, person) if kind == "head" else None
    prepared = Prepared(footage, tracked, poses, weights, cameras, torch.arange(setup.frames), torch.zeros(0, dtype=torch.long))
    cfg = capture_config(kind, "pose gauge", settings, checkpoint_every=0)
    trainer = make_trainer(prepared, template, settings, cfg)
    trainer.train()
    return trainer.avatar(final=True)


def novel_views(kind: str, template: Template, setup: GaugeSetup) -> tuple[Pose, Cameras]:
    """The novel poses (another seed's motion), each seen from the video's camera and from
    60 degrees to the side: 2 x ``setup.novel`` views."""
    poses = _placed(kind, gauge_motion(kind, setup.novel, setup.seed + 1000), template, setup.fov)
    front = video_cameras(Camera(setup.size, setup.size, setup.fov), setup.size, setup.size, setup.novel)
    centre = rest_posed(template.to("cpu")).vertices[0]
    centre = (centre.min(0).values + centre.max(0).values) / 2
    target = poses.translation + centre  # where each pose's subject stands
    distance = float(target[0].norm())
    n = setup.novel
    eyes = orbit_positions(target, torch.full((n,), distance), torch.full((n,), 60.0), torch.zeros(n))
    side = Cameras(look_at(eyes, target), intrinsics(torch.full((n,), setup.fov), setup.size, setup.size), setup.size, setup.size)
    both = Pose(*(torch.cat([a, a]) for a in (poses.rotations, poses.expression, poses.translation)))
    cams = Cameras(torch.cat([front.viewmats, side.viewmats]), torch.cat([front.Ks, side.Ks]), setup.size, setup.size)
    return both, cams


def score(avatar: Avatar, reference: PoseReference, template: Template, setup: GaugeSetup) -> dict[str, float]:
    """PSNR of ``avatar`` against the reference at the novel poses: over the whole frame
    (both over black) and inside either one's silhouette."""
    poses, cams = novel_views(template.kind, template, setup)
    want, want_alpha = film(reference.posed, template, poses, cams)
    av = avatar.to(template.device)
    got, got_alpha = film(av.posed, template, poses, cams)
    inside = (want_alpha > 0.02) | (got_alpha > 0.02)
    return {"psnr": masked_psnr(got, want), "psnr_masked": masked_psnr(got, want, inside), "views": float(len(cams))}


def run_gauge(kind: str, template: Template, setup: GaugeSetup, settings: CaptureSettings, points_per_triangle: int = 2) -> dict:
    """The gauge's four captures (reference with and without effects, each captured with
    and without the pose-dependent model) and their novel-pose scores, with the gains."""
    out: dict = {}
    for effects in (True, False):
        ref = pose_reference(template, effects, points_per_triangle, setup.seed)
        row = {}
        for model in (True, False):
            captured = known_pose_capture(ref, template, setup, replace(settings, pose_dependent=model))
            row["with" if model else "without"] = {**score(captured, ref, template, setup), "gaussians": len(captured)}
        row["gain_db"] = row["with"]["psnr"] - row["without"]["psnr"]
        row["gain_masked_db"] = row["with"]["psnr_masked"] - row["without"]["psnr_masked"]
        out["effects" if effects else "no_effects"] = row
    return out
