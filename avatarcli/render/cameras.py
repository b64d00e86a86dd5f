"""Pinhole cameras: look-at, orbits, framing a subject, and the random samplers the generation recipes use.

Conventions (the same as gsplat's): ``viewmats`` map world to camera coordinates with the
camera looking along +z, x to the right of the image and y down (OpenCV); ``Ks`` are pixel
intrinsics with pixel centres at half-integers. World space is y-up, subjects face +z.
Azimuth 0 looks at the subject's face; positive azimuth moves the camera towards the
subject's left (+x); elevation is the angle above the horizontal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from avatarcli.devices import to_device


@dataclass
class Cameras:
    """C pinhole cameras of one image size.

    Attributes:
        viewmats: (C, 4, 4) world-to-camera matrices.
        Ks: (C, 3, 3) intrinsics.
        width, height: image size in pixels.
    """

    viewmats: Tensor
    Ks: Tensor
    width: int
    height: int

    def __len__(self) -> int:
        return int(self.viewmats.shape[0])

    def to(self, device: torch.device | str) -> Cameras:
        return Cameras(to_device(self.viewmats, device), to_device(self.Ks, device), self.width, self.height)

    def index(self, idx: Tensor | slice | list[int]) -> Cameras:
        return Cameras(self.viewmats[idx], self.Ks[idx], self.width, self.height)

    @property
    def centers(self) -> Tensor:
        """(C, 3) camera positions in world space."""
        r = self.viewmats[:, :3, :3]
        t = self.viewmats[:, :3, 3]
        return -(r.transpose(1, 2) @ t[..., None])[..., 0]

    def project(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """Project world points (C, P, 3), one set per camera.

        Returns:
            pixels: (C, P, 2) image coordinates; depth: (C, P) camera-space z.
        """
        cam = (self.viewmats[:, None, :3, :3] @ points[..., None])[..., 0] + self.viewmats[:, None, :3, 3]
        z = cam[..., 2]
        uv = cam[..., :2] / z.clamp_min(1e-8)[..., None]
        k = self.Ks
        px = uv[..., 0] * k[:, None, 0, 0] + k[:, None, 0, 2]
        py = uv[..., 1] * k[:, None, 1, 1] + k[:, None, 1, 2]
        return torch.stack([px, py], dim=-1), z


def look_at(eye: Tensor, target: Tensor, up: Tensor | None = None) -> Tensor:
    """World-to-camera matrices (C, 4, 4) for cameras at ``eye`` (C, 3) looking at ``target`` (C, 3)."""
    if up is None:
        up = torch.zeros_like(eye)
        up[..., 1] = 1.0
    forward = F.normalize(target - eye, dim=-1)
    right = torch.cross(forward, up, dim=-1)
    # looking straight up or down: any right vector will do
    degenerate = right.norm(dim=-1, keepdim=True) < 1e-6
    x_axis = torch.zeros_like(right)
    x_axis[..., 0] = 1.0
    right = torch.where(degenerate, x_axis, right)
    right = F.normalize(right, dim=-1)
    down = torch.cross(forward, right, dim=-1)
    rot = torch.stack([right, down, forward], dim=1)  # rows: camera axes in world space
    view = torch.eye(4, device=eye.device, dtype=eye.dtype).repeat(len(eye), 1, 1)
    view[:, :3, :3] = rot
    view[:, :3, 3] = -(rot @ eye[..., None])[..., 0]
    return view


def intrinsics(fovy_deg: Tensor, width: int, height: int) -> Tensor:
    """Intrinsics (C, 3, 3) for vertical fields of view ``fovy_deg`` (C,), square pixels."""
    fy = 0.5 * height / torch.tan(torch.deg2rad(fovy_deg) * 0.5)
    k = torch.zeros(len(fovy_deg), 3, 3, device=fovy_deg.device, dtype=fovy_deg.dtype)
    k[:, 0, 0] = fy
    k[:, 1, 1] = fy
    k[:, 0, 2] = 0.5 * width
    k[:, 1, 2] = 0.5 * height
    k[:, 2, 2] = 1.0
    return k


def orbit_positions(target: Tensor, distance: Tensor, azimuth_deg: Tensor, elevation_deg: Tensor) -> Tensor:
    """Camera positions (C, 3) around ``target`` (3,) or (C, 3)."""
    az, el = torch.deg2rad(azimuth_deg), torch.deg2rad(elevation_deg)
    offset = torch.stack([torch.cos(el) * torch.sin(az), torch.sin(el), torch.cos(el) * torch.cos(az)], dim=-1)
    return target + distance[..., None] * offset


def orbit(
    target: Tensor,
    distance: float | Tensor,
    azimuth_deg: Tensor,
    elevation_deg: float | Tensor,
    fovy_deg: float | Tensor,
    width: int,
    height: int,
) -> Cameras:
    """Cameras on a sphere around ``target`` (3,), one per azimuth in ``azimuth_deg`` (C,)."""
    c = len(azimuth_deg)
    like = azimuth_deg

    def full(v: float | Tensor) -> Tensor:
        return torch.as_tensor(v, dtype=like.dtype, device=like.device).expand(c).clone()

    eye = orbit_positions(target.to(like), full(distance), azimuth_deg, full(elevation_deg))
    return Cameras(look_at(eye, target.to(like).expand_as(eye)), intrinsics(full(fovy_deg), width, height), width, height)


def framing(points: Tensor) -> tuple[Tensor, float]:
    """Centre (3,) and radius of a point set (N, 3), ignoring stray outliers."""
    m = points.detach()
    lo = torch.quantile(m.float(), 0.002, dim=0) if len(m) < 16_000_000 else m.min(0).values
    hi = torch.quantile(m.float(), 0.998, dim=0) if len(m) < 16_000_000 else m.max(0).values
    return (lo + hi) / 2, float((hi - lo).norm() / 2)


def turntable_cameras(
    center: Tensor, radius: float, views: int, size: tuple[int, int], elevation: float = 5.0, fovy: float = 35.0
) -> Cameras:
    """``views`` cameras evenly around a subject of ``radius`` at ``center``, starting in front."""
    az = torch.arange(views, dtype=torch.float32, device=center.device) * (360.0 / views)
    distance = radius / (0.92 * math.tan(math.radians(fovy) * 0.5))
    return orbit(center, distance, az, elevation, fovy, size[0], size[1])


def framing_distance(radius: float, fovy_deg: float, fill: float = 0.85) -> float:
    """Distance at which a sphere of ``radius`` fills ``fill`` of the image height."""
    return radius / (fill * math.tan(math.radians(fovy_deg) * 0.5))


MEASURES = ("radius", "extent")


@dataclass(frozen=True)
class CameraRanges:
    """Uniform ranges for random training cameras, with distances in a recipe's own units.

    The distances are for a subject whose size is ``subject_size`` in those units; a subject
    of another size gets them scaled by ``size / subject_size``, so the same ranges serve a
    25 cm head and a 1.7 m body. ``measure`` says how a size is taken: ``"radius"``, half the
    diagonal of the bounding box of the avatar's Gaussians at rest (stray outliers ignored,
    :func:`framing`); ``"extent"``, the longest side of the bounding box of the template's
    rest mesh.
    """

    distance: tuple[float, float] = (1.5, 2.0)
    fovy_deg: tuple[float, float] = (40.0, 70.0)
    elevation_deg: tuple[float, float] = (-30.0, 30.0)
    azimuth_deg: tuple[float, float] = (-180.0, 180.0)
    subject_size: float = 0.5
    measure: str = "radius"

    def __post_init__(self) -> None:
        if self.measure not in MEASURES:
            raise ValueError(f"unknown size measure {self.measure!r}: choose {', '.join(MEASURES)}")


# Heads are framed as HeadStudio's code frames FLAME: the template at zero shape and
# expression, recentred on its bounding box and scaled so that the box's longest side is
# 0.6 * 1.1 ** 10 = 1.556 units (threestudio/utils/head_v2.py and
# gaussiansplatting/scene/gaussian_flame_model.py ``create_from_flame``, flame_scale -10 from
# threestudio/systems/Head3DGSLKs.py), seen from 1.5-2.0 units with a vertical field of view of
# 40-70 degrees (configs/headstudio.yaml; HeadStudio sec. 4.3). The head then fills
# 1.556 / (2 d tan(fovy / 2)) = 56 % to 143 % of the image height, from the whole head to
# a close-up of the face.
HEAD_SIZE = 0.6 * 1.1**10
HEAD_RANGES = CameraRanges(subject_size=HEAD_SIZE, measure="extent")
# Bodies: DreamWaltz-G's camera radius range 1-2, taken for a subject of radius 0.5 (this
# recipe's convention; DreamWaltz-G's own body scale was not checked).
BODY_RANGES = CameraRanges(distance=(1.0, 2.0))


def subject_size(points: Tensor, measure: str) -> float:
    """The size of a subject given by points (N, 3), as ``measure`` says (see :class:`CameraRanges`)."""
    if measure == "radius":
        return framing(points)[1]
    if measure == "extent":
        p = points.detach()
        return float((p.max(0).values - p.min(0).values).max())
    raise ValueError(f"unknown size measure {measure!r}: choose {', '.join(MEASURES)}")


@dataclass
class CameraSample:
    """Random cameras and the view parameters they were drawn with (for view prompts)."""

    cameras: Cameras
    azimuth_deg: Tensor  # (C,) on the CPU, relative to the subject's face direction, in (-180, 180]
    elevation_deg: Tensor  # (C,) on the CPU


def sample_cameras(
    n: int,
    target: Tensor,
    size: float,
    ranges: CameraRanges,
    width: int,
    height: int,
    generator: torch.Generator,
) -> CameraSample:
    """Draw ``n`` cameras looking at ``target`` ((3,), or (n, 3) one per camera) around a
    subject of ``size`` metres, measured as ``ranges.measure`` says."""

    def uniform(lo_hi: tuple[float, float]) -> Tensor:
        lo, hi = lo_hi
        return lo + (hi - lo) * torch.rand(n, generator=generator)

    dist = uniform(ranges.distance) * (size / ranges.subject_size)
    fovy = uniform(ranges.fovy_deg)
    el = uniform(ranges.elevation_deg)
    az = uniform(ranges.azimuth_deg)
    # built around the origin on the CPU, then moved onto the target where it lives: reading
    # a GPU target back to the CPU would make the CPU wait for the GPU
    offset = orbit_positions(torch.zeros(n, 3), dist, az, el)
    view = to_device(look_at(offset, torch.zeros(n, 3)), target.device)
    ks = to_device(intrinsics(fovy, width, height), target.device)
    tgt = target.detach().to(view.dtype).expand(n, 3)
    view[:, :3, 3] -= (view[:, :3, :3] @ tgt[..., None])[..., 0]
    return CameraSample(Cameras(view, ks, width, height), az, el)
