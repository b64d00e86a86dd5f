"""Reference guidance: a stand-in for the diffusion model that makes generation measurable.

For every view the trainer renders, a hidden reference avatar is rendered with the same pose,
camera and background, and the guidance returns the exact noise prediction of a diffusion
prior concentrated on that reference image, in pixel space:

    eps_hat = (x_t - sqrt(abar_t) x_ref) / sqrt(1 - abar_t)

Everything else is the ordinary score-distillation path: timesteps from the recipe's
schedule, noise, the weighting w(t) = 1 - abar_t and the distillation loss. The update is
SDS's (eps_hat - noise): with a prior that has no separate unconditional or negative
prediction, NFSD and ASD have nothing to add. Training against it should reproduce the
reference, so the reconstruction error measures the machinery (rigging, rendering, samplers,
densification, regularisation, stages) without diffusion weights.

The reference avatars are the built-in templates with high-frequency procedural colours
(stripes, patches, hard edges) and parts off the surface: a helmet and a beard on the head,
a skirt and a cape on the body, rigged like anything else.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from avatarcli.devices import to_device
from avatarcli.generate.guidance.protocol import Scene
from avatarcli.generate.guidance.scores import TimestepSchedule, distillation_loss, sds_delta, sds_weight
from avatarcli.model.avatar import Avatar
from avatarcli.model.binding import deform, rest_posed
from avatarcli.model.gaussians import Gaussians, cat, rgb_to_sh0
from avatarcli.model.initialize import init_avatar
from avatarcli.model.rigging import rig_gaussians
from avatarcli.render.rasterize import render_gaussians
from avatarcli.templates.mannequin import head as mannequin_head
from avatarcli.templates.template import Template


def sd_alphas_cumprod(steps: int = 1000) -> Tensor:
    """Stable Diffusion's noise schedule (scaled linear betas 0.00085 to 0.012)."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, steps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).float()


class ReferenceGuidance:
    """Guidance towards a hidden reference avatar (see the module docstring).

    Args:
        reference: the avatar to reproduce, bound to ``template``.
        template: the template both avatars hang on, on the training device.
        timesteps: the timestep schedule (the recipe's).
    """

    name = "reference"
    resolution = 0

    def __init__(self, reference: Avatar, template: Template, timesteps: TimestepSchedule) -> None:
        self.reference = reference.to(template.device)
        self.template = template
        self.timesteps = timesteps
        self.alphas_cumprod = sd_alphas_cumprod().to(template.device)

    def wants_conditions(self) -> bool:
        return False

    @torch.no_grad()
    def target(self, scene: Scene) -> Tensor:
        """The reference rendered like the training views: (B, H, W, 3).

        Same poses and cameras, but the reference's own template shape: the avatar being
        trained may be learning its shape, the target must not move with it.
        """
        ref = self.reference
        posed = self.template.pose(scene.pose, ref.betas if ref.betas.numel() else None)
        pg = deform(ref.gaussians, ref.binding, self.template, posed)
        images, _, _ = render_gaussians(pg, scene.cameras, scene.background)
        return images

    def loss(
        self,
        images: Tensor,
        conditions: Tensor | None,
        prompts: list[str],
        progress: float,
        generator: torch.Generator,
        scene: Scene,
    ) -> tuple[Tensor, dict]:
        """See :meth:`avatarcli.generate.guidance.protocol.Guidance.loss`."""
        x = images.permute(0, 3, 1, 2) * 2.0 - 1.0  # pixel space, [-1, 1]
        ref = self.target(scene).permute(0, 3, 1, 2) * 2.0 - 1.0
        share = scene.share
        t = to_device(share.take(self.timesteps.sample(share.total, progress, len(self.alphas_cumprod), generator)), x.device)
        noise = to_device(share.take(torch.randn((share.total, *x.shape[1:]), generator=generator)), x.device)
        ab = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        with torch.no_grad():
            x_t = ab.sqrt() * x.detach() + (1 - ab).sqrt() * noise
            eps_hat = (x_t - ab.sqrt() * ref) / (1 - ab).sqrt()
            grad = sds_weight(self.alphas_cumprod, t) * sds_delta(eps_hat, eps_hat, noise, 1.0)
        return distillation_loss(x, grad, share.total), {"t": t, "elements": x[0].numel()}


# -- the reference avatars ------------------------------------------------------------------


def _hash(cells: Tensor, seed: int) -> Tensor:
    """A repeatable pseudo-random value in [0, 1) per integer cell (N, 3)."""
    h = (cells[:, 0] * 73856093) ^ (cells[:, 1] * 19349663) ^ (cells[:, 2] * 83492791) ^ (seed * 2654435761)
    return ((h % 1_000_003).float() / 1_000_003.0).abs()


