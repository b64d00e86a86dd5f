"""No usable ffmpeg: videos are refused in one line that names the remedies, before any work,
and PNG frames still go out."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avatarcli import ffmpeg
from avatarcli.errors import AvatarError
from avatarcli.formats.frames import FrameWriter
from avatarcli.motion.builtin import builtin_motion
from avatarcli.motion.readers import write_motion
from avatarcli.motion.video import probe_video

from helpers import run_cli


@pytest.fixture
def no_ffmpeg(monkeypatch, tmp_path):  # type: ignore[no-untyped-def]
    """IMAGEIO_FFMPEG_EXE names a file that is not a program (as when a binary lost its exec bit)."""
    fake = tmp_path / "ffmpeg"
    fake.write_bytes(b"\x7fELF not really")
    fake.chmod(0o644)
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(fake))
    ffmpeg.ffmpeg_exe.cache_clear()
    yield fake
    ffmpeg.ffmpeg_exe.cache_clear()


def test_a_runnable_ffmpeg_is_found():
    ffmpeg.ffmpeg_exe.cache_clear()
    assert ffmpeg.ffmpeg_exe()


def test_no_ffmpeg_refuses_an_mp4_before_any_frame(no_ffmpeg, tmp_path):
    with pytest.raises(AvatarError, match=r"videos need ffmpeg.*IMAGEIO_FFMPEG_EXE names .*not a runnable program"):
        FrameWriter(tmp_path / "a.mp4", fps=10, size=(16, 16))
    assert not (tmp_path / "a.mp4").exists()


def test_no_ffmpeg_is_not_called_a_bad_video(no_ffmpeg, tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\0" * 64)
    with pytest.raises(AvatarError, match="videos need ffmpeg") as caught:
        probe_video(clip)
    assert "cannot read" not in str(caught.value)


def test_png_frames_need_no_ffmpeg(no_ffmpeg, tmp_path):
    with FrameWriter(tmp_path / "frames", fps=10, size=(16, 16), frames=2) as writer:
        for _ in range(2):
            writer.add(np.zeros((16, 16, 3), np.uint8))
    assert len(list((tmp_path / "frames").glob("*.png"))) == 2


def test_animate_to_mp4_without_ffmpeg_is_one_error_line(no_ffmpeg, tmp_path, head_avatar):
    from avatarcli.model import avatar_file

    avatar_file.save(head_avatar.select(torch.arange(0, len(head_avatar), 50)), tmp_path / "h.avatar")
    write_motion(builtin_motion("talk", fps=5), tmp_path / "talk.npz")
    result = run_cli("animate", str(tmp_path / "h.avatar"), str(tmp_path / "talk.npz"), "-o", str(tmp_path / "t.mp4"), "--size", "32")
    assert result.code == 2, result.stderr
    assert "videos need ffmpeg" in result.stderr and "unexpected" not in result.stderr
    assert not (tmp_path / "t.mp4").exists()
