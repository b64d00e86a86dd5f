"""Reading users' videos frame by frame through imageio-ffmpeg, with one-line errors.

ffmpeg decodes whatever it knows (mp4, mov, webm, mkv, avi, ...), turns phone videos upright
by their rotation flag, and hands over RGB frames one at a time, so a long clip never sits in
memory whole. Anything ffmpeg cannot read as a moving picture is refused in one line.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avatarcli.errors import AvatarError
from avatarcli.ffmpeg import ffmpeg_exe
from avatarcli.fileio import check_input

# frames per second above which a "video" is probably an image sequence read wrongly
MAX_FPS = 1000.0
MAX_VIDEO_BYTES = 64 << 30  # the largest video read: 64 GiB (clips are limited to 10 minutes anyway)


@dataclass(frozen=True)
class VideoInfo:
    """What a video holds.

    Attributes:
        path: the file.
        fps: frames per second.
        width, height: frame size in pixels, as shown (after the rotation flag).
        seconds: duration from the container (0 when it does not say).
        codec: the video codec's name.
    """

    path: Path
    fps: float
    width: int
    height: int
    seconds: float
    codec: str

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def frames_estimate(self) -> int:
        """Frames in the whole video, from its duration and rate (for progress displays)."""
        return max(1, round(self.seconds * self.fps))


def _open(path: Path, start: float | None = None) -> tuple[dict[str, object], Iterator[object]]:
    """ffmpeg's reader on ``path`` (from ``start`` seconds): its metadata and the frame generator."""
    import imageio_ffmpeg

    params = ["-ss", f"{start:.6f}"] if start else None
    gen = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24", input_params=params)
    log = logging.getLogger("imageio_ffmpeg")
    level = log.level
    log.setLevel(logging.ERROR)  # it warns that a rotated video's frames differ in size from its stream: ffmpeg turns them
    try:
        meta = next(gen)
    except BaseException:
        gen.close()
        raise
    finally:
        log.setLevel(level)
    assert isinstance(meta, dict)
    return meta, gen


def probe_video(path: str | Path) -> VideoInfo:
    """The video's rate, size and length; AvatarError when it is missing or not a video."""
    p = Path(path)
    if not p.exists():
        raise AvatarError(f"video {p} does not exist")
    if p.is_dir():
        raise AvatarError(f"{p} is a folder, not a video")
    check_input(p, "video", limit=MAX_VIDEO_BYTES)  # a device, a named pipe
    ffmpeg_exe()  # no ffmpeg is not "not a video"
    try:
        meta, gen = _open(p)
    except (OSError, RuntimeError, StopIteration, ValueError, IndexError) as exc:
        raise AvatarError(f"cannot read {p.name} as a video: ffmpeg finds no video stream in it (or it is truncated)") from exc
    gen.close()  # type: ignore[attr-defined]
    codec = str(meta.get("codec", "")).rstrip(",")
    fps = float(meta.get("fps") or 0.0)  # type: ignore[arg-type]
    size = meta.get("size", (0, 0))
    assert isinstance(size, tuple)
    width, height = (int(v) for v in size)
    seconds = float(meta.get("duration") or 0.0)  # type: ignore[arg-type]
    if codec in ("png", "mjpeg", "bmp", "tiff", "webp") and seconds <= 0:
        raise AvatarError(f"{p.name} is a still image, not a video")
    if fps <= 0:
        raise AvatarError(f"{p.name} does not say its frame rate; convert it to a video first, e.g. ffmpeg -i {p.name} {p.stem}.mp4")
    if fps > MAX_FPS or width < 8 or height < 8:
        raise AvatarError(f"cannot read {p.name} as a video: frame rate {fps:g}, size {width}x{height}")
    return VideoInfo(p, fps, width, height, seconds, codec)


def read_frames(info: VideoInfo, start: float | None = None, end: float | None = None) -> Generator[np.ndarray, None, None]:
    """The frames (H, W, 3) uint8 between ``start`` and ``end`` seconds, in order.

    Seeking to ``start`` is left to ffmpeg (frame-accurate when decoding); ``end`` stops after
    the frame at or before it. A file that breaks off part way raises AvatarError.
    """
    w, h = info.width, info.height
    try:
        _, gen = _open(info.path, start)
    except (OSError, RuntimeError, StopIteration) as exc:
        raise AvatarError(f"cannot read {info.name} as a video") from exc
    try:
        last = None if end is None else round((end - (start or 0.0)) * info.fps)
        for i, raw in enumerate(gen):
            if last is not None and i > last:
                break
            assert isinstance(raw, bytes)
            if len(raw) != w * h * 3:
                raise AvatarError(f"{info.name}: frame {i} has {len(raw)} bytes, expected {w}x{h} RGB")
            yield np.frombuffer(raw, dtype=np.uint8).reshape(h, w, 3)
    except (OSError, RuntimeError) as exc:
        raise AvatarError(f"{info.name} breaks off while decoding: {str(exc).splitlines()[0]}") from exc
    finally:
        gen.close()  # type: ignore[attr-defined]
