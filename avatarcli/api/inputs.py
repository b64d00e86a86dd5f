"""What every command checks and reads first: model kinds, seeds, finite numbers, and the
avatars and motions it is given (objects as they are, or paths to read)."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from avatarcli.errors import AvatarError
from avatarcli.model import avatar_file
from avatarcli.model.avatar import Avatar
from avatarcli.motion.builtin import BUILTINS, builtin_motion, find_builtin
from avatarcli.motion.motion import Motion
from avatarcli.motion.readers import read_motion
from avatarcli.templates.loading import KINDS

AvatarInput = Avatar | str | Path
MotionInput = Motion | str | Path
MAX_SEED = 2**63 - 1
MAX_PIXELS = 1 << 26  # pixels rendered at once (64 views of 1024 x 1024): bounds render's views, animate's batch
MAX_BATCH = 256
MAX_POINTS_PER_TRIANGLE = 100  # about 2 million Gaussians on the body, 1.2 million on the head


def check_kind(kind: str | None, what: str = "model kind") -> None:
    if kind is not None and kind not in KINDS:
        raise AvatarError(f"unknown {what} {kind!r}: choose head or body")


def check_seed(seed: int) -> None:
    if not 0 <= seed <= MAX_SEED:
        raise AvatarError(f"seed must be between 0 and 2^63 - 1 (got {seed})")


def check_finite(name: str, value: float | None, low: float | None = None, high: float | None = None) -> None:
    """A number that must be finite (and within [low, high] when given)."""
    if value is None:
        return
    if not math.isfinite(value):
        raise AvatarError(f"{name} must be a finite number (got {value})")
    if low is not None and value < low:
        raise AvatarError(f"{name} must be at least {low:g} (got {value:g})")
    if high is not None and value > high:
        raise AvatarError(f"{name} must be at most {high:g} (got {value:g})")


def check_points_per_triangle(k: int) -> None:
    if not 1 <= k <= MAX_POINTS_PER_TRIANGLE:
        most = MAX_POINTS_PER_TRIANGLE
        raise AvatarError(f"points per triangle must be 1 to {most} (got {k}); more Gaussians than that would not fit in memory")


def load_avatar(avatar: AvatarInput) -> Avatar:
    """An avatar object as it is, or read from a path (``-`` for stdin)."""
    return avatar if isinstance(avatar, Avatar) else avatar_file.load(avatar)


def load_motion(motion: MotionInput, kind: str | None = None, fps: float | None = None) -> Motion:
    """A motion object as it is, the name of a built-in motion, or a motion file.

    Args:
        kind: the avatar's kind, for built-in names both kinds have.
        fps: frame rate of files that do not store one (.npy).
    """
    if isinstance(motion, Motion):
        return motion.validate()
    path = Path(motion)
    if not path.exists() and path.suffix == "":
        if find_builtin(str(motion), kind) is not None:
            return builtin_motion(str(motion), kind)
        names = sorted({n for group in BUILTINS.values() for n in group})
        raise AvatarError(f"{motion} is neither a motion file nor a built-in motion ({', '.join(names)})")
    return read_motion(path, fps)


def save_avatar(avatar: Avatar, output: str | Path | None, history: str | None) -> None:
    """Add ``history`` to the avatar's record and write it to ``output`` (when given)."""
    if history:
        avatar.add_history(history)
    if output is not None:
        avatar_file.save(avatar, output)


def parse_color(text: str) -> torch.Tensor:
    """'white', 'black', 'gray', '#rrggbb' or 'r,g,b' (0-1 floats) -> (3,) tensor."""
    names = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0), "gray": (0.5, 0.5, 0.5), "grey": (0.5, 0.5, 0.5)}
    t = text.strip().lower()
    if t in names:
        return torch.tensor(names[t])
    if t.startswith("#") and len(t) == 7:
        try:
            return torch.tensor([int(t[i : i + 2], 16) / 255.0 for i in (1, 3, 5)])
        except ValueError:
            pass
    parts = t.split(",")
    if len(parts) == 3:
        try:
            vals = [float(p) for p in parts]
        except ValueError:
            vals = []
        if vals and all(0.0 <= v <= 1.0 for v in vals):
            return torch.tensor(vals)
    raise AvatarError(f"cannot read colour {text!r}: use white, black, gray, #rrggbb or r,g,b in 0-1")


def parse_size(text: str) -> tuple[int, int]:
    """'512' or 'WxH' -> (width, height)."""
    try:
        if "x" in text.lower():
            w, h = (int(v) for v in text.lower().split("x"))
        else:
            w = h = int(text)
    except ValueError:
        raise AvatarError(f"cannot read size {text!r}: use N or WxH, e.g. 512 or 1024x768") from None
    if not (8 <= w <= 8192 and 8 <= h <= 8192):
        raise AvatarError(f"size {w}x{h} is out of range (8 to 8192 pixels a side)")
    return w, h
