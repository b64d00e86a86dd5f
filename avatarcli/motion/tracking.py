"""``avatar track``: a motion from a person's own video, offline.

Frames are decoded one at a time (:mod:`avatarcli.motion.video`); MediaPipe finds the face
or the body in each (:mod:`avatarcli.motion.landmarks`); the template's parameters are then
fitted to every frame together, through the template itself (:mod:`avatarcli.motion.fit_head`,
:mod:`avatarcli.motion.fit_body`, :mod:`avatarcli.motion.fitting`). The result is a
:class:`Motion` at the video's frame rate, in the layout ``animate`` and ``export`` read.

Refused in one line, before anything is written: what is not a video, a clip longer than
:data:`MAX_SECONDS`, a clip where the face or person is missing for longer than a short gap
(the message names the frames).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from avatarcli.devices import repeatable
from avatarcli.errors import AvatarError
from avatarcli.motion.fitting import DEFAULT_FOV, Camera, Fitted, check_found
from avatarcli.motion.landmarks import BodyLandmarks, FaceLandmarks, detect_bodies, detect_faces, load_mediapipe, with_torso_in_view
from avatarcli.motion.motion import Motion
from avatarcli.motion.video import VideoInfo, read_frames
from avatarcli.templates.template import Template

MAX_SECONDS = 600.0  # the longest span a track takes (10 minutes)
Progress = Callable[[str, int, int], None]  # (what, done, total)


@dataclass
class TrackSettings:
    """How a video is tracked.

    Attributes:
        start, end: the seconds of the video to use (None: its start, its end).
        fov: the camera's vertical field of view, degrees.
        elevation: degrees the camera looks down at the subject (0: level).
        hands: bodies: follow the hands too, where MediaPipe sees them (its holistic
            tracker: about three times the detection time).
        smoothing: multiplies the temporal smoothness (0: none; 2: twice as smooth).
    """

    start: float | None = None
    end: float | None = None
    fov: float = DEFAULT_FOV
    elevation: float = 0.0
    hands: bool = True
    smoothing: float = 1.0

    def check(self) -> None:
        """Raise AvatarError for settings out of range."""
        for name, value, low, high in (("the field of view", self.fov, 5.0, 150.0), ("the elevation", self.elevation, -80.0, 80.0),
                                       ("the smoothing", self.smoothing, 0.0, 100.0)):  # fmt: skip
            if not (math.isfinite(value) and low <= value <= high):
                raise AvatarError(f"{name} must be between {low:g} and {high:g} (got {value:g})")
        for name, value in (("start", self.start), ("end", self.end)):
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise AvatarError(f"the {name} must be a time in seconds, 0 or more (got {value:g})")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise AvatarError(f"the end ({self.end:g} s) must come after the start ({self.start:g} s)")


def span_seconds(info: VideoInfo, settings: TrackSettings) -> float:
    """Seconds of ``info`` that ``settings`` select; AvatarError when none or too many. Infinite
    when the file does not state its length and no end is given (the frames read are then
    bounded instead, see :func:`track_video`)."""
    start = settings.start or 0.0
    total = info.seconds if info.seconds > 0 else math.inf
    if start >= total:
        raise AvatarError(f"{info.name} lasts {info.seconds:.2f} s: nothing is left after {start:g} s")
    end = min(settings.end, total) if settings.end is not None else total
    span = end - start
    if math.isfinite(span) and span > MAX_SECONDS:
        length = f"{info.seconds / 60:.1f} minutes" if settings.start is None and settings.end is None else f"a span of {span:.0f} s"
        raise AvatarError(
            f"{info.name} gives {length}; avatar track takes clips up to {MAX_SECONDS / 60:g} minutes: choose a part with --start/--end"
        )
    return span


def _at_most(frames: Generator[np.ndarray, None, None], limit: int, name: str) -> Iterator[np.ndarray]:
    """``frames``, refusing a clip of more than ``limit`` (a file that does not state its length
    is only found too long while it is read)."""
    try:
        for i, frame in enumerate(frames):
            if i >= limit:
                raise AvatarError(
                    f"{name} runs past {MAX_SECONDS / 60:g} minutes, the longest clip avatar track takes: choose a part with --start/--end"
                )
            yield frame
    finally:
        frames.close()


@dataclass
class Tracked:
    """A tracked clip: the motion and the evidence it came from.

    Attributes:
        fitted: the fitted motion (fps: the video's), where the subject stood and its shape.
        landmarks: what MediaPipe found per frame.
        missed: frames (of the span) where nothing was found, bridged by the fit.
        camera: the camera the fit assumed.
    """

    fitted: Fitted
    landmarks: FaceLandmarks | BodyLandmarks
    missed: list[int]
    camera: Camera

    @property
    def motion(self) -> Motion:
        return self.fitted.motion


FrameTap = Callable[[int, np.ndarray], None]  # (index in the span, RGB frame (H, W, 3) uint8)


def track_video(
    info: VideoInfo,
    template: Template,
    settings: TrackSettings,
    on_progress: Progress | None = None,
    tap: FrameTap | None = None,
    device: torch.device | str | None = None,
) -> Tracked:
    """Track the head or body (``template.kind``) through the video ``info`` describes.

    Args:
        info: the video (from :func:`avatarcli.motion.video.probe_video`).
        template: the template to fit through; its kind says what to track.
        settings: span, camera, hands, smoothing (checked here).
        on_progress: called with (stage, done, total): "detecting" per frame (total is the
            estimate from the video's duration), then "fitting" per optimisation step.
        tap: called with every decoded frame of the span, before MediaPipe sees it (so a
            caller that needs the frames too decodes the video once).
        device: where the fit runs (default the CPU).
    """
    from avatarcli.motion import fit_body, fit_head

    settings.check()
    span = span_seconds(info, settings)
    load_mediapipe()  # says how to install it before any decoding
    report = on_progress or (lambda stage, done, total: None)
    expected = max(1, round(span * info.fps) + 1) if math.isfinite(span) else info.frames_estimate
    limit = round(MAX_SECONDS * info.fps) + 1
    frames = contextlib.closing(_tapped(_at_most(read_frames(info, settings.start, settings.end), limit, info.name), tap))

    def detected(done: int) -> None:
        report("detecting", done, max(expected, done))

    camera = Camera(info.width, info.height, settings.fov, settings.elevation)
    landmarks: FaceLandmarks | BodyLandmarks
    with frames as decoded:  # the decoder stops at once on an error, not when collected
        if template.kind == "head":
            landmarks = detect_faces(decoded, info.width, info.height, detected)
        else:
            landmarks = with_torso_in_view(detect_bodies(decoded, info.width, info.height, settings.hands, detected))
    check_found(landmarks.found, info.fps, "face" if template.kind == "head" else "person (a shoulder and a hip) in view", info.name)
    steps = sum(fit_head.STEPS if template.kind == "head" else fit_body.STEPS)
    report("detecting", len(landmarks.found), len(landmarks.found))
    count = [0]

    def stepped() -> None:
        count[0] += 1
        report("fitting", count[0], steps)

    report("fitting", 0, steps)
    with repeatable(torch.device(device or "cpu")):  # the same video, the same motion
        if isinstance(landmarks, FaceLandmarks):
            fitted = fit_head.fit_head(landmarks, template, camera, info.fps, info.name, settings.smoothing, stepped, device)
        else:
            fitted = fit_body.fit_body(landmarks, template, camera, info.fps, info.name, settings.smoothing, stepped, device)
    fitted.motion.validate()
    missed = [int(i) for i, ok in enumerate(landmarks.found) if not ok]
    return Tracked(fitted, landmarks, missed, camera)


def _tapped(frames: Iterator[np.ndarray], tap: FrameTap | None) -> Generator[np.ndarray, None, None]:
    """``frames``, each shown to ``tap`` first."""
    try:
        for i, frame in enumerate(frames):
            if tap is not None:
                tap(i, frame)
            yield frame
    finally:
        close = getattr(frames, "close", None)
        if close is not None:
            close()
