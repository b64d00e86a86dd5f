"""The Python API: one plain function per ``avatar`` command.

Each function checks its inputs first (one place, before any long work), then does the work
through the library modules and returns objects; those that make a file take its path and
write it atomically. The command line (:mod:`avatarcli.cli`) only parses options, calls these
and prints a summary. Problems the user can fix raise :class:`~avatarcli.errors.AvatarError`
with a one-line message.

    from avatarcli import api
    head = api.init("head", output="head.avatar")
    api.generate("Kratos", "kratos.avatar", api.GenerateOptions(guidance="tiny", steps=20, batch=2, resolution=64))
    api.animate("kratos.avatar", "talk", "talk.mp4")
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from avatarcli.devices import resolve_device
from avatarcli.errors import AvatarError
from avatarcli.fileio import atomic_folder, check_output
from avatarcli.formats.frames import FrameWriter, grid, output_kind, write_png, write_png_folder
from avatarcli.formats.gltf import write_glb
from avatarcli.formats.ply import read_ply, write_gsplat_format, write_ply
from avatarcli.generate.checkpoint import checkpoint_path
from avatarcli.generate.config import GenerateConfig, recipe
from avatarcli.generate.guidance.scores import SCORES
from avatarcli.generate.trainer import StepReport, Trainer
from avatarcli.model import avatar_file
from avatarcli.model.avatar import Avatar, history_entry
from avatarcli.model.initialize import init_avatar
from avatarcli.model.rigging import RigReport, rig_avatar, rig_splat
from avatarcli.motion.builtin import BUILTINS, builtin_motion, find_builtin
from avatarcli.motion.motion import Motion, check_fps, to_template_poses
from avatarcli.motion.readers import read_motion, write_motion
from avatarcli.render.clip import AnimateOptions, FramePlan, expression_notice, plan_frames, render_frames
from avatarcli.render.rasterize import to_uint8
from avatarcli.render.views import render_views
from avatarcli.signals import interruptions_held
from avatarcli.templates.loading import KINDS, load_template
from avatarcli.templates.template import Pose, Template

AvatarInput = Avatar | str | Path
MotionInput = Motion | str | Path
EXPORT_FORMATS = ("ply", "compressed-ply", "splat", "glb")
MAX_SEED = 2**63 - 1
MAX_PIXELS = 1 << 26  # pixels rendered at once (64 views of 1024 x 1024): bounds render's views, animate's batch
MAX_BATCH = 256


# -- shared checks -----------------------------------------------------------------------------
def check_kind(kind: str | None, what: str = "model kind") -> None:
    if kind is not None and kind not in KINDS:
        raise AvatarError(f"unknown {what} {kind!r}: choose head or body")


def check_seed(seed: int) -> None:
    if not 0 <= seed <= MAX_SEED:
        raise AvatarError(f"seed must be between 0 and 2^63 - 1 (got {seed})")


def check_finite(name: str, value: float | None, low: float | None = None, high: float | None = None) -> None:
    """A number that must be finite (and within [low, high] when given)."""
    if value is None:
        return
    if not math.isfinite(value):
        raise AvatarError(f"{name} must be a finite number (got {value})")
    if low is not None and value < low:
        raise AvatarError(f"{name} must be at least {low:g} (got {value:g})")
    if high is not None and value > high:
        raise AvatarError(f"{name} must be at most {high:g} (got {value:g})")


def load_avatar(avatar: AvatarInput) -> Avatar:
    """An avatar object as it is, or read from a path (``-`` for stdin)."""
    return avatar if isinstance(avatar, Avatar) else avatar_file.load(avatar)


def load_motion(motion: MotionInput, kind: str | None = None, fps: float | None = None) -> Motion:
    """A motion object as it is, the name of a built-in motion, or a motion file.

    Args:
        kind: the avatar's kind, for built-in names both kinds have.
        fps: frame rate of files that do not store one (.npy).
    """
    if isinstance(motion, Motion):
        return motion.validate()
    path = Path(motion)
    if not path.exists() and path.suffix == "" and find_builtin(str(motion), kind) is not None:
        return builtin_motion(str(motion), kind)
    return read_motion(path, fps)


def _save(avatar: Avatar, output: str | Path | None, history: str | None) -> None:
    if history:
        avatar.add_history(history)
    if output is not None:
        avatar_file.save(avatar, output)


# -- init ----------------------------------------------------------------------------------------
def init(
    model: str = "head",
    output: str | Path | None = None,
    *,
    template: str | Path | None = None,
    points_per_triangle: int = 10,
    seed: int = 0,
    history: str | None = None,
) -> Avatar:
    """Rigged Gaussians sampled on a template: ``points_per_triangle`` on every triangle.

    Writes ``output`` (``-``: stdout) when given; returns the avatar.
    """
    check_kind(model)
    if points_per_triangle < 1:
        raise AvatarError(f"points per triangle must be at least 1 (got {points_per_triangle})")
    check_seed(seed)
    if output is not None:
        check_output(output)
    avatar = init_avatar(load_template(model, template), points_per_triangle, seed)
    _save(avatar, output, history)
    return avatar


# -- generate ----------------------------------------------------------------------------------
LEARNING_RATES = ("position", "scale", "rotation", "color", "opacity", "shape")


@dataclass
class GenerateOptions:
    """How ``generate`` runs; ``None`` takes the recipe's value for the model kind.

    Attributes:
        model: "head" (HeadStudio recipe) or "body" (DreamWaltz-G / GaussianMotion recipe).
        guidance: "diffusion" (Stable Diffusion + ControlNet) or "tiny" (small random
            networks: offline smoke runs, the avatar is noise).
        diffusion, controlnet, controlnet_subfolder: hub ids or local diffusers folders.
        encoder: a tiny autoencoder (diffusers AutoencoderTiny) to encode renders with.
        score: "sds", "nfsd" (head default) or "asd" (body default).
        cfg_scale: classifier-free guidance scale.
        negative_prompt: for nfsd.
        stages: ("canonical", "animate") for bodies, ("animate",) for heads by default.
        steps, batch, resolution: training length, views per step, render size.
        learning_rates: overrides by name (position, scale, rotation, color, opacity, shape).
        seed: random seed.
        checkpoint_every: steps between checkpoints (0: only at the end and on interruption).
        preview_every: steps between preview images (0: none).
        low_memory: encode and denoise one view at a time.
        compile: torch.compile the networks and the condition drawing.
        points_per_triangle: Gaussians per triangle when no starting avatar is given.
        template: a user's SMPL-X / FLAME file or folder.
        device: "auto", "cpu", "cuda" or "cuda:N".
    """

    model: str = "head"
    guidance: str = "diffusion"
    diffusion: str | None = None
    controlnet: str | None = None
    controlnet_subfolder: str | None = None
    encoder: str | None = None
    score: str | None = None
    cfg_scale: float = 7.5
    negative_prompt: str | None = None
    stages: tuple[str, ...] | None = None
    steps: int | None = None
    batch: int | None = None
    resolution: int | None = None
    learning_rates: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    checkpoint_every: int = 500
    preview_every: int = 0
    low_memory: bool = False
    compile: bool = False
    points_per_triangle: int = 10
    template: str | Path | None = None
    device: str = "auto"


@dataclass
class GenerateResult:
    avatar: Avatar
    output: Path
    checkpoint: Path
    previews: Path | None
    guidance: str


def _generate_config(prompt: str, o: GenerateOptions) -> GenerateConfig:
    """The recipe for ``o.model`` with the options applied, validated."""
    cfg = recipe(o.model, prompt, stages=o.stages, steps=o.steps, batch=o.batch, resolution=o.resolution, seed=o.seed,
                 checkpoint_every=o.checkpoint_every, preview_every=o.preview_every)  # fmt: skip
    for name, value in o.learning_rates.items():
        setattr(cfg.lr, name, value)
    cfg.compile = o.compile
    return cfg.validate()


def check_generate_inputs(prompt: str, output: str | Path, options: GenerateOptions, resume: bool) -> GenerateConfig:
    """Every check that can be made before loading anything; returns the run's configuration
    (the recipe for the model kind with the options applied, which checks its own settings)."""
    o = options
    unknown = sorted(set(o.learning_rates) - set(LEARNING_RATES))
    if unknown:
        raise AvatarError(f"unknown learning rate {unknown[0]!r}: choose {', '.join(LEARNING_RATES)}")
    for name, value in o.learning_rates.items():
        check_finite(f"the {name} learning rate", value, low=0.0)
    cfg = _generate_config(prompt, o)
    if o.guidance not in ("diffusion", "tiny"):
        raise AvatarError(f"unknown guidance {o.guidance!r}: choose diffusion or tiny")
    if o.score is not None and o.score not in SCORES:
        raise AvatarError(f"unknown score {o.score!r}: choose {', '.join(SCORES)}")
    resolve_device(o.device)
    if o.guidance == "tiny" and o.encoder is not None:
        raise AvatarError("an encoder applies to diffusion guidance (tiny brings its own small networks)")
    if str(output) == "-":
        raise AvatarError("generate writes checkpoints beside its output: give a file name, not '-'")
    if Path(output).suffix == ".ckpt":
        raise AvatarError(f"{output}: the checkpoint beside the output would have the same name; name the avatar .avatar")
    check_finite("the guidance scale", o.cfg_scale)
    if o.checkpoint_every < 0 or o.preview_every < 0:
        raise AvatarError("checkpoint and preview intervals must be 0 (off) or positive")
    if o.points_per_triangle < 1:
        raise AvatarError(f"points per triangle must be at least 1 (got {o.points_per_triangle})")
    check_seed(o.seed)
    check_output(output)
    check_output(checkpoint_path(output))
    if o.preview_every:
        check_output(Path(output).with_suffix(".previews"), "folder", force=True)  # a resumed run adds to its previews
    if resume and not checkpoint_path(output).exists():
        raise AvatarError(f"cannot resume: there is no checkpoint {checkpoint_path(output)}")
    return cfg


def generate(
    prompt: str,
    output: str | Path,
    options: GenerateOptions | None = None,
    *,
    source: AvatarInput | None = None,
    resume: bool = False,
    on_step: Callable[[StepReport], None] | None = None,
    on_phase: Callable[[str], None] | None = None,
    history: str | None = None,
) -> GenerateResult:
    """Train an avatar towards ``prompt`` and write it to ``output`` (checkpoint beside it).

    Args:
        source: the avatar to start from (default: a fresh ``init``).
        resume: continue from the checkpoint beside ``output``.
        on_step: called after every step.
        on_phase: called with a short description when a slow phase starts (loading,
            compiling), so a progress display can say why nothing moves.
    """
    from avatarcli.generate.guidance.diffusion import DEFAULT_SPECS, DiffusionGuidance, DiffusionSpec, GuidanceConfig, load_components
    from avatarcli.generate.guidance.scores import NEGATIVE_PROMPT

    o = options or GenerateOptions()
    cfg = check_generate_inputs(prompt, output, o, resume)
    phase = on_phase or (lambda text: None)
    dev = resolve_device(o.device)
    tpl = load_template(o.model, o.template, dev)
    if source is not None:
        start = load_avatar(source)
        if start.kind != o.model:
            raise AvatarError(f"the starting avatar is a {start.kind} avatar but the model kind is {o.model}")
    else:
        start = init_avatar(tpl, o.points_per_triangle, o.seed)
    gcfg = GuidanceConfig(
        score=o.score or ("nfsd" if o.model == "head" else "asd"), guidance_scale=o.cfg_scale,
        negative_prompt=o.negative_prompt or NEGATIVE_PROMPT, timesteps=cfg.timesteps, low_memory=o.low_memory,
    )  # fmt: skip
    phase("loading the diffusion networks")
    if o.guidance == "tiny":
        from avatarcli.generate.guidance.random_weights import tiny_components

        comps = tiny_components(dev, o.seed)
        gcfg.resolution = 64
    else:
        base = DEFAULT_SPECS[o.model]
        spec = DiffusionSpec(o.diffusion or base.base, o.controlnet or base.controlnet,
                             o.controlnet_subfolder if o.controlnet else base.controlnet_subfolder, base.vae, o.encoder)  # fmt: skip
        comps = load_components(spec, dev)
    guide = DiffusionGuidance(comps, gcfg)
    if o.compile:
        guide.compile()
    out = Path(output)
    previews = out.with_suffix(".previews") if o.preview_every else None
    trainer = Trainer(start, tpl, guide, cfg)
    if history:
        trainer.meta.setdefault("history", []).append(history_entry(history))
    if resume:
        trainer.restore(checkpoint_path(out))
    phase("training")
    result = trainer.run(out, on_step, previews)
    return GenerateResult(result, out, checkpoint_path(out), previews, guide.name)


# -- rig ---------------------------------------------------------------------------------------
def rig(
    source: AvatarInput,
    output: str | Path | None = None,
    *,
    model: str | None = None,
    template: str | Path | None = None,
    fit: bool = False,
    max_distance: float | None = None,
    drop_far: bool = False,
    smooth: bool = True,
    history: str | None = None,
) -> tuple[Avatar, RigReport]:
    """Bind Gaussians to a template: an avatar (re-rigged from its rest-pose positions) or a
    3DGS .ply from any tool (``model`` says whether it is a head or a body).

    Args:
        fit: scale and move a .ply onto the template by bounding boxes first.
        max_distance: metres from the template beyond which Gaussians count as far.
        drop_far: remove the far Gaussians.
        smooth: smooth body weights over neighbouring Gaussians.
    """
    check_kind(model)
    check_finite("the far distance", max_distance)
    if max_distance is not None and max_distance <= 0:
        raise AvatarError(f"the far distance must be positive (got {max_distance})")
    if output is not None:
        check_output(output)
    kwargs: dict[str, Any] = {"max_distance": max_distance, "drop_far": drop_far, "smooth": smooth}
    if not isinstance(source, Avatar) and str(source).lower().endswith(".ply"):
        if model is None:
            raise AvatarError("say what the splat is: a head or a body model")
        av, report = rig_splat(read_ply(source), load_template(model, template), fit=fit, **kwargs)
    else:
        start = load_avatar(source)
        if model is not None and model != start.kind:
            raise AvatarError(f"the avatar is a {start.kind}, not a {model}")
        if fit:
            raise AvatarError("fitting applies to .ply input; an avatar is already on its template")
        av, report = rig_avatar(start, load_template(start.kind, template), **kwargs)
    _save(av, output, history)
    return av, report


# -- animate -------------------------------------------------------------------------------------
@dataclass
class AnimateResult:
    output: Path
    plan: FramePlan
    motion: Motion


def check_animate_inputs(output: str | Path, options: AnimateOptions, *, motion_fps: float | None = None, force: bool = False) -> None:
    """Every check that can be made before reading the avatar and the motion (the clip's
    length, frame rate times duration, is bounded when the motion is resampled)."""
    o = options
    check_output(output, "folder" if output_kind(output) == "folder" else "file", force)
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
) -> AnimateResult:
    """Drive ``avatar`` with ``motion`` (a file, a built-in name or a Motion) and write the
    frames to ``output``: a folder of PNGs, an .mp4 or a .gif.

    Args:
        on_notice: receives one-line notes about how the motion was fitted to the template.
        on_frames: called with (frames done, frames in all) as frames are written.
        force: write PNG frames into a folder that already holds files (files of the same
            names are replaced; others are kept).
    """
    o = options or AnimateOptions()
    check_animate_inputs(output, o, motion_fps=motion_fps, force=force)
    dev = resolve_device(device)
    av = load_avatar(avatar)
    mot = load_motion(motion, av.kind, motion_fps)
    tpl = load_template(av.kind, template, dev)
    plan = plan_frames(av, tpl, mot, o)
    for note in (plan.retarget.converted_from, expression_notice(plan.retarget)):
        if note and on_notice is not None:
            on_notice(note)
    done = 0
    batch = min(o.batch, max(1, MAX_PIXELS // (o.size[0] * o.size[1])))  # what fits in memory at once
    with FrameWriter(output, plan.fps, o.size, frames=len(plan), force=force) as writer:
        for frames in render_frames(av, tpl, plan, o.background, batch):
            for frame in frames:
                writer.add(frame)
            done += len(frames)
            if on_frames is not None:
                with interruptions_held():  # a progress display's lock, like any, must not be split by one
                    on_frames(done, len(plan))
    return AnimateResult(Path(output), plan, mot)


# -- render --------------------------------------------------------------------------------------
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
) -> Path:
    """Turntable views of the rest pose: one .png with the views side by side, or a folder
    of ``view_NNNN.png`` (``force``: into a folder that already holds files, replacing only
    files of the same names)."""
    if views < 1:
        raise AvatarError(f"at least one view is needed (got {views})")
    if views * size[0] * size[1] > MAX_PIXELS:
        raise AvatarError(f"{views} views of {size[0]}x{size[1]} exceed the {MAX_PIXELS:,} pixels drawn at once: ask for fewer or smaller")
    check_finite("the elevation", elevation, -90.0, 90.0)
    out = Path(output)
    if str(output) == "-":
        raise AvatarError("views cannot go to standard output: name a .png or a folder")
    if out.suffix and out.suffix.lower() != ".png":
        raise AvatarError(f"cannot write views to {output}: name a .png (views side by side) or a folder")
    check_output(output, "file" if out.suffix else "folder", force)
    dev = resolve_device(device)
    av = load_avatar(avatar)
    tpl = load_template(av.kind, template, dev)
    bg = background if background is not None else torch.ones(3)
    images = to_uint8(render_views(av, tpl, views, size, bg, elevation))
    if out.suffix:
        write_png(grid(images), out)
    else:
        write_png_folder(images, out, stem="view", force=force)
    return out


# -- export --------------------------------------------------------------------------------------
def export_format(output: str | Path, fmt: str | None = None) -> str:
    """The export format ``fmt`` names, or the one the output's name implies."""
    if fmt is not None:
        if fmt not in EXPORT_FORMATS:
            raise AvatarError(f"unknown export format {fmt!r}: choose {', '.join(EXPORT_FORMATS)}")
        return fmt
    name = str(output).lower()
    if name.endswith(".compressed.ply"):
        return "compressed-ply"
    for suffix, f in ((".ply", "ply"), (".splat", "splat"), (".glb", "glb")):
        if name.endswith(suffix):
            return f
    raise AvatarError(f"cannot tell the export format of {output}: use .ply, .compressed.ply, .splat or .glb (or name the format)")


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
) -> list[Path]:
    """Write the avatar in a format other tools open; returns the files written.

    Formats: ``.ply`` (INRIA 3DGS), ``.compressed.ply`` (SuperSplat), ``.splat``, ``.glb``
    (the skinned template mesh; with ``motion``, its animation). Gaussian formats are the
    rest pose, or ``frame`` of ``motion``; ``sequence`` writes one .ply per motion frame into
    the folder ``output`` (``force``: one that already holds files, replacing only files of
    the same names).
    """
    kind = "ply" if sequence else export_format(output, fmt)
    if not 0 <= sh_degree <= 3:
        raise AvatarError(f"the SH degree must be between 0 and 3 (got {sh_degree})")
    if frame is not None and motion is None:
        raise AvatarError("a frame number needs a motion")
    if kind == "glb" and frame is not None:
        raise AvatarError("a frame does not apply to .glb: the whole motion becomes its animation")
    if sequence and motion is None:
        raise AvatarError("a sequence needs a motion")
    if sequence and Path(output).suffix:
        raise AvatarError(f"a sequence is a folder of .ply files; {output} looks like a file name")
    if str(output) == "-":
        raise AvatarError("exports cannot go to standard output: name a file")
    if motion_fps is not None:
        check_fps(motion_fps, "the motion frame rate")
    check_output(output, "folder" if sequence else "file", force)
    av = load_avatar(avatar)
    mot = load_motion(motion, av.kind, motion_fps) if motion is not None else None
    tpl = load_template(av.kind, template, resolve_device(device))
    if kind == "glb":
        write_glb(av, tpl, output, mot)
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
            return _write_sequence(av, tpl, poses, Path(output), sh_degree, force)
        g = av.posed(tpl, None if poses is None else poses.index([frame or 0])).gaussians(0)
    if kind == "ply":
        write_ply(g, output, sh_degree)
    else:
        write_gsplat_format(g, output, "splat" if kind == "splat" else "ply_compressed")
    return [Path(output)]


