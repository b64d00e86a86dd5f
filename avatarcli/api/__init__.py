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

from avatarcli.api.capture import CaptureOptions, CaptureResult, capture, check_capture_inputs
from avatarcli.api.creation import info, init, rig
from avatarcli.api.exporting import EXPORT_FORMATS, export, export_format
from avatarcli.api.generation import (
    LEARNING_RATES,
    GenerateOptions,
    GenerateResult,
    check_generate_inputs,
    compile_cache,
    default_output,
    generate,
)
from avatarcli.api.inputs import (
    AvatarInput,
    LightInput,
    MotionInput,
    check_finite,
    check_kind,
    check_seed,
    load_avatar,
    load_light,
    load_motion,
    parse_color,
    parse_size,
)
from avatarcli.api.motions import builtin_motions, motion
from avatarcli.api.playback import AnimateResult, animate, check_animate_inputs, render
from avatarcli.api.tracking import TrackResult, track
from avatarcli.generate.checkpoint import checkpoint_path, unfinished_path
from avatarcli.generate.trainer import StepReport
from avatarcli.motion.tracking import TrackSettings
from avatarcli.render.clip import AnimateOptions

__all__ = [
    "EXPORT_FORMATS", "LEARNING_RATES", "AnimateOptions", "AnimateResult", "AvatarInput", "CaptureOptions", "CaptureResult",
    "GenerateOptions",
    "GenerateResult", "LightInput", "MotionInput", "StepReport", "TrackResult", "TrackSettings", "animate", "builtin_motions",
    "capture", "check_animate_inputs", "check_capture_inputs", "check_finite", "check_generate_inputs", "check_kind",
    "check_seed", "checkpoint_path", "compile_cache", "default_output", "export", "export_format", "generate", "info", "init",
    "load_avatar", "load_light", "load_motion", "motion", "parse_color", "parse_size", "render", "rig", "track", "unfinished_path",
]  # fmt: skip
