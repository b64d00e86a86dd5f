"""``generate``: train an avatar towards a prompt, in one process or one per GPU."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from avatarcli.api.inputs import AvatarInput, check_avatar_name, check_finite, check_points_per_triangle, check_seed, load_avatar, paths
from avatarcli.devices import resolve_device
from avatarcli.errors import AvatarError
from avatarcli.fileio import PathInput
from avatarcli.generate import distributed
from avatarcli.generate.checkpoint import checkpoint_path
from avatarcli.generate.config import STAGES, GenerateConfig, recipe
from avatarcli.generate.guidance.scores import DEFAULT_SCORE, SCORES
from avatarcli.generate.run_files import check_run_files, previews_path
from avatarcli.generate.trainer import StepReport, Trainer
from avatarcli.model import avatar_file
from avatarcli.model.avatar import Avatar, history_entry
from avatarcli.model.initialize import init_avatar
from avatarcli.model.material import with_material
from avatarcli.templates.loading import load_template

LEARNING_RATES = ("position", "scale", "rotation", "color", "opacity", "shape")
MAX_RESOLUTION = 2048  # pixels a side of a training render (the recipes train at 1024)


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
        cfg_scale: classifier-free guidance scale; None takes the score's (sds 50, nfsd 7.5,
            asd 7.5).
        control_scale: ControlNet strength; None takes the recipe's (head 1.5, body 1.0).
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
        gpus: processes training together, one per GPU (with ``device`` "cpu": CPU
            processes, for tests).
        relightable: learn materials under a random light per view instead of colours (an
            avatar from ``source`` that has none gets them; one that has them always learns them).
        pose_dependent: train a pose-dependent appearance in the animation stage (offsets
            of position, colour, scale and opacity that follow the random training poses).
    """

    model: str = "head"
    guidance: str = "diffusion"
    diffusion: str | None = None
    controlnet: str | None = None
    controlnet_subfolder: str | None = None
    encoder: str | None = None
    score: str | None = None
    cfg_scale: float | None = None
    control_scale: float | None = None
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
    gpus: int = 1
    relightable: bool = False
    pose_dependent: bool = False


@dataclass
class GenerateResult:
    avatar: Avatar
    output: Path
    checkpoint: Path
    previews: Path | None
    guidance: str


def default_output(prompt: str) -> str:
    """The output named after the prompt: its words, lower case, joined by -, then .avatar."""
    keep = "".join(c.lower() if c.isalnum() else "-" for c in prompt.strip())
    return ("-".join(filter(None, keep.split("-")))[:48] or "avatar") + ".avatar"


def _generate_config(prompt: str, o: GenerateOptions) -> GenerateConfig:
    """The recipe for ``o.model`` with the options applied, validated."""
    cfg = recipe(o.model, prompt, stages=o.stages, steps=o.steps, batch=o.batch, resolution=o.resolution, seed=o.seed,
                 checkpoint_every=o.checkpoint_every, preview_every=o.preview_every, control_scale=o.control_scale)  # fmt: skip
    for name, value in o.learning_rates.items():
        setattr(cfg.lr, name, value)
    cfg.compile = o.compile
    cfg.pose_dependent.enabled = o.pose_dependent
    return cfg.validate()


