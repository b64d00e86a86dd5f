"""Exports for other tools: 3DGS .ply (plain and compressed), .splat, and skinned .glb.

``export_avatar`` picks the format from the output name: ``.ply`` (INRIA layout),
``.compressed.ply`` (SuperSplat), ``.splat``, ``.glb``; with ``sequence`` a folder of one
``.ply`` per motion frame.
"""

from __future__ import annotations

from pathlib import Path

import torch

from avatarcli.avatar import Avatar, check_template
from avatarcli.binding import PosedGaussians, deform
from avatarcli.errors import AvatarError
from avatarcli.export.gltf import write_glb
from avatarcli.export.ply import world_gaussians, write_gsplat_format, write_ply
from avatarcli.fileio import atomic_folder
from avatarcli.motion import Motion, to_template_poses
from avatarcli.templates import Pose, Template

FORMATS = ("ply", "compressed-ply", "splat", "glb")


def format_for(path: str | Path, fmt: str | None = None) -> str:
    if fmt is not None:
        if fmt not in FORMATS:
            raise AvatarError(f"unknown export format {fmt!r}: choose {', '.join(FORMATS)}")
        return fmt
    name = str(path).lower()
    if name.endswith(".compressed.ply"):
        return "compressed-ply"
    for suffix, f in ((".ply", "ply"), (".splat", "splat"), (".glb", "glb")):
        if name.endswith(suffix):
            return f
    raise AvatarError(f"cannot tell the export format of {path}: use .ply, .compressed.ply, .splat or .glb (or --format)")


@torch.no_grad()
def posed_frames(avatar: Avatar, template: Template, motion: Motion | None, frames: list[int] | None) -> tuple[PosedGaussians, int]:
    """World Gaussians at the rest pose (no motion) or at ``frames`` of the motion; also the frame count."""
    poses = None if motion is None else motion_poses(motion, template)
    return posed_at(avatar, template, poses, frames), 1 if poses is None else poses.batch


def motion_poses(motion: Motion, template: Template) -> Pose:
    """The motion as template poses, its first frame at the origin."""
    poses, _ = to_template_poses(motion, template)
    poses.translation = poses.translation - poses.translation[:1]
    return poses


@torch.no_grad()
def posed_at(avatar: Avatar, template: Template, poses: Pose | None, frames: list[int] | None) -> PosedGaussians:
    """World Gaussians at the rest pose (``poses`` None) or at ``frames`` of ``poses``."""
    check_template(avatar, template)
    av = avatar.to(template.device)
    betas = av.betas if av.betas.numel() else None
    if poses is None:
        return deform(av.gaussians, av.binding, template, template.pose(template.zero_pose(1), betas))
    idx = list(range(poses.batch)) if frames is None else frames
    bad = [i for i in idx if not 0 <= i < poses.batch]
    if bad:
        raise AvatarError(f"--frame {bad[0]} is out of range: the motion has frames 0 to {poses.batch - 1}")
    return deform(av.gaussians, av.binding, template, template.pose(poses.index(idx), betas))


def export_avatar(
    avatar: Avatar,
    template: Template,
    output: str | Path,
    fmt: str | None = None,
    motion: Motion | None = None,
    frame: int | None = None,
    sequence: bool = False,
    sh_degree: int = 3,
) -> list[Path]:
    """Write ``avatar`` to ``output``; returns the files written."""
    kind = "ply" if sequence else format_for(output, fmt)
    if kind == "glb":
        if frame is not None:
            raise AvatarError("--frame does not apply to .glb: the whole motion becomes its animation")
        write_glb(avatar, template, output, motion)
        return [Path(output)]
    if sequence:
        if motion is None:
            raise AvatarError("--sequence needs --motion")
        out = Path(output)
        if out.suffix:
            raise AvatarError(f"--sequence writes a folder of .ply files; {output} looks like a file name")
        written = []
        poses = motion_poses(motion, template)
        avatar = avatar.to(template.device)
        with atomic_folder(out) as tmp:
            total = poses.batch
            digits = max(4, len(str(total - 1)))
            for start in range(0, total, 16):
                idx = list(range(start, min(start + 16, total)))
                pg = posed_at(avatar, template, poses, idx)
                for b, i in enumerate(idx):
                    name = f"frame_{i:0{digits}d}.ply"
                    write_ply(world_gaussians(pg, b), tmp / name, sh_degree)
                    written.append(out / name)
        return written
    pg, _ = posed_frames(avatar, template, motion, None if motion is None else [frame or 0])
    g = world_gaussians(pg, 0)
    if kind == "ply":
        write_ply(g, output, sh_degree)
    else:
        write_gsplat_format(g, output, "splat" if kind == "splat" else "ply_compressed")
    return [Path(output)]
