"""The ffmpeg program that imageio-ffmpeg runs to read and write videos, found once, with a
one-line error when there is none.

imageio-ffmpeg looks in ``IMAGEIO_FFMPEG_EXE``, then its own wheel's binary, then ``ffmpeg`` on
the PATH, and raises a bare RuntimeError when all fail; it does not test a path named in
``IMAGEIO_FFMPEG_EXE`` at all. Both cases end here as an AvatarError that says what to do,
before any rendering or fitting has been spent on a video that could never be written or read.
"""

from __future__ import annotations

import functools
import os
import shutil

from avatarcli.errors import AvatarError


@functools.cache  # a failure raises, so it is looked for again next time
def ffmpeg_exe() -> str:
    """The path of a runnable ffmpeg; AvatarError naming the remedies when there is none."""
    import imageio_ffmpeg

    try:
        exe = imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError:
        exe = None
    found = shutil.which(exe) if exe else None  # a name on the PATH, or a path to an executable file
    if found is None:
        named = os.environ.get("IMAGEIO_FFMPEG_EXE")
        where = f"IMAGEIO_FFMPEG_EXE names {named}, which is not a runnable program" if named else "no ffmpeg program was found"
        raise AvatarError(
            f"videos need ffmpeg and {where}: install ffmpeg (e.g. apt install ffmpeg) or reinstall imageio-ffmpeg, "
            "or set IMAGEIO_FFMPEG_EXE to an ffmpeg program; PNG frames (-o a folder) need no ffmpeg"
        )
    return found
