"""A video span as capture trains on it: frames at the training size and where the person is.

The video is decoded once: each frame goes to the person segmenter and is scaled down to the
training size on its way to MediaPipe's landmark tracker (:func:`avatarcli.motion.tracking.
track_video`'s ``tap``), on a thread of its own so that the two detectors run side by side.
Long spans keep every k-th frame for training (the tracker still sees them all), so memory
stays within :data:`MAX_FRAMES` frames.
"""

from __future__ import annotations

import math
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from avatarcli.motion.segmentation import PersonSegmenter

MAX_FRAMES = 3600  # frames kept for training (2 minutes at 30 fps; 3.7 GB at 512 x 512)


def training_size(width: int, height: int, resolution: int) -> tuple[int, int]:
    """The frame size (w, h) capture trains at: the long side ``resolution`` (never larger
    than the video), the aspect ratio kept, both even."""
    s = min(1.0, resolution / max(width, height))
    return max(8, 2 * round(width * s / 2)), max(8, 2 * round(height * s / 2))


@dataclass
class Footage:
    """The frames of a span that capture trains and scores on.

    Attributes:
        frames: (T, H, W, 3) uint8 RGB at the training size.
        person: (T, H, W) uint8, the segmenter's person probability times 255.
        index: (T,) int64, each kept frame's number in the span (every ``stride``-th).
        stride: frames of the span per kept frame.
        fps: the video's frame rate.
        video_size: (width, height) of the video.
    """

    frames: Tensor
    person: Tensor
    index: Tensor
    stride: int
    fps: float
    video_size: tuple[int, int]

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def scale(self) -> float:
        """Training pixels per video pixel."""
        return self.width / self.video_size[0]


class FootageRecorder:
    """Collects :class:`Footage` from frames shown to it in order (a ``track_video`` tap).

    Args:
        video_size: (width, height) of the video.
        size: (width, height) to keep frames at.
        expected: frames the span should have (sets the stride; None: unknown, 1).
        segmenter: the person segmenter (the recorder closes it in :meth:`finish`).
    """

    def __init__(self, video_size: tuple[int, int], size: tuple[int, int], expected: int | None, segmenter: PersonSegmenter) -> None:
        self.video_size, self.size = video_size, size
        self.stride = max(1, math.ceil(expected / MAX_FRAMES)) if expected else 1
        self.segmenter = segmenter
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="segmenter")
        self._pending: list[Future[tuple[np.ndarray, np.ndarray]]] = []
        self.index: list[int] = []

    def __call__(self, i: int, frame: np.ndarray) -> None:
        if i % self.stride or len(self.index) >= MAX_FRAMES:
            return
        if len(self._pending) > 8 and self._pending[-9].done() is False:
            self._pending[-9].result()  # at most a few frames queued: memory stays bounded
        self._pending.append(self._worker.submit(self._one, frame.copy()))
        self.index.append(i)

    def _one(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        prob = self.segmenter(frame)
        image = Image.fromarray(frame)
        mask = Image.fromarray((prob * 255.0 + 0.5).astype(np.uint8))
        if image.size != self.size:
            image = image.resize(self.size, Image.BOX)
            mask = mask.resize(self.size, Image.BOX)
        return np.asarray(image), np.asarray(mask)

    def finish(self, fps: float) -> Footage:
        """The footage recorded (the segmenter is closed). Raises what segmenting raised."""
        try:
            done = [f.result() for f in self._pending]
        finally:
            for f in self._pending:
                f.cancel()
            self._worker.shutdown(wait=True)
            self.segmenter.close()
        w, h = self.size
        frames = torch.from_numpy(np.stack([d[0] for d in done])) if done else torch.zeros(0, h, w, 3, dtype=torch.uint8)
        person = torch.from_numpy(np.stack([d[1] for d in done])) if done else torch.zeros(0, h, w, dtype=torch.uint8)
        return Footage(frames, person, torch.tensor(self.index, dtype=torch.long), self.stride, fps, self.video_size)
