"""The ``avatar`` command: parse options, call :mod:`avatarcli.api`, print a summary.

Each subcommand is a thin wrapper over the API function of the same name, which checks its
inputs and does the work. Problems the user can fix surface as one ``error: ...`` line on
stderr and exit code 2, with no partial files.
"""

from __future__ import annotations

import functools
import io
import json
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import torch
import typer
from rich.markup import escape

try:  # typer >= 0.22 vendors its own click; its exceptions live there
    from typer._click import exceptions as click_exc
    from typer._click.core import Command as ClickCommand
except ImportError:  # pragma: no cover - older typer on the real click
    from click import Command as ClickCommand  # type: ignore[assignment]
    from click import exceptions as click_exc  # type: ignore[no-redef]

from avatarcli import __version__
from avatarcli.console import console, error, progress, summary
from avatarcli.errors import AvatarError
from avatarcli.fileio import remove_partial_outputs
from avatarcli.generate.guidance.diffusion import DEFAULT_SPECS
from avatarcli.generate.guidance.scores import DEFAULT_SCORE, NEGATIVE_PROMPT
from avatarcli.signals import Interrupted, interrupts_raise

app = typer.Typer(
    name="avatar",
    help="Animatable 3D Gaussian avatars from a text prompt, driven by motion files.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

OutputOpt = Annotated[str, typer.Option("--output", "-o", help="Output file ('-' writes to stdout).", show_default=False)]
TemplateOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--template",
        help="Your own SMPL-X (body) or FLAME (head) model file or folder.",
        show_default="the built-in mannequin, or $AVATARCLI_BODY_TEMPLATE / $AVATARCLI_HEAD_TEMPLATE",
    ),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
DIFFUSION_DEFAULTS = {kind: spec.base for kind, spec in DEFAULT_SPECS.items()}
CONTROLNET_DEFAULTS = {kind: spec.controlnet for kind, spec in DEFAULT_SPECS.items()}
SUBFOLDER_DEFAULTS = {kind: spec.controlnet_subfolder for kind, spec in DEFAULT_SPECS.items()}
LIGHT_HELP = "Lights an avatar with materials: studio, softbox, daylight, sunset, overcast, night or an .hdr / .exr panorama."
LightOpt = Annotated[Optional[str], typer.Option(help=LIGHT_HELP, show_default="its own light")]
RelightOpt = Annotated[bool, typer.Option(help="Learn materials (albedo, roughness, specular), not colours: relightable with --light.")]
ForceOpt = Annotated[
    bool, typer.Option("--force", help="Write into an output folder that already holds files (same-named files are replaced, others kept).")
]


def _command_line() -> str:
    return "avatar " + shlex.join(sys.argv[1:])


def _recipe_default(setting: str) -> str:
    """A recipe's default as --help shows it: one value, or the head's and the body's."""
    from avatarcli.generate.config import recipe

    def text(kind: str) -> str:
        value = functools.reduce(getattr, setting.split("."), recipe(kind, "x"))
        return ",".join(value) if isinstance(value, tuple) else f"{value:g}"

    head, body = text("head"), text("body")
    return head if head == body else f"head {head}, body {body}"


def _per_kind(values: dict[str, str | None]) -> str:
    return ", ".join(f"{kind} {value}" for kind, value in values.items() if value)


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"avatarcli {__version__}\n")  # data: stdout, like the listing of `avatar motions`
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")] = False,
) -> None:
    """Animatable 3D Gaussian avatars from a text prompt, driven by motion files.

    Pipeline: init -> generate -> (rig) -> animate / export. Every command reads and writes
    files, so they chain in scripts; '-' is stdin/stdout for .avatar files.
    """


