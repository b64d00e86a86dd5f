"""Commands that make avatars: init, generate, rig, capture."""

from __future__ import annotations

import os
from typing import Annotated, Optional

import typer

from avatarcli.cli.app import (
    CONTROLNET_DEFAULTS,
    DIFFUSION_DEFAULTS,
    SUBFOLDER_DEFAULTS,
    DeviceOpt,
    OutputOpt,
    RelightOpt,
    TemplateOpt,
    app,
    command_line,
    file_stamp,
    per_kind,
    recipe_default,
    report_interrupted,
)
from avatarcli.console import console, progress, summary
from avatarcli.generate.guidance.scores import DEFAULT_SCORE, NEGATIVE_PROMPT
from avatarcli.signals import Interrupted


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

    av = api.init(model, output, template=template, points_per_triangle=points_per_triangle, seed=seed, history=command_line())
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
        Optional[str], typer.Option(help="Base model: hub id or local diffusers folder.", show_default=per_kind(DIFFUSION_DEFAULTS))
    ] = None,
    controlnet: Annotated[
        Optional[str], typer.Option(help="ControlNet: hub id or local folder.", show_default=per_kind(CONTROLNET_DEFAULTS))
    ] = None,
    controlnet_subfolder: Annotated[
        Optional[str], typer.Option(help="Subfolder of the ControlNet repository.", show_default=per_kind(SUBFOLDER_DEFAULTS))
    ] = None,
    encoder: Annotated[
        Optional[str],
        typer.Option(
            help="Encode renders with a tiny autoencoder (hub id or folder of a diffusers AutoencoderTiny, e.g. "
            "madebyollin/taesd) instead of the VAE: faster steps, approximate latents."
        ),
    ] = None,
    score: Annotated[Optional[str], typer.Option(help="sds, nfsd or asd.", show_default=per_kind(DEFAULT_SCORE))] = None,
    cfg_scale: Annotated[
        Optional[float],
        typer.Option("--cfg", help="Classifier-free guidance scale.", show_default="the score's: sds 50, nfsd 7.5, asd 7.5"),
    ] = None,
    control_scale: Annotated[
        Optional[float], typer.Option(help="ControlNet strength (conditioning scale).", show_default=recipe_default("control_scale"))
    ] = None,
    negative_prompt: Annotated[Optional[str], typer.Option(help="Negative prompt for nfsd.", show_default=NEGATIVE_PROMPT)] = None,
    stages: Annotated[
        Optional[str], typer.Option(help="Comma-separated: canonical, animate or both.", show_default=recipe_default("stages"))
    ] = None,
    steps: Annotated[Optional[int], typer.Option(help="Training steps in all.", show_default=recipe_default("steps"))] = None,
    batch: Annotated[Optional[int], typer.Option(help="Views per step.", show_default=recipe_default("batch"))] = None,
    resolution: Annotated[
        Optional[int], typer.Option(help="Render size in pixels, a multiple of 8.", show_default=recipe_default("resolution"))
    ] = None,
    lr_position: Annotated[
        Optional[float],
        typer.Option(
            help="Learning rate of positions at the start (heads: it halves over 30 000 steps).",
            show_default=recipe_default("lr.position"),
        ),
    ] = None,
    lr_scale: Annotated[Optional[float], typer.Option(help="Learning rate of scales.", show_default=recipe_default("lr.scale"))] = None,
    lr_rotation: Annotated[
        Optional[float], typer.Option(help="Learning rate of rotations.", show_default=recipe_default("lr.rotation"))
    ] = None,
    lr_color: Annotated[Optional[float], typer.Option(help="Learning rate of colours.", show_default=recipe_default("lr.color"))] = None,
    lr_opacity: Annotated[
        Optional[float], typer.Option(help="Learning rate of opacities.", show_default=recipe_default("lr.opacity"))
    ] = None,
    lr_shape: Annotated[
        Optional[float], typer.Option(help="Learning rate of the template shape (heads).", show_default=recipe_default("lr.shape"))
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
    before = file_stamp(api.checkpoint_path(out))  # a checkpoint of an earlier run is not this one's
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
                                  history=command_line(), force=force)  # fmt: skip
    except Interrupted:
        report_interrupted(out, before)
    rows = [("wrote", out), ("checkpoint", str(result.checkpoint)), ("Gaussians", f"{len(result.avatar):,}"), ("guidance", result.guidance)]
    if result.previews is not None:
        rows.append(("previews", str(result.previews)))
    summary("avatar generate", rows)


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
                        smooth=smooth, history=command_line())  # fmt: skip
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
    pose_dependent: Annotated[
        bool,
        typer.Option(
            help="Fit offsets of position, colour, scale and opacity that follow the pose (off until its gauge shows the gain on a GPU)."
        ),
    ] = False,
    template: TemplateOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Capture the person in a video as an avatar: tracked, segmented, fitted to the frames (offline)."""
    from rich.progress import TextColumn

    from avatarcli import api

    track = api.TrackSettings(start=start, end=end, fov=fov, elevation=elevation, hands=False)
    options = api.CaptureOptions(model=model, track=track, holdout=holdout, steps=steps, batch=batch, resolution=resolution,
                                 points_per_triangle=points_per_triangle, seed=seed, checkpoint_every=checkpoint_every,
                                 pose_dependent=pose_dependent, template=template, device=device,
                                 relightable=relightable)  # fmt: skip
    api.check_capture_inputs(video, output, options, resume, force)
    before = file_stamp(api.checkpoint_path(output))
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
                                 history=command_line())  # fmt: skip
    except Interrupted:
        report_interrupted(output, before)
    c = result.avatar.meta["capture"]["video"]
    rows = [("wrote", output), ("checkpoint", str(result.checkpoint)), ("Gaussians", f"{len(result.avatar):,}"),
            ("frames", f"{c['trained_frames']} trained, {c['held_out_frames']} held out"), ("time", f"{result.seconds:.0f} s")]  # fmt: skip
    if result.holdout:
        h = result.holdout
        scores = f"PSNR {h['psnr']:.2f} dB, SSIM {h['ssim']:.3f}; in the mask {h['psnr_masked']:.2f} dB, {h['ssim_masked']:.3f}"
        rows.append(("held out", scores))
    summary("avatar capture", rows)
