"""``export``: the avatar in formats other tools open (3DGS .ply, .splat, glTF, a web page)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from avatarcli.api.inputs import AvatarInput, LightInput, MotionInput, load_avatar, load_light, load_motion, paths
from avatarcli.devices import resolve_device
from avatarcli.errors import AvatarError
from avatarcli.fileio import atomic_folder, check_output
from avatarcli.formats.gltf import write_glb
from avatarcli.formats.ply import write_gsplat_format, write_ply
from avatarcli.formats.splat_gltf import write_splat_glb
from avatarcli.formats.web_player import write_html
from avatarcli.model.avatar import Avatar
from avatarcli.model.gaussians import Gaussians, PosedGaussians
from avatarcli.motion.motion import Motion, check_fps, to_template_poses
from avatarcli.render.shading import Lighting, bake_light, own_light
from avatarcli.templates.loading import load_template
from avatarcli.templates.template import Pose, Template

EXPORT_FORMATS = ("ply", "compressed-ply", "splat", "glb", "splat-gltf", "html")
# the kind of file each format is: a name may pick any format of its kind (a KHR splat .glb is a .glb)
CONTAINERS = {"ply": "ply", "compressed-ply": "ply", "splat": "splat", "glb": "glb", "splat-gltf": "glb", "html": "html"}


def export_format(output: str | Path, fmt: str | None = None) -> str:
    """The export format ``fmt`` names, or the one the output's name implies; a name that
    implies another format than ``fmt`` is refused (the file would mislead every tool)."""
    if fmt is not None and fmt not in EXPORT_FORMATS:
        raise AvatarError(f"unknown export format {fmt!r}: choose {', '.join(EXPORT_FORMATS)}")
    _check_not_our_own(output, "an export")
    implied = _implied_format(output)
    if fmt is not None:
        if implied is not None and CONTAINERS[implied] != CONTAINERS[fmt]:
            named, written = CONTAINERS[implied], CONTAINERS[fmt]
            raise AvatarError(f"{output} names a .{named} file but {fmt} is written as .{written}: rename it or drop the format")
        return fmt
    if implied is None:
        raise AvatarError(
            f"cannot tell the export format of {output}: use .ply, .compressed.ply, .splat, .glb, .splat.glb or .html (or name the format)"
        )
    return implied


OWN_SUFFIXES = {".avatar": "an avatar", ".ckpt": "a checkpoint"}  # the files avatarcli itself reads by their names


def _check_not_our_own(output: str | Path, what: str) -> None:
    """Refuse an output named like a file avatarcli reads as its own (an export named .avatar
    would be taken for an avatar by every command)."""
    for suffix, kind in OWN_SUFFIXES.items():
        if str(output).lower().endswith(suffix):
            raise AvatarError(f"{output} names {kind} file, which is not what {what} writes: choose another name")


def _implied_format(output: str | Path) -> str | None:
    name = str(output).lower()
    for suffix, f in ((".compressed.ply", "compressed-ply"), (".splat.glb", "splat-gltf"), (".ply", "ply"), (".splat", "splat"),
                      (".glb", "glb"), (".html", "html"), (".htm", "html")):  # fmt: skip
        if name.endswith(suffix):
            return f
    return None


def _motion_poses(motion: Motion, template: Template) -> Pose:
    """The motion as template poses, its first frame at the origin."""
    poses, _ = to_template_poses(motion, template)
    poses.translation = poses.translation - poses.translation[:1]
    return poses


def export(
    avatar: AvatarInput,
    output: str | Path,
    *,
    fmt: str | None = None,
    motion: MotionInput | None = None,
    frame: int | None = None,
    sequence: bool = False,
    sh_degree: int = 3,
    motion_fps: float | None = None,
    template: str | Path | None = None,
    device: str = "cpu",
    force: bool = False,
    light: LightInput | None = None,
) -> list[Path]:
    """Write the avatar in a format other tools open; returns the files written.

    Formats: ``.ply`` (INRIA 3DGS), ``.compressed.ply`` (SuperSplat), ``.splat``, ``.glb``
    (the skinned template mesh with expression morph targets; with ``motion``, its
    animation), ``.splat.glb`` (format ``splat-gltf``: the Gaussians in glTF through
    KHR_gaussian_splatting, SH degrees up to the avatar's own), ``.html`` (a self-contained
    page that plays ``motion``, skinning the Gaussians on the GPU; the rest pose without one).
    Gaussian formats are the rest pose, or ``frame`` of ``motion``; ``sequence`` writes one
    .ply per motion frame into the folder ``output`` (``force``: one that already holds files,
    replacing only files of the same names).

    Every format carries colour, not materials: an avatar with materials is lit by ``light``
    (a preset's name, an .hdr / .exr panorama or a light; default: its own) and the light baked
    into each Gaussian's colour as seen head-on (:func:`~avatarcli.render.shading.baked_colors`),
    at the exported pose (the rest pose for .glb and .html, whose colours ride the motion).
    """
    kind = "ply" if sequence else export_format(output, fmt)
    if not 0 <= sh_degree <= 3:
        raise AvatarError(f"the SH degree must be between 0 and 3 (got {sh_degree})")
    if frame is not None and motion is None:
        raise AvatarError("a frame number needs a motion")
    if kind in ("glb", "html") and frame is not None:
        raise AvatarError(f"a frame does not apply to .{kind}: the whole motion plays in it")
    if sequence and motion is None:
        raise AvatarError("a sequence needs a motion")
    if sequence:
        _check_not_our_own(output, "a sequence")
        named = _implied_format(output)
        if named is not None:
            raise AvatarError(f"a sequence is a folder of .ply files, but {output} names a .{CONTAINERS[named]} file: name a folder")
    if str(output) == "-":
        raise AvatarError("exports cannot go to standard output: name a file")
    if motion_fps is not None:
        check_fps(motion_fps, "the motion frame rate")
    check_output(output, "folder" if sequence else "file", force, inputs=paths(avatar, motion, template))
    lit = load_light(light)
    av = load_avatar(avatar)
    mot = load_motion(motion, av.kind, motion_fps) if motion is not None else None
    tpl = load_template(av.kind, template, resolve_device(device))
    lit = (lit or own_light(av)) if av.material is not None else None
    lighting = None if lit is None else Lighting.of(lit, tpl.device)
    if lighting is not None and kind in ("glb", "html"):
        with torch.no_grad():
            av = baked_avatar(av, tpl, lighting)
    if kind == "glb":
        write_glb(av, tpl, output, mot)
        return [Path(output)]
    if kind == "html":
        write_html(av, tpl, output, mot)
        return [Path(output)]
    av = av.to(tpl.device)
    poses = None if mot is None else _motion_poses(mot, tpl)
    if poses is not None:
        bad = [i for i in ([frame] if frame is not None else []) if not 0 <= i < poses.batch]
        if bad:
            raise AvatarError(f"frame {bad[0]} is out of range: the motion has frames 0 to {poses.batch - 1}")
    with torch.no_grad():
        if sequence:
            assert poses is not None
            return _write_sequence(av, tpl, poses, Path(output), sh_degree, force, lighting)
        g = _gaussians(av, tpl, av.posed(tpl, None if poses is None else poses.index([frame or 0])), 0, lighting)
    if kind == "ply":
        write_ply(g, output, sh_degree)
    elif kind == "splat-gltf":
        write_splat_glb(g, output, sh_degree)
    else:
        write_gsplat_format(g, output, "splat" if kind == "splat" else "ply_compressed")
    return [Path(output)]


def baked_avatar(avatar: Avatar, template: Template, lighting: Lighting) -> Avatar:
    """A copy of ``avatar`` without materials whose colours are its materials lit at rest."""
    av = avatar.to(template.device)
    g = bake_light(av, template, av.posed(template), lighting)
    out = av.select(torch.arange(len(av), device=template.device))  # a copy
    out.gaussians = replace(out.gaussians, sh=g.sh)
    out.material = None
    return out


def _gaussians(avatar: Avatar, template: Template, posed: PosedGaussians, b: int, lighting: Lighting | None) -> Gaussians:
    """Pose ``b`` of ``posed`` as world-space Gaussians, its light baked in when there is one."""
    one = posed.frame(b)
    return one.gaussians(0) if lighting is None else bake_light(avatar, template, one, lighting)


def _write_sequence(
    avatar: Avatar, template: Template, poses: Pose, folder: Path, sh_degree: int, force: bool = False,
    lighting: Lighting | None = None, chunk: int = 16,
) -> list[Path]:  # fmt: skip
    """One .ply per pose, ``frame_NNNN.ply``, into ``folder`` (atomically; see ``atomic_folder``)."""
    total = poses.batch
    digits = max(4, len(str(total - 1)))
    names = [f"frame_{i:0{digits}d}.ply" for i in range(total)]
    with atomic_folder(folder, force) as tmp:
        for start in range(0, total, chunk):
            idx = list(range(start, min(start + chunk, total)))
            pg = avatar.posed(template, poses.index(idx))
            for b, i in enumerate(idx):
                write_ply(_gaussians(avatar, template, pg, b, lighting), tmp / names[i], sh_degree)
    return [folder / n for n in names]
