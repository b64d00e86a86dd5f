"""Commands that read avatars and motions: info, render, animate, motions, export, track."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Optional

import typer
from rich.markup import escape

from avatarcli.cli.app import (
    DeviceOpt,
    ForceOpt,
    LightOpt,
    TemplateOpt,
    app,
)
from avatarcli.console import console, progress, summary
from avatarcli.errors import AvatarError


@app.command()
def info(
    avatar: Annotated[str, typer.Argument(help="An .avatar file ('-' reads stdin).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON to stdout instead of a table.")] = False,
    template: TemplateOpt = None,
) -> None:
    """Show what an avatar file holds."""
    from avatarcli import api

    facts = api.info(avatar, template)
    if as_json:
        sys.stdout.write(json.dumps(facts, indent=2) + "\n")
        return
    from rich.table import Table

    table = Table(title=escape(avatar) if avatar != "-" else "standard input", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key in ("kind", "binding", "stage", "gaussians", "sh_degree", "materials", "prompt", "seed"):
        table.add_row(key, escape(str(facts.get(key))))
    t = facts["template"]
    table.add_row("template", escape(f"{t.get('name')} ({t.get('vertices')} vertices, sha256 {str(t.get('sha256'))[:12]})"))
    if facts.get("bounds"):
        lo, hi = facts["bounds"]
        table.add_row("bounds (m)", escape("[" + ", ".join(f"{v:.3f}" for v in lo) + "] to [" + ", ".join(f"{v:.3f}" for v in hi) + "]"))
    for i, h in enumerate(facts.get("history", [])):
        table.add_row("history" if i == 0 else "", escape(f"{h.get('time', '')}  {h.get('command', '')}"))
    console.print(table)


@app.command()
def render(
    avatar: Annotated[str, typer.Argument(help="An .avatar file ('-' reads stdin).")],
    output: Annotated[
        str, typer.Option("--output", "-o", help="A folder for view_NNNN.png files, or one .png with the views side by side.")
    ],
    views: Annotated[int, typer.Option(help="Number of views around the avatar.")] = 4,
    size: Annotated[str, typer.Option(help="Image size: N or WxH.")] = "512",
    elevation: Annotated[float, typer.Option(help="Camera elevation in degrees.")] = 5.0,
    background: Annotated[str, typer.Option(help="white, black, gray, #rrggbb or r,g,b.")] = "white",
    light: LightOpt = None,
    template: TemplateOpt = None,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
) -> None:
    """Render turntable views of an avatar in its rest pose."""
    from avatarcli import api

    wh = api.parse_size(size)
    api.render(avatar, output, views=views, size=wh, elevation=elevation, background=api.parse_color(background), template=template,
               device=device, force=force, light=light)  # fmt: skip
    summary("avatar render", [("wrote", output), ("views", str(views)), ("size", f"{wh[0]}x{wh[1]}")])


@app.command()
def animate(
    avatar: Annotated[str, typer.Argument(help="An .avatar file ('-' reads stdin).")],
    motion: Annotated[
        str,
        typer.Argument(help="A motion file (AMASS .npz, Motion-X/TalkSHOW .npy, FLAME .npz) or a built-in name (see 'avatar motions')."),
    ],
    output: Annotated[str, typer.Option("--output", "-o", help="A folder of PNG frames, an .mp4 or a .gif.")],
    fps: Annotated[Optional[float], typer.Option(help="Output frame rate.", show_default="the motion's")] = None,
    size: Annotated[str, typer.Option(help="Frame size: N or WxH.")] = "512",
    camera: Annotated[
        str,
        typer.Option(
            help="auto (follow when the root travels more than half the avatar's height, as in a walk; else front), "
            "front (fixed, frames the whole clip), follow (tracks the root) or orbit."
        ),
    ] = "auto",
    distance: Annotated[Optional[float], typer.Option(help="Camera distance in metres.", show_default="framed")] = None,
    elevation: Annotated[Optional[float], typer.Option(help="Camera elevation in degrees.")] = None,
    azimuth: Annotated[float, typer.Option(help="Camera azimuth in degrees; 0 faces the avatar.")] = 0.0,
    background: Annotated[str, typer.Option(help="white, black, gray, #rrggbb or r,g,b.")] = "white",
    start: Annotated[Optional[float], typer.Option(help="First second of the motion to use.")] = None,
    end: Annotated[Optional[float], typer.Option(help="Last second of the motion to use.")] = None,
    motion_fps: Annotated[Optional[float], typer.Option("--motion-fps", help="Frame rate of .npy motions, which do not store one.")] = None,
    batch: Annotated[int, typer.Option(help="Frames rendered together.")] = 8,
    light: LightOpt = None,
    light_rotate: Annotated[float, typer.Option(help="Degrees a second the light turns about the vertical axis.")] = 0.0,
    template: TemplateOpt = None,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
) -> None:
    """Drive an avatar with a motion and write frames or a video."""
    from rich.progress import TextColumn

    from avatarcli import api
    from avatarcli.console import warn
    from avatarcli.render.clip import duration_text

    wh = api.parse_size(size)
    options = api.AnimateOptions(
        fps=fps, size=wh, camera=camera, distance=distance, elevation=elevation, azimuth=azimuth,
        background=api.parse_color(background), start=start, end=end, batch=batch,
    )  # fmt: skip
    with progress(TextColumn("{task.fields[rate]}")) as bar:
        task = bar.add_task("rendering", total=None, rate="")

        def on_frames(done: int, total: int) -> None:
            speed = bar.tasks[0].speed
            bar.update(task, completed=done, total=total, rate=f"{speed:.1f} frames/s" if speed else "")

        result = api.animate(avatar, motion, output, options, motion_fps=motion_fps, template=template, device=device, on_notice=warn,
                             on_frames=on_frames, force=force, light=light, light_rotate=light_rotate)  # fmt: skip
    rows = [("wrote", output), ("motion", result.motion.source), ("frames", duration_text(len(result.plan), result.plan.fps)),
            ("size", f"{wh[0]}x{wh[1]}"), ("camera", result.plan.camera)]  # fmt: skip
    summary("avatar animate", rows)


@app.command()
def motions(
    name: Annotated[Optional[str], typer.Argument(help="A built-in motion to write out; omit to list them.")] = None,
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Where to write it (.npz).")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="head or body, for names both kinds have (turn).")] = None,
    seconds: Annotated[Optional[float], typer.Option(help="Length in seconds.", show_default="the motion's own")] = None,
    fps: Annotated[float, typer.Option(help="Frame rate.")] = 30.0,
) -> None:
    """List the built-in motions, or write one as an editable .npz."""
    from rich.console import Console
    from rich.table import Table

    from avatarcli import api

    if name is None:  # the listing is data: stdout (`avatar motions | grep walk`)
        table = Table(title="built-in motions")
        for col in ("name", "for", "seconds", "what"):
            table.add_column(col)
        for row in api.builtin_motions():
            table.add_row(row["name"], row["kind"], f"{row['seconds']:g}", row["what"])
        Console(highlight=False, soft_wrap=True).print(table)
        return
    if output is None:
        raise AvatarError("say where to write the motion with -o FILE.npz")
    mot = api.motion(name, output, model=model, seconds=seconds, fps=fps)
    summary("avatar motions", [("wrote", output), ("motion", f"{name} ({mot.kind})"), ("frames", f"{len(mot)} at {fps:g} fps")])


@app.command()
def export(
    avatar: Annotated[str, typer.Argument(help="An .avatar file ('-' reads stdin).")],
    output: Annotated[
        str,
        typer.Option(
            "--output",
            "-o",
            help=".ply (3DGS), .compressed.ply, .splat, .glb (skinned mesh), .splat.glb (KHR_gaussian_splatting), "
            ".html (one page that plays --motion, offline), or a folder with --sequence. A look that follows the pose is "
            "posed with the motion's frame in the Gaussian formats; .glb and .html show it as at the rest pose.",
        ),
    ],
    fmt: Annotated[
        Optional[str], typer.Option("--format", help="ply, compressed-ply, splat, glb, splat-gltf or html.", show_default="from the name")
    ] = None,
    motion: Annotated[
        Optional[str], typer.Option(help="Pose the avatar with this motion (file or built-in name); .glb and .html play all of it.")
    ] = None,
    frame: Annotated[Optional[int], typer.Option(help="Which motion frame to export.", show_default="0")] = None,
    sequence: Annotated[bool, typer.Option(help="Write one .ply per motion frame into the output folder.")] = False,
    sh_degree: Annotated[
        int,
        typer.Option(help="SH degree written to .ply (3 suits every viewer; missing bands are zero); .splat.glb: at most the avatar's."),
    ] = 3,
    motion_fps: Annotated[Optional[float], typer.Option("--motion-fps", help="Frame rate of .npy motions, which do not store one.")] = None,
    light: LightOpt = None,
    template: TemplateOpt = None,
    device: DeviceOpt = "cpu",
    force: ForceOpt = False,
) -> None:
    """Export to files other tools open: 3DGS .ply / .splat / .splat.glb, a skinned .glb for game engines, or a web page."""
    from avatarcli import api

    written = api.export(avatar, output, fmt=fmt, motion=motion, frame=frame, sequence=sequence, sh_degree=sh_degree,
                         motion_fps=motion_fps, template=template, device=device, force=force, light=light)  # fmt: skip
    rows = [("wrote", output if len(written) == 1 else f"{output}/ ({len(written)} files)")]
    if motion is not None:
        rows.append(("motion", motion))
    summary("avatar export", rows)


@app.command()
def track(
    video: Annotated[str, typer.Argument(help="A video of one person: the face for head motion, the whole body for body motion.")],
    output: Annotated[str, typer.Option("--output", "-o", help="The motion to write (.npz), for animate and export.")],
    model: Annotated[
        str, typer.Option("--model", "-m", help="head (FLAME: turn, jaw, eyes, expression) or body (SMPL-X: root, body, hands where seen).")
    ] = "head",
    start: Annotated[Optional[float], typer.Option(help="First second of the video to use.")] = None,
    end: Annotated[Optional[float], typer.Option(help="Last second of the video to use.")] = None,
    fov: Annotated[float, typer.Option(help="The camera's vertical field of view in degrees (phones and webcams: about 40-60).")] = 40.0,
    elevation: Annotated[float, typer.Option(help="Degrees the camera looks down at the person (0: level).")] = 0.0,
    hands: Annotated[bool, typer.Option(help="Bodies: follow the hands where they are seen (about 3x slower detection).")] = True,
    smoothing: Annotated[float, typer.Option(help="Temporal smoothing: 1 the default, 0 none, 2 twice as smooth.")] = 1.0,
    template: TemplateOpt = None,
) -> None:
    """Track a person's face or body through a video into a motion file (MediaPipe, offline)."""
    import time

    from rich.progress import TextColumn

    from avatarcli import api

    settings = api.TrackSettings(start=start, end=end, fov=fov, elevation=elevation, hands=hands, smoothing=smoothing)
    began = time.perf_counter()
    stages = {"detecting": "finding the face" if model == "head" else "finding the person", "fitting": "fitting the motion"}
    units = {"detecting": "frames/s", "fitting": "steps/s"}
    with progress(TextColumn("{task.fields[rate]}")) as bar:
        tasks: dict[str, int] = {}

        def on_progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stages.get(stage, stage), total=total, rate="")
            task = tasks[stage]
            speed = next(t for t in bar.tasks if t.id == task).speed
            bar.update(task, completed=done, total=total, rate=f"{speed:.1f} {units.get(stage, '/s')}" if speed else "")

        result = api.track(video, output, model=model, settings=settings, template=template, on_progress=on_progress)
    took = time.perf_counter() - began
    m = result.motion
    rows = [("wrote", output), ("motion", f"{m.kind}, {len(m)} frames at {m.fps:g} fps ({m.duration:.2f} s)"),
            ("speed", f"{took:.1f} s, {len(m) / took:.1f} frames/s")]  # fmt: skip
    if result.missed:
        rows.append(("bridged", f"nothing found in frames {result.missed_frames}"))
    summary("avatar track", rows)
