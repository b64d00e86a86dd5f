"""Writing frames: a folder of numbered PNGs, an H.264 .mp4, or a .gif.

Every writer is atomic (the destination appears only when complete) and encodes on a
background thread, so the renderer keeps producing the next frames while earlier ones are
compressed.
"""

from __future__ import annotations

import collections
import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

import imageio.v3 as iio
import numpy as np

from avatarcli.errors import AvatarError
from avatarcli.ffmpeg import ffmpeg_exe
from avatarcli.fileio import atomic_folder, atomic_path
from avatarcli.signals import interruptions_held

PNG_WRITES_IN_FLIGHT = 8  # PNG frames compressed at once (each holds its frame in memory)


def write_png(image: np.ndarray, path: str | Path) -> None:
    """Write one (H, W, 3) uint8 image atomically."""
    with atomic_path(path, suffix=".png") as tmp:
        iio.imwrite(tmp, image, extension=".png")


def frame_name(stem: str, index: int, count: int | None) -> str:
    """``stem_0007.png``: at least four digits, more when ``count`` frames need them (so the
    names sort in frame order)."""
    digits = max(4, len(str(count - 1))) if count else 4
    return f"{stem}_{index:0{digits}d}.png"


def write_png_folder(images: np.ndarray, folder: str | Path, stem: str = "frame", force: bool = False) -> list[Path]:
    """Write (N, H, W, 3) uint8 images as ``stem_0000.png`` ... into ``folder`` (atomically;
    ``force``: into a folder that already holds files, see ``fileio.atomic_folder``)."""
    with atomic_folder(folder, force) as tmp:
        for i, img in enumerate(images):
            iio.imwrite(tmp / frame_name(stem, i, len(images)), img, extension=".png")
    return [Path(folder) / frame_name(stem, i, len(images)) for i in range(len(images))]


def grid(images: np.ndarray) -> np.ndarray:
    """Images (N, H, W, 3) side by side."""
    return np.concatenate(list(images), axis=1)


def output_kind(path: str | Path) -> str:
    """The kind of frame output a path names: "mp4", "gif" or "folder"."""
    if str(path) == "-":
        raise AvatarError("frames cannot go to standard output: name a folder, an .mp4 or a .gif")
    suffix = Path(path).suffix.lower()
    if suffix == ".mp4":
        return "mp4"
    if suffix == ".gif":
        return "gif"
    if suffix:
        raise AvatarError(f"cannot write frames to {path}: use a folder, .mp4 or .gif")
    return "folder"


class FrameWriter:
    """Consumes frames (H, W, 3) uint8 in order and writes them out.

    Args:
        path: a folder (PNG frames), ``.mp4`` (H.264, yuv420p, plays everywhere) or ``.gif``.
        fps: frame rate of videos.
        size: (width, height) of every frame; videos need even sides.
        stem: PNG file name prefix.
        frames: how many frames will come, if known (PNG names get enough digits to sort).
        crf, preset: x264 quality and speed.
        force: write PNGs into a folder that already holds files (see ``fileio.atomic_folder``).
    """

    def __init__(
        self,
        path: str | Path,
        fps: float,
        size: tuple[int, int],
        stem: str = "frame",
        frames: int | None = None,
        crf: int = 18,
        preset: str = "veryfast",
        force: bool = False,
    ) -> None:
        self.path = Path(path)
        self.kind = output_kind(path)
        self.fps, self.size, self.stem, self.frames = fps, size, stem, frames
        self.crf, self.preset, self.force = crf, preset, force
        if self.kind == "mp4":
            if size[0] % 2 or size[1] % 2:
                raise AvatarError(f"an .mp4 needs even width and height (got {size[0]}x{size[1]})")
            ffmpeg_exe()  # refused before any frame is rendered
        self._queue: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=64)
        self._error: BaseException | None = None
        self._ended = False  # the encoder thread has taken the end-of-frames marker
        self._count = 0
        self._thread: threading.Thread | None = None

    # -- context --------------------------------------------------------------------------
    def __enter__(self) -> FrameWriter:
        self._ctx = atomic_folder(self.path, self.force) if self.kind == "folder" else atomic_path(self.path)
        self._target = self._ctx.__enter__()
        self._thread = threading.Thread(target=self._run, name="frame-writer", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        late: BaseException | None = None
        try:
            with interruptions_held():
                self._queue.put(None)
        except BaseException as held:  # an interruption that came during the put: a failure like any
            late = held
        if self._thread is not None:
            self._thread.join()
        ours = late or self._error or (AvatarError("no frames were written") if exc is None and self._count == 0 else None)
        failure = exc or ours
        if failure is None:
            self._ctx.__exit__(None, None, None)  # move the finished output into place
            return
        self._ctx.__exit__(type(failure), failure, None)  # discard the partial output
        if exc is None and ours is not None:
            raise ours

    def add(self, frame: np.ndarray) -> None:
        """Queue one frame; raises if the encoder has failed."""
        if self._error is not None:
            raise self._error
        if frame.shape[:2] != (self.size[1], self.size[0]):
            raise ValueError(f"frame of shape {frame.shape} does not match size {self.size}")
        # an interruption raised inside the queue's lock could leave it held: the encoder would
        # wait forever for the end-of-frames marker
        with interruptions_held():
            self._queue.put(np.ascontiguousarray(frame))
        self._count += 1

    # -- the encoding thread --------------------------------------------------------------
    def _frames(self):  # type: ignore[no-untyped-def]
        while True:
            item = self._queue.get()
            if item is None:
                self._ended = True
                return
            yield item

    def _run(self) -> None:
        try:
            if self.kind == "mp4":
                self._encode_mp4()
            elif self.kind == "gif":
                frames = list(self._frames())
                if frames:
                    iio.imwrite(self._target, np.stack(frames), extension=".gif", duration=1000.0 / self.fps, loop=0)
            else:
                self._write_pngs()
        except BaseException as exc:  # surfaced to the producer by add() / __exit__
            self._error = exc
            # drain so the producer never blocks, unless the end has already been taken
            while not self._ended and self._queue.get() is not None:
                pass

    def _write_pngs(self) -> None:
        pending: collections.deque[Future[None]] = collections.deque()
        with ThreadPoolExecutor(max_workers=4) as pool:
            for i, frame in enumerate(self._frames()):
                if len(pending) >= PNG_WRITES_IN_FLIGHT:
                    pending.popleft().result()  # also surfaces a failed write early
                pending.append(pool.submit(iio.imwrite, self._target / frame_name(self.stem, i, self.frames), frame))
            while pending:
                pending.popleft().result()

    def _encode_mp4(self) -> None:
        import imageio_ffmpeg

        writer = imageio_ffmpeg.write_frames(
            str(self._target),
            self.size,
            fps=self.fps,
            codec="libx264",
            pix_fmt_in="rgb24",
            pix_fmt_out="yuv420p",
            macro_block_size=1,
            quality=None,
            output_params=["-crf", str(self.crf), "-preset", self.preset, "-movflags", "+faststart", "-f", "mp4"],
            ffmpeg_log_level="error",
        )
        writer.send(None)  # start ffmpeg
        try:
            for frame in self._frames():
                writer.send(frame)
        finally:
            writer.close()