def procedural_colors(points: Tensor, seed: int, cell: float, stripe: float) -> Tensor:
    """Patches of random colour on a 3D grid of ``cell`` metres, crossed by hard stripes."""
    cells = torch.floor(points / cell).long()
    hue = _hash(cells, seed)
    sat = 0.45 + 0.5 * _hash(cells, seed + 1)
    val = 0.55 + 0.4 * _hash(cells, seed + 2)
    k = (hue[:, None] * 6.0 + torch.tensor([5.0, 3.0, 1.0])) % 6.0
    rgb = val[:, None] * (1.0 - sat[:, None] * (torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)))
    bands = torch.sin(2 * math.pi * (points @ torch.tensor([0.6, 0.8, 0.2])) / stripe) > 0.3
    return torch.where(bands[:, None], rgb * 0.35, rgb).clamp(0.0, 1.0)


def _shell(points: Tensor, normals: Tensor, lo: float, hi: float, colors: Tensor, scale: float, generator: torch.Generator) -> Gaussians:
    """Gaussians lifted off the surface by ``lo`` to ``hi`` metres along the normals."""
    n = len(points)
    lift = lo + (hi - lo) * torch.rand(n, 1, generator=generator)
    means = points + normals * lift
    return Gaussians(
        means,
        torch.full((n, 3), math.log(scale)),
        torch.tensor([[1.0, 0.0, 0.0, 0.0]]).expand(n, -1).clone(),
        torch.full((n,), 3.0),
        rgb_to_sh0(colors)[:, None],
    )


def _surface_samples(template: Template, count: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Random rest-pose surface points and normals, area-weighted (N, 3) each."""
    v = template.v_template.cpu()
    f = template.faces.cpu()
    tri = v[f]
    cross = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    area = cross.norm(dim=-1)
    idx = torch.multinomial(area, count, replacement=True, generator=generator)
    u, w = torch.rand(count, generator=generator), torch.rand(count, generator=generator)
    su = u.sqrt()
    bary = torch.stack([1 - su, su * (1 - w), su * w], -1)
    pts = (tri[idx] * bary[..., None]).sum(1)
    return pts, F.normalize(cross[idx], dim=-1)


def reference_avatar(template: Template, seed: int = 7, points_per_triangle: int = 8) -> Avatar:
    """The hidden avatar a reconstruction run tries to reproduce (CPU, deterministic)."""
    tpl = template.to("cpu")
    g = torch.Generator().manual_seed(seed)
    base = init_avatar(tpl, points_per_triangle, seed)
    world = deform(base.gaussians, base.binding, tpl, rest_posed(tpl)).gaussians()
    world.sh = rgb_to_sh0(procedural_colors(world.means, seed, cell=0.04 if tpl.kind == "head" else 0.12, stripe=0.025))[:, None]
    pts, nrm = _surface_samples(tpl, 60_000, g)
    extra: list[Gaussians] = []
    if tpl.kind == "head":
        local = pts  # the head template is in head-local coordinates
        region = torch.from_numpy(mannequin_head.regions(local.double().numpy()))
        skull = (local[:, 1] > 0.035) & (local[:, 2] < 0.06)
        beard = (region == mannequin_head.REGION_JAW) | (
            (local[:, 1] < -0.06) & (local[:, 2] > 0.0) & (region != mannequin_head.REGION_LOWER_NECK)
        )
        for mask, lo, hi, palette, scale in (
            (skull, 0.012, 0.018, (0.55, 0.6, 0.7), 0.003),
            (beard, 0.002, 0.03, (0.25, 0.15, 0.08), 0.0025),
        ):
            p, n_ = pts[mask], nrm[mask]
            col = torch.tensor(palette).expand(len(p), -1) * (
                0.7 + 0.6 * procedural_colors(p, seed + 3, 0.02, 0.012).mean(-1, keepdim=True)
            )
            extra.append(_shell(p, n_, lo, hi, col.clamp(0, 1), scale, g))
    else:
        n = 20_000
        # a skirt: a cone from the hips to the knees, away from the legs
        y = -0.06 - 0.40 * torch.rand(n, generator=g)
        ang = 2 * math.pi * torch.rand(n, generator=g)
        r = 0.2 + 0.25 * (-0.06 - y)
        skirt = torch.stack([r * torch.sin(ang), y, 0.85 * r * torch.cos(ang) - 0.01], -1)
        col = torch.tensor([0.75, 0.12, 0.18]) * (0.6 + 0.8 * (torch.sin(ang * 12) > 0).float()[:, None]) * 0.7
        extra.append(_shell(skirt, torch.zeros_like(skirt), 0.0, 0.0, col.clamp(0, 1), 0.012, g))
        # a cape: a sheet behind the back, from the shoulders down
        u, w = torch.rand(n, generator=g), torch.rand(n, generator=g)
        yc = 0.45 - 0.8 * w
        cape = torch.stack([(u - 0.5) * (0.34 + 0.15 * w), yc, -0.16 - 0.12 * w], -1)
        col = torch.tensor([0.15, 0.2, 0.6]) + 0.3 * (torch.sin(cape[:, 0] * 60) > 0).float()[:, None]
        extra.append(_shell(cape, torch.zeros_like(cape), 0.0, 0.0, col.clamp(0, 1), 0.012, g))
    av, _ = rig_gaussians(cat([world, *extra]), tpl, max_distance=1.0)
    av.meta.update(stage="reference", prompt=None, seed=seed)
    return av
