"""Reading motion files as users have them, without ever unpickling.

Formats (README.md, "Motion files", lists them):

* ``.npz`` AMASS SMPL-X (``poses`` (T, 165) or split ``root_orient``/``pose_body``/...;
  ``trans``; ``mocap_frame_rate`` or ``mocap_framerate``), also legacy SMPL+H (``poses``
  (T, 156): body and hands). AMASS is z-up and is turned y-up.
* ``.npy`` Motion-X ``smplx_322`` (T, 322) and TalkSHOW (T, 265), 30 fps. These come from
  video fits whose up axis varies; the body's own up direction decides it.
* ``.npz`` FLAME sequences (``expression``, ``jaw_pose``, ``neck_pose``, eye and global
  poses) for heads.
* ``.npz`` written by ``avatar motions NAME -o FILE.npz`` (the canonical layout).

Pickles (``.pkl``) are refused with a message saying how to convert them.
"""

from __future__ import annotations

import shlex
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from avatarcli.errors import AvatarError
from avatarcli.fileio import read_arrays
from avatarcli.motion.motion import MAX_FRAMES, Motion
from avatarcli.rotations import axis_angle_to_matrix, matrix_to_axis_angle

CANONICAL = "avatarcli.motion"
DEFAULT_FPS = 30.0
MAX_MOTION_BYTES = 512 << 20  # the largest motion file read (and unpacked, for .npz): 512 MiB
# z-up to y-up: a -90 degree turn about x, (x, y, z) -> (x, z, -y)
Z_UP_TO_Y_UP = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


def _required(data: dict[str, np.ndarray], key: str, name: str) -> np.ndarray:
    if key not in data:
        raise AvatarError(f"{name}: '{key}' is missing")
    return data[key]


def _frames(data: dict[str, np.ndarray], key: str, name: str) -> int:
    """The frame count T of ``data[key]`` (T, ...); a 0-d or empty array is refused."""
    a = _required(data, key, name)
    if a.ndim == 0:
        raise AvatarError(f"{name}: '{key}' is a single value, expected one row per frame")
    if a.shape[0] == 0:
        raise AvatarError(f"{name}: '{key}' has no frames")
    return int(a.shape[0])


def _array(data: dict[str, np.ndarray], key: str, name: str, cols: int | None = None, frames: int | None = None) -> Tensor:
    """``data[key]`` as float32, in native byte order: (T, cols) when ``cols`` is given, else
    (T, ...); ``frames`` is the T it must have."""
    a = _required(data, key, name)
    if a.dtype.kind not in "fiu":
        raise AvatarError(f"{name}: '{key}' is not numeric (dtype {a.dtype})")
    if a.ndim == 0:
        raise AvatarError(f"{name}: '{key}' is a single value, expected one row per frame")
    if cols is not None and (a.ndim != 2 or a.shape[1] != cols):
        raise AvatarError(f"{name}: '{key}' has shape {a.shape}, expected (T, {cols})")
    if frames is not None and a.shape[0] != frames:
        raise AvatarError(f"{name}: '{key}' has {a.shape[0]} frames but the poses have {frames}")
    # a copy: writable, little or big endian in the file alike; out-of-range values become
    # inf, which validation reports
    return torch.from_numpy(np.array(a, dtype=np.float32))


def _fps(data: dict[str, np.ndarray], name: str, keys: tuple[str, ...], default: float | None) -> float:
    """The frame rate stored under the first of ``keys`` present (its range is checked by
    ``Motion.validate``)."""
    for k in keys:
        if k in data:
            a = data[k]
            if a.dtype.kind not in "fiu" or a.size != 1:
                raise AvatarError(f"{name}: the frame rate '{k}' must be one number (got {a.dtype} of shape {a.shape})")
            return float(a.reshape(-1)[0])
    if default is None:
        raise AvatarError(f"{name}: no frame rate (expected one of {', '.join(keys)})")
    return default


def _text(data: dict[str, np.ndarray], key: str, name: str) -> str:
    a = _required(data, key, name)
    if a.dtype.kind not in "US" or a.size != 1:
        raise AvatarError(f"{name}: '{key}' must be one string (got {a.dtype} of shape {a.shape})")
    value = a.reshape(-1)[0]
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


