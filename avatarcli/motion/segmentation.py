"""Where the person is in a video frame: MediaPipe's selfie segmenter, offline.

The segmenter ships inside the same MediaPipe 0.10 wheel as the face mesh and the pose
tracker (``pip install 'avatarcli[track]'``). It was trained on people in front of a camera,
head and shoulders to whole bodies; it answers a probability per pixel that the pixel shows
a person. The general model (square input, 256 x 256) is used: the landscape one is faster
but coarser.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from avatarcli.motion.landmarks import load_mediapipe, quiet_native_stderr


class PersonSegmenter:
    """Person probabilities for the frames of one video, one frame at a time.

    Use as a context manager (the native graph is released on exit)::

        with PersonSegmenter() as seg:
            prob = seg(frame)  # (H, W) float32 in [0, 1]

    Args:
        quiet: send MediaPipe's native start-up chatter (on the first frame) to /dev/null.
            A segmenter that runs on a thread beside a landmark detector, inside that
            detector's quiet spell (:func:`~avatarcli.motion.landmarks.quiet_native_stderr`
            redirects the whole process's descriptor 2), passes False: two threads swapping
            descriptor 2 could leave it pointing at /dev/null.
    """

    def __init__(self, quiet: bool = True) -> None:
        self._mp = load_mediapipe()
        self._quiet = quiet
        self._solution: Any = None

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """(H, W) float32 person probability of an RGB frame (H, W, 3) uint8."""
        if self._solution is None:  # made with the first frame, when its native chatter comes
            with quiet_native_stderr() if self._quiet else contextlib.nullcontext():
                self._solution = self._mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)
                return self._process(frame)
        return self._process(frame)

    def _process(self, frame: np.ndarray) -> np.ndarray:
        result = self._solution.process(np.ascontiguousarray(frame))
        mask = result.segmentation_mask
        if mask is None:
            return np.zeros(frame.shape[:2], np.float32)
        return np.clip(np.asarray(mask, dtype=np.float32), 0.0, 1.0)

    def close(self) -> None:
        if self._solution is not None:
            self._solution.close()
            self._solution = None

    def __enter__(self) -> PersonSegmenter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