@app.command()
def init(
    output: OutputOpt,
    model: Annotated[str, typer.Option("--model", "-m", help="head (FLAME layout) or body (SMPL-X layout).")] = "head",
    template: TemplateOpt = None,
    points_per_triangle: Annotated[int, typer.Option("--points-per-triangle", "-k", help="Gaussians per template triangle.")] = 10,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Sample rigged Gaussians on a template (the starting point of generate)."""
    from avatarcli import api

    av = api.init(model, output, template=template, points_per_triangle=points_per_triangle, seed=seed, history=_command_line())
    summary("avatar init", [("wrote", output if output != "-" else "stdout"), ("kind", av.kind), ("Gaussians", f"{len(av):,}"),
                            ("template", av.meta["template"]["name"])])  # fmt: skip


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help='What the avatar should look like, e.g. "Kratos" or "a chef dressed in white".')],
    output: Annotated[
        Optional[str],
        typer.Option(
            "--output", "-o", help="The .avatar to write. A .ckpt goes beside it.", show_default="the prompt's words, joined by -"
        ),
    ] = None,
    model: Annotated[
        Optional[str],
        typer.Option(
            "--model",
            "-m",
            help="head (HeadStudio recipe) or body (DreamWaltz-G / GaussianMotion recipe).",
            show_default="the kind of the --from avatar, else head",
        ),
    ] = None,
    source: Annotated[Optional[str], typer.Option("--from", help="Start from this avatar.", show_default="a fresh 'avatar init'")] = None,
    guidance: Annotated[
        str,
        typer.Option(
            help="diffusion (Stable Diffusion + ControlNet) or tiny (small random models: offline smoke runs, the result is noise)."
        ),
    ] = "diffusion",
    diffusion: Annotated[
        Optional[str], typer.Option(help="Base model: hub id or local diffusers folder.", show_default=_per_kind(DIFFUSION_DEFAULTS))
    ] = None,
    controlnet: Annotated[
        Optional[str], typer.Option(help="ControlNet: hub id or local folder.", show_default=_per_kind(CONTROLNET_DEFAULTS))
    ] = None,
    controlnet_subfolder: Annotated[
        Optional[str], typer.Option(help="Subfolder of the ControlNet repository.", show_default=_per_kind(SUBFOLDER_DEFAULTS))
    ] = None,
    encoder: Annotated[
        Optional[str],
        typer.Option(
            help="Encode renders with a tiny autoencoder (hub id or folder of a diffusers AutoencoderTiny, e.g. "
            "madebyollin/taesd) instead of the VAE: faster steps, approximate latents."
        ),
    ] = None,
    score: Annotated[Optional[str], typer.Option(help="sds, nfsd or asd.", show_default=_per_kind(DEFAULT_SCORE))] = None,
    cfg_scale: Annotated[
        Optional[float],
        typer.Option("--cfg", help="Classifier-free guidance scale.", show_default="the score's: sds 50, nfsd 7.5, asd 7.5"),
    ] = None,
    control_scale: Annotated[
        Optional[float], typer.Option(help="ControlNet strength (conditioning scale).", show_default=_recipe_default("control_scale"))
    ] = None,
    negative_prompt: Annotated[Optional[str], typer.Option(help="Negative prompt for nfsd.", show_default=NEGATIVE_PROMPT)] = None,
    stages: Annotated[
        Optional[str], typer.Option(help="Comma-separated: canonical, animate or both.", show_default=_recipe_default("stages"))
    ] = None,
    steps: Annotated[Optional[int], typer.Option(help="Training steps in all.", show_default=_recipe_default("steps"))] = None,
    batch: Annotated[Optional[int], typer.Option(help="Views per step.", show_default=_recipe_default("batch"))] = None,
    resolution: Annotated[
        Optional[int], typer.Option(help="Render size in pixels, a multiple of 8.", show_default=_recipe_default("resolution"))
    ] = None,
    lr_position: Annotated[
        Optional[float],
        typer.Option(
            help="Learning rate of positions at the start (heads: it halves over 30 000 steps).",
            show_default=_recipe_default("lr.position"),
        ),
    ] = None,
    lr_scale: Annotated[Optional[float], typer.Option(help="Learning rate of scales.", show_default=_recipe_default("lr.scale"))] = None,
    lr_rotation: Annotated[
        Optional[float], typer.Option(help="Learning rate of rotations.", show_default=_recipe_default("lr.rotation"))
    ] = None,
    lr_color: Annotated[Optional[float], typer.Option(help="Learning rate of colours.", show_default=_recipe_default("lr.color"))] = None,
    lr_opacity: Annotated[
        Optional[float], typer.Option(help="Learning rate of opacities.", show_default=_recipe_default("lr.opacity"))
    ] = None,
    lr_shape: Annotated[
        Optional[float], typer.Option(help="Learning rate of the template shape (heads).", show_default=_recipe_default("lr.shape"))
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    resume: Annotated[bool, typer.Option(help="Continue from the checkpoint beside the output.")] = False,
    checkpoint_every: Annotated[int, typer.Option(help="Steps between checkpoints (0: only at the end and on Ctrl-C).")] = 500,
    preview_every: Annotated[int, typer.Option(help="Steps between preview images (front/side/back + condition) in OUTPUT.previews/.")] = 0,
    low_memory: Annotated[bool, typer.Option(help="Encode and denoise one view at a time (slower; fits smaller GPUs).")] = False,
    compile_networks: Annotated[
        bool,
        typer.Option(
            "--compile", help="torch.compile the diffusion networks and the condition drawing (CUDA: minutes once, faster steps)."
        ),
    ] = False,
    points_per_triangle: Annotated[
        int, typer.Option("--points-per-triangle", "-k", help="Gaussians per triangle for the implied init.")
    ] = 10,
    template: TemplateOpt = None,
    device: DeviceOpt = "auto",
    gpus: Annotated[
        int,
        typer.Option(
            help="GPUs training together, one process each: every step's views are split over them (the batch must divide "
            "evenly). Or launch with torchrun --nproc-per-node N."
        ),
    ] = 1,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replace a NAME.ckpt or NAME.unfinished.avatar beside the output that no run wrote (a file of yours), "
            "and add previews to a NAME.previews/ that holds other files.",
        ),
    ] = False,
    relightable: RelightOpt = False,
    pose_dependent: Annotated[bool, typer.Option(help="Learn an appearance that follows the pose in the animation stage.")] = False,
) -> None:
    """Generate an animatable avatar from a text prompt by score distillation (under random lights with --relightable)."""
    from rich.progress import TextColumn

    from avatarcli import api
    from avatarcli.console import progress, warn
    from avatarcli.signals import Interrupted

    rates = {
        "position": lr_position,
        "scale": lr_scale,
        "rotation": lr_rotation,
        "color": lr_color,
        "opacity": lr_opacity,
        "shape": lr_shape,
    }
    start = api.load_avatar(source) if source is not None else None
    model = model or (start.kind if start is not None else "head")
    options = api.GenerateOptions(
        model=model, guidance=guidance, diffusion=diffusion, controlnet=controlnet, controlnet_subfolder=controlnet_subfolder,
        encoder=encoder, score=score, cfg_scale=cfg_scale, control_scale=control_scale, negative_prompt=negative_prompt,
        stages=tuple(s.strip() for s in stages.split(",")) if stages is not None else None, steps=steps, batch=batch, resolution=resolution,
        learning_rates={k: v for k, v in rates.items() if v is not None}, seed=seed, checkpoint_every=checkpoint_every,
        preview_every=preview_every, low_memory=low_memory, compile=compile_networks, points_per_triangle=points_per_triangle,
        template=template, device=device, gpus=gpus, relightable=relightable, pose_dependent=pose_dependent,
    )  # fmt: skip
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, the first process reports for all
        console.quiet = True
    out = output or api.default_output(prompt)
    api.check_generate_inputs(prompt, out, options, resume, inputs=(source,), force=force)  # before any output: a refusal is one line
    if guidance == "tiny":
        warn("--guidance tiny uses small random networks: the avatar will be noise (this checks the machinery, offline)")
    columns = (TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[gaussians]} Gaussians"), TextColumn("{task.fields[rate]}"))
    before = _stamp(api.checkpoint_path(out))  # a checkpoint of an earlier run is not this one's
    try:
        with progress(*columns) as bar:
            task = bar.add_task(f"generate {model}", total=None, loss="-", gaussians="", rate="")

            def on_phase(text: str) -> None:
                bar.update(task, description=f"generate {model}: {text}")

            def on_step(r: api.StepReport) -> None:
                speed = bar.tasks[0].speed
                bar.update(
                    task,
                    total=r.total,
                    completed=r.step,
                    loss=f"{r.loss:.3g}" if r.step % 10 == 0 else bar.tasks[0].fields["loss"],
                    gaussians=f"{r.gaussians:,}",
                    rate=f"{speed:.2f} it/s" if speed else "",
                )

            result = api.generate(prompt, out, options, source=start, resume=resume, on_step=on_step, on_phase=on_phase,
                                  history=_command_line(), force=force)  # fmt: skip
    except Interrupted:
        _interrupted(out, before)
    rows = [("wrote", out), ("checkpoint", str(result.checkpoint)), ("Gaussians", f"{len(result.avatar):,}"), ("guidance", result.guidance)]
    if result.previews is not None:
        rows.append(("previews", str(result.previews)))
    summary("avatar generate", rows)


def _stamp(path: Path) -> tuple[int, int] | None:
    """A file's inode and modification time (an atomic write makes a new file: a new inode,
    a new time), or None when there is none."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def _interrupted(out: str, before: tuple[int, int] | None) -> None:
    """Say what an interrupted training run (generate, capture) saved, and exit 130."""
    from avatarcli import api

    ckpt = api.checkpoint_path(out)
    if _stamp(ckpt) not in (None, before):
        saved = escape(
            f"saved {ckpt} and the avatar so far as {api.unfinished_path(out)}; continue with the same command and --resume"
            f" ({out} is written when the run ends)"
        )
        console.print(f"[yellow]interrupted:[/yellow] {saved}")
    else:
        console.print("[yellow]interrupted[/yellow] before the first step: nothing was saved")
    raise typer.Exit(130) from None


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
def rig(
    source: Annotated[
        str, typer.Argument(metavar="INPUT", help="An .avatar to re-rig, or a 3DGS .ply from any tool (in the template's rest pose).")
    ],
    output: OutputOpt,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="head or body (needed for a .ply).")] = None,
    template: TemplateOpt = None,
    fit: Annotated[bool, typer.Option(help="Scale and move a .ply onto the template by bounding boxes first.")] = False,
    max_distance: Annotated[
        Optional[float], typer.Option(help="Metres from the template beyond which Gaussians count as far.", show_default="0.3 x its radius")
    ] = None,
    drop_far: Annotated[bool, typer.Option(help="Remove the far Gaussians.")] = False,
    smooth: Annotated[bool, typer.Option(help="Smooth body weights over neighbouring Gaussians (hair, clothes).")] = True,
) -> None:
    """Bind Gaussians to a template's skeleton or mesh so they can be animated."""
    from rich.table import Table

    from avatarcli import api

    _, report = api.rig(source, output, model=model, template=template, fit=fit, max_distance=max_distance, drop_far=drop_far,
                        smooth=smooth, history=_command_line())  # fmt: skip
    table = Table(title="rigged", show_header=True)
    table.add_column("follows")
    table.add_column("Gaussians", justify="right")
    for name, count in sorted(report.per_part.items(), key=lambda kv: -kv[1])[:12]:
        table.add_row(name, f"{count:,}")
    console.print(table)
    far = f"{report.far:,} beyond {report.max_distance:.3f} m" + (f" ({report.dropped:,} dropped)" if report.dropped else "")
    rows = [("wrote", output if output != "-" else "stdout"), ("Gaussians", f"{report.count:,}"), ("far", far)]
    if report.fit is not None:
        s, t = report.fit
        rows.append(("fit", f"scale {s:.4f}, then move by ({t[0]:.3f}, {t[1]:.3f}, {t[2]:.3f}) m"))
    summary("avatar rig", rows)


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
    from avatarcli.console import progress, warn
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
    from avatarcli.console import progress

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


