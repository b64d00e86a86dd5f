"""Landmarks from video frames with Google's MediaPipe, offline, and what its indices mean.

MediaPipe 0.10's "solutions" carry their models inside the wheel: the face mesh with irises
(478 points) and the pose / holistic trackers (33 body points, metric "world" points, 21 per
hand when a hand is seen) run without a network. Pose complexities other than 1 would fetch
a model, so complexity 1 is the only one used. One detector object follows one video, frame
by frame in order (its tracking carries over from frame to frame).

MediaPipe is an optional extra (``pip install 'avatarcli[track]'``), imported on first use.
Its native code writes start-up chatter to file descriptor 2; that is sent to /dev/null while
the detectors load and take their first frame.

Indices: "left" and "right" are the subject's own, as in MediaPipe's names.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from types import ModuleType
from typing import Any

import numpy as np

from avatarcli.errors import AvatarError

INSTALL_HINT = "avatar track needs MediaPipe: pip install 'avatarcli[track]'"

# -- the face mesh's indices ------------------------------------------------------------------
# The contour groups of MediaPipe's FACEMESH_CONTOURS, each in the order of the built-in
# templates' face-contour embedding (templates/mannequin/head_shape.contour_targets): the
# oval from the forehead over the subject's left to the chin and back; each eye from its outer
# corner over the upper lid to the inner corner and back under the lower lid; brows inner to
# outer; the outer lips from the right corner over the upper lip to the left corner and back;
# the inner lips' nine upper points right to left, then nine lower points left to right.
FACE_CONTOURS: dict[str, tuple[int, ...]] = {
    "face_oval": (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
                  152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109),
    "left_eye": (263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249),
    "right_eye": (33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7),
    "left_brow_upper": (336, 296, 334, 293, 300),
    "left_brow_lower": (285, 295, 282, 283, 276),
    "right_brow_upper": (107, 66, 105, 63, 70),
    "right_brow_lower": (55, 65, 52, 53, 46),
    "lips_outer": (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146),
    "lips_inner": (191, 80, 81, 82, 13, 312, 311, 310, 415, 324, 318, 402, 317, 14, 87, 178, 88, 95),
}  # fmt: skip
# The iBUG-68 points (what FLAME and SMPL-X files embed) on the face mesh: jaw line right to
# left, brows, nose bridge and base, eyes, outer and inner lips.
IBUG68: tuple[int, ...] = (
    127, 234, 93, 132, 58, 172, 136, 150, 152, 379, 365, 397, 288, 361, 323, 454, 356,
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    168, 197, 5, 4, 98, 97, 2, 326, 327,
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    61, 40, 37, 0, 267, 270, 291, 321, 314, 17, 84, 91,
    78, 82, 13, 312, 308, 317, 14, 87,
)  # fmt: skip
IRISES = (473, 468)  # iris centres, left then right (the templates' order)
FACE_POINTS = 478

# -- the pose tracker's indices ---------------------------------------------------------------
POSE = {
    "nose": 0, "left_eye": 2, "right_eye": 5, "left_ear": 7, "right_ear": 8,
    "left_shoulder": 11, "right_shoulder": 12, "left_elbow": 13, "right_elbow": 14, "left_wrist": 15, "right_wrist": 16,
    "left_pinky": 17, "right_pinky": 18, "left_index": 19, "right_index": 20, "left_thumb": 21, "right_thumb": 22,
    "left_hip": 23, "right_hip": 24, "left_knee": 25, "right_knee": 26, "left_ankle": 27, "right_ankle": 28,
    "left_heel": 29, "right_heel": 30, "left_foot_index": 31, "right_foot_index": 32,
}  # fmt: skip
POSE_POINTS = 33
TORSO = tuple(POSE[n] for n in ("left_shoulder", "right_shoulder", "left_hip", "right_hip"))
# A body is tracked only where the pose tracker sees a shoulder and a hip. On a head-and-
# shoulders clip it still "finds" a person, guessing the rest: shoulders 0.07-0.24 and hips
# 0.00 visibility, against 0.99 or more for a whole figure (2026-11-22, mediapipe 0.10.21).
MIN_TORSO_VISIBILITY = 0.5
HAND_POINTS = 21  # wrist, then thumb, index, middle, ring, pinky from base to tip (OpenPose's order too)


@dataclass
class FaceLandmarks:
    """Face-mesh landmarks of a clip.

    Attributes:
        points: (T, 478, 3) float32: x, y in pixels; z (depth, towards the camera negative) in
            the same pixel units, relative to the face. NaN where no face was found.
        found: (T,) bool.
        width, height: the frame size.
    """

    points: np.ndarray
    found: np.ndarray
    width: int
    height: int


@dataclass
class BodyLandmarks:
    """Pose (and hand) landmarks of a clip.

    Attributes:
        image: (T, 33, 3) float32: x, y in pixels, z relative depth in pixel units.
        world: (T, 33, 3) float32: metres about the hips' midpoint, axes as the camera's (x to
            the image's right, y down, z away from the camera).
        visibility: (T, 33) float32 in [0, 1].
        hands: (T, 2, 21, 3) float32: left hand then right hand, x, y in pixels (NaN unseen).
        hands_found: (T, 2) bool.
        found: (T,) bool: a body was found.
        width, height: the frame size.
    """

    image: np.ndarray
    world: np.ndarray
    visibility: np.ndarray
    hands: np.ndarray
    hands_found: np.ndarray
    found: np.ndarray
    width: int
    height: int


def with_torso_in_view(body: BodyLandmarks) -> BodyLandmarks:
    """``body`` with ``found`` cleared in the frames where no shoulder, or no hip, is as
    visible as :data:`MIN_TORSO_VISIBILITY` (the tracker's guesses there are not a body).
    One of each is enough: side-on, the far shoulder and hip are hidden by the body."""
    vis = body.visibility[:, list(TORSO)]
    seen = np.minimum(vis[:, :2].max(axis=1), vis[:, 2:].max(axis=1)) >= MIN_TORSO_VISIBILITY
    return replace(body, found=body.found & seen)


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Send what native code (TFLite, absl, glog) writes to file descriptor 2 to /dev/null.

    Python's own ``sys.stderr`` (progress displays, warnings, errors) keeps writing to where
    descriptor 2 pointed before, through a copy of it.
    """
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 (some embedded interpreters): nothing to quieten
        yield
        return
    python_stderr = sys.stderr
    try:
        own = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # replaced by a stream without a descriptor (tests)
        own = False
    keep = os.fdopen(os.dup(saved), "w", buffering=1, encoding=getattr(python_stderr, "encoding", None) or "utf-8") if own else None
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    if keep is not None:
        sys.stderr = keep
    try:
        yield
    finally:
        if keep is not None:
            keep.flush()
            sys.stderr = python_stderr
            keep.close()
        os.dup2(saved, 2)
        os.close(saved)


def load_mediapipe() -> ModuleType:
    """The ``mediapipe`` module; AvatarError saying how to install it when it is missing."""
    try:
        with quiet_native_stderr():
            import mediapipe as mp
    except ImportError as exc:
        raise AvatarError(INSTALL_HINT) from exc
    if not hasattr(mp, "solutions"):
        raise AvatarError(f"this MediaPipe ({getattr(mp, '__version__', '?')}) has no offline solutions; {INSTALL_HINT}")
    return mp


def _array(landmarks: Any, width: int, height: int) -> np.ndarray:
    """MediaPipe's normalised landmarks as (N, 3) pixels (z scaled like x)."""
    return np.array([(p.x * width, p.y * height, p.z * width) for p in landmarks.landmark], dtype=np.float32)


def _square_crop(frame: np.ndarray, points: np.ndarray, margin: float) -> tuple[np.ndarray, float, float, float]:
    """A square around ``points`` (N, 2) pixels, ``margin`` times their extent, padded at the
    frame's edges: (crop, x0, y0, scale) with full-frame pixel = crop pixel * scale + corner."""
    lo, hi = np.nanmin(points, 0), np.nanmax(points, 0)
    side = max(float((hi - lo).max()) * margin, 32.0)
    cx, cy = (lo + hi) / 2
    x0, y0 = round(cx - side / 2), round(cy - side / 2)
    s = round(side)
    h, w = frame.shape[:2]
    crop = np.zeros((s, s, 3), dtype=np.uint8)
    crop[:] = frame[min(max(y0, 0), h - 1), min(max(x0, 0), w - 1)]  # the background's colour, roughly
    ys, xs = slice(max(y0, 0), min(y0 + s, h)), slice(max(x0, 0), min(x0 + s, w))
    crop[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0] = frame[ys, xs]
    # the detectors look at about 256 pixels: small crops are enlarged so faint limbs show
    target = max(s, 256)
    if target != s:
        from PIL import Image

        crop = np.asarray(Image.fromarray(crop).resize((target, target), Image.BILINEAR))
    return np.ascontiguousarray(crop), float(x0), float(y0), s / target


class _Detector:
    """One MediaPipe solution over one video (its tracking state carries from frame to frame)."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self.solution = make()

    def __call__(self, frame: np.ndarray) -> Any:
        return self.solution.process(frame)

    def close(self) -> None:
        self.solution.close()


def detect_faces(frames: Iterable[np.ndarray], width: int, height: int, on_frame: Callable[[int], None] | None = None) -> FaceLandmarks:
    """Face-mesh landmarks with irises for every frame (H, W, 3) uint8 of one video.

    A frame where the tracker loses the face is tried again on a crop around where it was.
    ``on_frame`` is called with the number of frames done after each.
    """
    mp = load_mediapipe()
    with quiet_native_stderr():
        return _faces(mp, frames, width, height, on_frame)


def _faces(mp: ModuleType, frames: Iterable[np.ndarray], width: int, height: int, on_frame: Callable[[int], None] | None) -> FaceLandmarks:
    fm = mp.solutions.face_mesh
    video = _Detector(lambda: fm.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True,
                                          min_detection_confidence=0.5, min_tracking_confidence=0.5))  # fmt: skip
    still: _Detector | None = None
    rows: list[np.ndarray | None] = []
    last: np.ndarray | None = None
    try:
        for i, frame in enumerate(frames):
            result = video(frame)
            pts = _array(result.multi_face_landmarks[0], width, height) if result.multi_face_landmarks else None
            if pts is None and last is not None:
                if still is None:
                    still = _Detector(lambda: fm.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True))
                crop, x0, y0, s = _square_crop(frame, last[:, :2], 1.8)
                again = still(crop)
                if again.multi_face_landmarks:
                    pts = _array(again.multi_face_landmarks[0], crop.shape[1], crop.shape[0]) * s
                    pts[:, 0] += x0
                    pts[:, 1] += y0
            rows.append(pts)
            if pts is not None:
                last = pts
            if on_frame is not None:
                on_frame(i + 1)
    finally:
        video.close()
        if still is not None:
            still.close()
    found = np.array([r is not None for r in rows], dtype=bool)
    points = (
        np.stack([r if r is not None else np.full((FACE_POINTS, 3), np.nan, np.float32) for r in rows])
        if rows
        else np.zeros((0, FACE_POINTS, 3), np.float32)
    )
    return FaceLandmarks(points, found, width, height)


def detect_bodies(
    frames: Iterable[np.ndarray], width: int, height: int, hands: bool = True, on_frame: Callable[[int], None] | None = None
) -> BodyLandmarks:
    """Pose landmarks (and, with ``hands``, the hands where MediaPipe sees them) for every frame.

    ``hands`` runs MediaPipe's holistic tracker (pose, face and hands, about three times the
    work); otherwise the pose tracker alone. A frame where the body is lost is tried again on
    a crop around where it was (small figures far from the camera). ``on_frame`` is called
    with the number of frames done after each.
    """
    mp = load_mediapipe()
    with quiet_native_stderr():
        return _bodies(mp, frames, width, height, hands, on_frame)


def _bodies(
    mp: ModuleType, frames: Iterable[np.ndarray], width: int, height: int, hands: bool, on_frame: Callable[[int], None] | None
) -> BodyLandmarks:
    sol = mp.solutions

    def make(static: bool) -> Any:
        if hands:
            return sol.holistic.Holistic(static_image_mode=static, model_complexity=1, smooth_landmarks=True, refine_face_landmarks=False)
        return sol.pose.Pose(static_image_mode=static, model_complexity=1, smooth_landmarks=True)

    video = _Detector(lambda: make(False))
    still: _Detector | None = None
    rows: list[tuple[np.ndarray, ...] | None] = []
    last: np.ndarray | None = None
    nan_hand = np.full((HAND_POINTS, 3), np.nan, np.float32)

    def read(result: Any, w: int, h: int, s: float, x0: float, y0: float) -> tuple[np.ndarray, ...] | None:
        if result.pose_landmarks is None or result.pose_world_landmarks is None:
            return None

        def place(lms: Any) -> np.ndarray:
            a = _array(lms, w, h) * s
            a[:, 0] += x0
            a[:, 1] += y0
            return a

        image = place(result.pose_landmarks)
        world = np.array([(p.x, p.y, p.z) for p in result.pose_world_landmarks.landmark], dtype=np.float32)
        vis = np.array([p.visibility for p in result.pose_landmarks.landmark], dtype=np.float32)
        hand_pts = [nan_hand, nan_hand]
        for k, name in enumerate(("left_hand_landmarks", "right_hand_landmarks")):
            lms = getattr(result, name, None)
            if lms is not None:
                hand_pts[k] = place(lms)
        return image, world, vis, np.stack(hand_pts)

    try:
        for i, frame in enumerate(frames):
            row = read(video(frame), width, height, 1.0, 0.0, 0.0)
            if row is None and last is not None:
                if still is None:
                    still = _Detector(lambda: make(True))
                crop, x0, y0, s = _square_crop(frame, last[:, :2], 1.5)
                row = read(still(crop), crop.shape[1], crop.shape[0], s, x0, y0)
            rows.append(row)
            if row is not None:
                last = row[0]
            if on_frame is not None:
                on_frame(i + 1)
    finally:
        video.close()
        if still is not None:
            still.close()
    t = len(rows)
    found = np.array([r is not None for r in rows], dtype=bool)

    def stack(k: int, shape: tuple[int, ...]) -> np.ndarray:
        return (
            np.stack([r[k] if r is not None else np.full(shape, np.nan, np.float32) for r in rows])
            if t
            else np.zeros((0, *shape), np.float32)
        )

    hand_arr = stack(3, (2, HAND_POINTS, 3))
    return BodyLandmarks(stack(0, (POSE_POINTS, 3)), stack(1, (POSE_POINTS, 3)), np.nan_to_num(stack(2, (POSE_POINTS,))),
                         hand_arr, ~np.isnan(hand_arr[..., 0, 0]), found, width, height)  # fmt: skip