def turn_world(rotations: Tensor, translation: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """Apply a world rotation ``c`` (3, 3) to a motion: root rotation and translation turn."""
    rot = rotations.clone()
    rot[:, 0] = matrix_to_axis_angle(c @ axis_angle_to_matrix(rotations[:, 0]))
    return rot, translation @ c.T


def upright(rotations: Tensor, translation: Tensor) -> tuple[Tensor, Tensor, str | None]:
    """Turn a motion so the body's own up axis points along +y in the world.

    Fits from video come in camera coordinates (y down) or z-up worlds; the root rotation
    tells which: it carries the pelvis' up direction (+y at rest) into the world.
    """
    up = axis_angle_to_matrix(rotations[:, 0])[:, :, 1].mean(0)
    axis = int(up.abs().argmax())
    sign = 1.0 if float(up[axis]) >= 0 else -1.0
    if axis == 1 and sign > 0:
        return rotations, translation, None
    if axis == 1:  # y down: half a turn about x
        c = torch.tensor([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])
        label = "y-down"
    elif axis == 2:
        c = Z_UP_TO_Y_UP if sign > 0 else torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
        label = "z-up" if sign > 0 else "z-down"
    else:  # x up or down: a quarter turn about z
        if sign > 0:
            c = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
        else:
            c = torch.tensor([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
        label = "x-up" if sign > 0 else "x-down"
    rot, trans = turn_world(rotations, translation, c)
    return rot, trans, label


def body_rotations(root: Tensor, body: Tensor, jaw: Tensor | None, eyes: Tensor | None, hands: Tensor | None) -> Tensor:
    """Assemble (T, 55, 3) SMPL-X rotations from the usual parameter groups (missing ones zero)."""
    t = root.shape[0]
    rot = torch.zeros(t, 55, 3)
    rot[:, 0] = root
    rot[:, 1:22] = body.reshape(t, 21, 3)
    if jaw is not None:
        rot[:, 22] = jaw
    if eyes is not None:
        rot[:, 23:25] = eyes.reshape(t, 2, 3)
    if hands is not None:
        rot[:, 25:55] = hands.reshape(t, 30, 3)
    return rot


def read_amass(data: dict[str, np.ndarray], name: str) -> Motion:
    if "poses" in data:
        poses = data["poses"]
        if poses.ndim != 2 or poses.shape[1] not in (165, 156):
            raise AvatarError(f"{name}: 'poses' has shape {poses.shape}, expected (T, 165) for SMPL-X or (T, 156) for SMPL+H")
        t = _frames(data, "poses", name)
        p = _array(data, "poses", name)
        if p.shape[1] == 165:
            rot = body_rotations(p[:, 0:3], p[:, 3:66], p[:, 66:69], p[:, 69:75], p[:, 75:165])
        else:
            rot = body_rotations(p[:, 0:3], p[:, 3:66], None, None, p[:, 66:156])
    else:
        t = _frames(data, "root_orient", name)
        root = _array(data, "root_orient", name, 3)
        body = _array(data, "pose_body", name, 63, t)
        hands = _array(data, "pose_hand", name, 90, t) if "pose_hand" in data else None
        jaw = _array(data, "pose_jaw", name, 3, t) if "pose_jaw" in data else None
        eyes = _array(data, "pose_eye", name, 6, t) if "pose_eye" in data else None
        rot = body_rotations(root, body, jaw, eyes, hands)
    trans = _array(data, "trans", name, 3, t) if "trans" in data else torch.zeros(t, 3)
    expr_key = next((k for k in ("expression", "expressions", "face_expr") if k in data), None)
    expr = _array(data, expr_key, name, None, t).reshape(t, -1) if expr_key else torch.zeros(t, 0)
    fps = _fps(data, name, ("mocap_frame_rate", "mocap_framerate", "fps"), DEFAULT_FPS)
    rot, trans = turn_world(rot, trans, Z_UP_TO_Y_UP)
    return Motion("body", rot, expr, trans, fps, f"{name} (AMASS, z-up turned y-up)")


def read_flame(data: dict[str, np.ndarray], name: str) -> Motion:
    expr_key = next((k for k in ("expression", "expr", "exp") if k in data), None)
    pose_keys = ("jaw_pose", "neck_pose", "global_orient", "global_pose", "root_pose", "leye_pose", "reye_pose", "eye_pose")
    present = [k for k in pose_keys if k in data]
    if expr_key is None and not present:
        raise AvatarError(f"{name}: no FLAME keys (expression, jaw_pose, ...)")
    t = _frames(data, expr_key if expr_key else present[0], name)
    rot = torch.zeros(t, 5, 3)
    for key, j in (
        ("global_orient", 0),
        ("global_pose", 0),
        ("root_pose", 0),
        ("neck_pose", 1),
        ("jaw_pose", 2),
        ("leye_pose", 3),
        ("reye_pose", 4),
    ):
        if key in data:
            rot[:, j] = _array(data, key, name, 3, t)
    if "eye_pose" in data:
        rot[:, 3:5] = _array(data, "eye_pose", name, 6, t).reshape(t, 2, 3)
    expr = _array(data, expr_key, name, None, t).reshape(t, -1) if expr_key else torch.zeros(t, 0)
    trans = _array(data, "transl", name, 3, t) if "transl" in data else torch.zeros(t, 3)
    fps = _fps(data, name, ("fps", "frame_rate", "mocap_frame_rate"), DEFAULT_FPS)
    return Motion("head", rot, expr, trans, fps, f"{name} (FLAME sequence)")


def read_canonical(data: dict[str, np.ndarray], name: str) -> Motion:
    kind = _text(data, "kind", name)
    t = _frames(data, "rotations", name)
    rot = _array(data, "rotations", name)
    if rot.ndim != 3:
        raise AvatarError(f"{name}: 'rotations' has shape {tuple(rot.shape)}, expected (T, J, 3)")
    expr = _array(data, "expression", name, None, t).reshape(t, -1) if "expression" in data else torch.zeros(t, 0)
    trans = _array(data, "translation", name, 3, t) if "translation" in data else torch.zeros(t, 3)
    return Motion(kind, rot, expr, trans, _fps(data, name, ("fps",), None), name)


def read_npy(array: np.ndarray, name: str, fps: float | None) -> Motion:
    if array.dtype.kind not in "fiu":
        raise AvatarError(f"{name}: a .npy motion must hold numbers (dtype {array.dtype})")
    if array.ndim != 2 or array.shape[1] not in (322, 265):
        raise AvatarError(f"{name}: a .npy motion must be Motion-X (T, 322) or TalkSHOW (T, 265), got {array.shape}")
    if array.shape[0] == 0:
        raise AvatarError(f"{name} has no frames")
    a = _array({"motion": array}, "motion", name)
    if a.shape[1] == 322:
        rot = body_rotations(a[:, 0:3], a[:, 3:66], a[:, 156:159], None, a[:, 66:156])
        expr, trans, label = a[:, 159:209], a[:, 309:312], "Motion-X"
    else:
        rot = body_rotations(a[:, 9:12], a[:, 12:75], a[:, 0:3], a[:, 3:9], a[:, 75:165])
        expr, trans, label = a[:, 165:265], torch.zeros(a.shape[0], 3), "TalkSHOW"
    rot, trans, turned = upright(rot, trans)
    note = f"{label}, {turned} turned y-up" if turned else label
    return Motion("body", rot, expr, trans, fps or DEFAULT_FPS, f"{name} ({note})")


def pickle_message(path: Path) -> str:
    """Why a pickle is refused, and how a user who trusts the file can convert it once."""
    script = (
        "import pickle, sys, numpy as np; d = pickle.load(open(sys.argv[1], 'rb')); "
        "np.savez(sys.argv[2], **{k: np.asarray(v) for k, v in d.items()})"
    )
    return (
        f"refusing to read {path}: pickled files can run code when loaded. Only if you trust where it came from, convert it "
        f"once with: python -c {shlex.quote(script)} {shlex.quote(str(path))} {shlex.quote(str(path.with_suffix('.npz')))} "
        "and pass the .npz"
    )


def _check_frames(name: str, key: str, shape: tuple[int, ...]) -> None:
    """Refuse, from its header, an array with more rows than a clip may have frames (before
    it is unpacked: a megabyte of .npz can hold a gigabyte of zeros)."""
    if shape and shape[0] > MAX_FRAMES:
        what = f"'{key}'" if key else "its array"
        raise AvatarError(f"{name}: {what} has {shape[0]:,} frames; the most a clip may have is {MAX_FRAMES:,}")


def read_motion(path: str | Path, fps: float | None = None) -> Motion:
    """Read a motion file (see the module docstring for formats); validated.

    Args:
        path: the file (at most ``MAX_MOTION_BYTES``, also unpacked).
        fps: frame rate for formats that do not store one (.npy; default 30).
    """
    p = Path(path)
    name = p.name
    if p.suffix.lower() in (".pkl", ".pickle", ".pt", ".pth"):
        raise AvatarError(pickle_message(p))
    loaded = read_arrays(p, "motion file", MAX_MOTION_BYTES, check=lambda key, shape, dtype: _check_frames(name, key, shape))
    # numbers out of float32's range become inf (reported by validate), quietly
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        motion = _read(loaded, name, fps)
        return motion.validate()


def _read(loaded: np.ndarray | dict[str, np.ndarray], name: str, fps: float | None) -> Motion:
    if isinstance(loaded, np.ndarray):
        return read_npy(loaded, name, fps)
    data = loaded
    if "avatarcli_motion" in data:
        return read_canonical(data, name)
    if "poses" in data or "root_orient" in data:
        return read_amass(data, name)
    if any(k in data for k in ("expression", "expr", "exp", "jaw_pose", "neck_pose", "global_pose")):
        return read_flame(data, name)
    keys = ", ".join(sorted(data)) or "none"
    raise AvatarError(
        f"{name}: not a motion this tool knows (keys: {keys}); expected AMASS (poses/trans), "
        "a FLAME sequence (expression, jaw_pose, ...) or an avatarcli motion"
    )


def write_motion(motion: Motion, path: str | Path) -> None:
    """Write ``motion`` in the canonical .npz layout (atomically; plain arrays, no pickles)."""
    from avatarcli.fileio import atomic_path

    motion.validate()
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(
            tmp,
            avatarcli_motion=np.asarray(1),
            kind=np.asarray(motion.kind),
            rotations=motion.rotations.numpy().astype(np.float32),
            expression=motion.expression.numpy().astype(np.float32),
            translation=motion.translation.numpy().astype(np.float32),
            fps=np.asarray(motion.fps, dtype=np.float64),
        )