def _write_sequence(
    avatar: Avatar, template: Template, poses: Pose, folder: Path, sh_degree: int, force: bool = False, chunk: int = 16
) -> list[Path]:
    """One .ply per pose, ``frame_NNNN.ply``, into ``folder`` (atomically; see ``atomic_folder``)."""
    total = poses.batch
    digits = max(4, len(str(total - 1)))
    names = [f"frame_{i:0{digits}d}.ply" for i in range(total)]
    with atomic_folder(folder, force) as tmp:
        for start in range(0, total, chunk):
            idx = list(range(start, min(start + chunk, total)))
            pg = avatar.posed(template, poses.index(idx))
            for b, i in enumerate(idx):
                write_ply(pg.gaussians(b), tmp / names[i], sh_degree)
    return [folder / n for n in names]


# -- info ----------------------------------------------------------------------------------------
def info(avatar: AvatarInput, template: str | Path | None = None) -> dict[str, Any]:
    """The facts of an avatar, as a dict ready for JSON. ``bounds`` (rest pose, metres) is
    None when the template cannot be loaded or does not match."""
    av = load_avatar(avatar)
    meta = av.meta
    bounds = None
    try:
        tpl = load_template(av.kind, template)
        with torch.no_grad():
            means = av.posed(tpl).means[0]
        if len(means):
            bounds = [means.min(0).values.tolist(), means.max(0).values.tolist()]
    except AvatarError:
        pass
    return {
        "kind": av.kind,
        "binding": av.binding.kind,
        "stage": meta.get("stage"),
        "gaussians": len(av),
        "sh_degree": av.gaussians.sh_degree,
        "prompt": meta.get("prompt"),
        "seed": meta.get("seed"),
        "template": meta.get("template", {}),
        "bounds": bounds,
        "extra_tensors": sorted(av.extra),
        "history": meta.get("history", []),
        "format_version": meta.get("version"),
    }


# -- motions -------------------------------------------------------------------------------------
def builtin_motions() -> list[dict[str, Any]]:
    """The built-in motions: name, kind, seconds and what they show."""
    return [{"name": n, "kind": kind, "seconds": spec.seconds, "what": spec.description} for kind, group in BUILTINS.items()
            for n, spec in group.items()]  # fmt: skip


def motion(
    name: str, output: str | Path | None = None, *, model: str | None = None, seconds: float | None = None, fps: float = 30.0
) -> Motion:
    """A built-in motion, written as an editable canonical .npz when ``output`` is given."""
    check_kind(model)
    check_finite("the length", seconds)
    check_fps(fps)
    if output is not None:
        if not str(output).lower().endswith(".npz"):
            raise AvatarError(f"motions are written as .npz (got {output})")
        check_output(output)
    mot = builtin_motion(name, model, seconds, fps)
    if output is not None:
        write_motion(mot, output)
    return mot


__all__: Sequence[str] = (
    "AnimateOptions", "GenerateOptions", "animate", "builtin_motions", "export", "generate", "info", "init", "load_avatar",
    "load_motion", "motion", "render", "rig",
)  # fmt: skip