@app.command()
def capture(
    video: Annotated[str, typer.Argument(help="A video of one person: a talking head (--model head), or a whole person turning round.")],
    output: Annotated[str, typer.Option("--output", "-o", help="The .avatar to write. A .ckpt goes beside it.")],
    model: Annotated[str, typer.Option("--model", "-m", help="head (FLAME layout) or body (SMPL-X layout).")] = "head",
    holdout: Annotated[float, typer.Option(help="Keep the last fraction of the span out of training and score it (PSNR, SSIM).")] = 0.0,
    start: Annotated[Optional[float], typer.Option(help="First second of the video to use.")] = None,
    end: Annotated[Optional[float], typer.Option(help="Last second of the video to use.")] = None,
    fov: Annotated[float, typer.Option(help="The camera's vertical field of view in degrees (phones and webcams: about 40-60).")] = 40.0,
    elevation: Annotated[float, typer.Option(help="Degrees the camera looks down at the person (0: level).")] = 0.0,
    steps: Annotated[Optional[int], typer.Option(help="Training steps (default 3000).")] = None,
    batch: Annotated[Optional[int], typer.Option(help="Frames per step (default 4).")] = None,
    resolution: Annotated[int, typer.Option(help="Long side of the frames trained on, pixels.")] = 512,
    points_per_triangle: Annotated[
        Optional[int],
        typer.Option("--points-per-triangle", "-k", help="Gaussians per template triangle to start (default: 4 head, 2 body)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    resume: Annotated[bool, typer.Option(help="Continue from the checkpoint beside the output.")] = False,
    checkpoint_every: Annotated[int, typer.Option(help="Steps between checkpoints (0: only at the end and on Ctrl-C).")] = 500,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a NAME.ckpt or NAME.unfinished.avatar beside the output that no run wrote.")
    ] = False,
    relightable: RelightOpt = False,
    pose_dependent: Annotated[bool, typer.Option(help="Fit offsets of position, colour, scale and opacity that follow the pose.")] = True,
    template: TemplateOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Capture the person in a video as an avatar: tracked, segmented, fitted to the frames (offline)."""
    from rich.progress import TextColumn

    from avatarcli import api
    from avatarcli.signals import Interrupted

    track = api.TrackSettings(start=start, end=end, fov=fov, elevation=elevation, hands=False)
    options = api.CaptureOptions(model=model, track=track, holdout=holdout, steps=steps, batch=batch, resolution=resolution,
                                 points_per_triangle=points_per_triangle, seed=seed, checkpoint_every=checkpoint_every,
                                 pose_dependent=pose_dependent, template=template, device=device,
                                 relightable=relightable)  # fmt: skip
    api.check_capture_inputs(video, output, options, resume, force)
    before = _stamp(api.checkpoint_path(output))
    names = {"detecting": "reading the video (landmarks, person masks)", "fitting": "tracking", "scoring": "scoring held-out frames"}
    try:
        with progress(TextColumn("{task.fields[info]}")) as bar:
            tasks: dict[str, int] = {}

            def on_progress(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    tasks[stage] = bar.add_task(names.get(stage, stage), total=total, info="")
                bar.update(tasks[stage], completed=done, total=total)

            def on_step(r: api.StepReport) -> None:
                on_progress("training", r.step, r.total)
                if r.step % 10 == 0 or r.step == r.total:
                    bar.update(tasks["training"], info=f"loss {r.loss:.3g}, {r.gaussians:,} Gaussians")

            result = api.capture(video, output, options, resume=resume, force=force, on_progress=on_progress, on_step=on_step,
                                 history=_command_line())  # fmt: skip
    except Interrupted:
        _interrupted(output, before)
    c = result.avatar.meta["capture"]["video"]
    rows = [("wrote", output), ("checkpoint", str(result.checkpoint)), ("Gaussians", f"{len(result.avatar):,}"),
            ("frames", f"{c['trained_frames']} trained, {c['held_out_frames']} held out"), ("time", f"{result.seconds:.0f} s")]  # fmt: skip
    if result.holdout:
        h = result.holdout
        scores = f"PSNR {h['psnr']:.2f} dB, SSIM {h['ssim']:.3f}; in the mask {h['psnr_masked']:.2f} dB, {h['ssim_masked']:.3f}"
        rows.append(("held out", scores))
    summary("avatar capture", rows)


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs a command and exits with its status: 0 done, 2 a problem with the
    input (one ``error:`` line), 130 interrupted (Ctrl-C or SIGTERM; partial files removed),
    1 an unexpected failure (one line naming a report with the traceback)."""
    sys.exit(run(sys.argv[1:] if argv is None else argv))


def run(argv: list[str]) -> int:
    """Run ``avatar ARGV``; returns the exit status (see :func:`main`)."""
    try:
        return _run_command(argv)
    finally:
        remove_partial_outputs()  # what an interruption at an unlucky moment left


def _run_command(argv: list[str]) -> int:
    command = _command()
    try:
        with interrupts_raise():
            # invoked directly rather than through command.main, which turns Ctrl-C into a bare
            # exit status before it could be reported
            with command.make_context("avatar", list(argv)) as ctx:
                command.invoke(ctx)
        return 0
    except AvatarError as exc:
        error(str(exc))
        return exc.exit_code
    except click_exc.NoArgsIsHelpError as exc:
        text = exc.format_message()  # typer's rich help has printed itself already and gives ""
        if text.strip():
            console.print(text)
        return 0
    except click_exc.UsageError as exc:
        hint = f" (see 'avatar {exc.ctx.info_name} --help')" if exc.ctx and exc.ctx.info_name != "avatar" else ""
        error(f"{exc.format_message()}{hint}")
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        console.print("[red]aborted[/red]")
        return 130
    except KeyboardInterrupt as exc:
        signame = " by SIGTERM" if isinstance(exc, Interrupted) and exc.signum == signal.SIGTERM else ""
        console.print(f"[yellow]interrupted{signame}[/yellow]: nothing half-written was left behind")
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return 1
    except Exception as exc:  # the last resort: one line, the traceback in a report
        report = _write_report(exc)
        where = f"report written to {report}" if report else "no report could be written"
        message = " ".join(str(exc).split())[:200]
        error(f"unexpected {type(exc).__name__}: {message} ({where})")
        return 1


@functools.cache
def _command() -> ClickCommand:
    """The click command of the app (made once: building it inspects every signature)."""
    return typer.main.get_command(app)


def _silence_stdout() -> None:
    """After the reader of stdout went away: send the rest to /dev/null so that Python's own
    flush at exit does not complain."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        pass


def _write_report(exc: Exception) -> Path | None:
    """The traceback of an unexpected failure, with the command and versions, in a file under
    the cache folder (or the temporary folder); None if neither can be written."""
    import datetime
    import platform
    import tempfile
    import traceback

    from avatarcli.templates.loading import cache_dir

    now = datetime.datetime.now(datetime.timezone.utc)
    text = "".join(
        [
            f"command: {_command_line()}\n",
            f"time: {now.isoformat(timespec='seconds')}\n",
            f"avatarcli {__version__}, Python {platform.python_version()}, torch {torch.__version__}, {platform.platform()}\n\n",
            *traceback.format_exception(type(exc), exc, exc.__traceback__),
        ]
    )
    name = f"error-{now.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    for folder in (cache_dir() / "reports", Path(tempfile.gettempdir()) / "avatarcli-reports"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text)
            return folder / name
        except OSError:
            continue
    return None