def check_generate_inputs(
    prompt: str,
    output: str | Path,
    options: GenerateOptions,
    resume: bool,
    *,
    inputs: tuple[PathInput, ...] = (),
    force: bool = False,
) -> GenerateConfig:
    """Every check that can be made before loading anything; returns the run's configuration
    (the recipe for the model kind with the options applied, which checks its own settings).

    Args:
        inputs: the files the run reads (the ``--from`` avatar, a template): none of the
            run's files may be one of them.
        force: replace files beside the output that no run wrote (see
            :func:`~avatarcli.generate.run_files.check_run_files`).
    """
    o = options
    unknown = sorted(set(o.learning_rates) - set(LEARNING_RATES))
    if unknown:
        raise AvatarError(f"unknown learning rate {unknown[0]!r}: choose {', '.join(LEARNING_RATES)}")
    for name, value in o.learning_rates.items():
        check_finite(f"the {name} learning rate", value, low=0.0)
    if o.stages is not None and (not o.stages or not all(o.stages)):
        raise AvatarError(f"no stage named: give one or more of {', '.join(STAGES)}, separated by commas")
    cfg = _generate_config(prompt, o)
    if cfg.resolution > MAX_RESOLUTION:
        raise AvatarError(f"the resolution must be at most {MAX_RESOLUTION} pixels (got {cfg.resolution})")
    if o.guidance not in ("diffusion", "tiny"):
        raise AvatarError(f"unknown guidance {o.guidance!r}: choose diffusion or tiny")
    if o.score is not None and o.score not in SCORES:
        raise AvatarError(f"unknown score {o.score!r}: choose {', '.join(SCORES)}")
    resolve_device(o.device)
    if o.guidance == "tiny" and o.encoder is not None:
        raise AvatarError("an encoder applies to diffusion guidance (tiny brings its own small networks)")
    if str(output) == "-":
        raise AvatarError("generate writes checkpoints beside its output: give a file name, not '-'")
    if str(output).endswith(".unfinished.avatar"):
        raise AvatarError(f"{output}: names ending .unfinished.avatar are where runs keep their avatar so far; choose another")
    if Path(output).suffix == ".ckpt":
        raise AvatarError(f"{output}: the checkpoint beside the output would have the same name; name the avatar .avatar")
    check_avatar_name(output)
    check_finite("the guidance scale", o.cfg_scale)
    if o.checkpoint_every < 0 or o.preview_every < 0:
        raise AvatarError("checkpoint and preview intervals must be 0 (off) or positive")
    check_points_per_triangle(o.points_per_triangle)
    if o.gpus < 1:
        raise AvatarError(f"the number of GPUs must be at least 1 (got {o.gpus})")
    if cfg.batch % o.gpus:
        raise AvatarError(f"the batch ({cfg.batch} views) must divide evenly over {o.gpus} GPUs")
    check_seed(o.seed)
    if o.pose_dependent and "animate" not in cfg.stages:
        raise AvatarError("a pose-dependent appearance trains in the animate stage: add it to --stages")
    check_run_files(output, previews=bool(o.preview_every), force=force, inputs=(*inputs, o.template))
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
    force: bool = False,
) -> GenerateResult:
    """Train an avatar towards ``prompt`` and write it to ``output`` (checkpoint beside it).

    With ``options.gpus`` > 1, one process per GPU trains the avatar together (each renders
    and scores its share of every step's views); under ``torchrun`` this process is one of
    them. Only the first process writes files.

    Args:
        source: the avatar to start from (default: a fresh ``init``).
        resume: continue from the checkpoint beside ``output``.
        on_step: called after every step.
        on_phase: called with a short description when a slow phase starts (loading,
            compiling), so a progress display can say why nothing moves.
        force: replace files beside the output that no run wrote: a ``NAME.ckpt`` or
            ``NAME.unfinished.avatar`` of the user's (``NAME.avatar`` is always replaced when
            the run finishes, never before).
    """
    o = options or GenerateOptions()
    cfg = check_generate_inputs(prompt, output, o, resume, inputs=paths(source), force=force)
    start = load_avatar(source) if source is not None else None
    if start is not None and start.kind != o.model:
        raise AvatarError(f"the starting avatar is a {start.kind} avatar but the model kind is {o.model}")
    if o.gpus > 1 and not distributed.launched():
        return _generate_spawned(prompt, Path(output), o, start, resume, on_step, on_phase, history)
    group = distributed.from_environment(resolve_device(o.device))
    return _generate(prompt, Path(output), o, cfg, start, resume, on_step, on_phase, history, group)


def _generate(
    prompt: str,
    out: Path,
    o: GenerateOptions,
    cfg: GenerateConfig,
    start: Avatar | None,
    resume: bool,
    on_step: Callable[[StepReport], None] | None,
    on_phase: Callable[[str], None] | None,
    history: str | None,
    group: distributed.Group | None,
) -> GenerateResult:
    """One process's part of a run (the whole run when ``group`` is None)."""
    from avatarcli.generate.guidance.diffusion import DEFAULT_SPECS, DiffusionGuidance, DiffusionSpec, GuidanceConfig, load_components
    from avatarcli.generate.guidance.scores import NEGATIVE_PROMPT

    phase = on_phase or (lambda text: None)
    dev = group.device if group is not None else resolve_device(o.device)
    tpl = load_template(o.model, o.template, dev)
    if start is None:
        start = init_avatar(tpl, o.points_per_triangle, o.seed)
    if o.relightable:
        start = with_material(start, tpl)
    gcfg = GuidanceConfig(
        score=o.score or DEFAULT_SCORE[o.model], guidance_scale=o.cfg_scale,
        negative_prompt=o.negative_prompt or NEGATIVE_PROMPT, timesteps=cfg.timesteps, conditioning_scale=cfg.control_scale,
        low_memory=o.low_memory,
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
        compile_cache()
        guide.compile()
    previews = previews_path(out) if o.preview_every else None
    trainer = Trainer(start, tpl, guide, cfg, group)
    if history:
        trainer.meta.setdefault("history", []).append(history_entry(history))
    if resume:
        trainer.restore(checkpoint_path(out))
    phase("compiling the networks (minutes the first time, less with a warm cache)" if o.compile else "first step")

    def reported(report: StepReport) -> None:
        if report.step == trainer.first_step:
            phase("training")
        if on_step is not None:
            on_step(report)

    result = trainer.run(out, reported, previews)
    return GenerateResult(result, out, checkpoint_path(out), previews, guide.name)


def compile_cache() -> Path:
    """Keep torch.compile's on-disk caches under the avatarcli cache folder (unless the user
    set their own), so that a second ``--compile`` run reuses the first one's work."""
    import os

    from avatarcli.templates.loading import cache_dir

    folder = cache_dir() / "torch-compile"
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(folder / "inductor"))
    os.environ.setdefault("TRITON_CACHE_DIR", str(folder / "triton"))
    return folder


