"""``capture``: an avatar of the person in a video (tracked, segmented, fitted to the frames)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from avatarcli.api.inputs import check_kind, check_seed
from avatarcli.capture.fit import CaptureSettings, capture_config, make_trainer, prepare, score_holdout, settings_record
from avatarcli.capture.frames import FrameSource
from avatarcli.devices import resolve_device
from avatarcli.errors import AvatarError
from avatarcli.generate.checkpoint import checkpoint_path
from avatarcli.generate.run_files import check_run_files
from avatarcli.generate.trainer import StepReport, Trainer
from avatarcli.model.avatar import Avatar, history_entry
from avatarcli.motion.landmarks import load_mediapipe
from avatarcli.motion.tracking import Progress, span_seconds
from avatarcli.motion.video import VideoInfo, probe_video
from avatarcli.render.cameras import Cameras
from avatarcli.templates.loading import load_template
from avatarcli.templates.template import Pose


@dataclass
class CaptureOptions(CaptureSettings):
    """How ``capture`` runs: what is fitted (:class:`~avatarcli.capture.fit.CaptureSettings`:
    the tracking, ``holdout``, ``steps``, ``batch``, ``resolution``, ``points_per_triangle``,
    ``seed``, ``refine_steps``, ``relightable``, ``pose_dependent``; ``None`` takes the kind's
    default) and where and how the run goes.

    Attributes:
        model: "head" (a talking-head video) or "body" (a whole person, turning around).
        checkpoint_every: steps between checkpoints (0: only at the end and on interruption).
        template: a user's SMPL-X / FLAME file or folder.
        device: "auto", "cpu", "cuda" or "cuda:N".
    """

    model: str = "head"
    checkpoint_every: int = 500
    template: str | Path | None = None
    device: str = "auto"


@dataclass
class CaptureResult:
    """A finished capture.

    Attributes:
        avatar: the avatar written to ``output``.
        output, checkpoint: the files written.
        video: the video; sha256 its digest.
        holdout: the held-out frames' scores (``psnr``, ``ssim`` over the whole frame,
            ``psnr_masked``, ``ssim_masked`` inside the person mask, ``frames``); empty without.
        poses: (T) every kept frame's fitted pose in the camera's world; cameras: the video
            camera at the training size; train_frames, holdout_frames: kept-frame indices;
            frame_numbers: (T,) each kept frame's number in the span.
        seconds: the whole command's wall time.
    """

    avatar: Avatar
    output: Path
    checkpoint: Path
    video: VideoInfo
    sha256: str
    holdout: dict[str, float]
    poses: Pose
    cameras: Cameras
    train_frames: torch.Tensor
    holdout_frames: torch.Tensor
    frame_numbers: torch.Tensor
    seconds: float


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def check_capture_inputs(
    video: str | Path, output: str | Path, options: CaptureOptions, resume: bool, force: bool = False
) -> tuple[VideoInfo, CaptureSettings]:
    """Every check that can be made before the long work: the options, the outputs (and the
    files a run keeps beside them, :func:`~avatarcli.generate.run_files.check_run_files`),
    the video and its span, MediaPipe; returns the video and the settings."""
    o = options
    check_kind(o.model)
    check_seed(o.seed)
    settings = CaptureSettings(**{f.name: getattr(o, f.name) for f in fields(CaptureSettings)})  # what is fitted, recorded
    settings.check()
    resolve_device(o.device)
    if o.checkpoint_every < 0:
        raise AvatarError("the checkpoint interval must be 0 (off) or positive")
    if str(output) == "-":
        raise AvatarError("capture writes checkpoints beside its output: give a file name, not '-'")
    if not str(output).endswith(".avatar") or str(output).endswith(".unfinished.avatar"):
        raise AvatarError(f"{output}: name the captured avatar NAME.avatar")
    check_run_files(output, force=force, inputs=(video, o.template))
    if resume and not checkpoint_path(output).exists():
        raise AvatarError(f"cannot resume: there is no checkpoint {checkpoint_path(output)}")
    info = probe_video(video)
    span_seconds(info, settings.track)
    load_mediapipe()  # says how to install it before a template is built
    return info, settings


def capture(
    video: str | Path,
    output: str | Path,
    options: CaptureOptions | None = None,
    *,
    resume: bool = False,
    force: bool = False,
    on_progress: Progress | None = None,
    on_step: Callable[[StepReport], None] | None = None,
    history: str | None = None,
) -> CaptureResult:
    """Capture the person in ``video`` as an avatar written to ``output`` (checkpoint beside it).

    Args:
        resume: continue from the checkpoint beside ``output`` (the video is read and tracked
            again; the training, its frame corrections and draws continue where they stopped).
        force: replace files beside the output that no run wrote (a ``NAME.ckpt`` or
            ``NAME.unfinished.avatar`` of the user's).
        on_progress: called with (stage, done, total) while the video is read ("detecting"),
            the tracking fit runs ("fitting") and the held-out frames are scored ("scoring").
        on_step: called after every training step.
        history: the command line, recorded in the avatar.
    """
    started = time.perf_counter()
    o = options or CaptureOptions()
    info, settings = check_capture_inputs(video, output, o, resume, force)
    out = Path(output)
    digest = file_sha256(info.path)
    device = resolve_device(o.device)
    template = load_template(o.model, o.template, device)
    prepared = prepare(info, template, settings, on_progress, device)
    label = f"capture of {info.name} (sha256 {digest})"
    cfg = capture_config(o.model, label, settings, o.checkpoint_every)
    trainer = make_trainer(prepared, template, settings, cfg)
    trainer.final_stage = "captured"
    video_record = {
        "name": info.name, "sha256": digest, "fps": info.fps, "size": [info.width, info.height],
        "start": settings.track.start, "end": settings.track.end, "frames": len(prepared.footage),
        "stride": prepared.footage.stride, "trained_frames": len(prepared.train), "held_out_frames": len(prepared.holdout),
    }  # fmt: skip
    trainer.record = {"prompt": None, "capture": {"video": video_record, "settings": settings_record(settings)}}
    if history:
        trainer.meta.setdefault("history", []).append(history_entry(history))
    if resume:
        trainer.restore(checkpoint_path(out))

    def finish(t: Trainer) -> None:
        if on_progress is not None:
            on_progress("scoring", 0, 1)
        scores = score_holdout(t, prepared, settings)
        t.record["capture"]["holdout"] = scores
        if on_progress is not None:
            on_progress("scoring", 1, 1)

    avatar = trainer.run(out, on_step, finish=finish)
    source = trainer.source
    assert isinstance(source, FrameSource)
    return CaptureResult(
        avatar, out, checkpoint_path(out), info, digest, avatar.meta["capture"].get("holdout", {}), source.corrected(),
        prepared.cameras, prepared.train, prepared.holdout, prepared.footage.index, time.perf_counter() - started,
    )  # fmt: skip
