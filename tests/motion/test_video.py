"""Reading users' videos: rate, size, spans, phone rotation, and one-line refusals."""

from __future__ import annotations

import subprocess

import imageio.v3 as iio
import numpy as np
import pytest

from avatarcli.errors import AvatarError
from avatarcli.motion.video import probe_video, read_frames


def _clip(path, frames=10, fps=10, size=(64, 48)):
    """A video whose frame i is flat grey 20 * i, modulo 256 (so a test can tell frames apart)."""
    w, h = size
    data = np.stack([np.full((h, w, 3), (20 * i) % 256, np.uint8) for i in range(frames)])
    iio.imwrite(path, data, plugin="FFMPEG", fps=fps, codec="libx264", macro_block_size=1)
    return path


def test_probe_and_read(tmp_path):
    info = probe_video(_clip(tmp_path / "a.mp4"))
    assert (info.fps, info.width, info.height) == (10.0, 64, 48)
    assert info.seconds == pytest.approx(1.0, abs=0.05) and info.frames_estimate == 10
    frames = list(read_frames(info))
    assert len(frames) == 10 and frames[0].shape == (48, 64, 3) and frames[0].dtype == np.uint8
    levels = [float(f.mean()) for f in frames]
    assert levels == pytest.approx([20.0 * i for i in range(10)], abs=3)


def test_span_starts_and_ends_at_the_right_frames(tmp_path):
    info = probe_video(_clip(tmp_path / "a.mp4"))
    frames = list(read_frames(info, start=0.3, end=0.6))
    assert [round(float(f.mean()) / 20) for f in frames] == [3, 4, 5, 6]
    assert [round(float(f.mean()) / 20) for f in read_frames(info, end=0.2)] == [0, 1, 2]


def test_a_phone_video_comes_upright(tmp_path):
    import imageio_ffmpeg

    src = _clip(tmp_path / "a.mp4", size=(64, 48))
    turned = tmp_path / "turned.mp4"
    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-y",
        "-loglevel",
        "error",
        "-display_rotation",
        "90",
        "-i",
        str(src),
        "-c",
        "copy",
        str(turned),
    ]
    subprocess.run(cmd, check=True)
    info = probe_video(turned)
    assert (info.width, info.height) == (48, 64)
    assert next(read_frames(info)).shape == (64, 48, 3)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.mp4", "does not exist"),
        (lambda d: d, "is a folder"),
        (lambda d: (d / "notes.mp4").write_text("hello") and d / "notes.mp4", "cannot read notes.mp4 as a video"),
        (lambda d: iio.imwrite(d / "still.png", np.zeros((16, 16, 3), np.uint8)) or d / "still.png", "still image"),
    ],
)
def test_what_is_not_a_video_is_refused_in_one_line(tmp_path, make, message):
    with pytest.raises(AvatarError) as err:
        probe_video(make(tmp_path))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_truncated_video_is_refused(tmp_path):
    data = _clip(tmp_path / "a.mp4", frames=30).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(AvatarError) as err:
        info = probe_video(cut)
        list(read_frames(info))
    assert "\n" not in str(err.value)


def test_a_video_of_unstated_length_is_bounded_while_read(tmp_path):
    """A container without a duration is not refused up front; reading it stops with one line
    past the longest clip."""
    from avatarcli.errors import AvatarError
    from avatarcli.motion.tracking import MAX_SECONDS, TrackSettings, _at_most, span_seconds
    from avatarcli.motion.video import VideoInfo

    info = VideoInfo(tmp_path / "raw.h264", 30.0, 64, 64, 0.0, "h264")
    assert span_seconds(info, TrackSettings()) == float("inf")
    assert span_seconds(info, TrackSettings(start=1.0, end=3.0)) == 2.0
    with pytest.raises(AvatarError, match="choose a part"):
        span_seconds(info, TrackSettings(start=0.0, end=MAX_SECONDS + 5.0))

    closed = []

    def frames():
        try:
            yield from (np.zeros((2, 2, 3), np.uint8) for _ in range(10))
        finally:
            closed.append(True)

    assert len(list(_at_most(frames(), 10, "raw.h264"))) == 10
    with pytest.raises(AvatarError, match=r"raw.h264 runs past 10 minutes"):
        list(_at_most(frames(), 5, "raw.h264"))
    assert closed == [True, True]
