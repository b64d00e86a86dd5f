"""What every command checks and reads first: model kinds, seeds, finite numbers, and the
avatars and motions it is given (objects as they are, or paths to read)."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from avatarcli.errors import AvatarError
from avatarcli.fileio import STDIO, PathInput, check_output
from avatarcli.formats.environment import ENVIRONMENT_SUFFIXES, read_environment
from avatarcli.model import avatar_file
from avatarcli.model.avatar import Avatar
from avatarcli.motion.builtin import BUILTINS, builtin_motion, find_builtin
from avatarcli.motion.motion import Motion
from avatarcli.motion.readers import read_motion
from avatarcli.render.lights import PRESETS, EnvironmentLight, preset_light
from avatarcli.templates.loading import KINDS

AvatarInput = Avatar | str | Path
MotionInput = Motion | str | Path
LightInput = EnvironmentLight | str | Path
MAX_SEED = 2**63 - 1
MAX_PIXELS = 1 << 26  # pixels rendered at once (64 views of 1024 x 1024): bounds render's views, animate's batch
MAX_BATCH = 256
MAX_POINTS_PER_TRIANGLE = 100  # about 2 million Gaussians on the body, 1.2 million on the head
MAX_SIDE = 4096  # pixels a side of a rendered image or video frame
AVATAR_SUFFIX = ".avatar"


def paths(*items: object) -> tuple[PathInput, ...]:
    """The file names among a command's inputs (an avatar or a motion given as an object is no file)."""
    return tuple(i for i in items if isinstance(i, (str, Path)))


def check_avatar_name(output: str | Path) -> None:
    """An avatar is written to ``NAME.avatar`` (or ``-``, stdout): any other name would pass
    it off as another kind of file."""
    if str(output) != STDIO and not str(output).lower().endswith(AVATAR_SUFFIX):
        raise AvatarError(f"{output}: an avatar is written as a {AVATAR_SUFFIX} file; name the output NAME{AVATAR_SUFFIX}")


def check_avatar_output(output: str | Path, inputs: tuple[PathInput, ...] = ()) -> None:
    """:func:`~avatarcli.fileio.check_output` for an avatar, which must be named ``.avatar``."""
    check_output(output, inputs=inputs)
    check_avatar_name(output)


def parse_size(text: str) -> tuple[int, int]:
    """'512' or 'WxH' -> (width, height) (the range is checked by :func:`check_frame_size`)."""
    try:
        if "x" in text.lower():
            w, h = (int(v) for v in text.lower().split("x"))
        else:
            w = h = int(text)
    except ValueError:
        raise AvatarError(f"cannot read size {text!r}: use N or WxH, e.g. 512 or 1024x768") from None
    return w, h


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


def check_frame_size(size: tuple[int, int]) -> None:
    """Width and height of rendered images: 8 to MAX_SIDE pixels each."""
    w, h = size
    if not (8 <= w <= MAX_SIDE and 8 <= h <= MAX_SIDE):
        raise AvatarError(f"size {w}x{h} is out of range: 8 to {MAX_SIDE} pixels a side")


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


MOTION_SUFFIXES = (".npz", ".npy", ".pkl", ".pickle")


def check_order(avatar: AvatarInput, motion: MotionInput) -> None:
    """Refuse a motion given where the avatar goes and an avatar where the motion goes."""
    if not isinstance(avatar, (str, Path)) or not isinstance(motion, (str, Path)):
        return
    builtin = any(str(avatar) in group for group in BUILTINS.values()) and not Path(avatar).exists()
    if str(motion).lower().endswith(AVATAR_SUFFIX) and (Path(avatar).suffix.lower() in MOTION_SUFFIXES or builtin):
        raise AvatarError(f"the arguments look swapped: {avatar} is a motion and {motion} an avatar; give the avatar, then the motion")


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


def load_light(light: LightInput | None) -> EnvironmentLight | None:
    """A light object as it is, a preset's name (``PRESETS``), or an .hdr / .exr panorama; None stays None."""
    if light is None or isinstance(light, EnvironmentLight):
        return light
    text = str(light)
    if text in PRESETS:
        return preset_light(text)
    if Path(text).suffix.lower() in ENVIRONMENT_SUFFIXES:
        return read_environment(text)
    raise AvatarError(f"unknown light {text!r}: choose {', '.join(PRESETS)} or an .hdr / .exr panorama")


def check_light_rotation(degrees_per_second: float) -> None:
    check_finite("the light's rotation", degrees_per_second, -36_000.0, 36_000.0)
