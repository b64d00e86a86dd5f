"""``animate`` and ``render``: the avatar in motion (video, GIF or PNG frames) and turntable
views of its rest pose."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from avatarcli.api.inputs import (
    MAX_BATCH,
    MAX_PIXELS,
    AvatarInput,
    LightInput,
    MotionInput,
    check_finite,
    check_frame_size,
    check_light_rotation,
    check_order,
    load_avatar,
    load_light,
    load_motion,
    paths,
)
from avatarcli.devices import resolve_device
from avatarcli.errors import AvatarError
from avatarcli.fileio import PathInput, check_output
from avatarcli.formats.frames import FrameWriter, grid, output_kind, write_png, write_png_folder
from avatarcli.motion.motion import Motion, check_fps
from avatarcli.render.clip import AnimateOptions, FramePlan, expression_notice, plan_frames, render_frames
from avatarcli.render.rasterize import to_uint8
from avatarcli.render.views import render_views
from avatarcli.signals import interruptions_held
from avatarcli.templates.loading import load_template


@dataclass
class AnimateResult:
    output: Path
    plan: FramePlan
    motion: Motion


def check_animate_inputs(
    output: str | Path,
    options: AnimateOptions,
    *,
    motion_fps: float | None = None,
    force: bool = False,
    inputs: tuple[PathInput, ...] = (),
) -> None:
    """Every check that can be made before reading the avatar and the motion (the clip's
    length, frame rate times duration, is bounded when the motion is resampled); ``inputs``
    are the files the command reads, which the output may not be."""
    o = options
    check_frame_size(o.size)
    check_output(output, "folder" if output_kind(output) == "folder" else "file", force, inputs=inputs)
    if o.fps is not None:
        check_fps(o.fps)
    if motion_fps is not None:
        check_fps(motion_fps, "the motion frame rate")
    check_finite("the camera distance", o.distance)
    if o.distance is not None and o.distance <= 0:
        raise AvatarError(f"the camera distance must be positive (got {o.distance})")
    check_finite("the elevation", o.elevation, -90.0, 90.0)
    check_finite("the azimuth", o.azimuth)
    check_finite("the start", o.start)
    check_finite("the end", o.end)
    if not 1 <= o.batch <= MAX_BATCH:
        raise AvatarError(f"the batch must be 1 to {MAX_BATCH} frames (got {o.batch})")


def animate(
    avatar: AvatarInput,
    motion: MotionInput,
    output: str | Path,
    options: AnimateOptions | None = None,
    *,
    motion_fps: float | None = None,
    template: str | Path | None = None,
    device: str = "auto",
    on_notice: Callable[[str], None] | None = None,
    on_frames: Callable[[int, int], None] | None = None,
    force: bool = False,
    light: LightInput | None = None,
    light_rotate: float = 0.0,
) -> AnimateResult:
    """Drive ``avatar`` with ``motion`` (a file, a built-in name or a Motion) and write the
    frames to ``output``: a folder of PNGs, an .mp4 or a .gif.

    Args:
        on_notice: receives one-line notes about how the motion was fitted to the template.
        on_frames: called with (frames done, frames in all) as frames are written.
        force: write PNG frames into a folder that already holds files (files of the same
            names are replaced; others are kept).
        light: what an avatar with materials is lit by: a preset's name, an .hdr / .exr
            panorama or a light (default: its own); an avatar of colours shows them as they are.
        light_rotate: degrees a second the light turns about the vertical axis.
    """
    o = options or AnimateOptions()
    check_order(avatar, motion)
    check_animate_inputs(output, o, motion_fps=motion_fps, force=force, inputs=paths(avatar, motion, template))
    check_light_rotation(light_rotate)
    lit = load_light(light)
    dev = resolve_device(device)
    av = load_avatar(avatar)
    mot = load_motion(motion, av.kind, motion_fps)
    tpl = load_template(av.kind, template, dev)
    plan = plan_frames(av, tpl, mot, o)
    unlit = "the avatar has no materials: --light does not change its colours" if lit is not None and av.material is None else None
    for note in (plan.retarget.converted_from, expression_notice(plan.retarget), unlit):
        if note and on_notice is not None:
            on_notice(note)
    done = 0
    batch = min(o.batch, max(1, MAX_PIXELS // (o.size[0] * o.size[1])))  # what fits in memory at once
    with FrameWriter(output, plan.fps, o.size, frames=len(plan), force=force) as writer:
        for frames in render_frames(av, tpl, plan, o.background, batch, lit, light_rotate):
            for frame in frames:
                writer.add(frame)
            done += len(frames)
            if on_frames is not None:
                with interruptions_held():  # a progress display's lock, like any, must not be split by one
                    on_frames(done, len(plan))
    return AnimateResult(Path(output), plan, mot)


def render(
    avatar: AvatarInput,
    output: str | Path,
    *,
    views: int = 4,
    size: tuple[int, int] = (512, 512),
    elevation: float = 5.0,
    background: Tensor | None = None,
    template: str | Path | None = None,
    device: str = "auto",
    force: bool = False,
    light: LightInput | None = None,
) -> Path:
    """Turntable views of the rest pose: one .png with the views side by side, or a folder
    of ``view_NNNN.png`` (``force``: into a folder that already holds files, replacing only
    files of the same names); an avatar with materials lit by ``light`` (as for :func:`animate`)."""
    if views < 1:
        raise AvatarError(f"at least one view is needed (got {views})")
    check_frame_size(size)
    if views * size[0] * size[1] > MAX_PIXELS:
        raise AvatarError(f"{views} views of {size[0]}x{size[1]} exceed the {MAX_PIXELS:,} pixels drawn at once: ask for fewer or smaller")
    check_finite("the elevation", elevation, -90.0, 90.0)
    out = Path(output)
    if str(output) == "-":
        raise AvatarError("views cannot go to standard output: name a .png or a folder")
    if out.suffix and out.suffix.lower() != ".png":
        raise AvatarError(f"cannot write views to {output}: name a .png (views side by side) or a folder")
    check_output(output, "file" if out.suffix else "folder", force, inputs=paths(avatar, template))
    lit = load_light(light)
    dev = resolve_device(device)
    av = load_avatar(avatar)
    tpl = load_template(av.kind, template, dev)
    bg = background if background is not None else torch.ones(3)
    images = to_uint8(render_views(av, tpl, views, size, bg, elevation, lit))
    if out.suffix:
        write_png(grid(images), out)
    else:
        write_png_folder(images, out, stem="view", force=force)
    return out
