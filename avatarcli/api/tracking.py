"""``track``: a motion from a person's own video (MediaPipe landmarks fitted to the template)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from avatarcli.api.inputs import check_kind
from avatarcli.errors import AvatarError
from avatarcli.fileio import check_output
from avatarcli.motion.fitting import frame_ranges
from avatarcli.motion.landmarks import load_mediapipe
from avatarcli.motion.motion import Motion
from avatarcli.motion.readers import write_motion
from avatarcli.motion.tracking import Progress, TrackSettings, span_seconds, track_video
from avatarcli.motion.video import VideoInfo, probe_video
from avatarcli.templates.loading import load_template


@dataclass
class TrackResult:
    """A tracked video: the motion (written to ``output`` when given), the video, and the
    frames of the span where nothing was found (bridged by the fit)."""

    motion: Motion
    output: Path | None
    video: VideoInfo
    missed: list[int]

    @property
    def missed_frames(self) -> str:
        """The missed frames as ranges, '3-5, 40'."""
        return frame_ranges(self.missed)


def track(
    video: str | Path,
    output: str | Path | None = None,
    *,
    model: str = "head",
    settings: TrackSettings | None = None,
    template: str | Path | None = None,
    on_progress: Progress | None = None,
) -> TrackResult:
    """A motion from a person's own video: their face (``model="head"``: neck, jaw, eyes,
    expression) or body (``"body"``: root, body, hands where seen), fitted through the
    template; written as a canonical motion .npz when ``output`` is given.

    Args:
        settings: span, camera, hands and smoothing (``TrackSettings``).
        on_progress: called with (stage, done, total) as frames are read and the fit runs.
    """
    check_kind(model)
    s = settings or TrackSettings()
    s.check()
    if output is not None:
        if str(output) == "-" or not str(output).lower().endswith(".npz"):
            raise AvatarError(f"motions are written as .npz files (got {output})")
        check_output(output, inputs=(video, template))
    info = probe_video(video)
    span_seconds(info, s)
    load_mediapipe()  # says how to install it before a template is built
    tracked = track_video(info, load_template(model, template), s, on_progress)
    if output is not None:
        write_motion(tracked.motion, output)
    return TrackResult(tracked.motion, None if output is None else Path(output), info, tracked.missed)