def _generate_spawned(
    prompt: str,
    out: Path,
    o: GenerateOptions,
    start: Avatar | None,
    resume: bool,
    on_step: Callable[[StepReport], None] | None,
    on_phase: Callable[[str], None] | None,
    history: str | None,
) -> GenerateResult:
    """Start ``o.gpus`` processes, one per device, and relay the first one's progress."""
    import os
    import queue as queue_module
    import signal

    import torch.multiprocessing as mp

    from avatarcli.signals import Interrupted

    device = resolve_device(o.device)
    if device.type == "cuda" and o.gpus > torch.cuda.device_count():
        raise AvatarError(f"{o.gpus} GPUs were asked for but {torch.cuda.device_count()} are here")
    ctx = mp.get_context("spawn")
    events = ctx.Queue()
    port = distributed.free_port()
    procs = [
        ctx.Process(target=_worker, args=(rank, o.gpus, port, prompt, out, o, start, resume, history, events, os.getpid()), daemon=False)
        for rank in range(o.gpus)
    ]
    for p in procs:
        p.start()
    finished, failure, interrupted, signum = 0, None, False, signal.SIGINT
    while finished < len(procs):
        try:
            event = events.get(timeout=1.0)
        except queue_module.Empty:
            if all(not p.is_alive() for p in procs):  # every process has ended and said all it will
                if not interrupted:
                    failure = failure or "a training process ended unexpectedly"
                break
            if any(p.exitcode not in (None, 0) for p in procs) and failure is None and not interrupted:
                failure = "a training process ended unexpectedly"
                break
            continue
        except KeyboardInterrupt as exc:
            # a terminal's Ctrl-C reached the processes too, `kill PID` only this one: tell them
            # (SIGTERM, which they take as a request to stop after the step even if they had it)
            if not interrupted:
                signum = getattr(exc, "signum", signal.SIGINT)
                for p in procs:
                    if p.is_alive() and p.pid is not None:
                        os.kill(p.pid, signal.SIGTERM)
            interrupted = True
            continue
        kind = event[0]
        if kind == "phase" and on_phase is not None:
            on_phase(event[1])
        elif kind == "step" and on_step is not None:
            on_step(StepReport(*event[1]))
        elif kind == "done":
            finished += 1
        elif kind == "interrupted":
            interrupted, finished = True, finished + 1
        elif kind in ("error", "crash"):
            failure, finished = failure or event[1], finished + 1
    for p in procs:
        p.join(timeout=60)
        if p.is_alive():
            p.terminate()
    if interrupted:
        raise Interrupted(signum)
    if failure is not None:
        raise AvatarError(failure) if not failure.startswith("Traceback") else RuntimeError(failure)
    avatar = avatar_file.load(out)
    previews = previews_path(out) if o.preview_every else None
    return GenerateResult(avatar, out, checkpoint_path(out), previews, str(avatar.meta.get("guidance", "")))


def _worker(rank: int, size: int, port: int, prompt: str, out: Path, o: GenerateOptions, start: Avatar | None, resume: bool,
            history: str | None, events: Any, parent: int) -> None:  # fmt: skip
    """One process of ``_generate_spawned``: joins the group and runs its part. It is not
    daemonic (compilation starts processes of its own), so it asks to be sent SIGTERM when
    the launching process ``parent`` ends, even by SIGKILL."""
    import os
    import traceback

    from avatarcli.signals import end_with_parent

    end_with_parent(parent)
    device = resolve_device(o.device)
    device = torch.device("cuda", rank) if device.type == "cuda" else device
    try:
        group = distributed.join(rank, size, device, port=port)
        first = rank == 0

        def on_step(r: StepReport) -> None:
            loss = r.loss if r.step % 10 == 0 or r.step == r.total else float("nan")  # reading it waits for the GPU
            events.put(("step", (r.step, r.total, r.stage, torch.tensor(loss), r.gaussians, r.stop)))

        cfg = _generate_config(prompt, o)
        _generate(prompt, out, o, cfg, start, resume, on_step if first else None,
                  (lambda text: events.put(("phase", text))) if first else None, history, group)  # fmt: skip
        events.put(("done", rank))
    except KeyboardInterrupt:  # Interrupted after a checkpoint, or Ctrl-C while loading
        events.put(("interrupted", rank))
    except AvatarError as exc:
        events.put(("error", str(exc)))
    except BaseException:
        events.put(("crash", traceback.format_exc()))
    finally:
        distributed.leave()
        if os.getppid() != parent:  # nobody reads the events any more: do not wait to deliver them
            events.cancel_join_thread()
