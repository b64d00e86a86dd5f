"""``motions``: the built-in motions, listed or written as editable files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from avatarcli.api.inputs import check_finite, check_kind
from avatarcli.errors import AvatarError
from avatarcli.fileio import check_output
from avatarcli.motion.builtin import BUILTINS, builtin_motion, find_builtin
from avatarcli.motion.motion import Motion, check_fps
from avatarcli.motion.readers import write_motion


def builtin_motions() -> list[dict[str, Any]]:
    """The built-in motions: name, kind, seconds and what they show."""
    return [{"name": n, "kind": kind, "seconds": spec.seconds, "what": spec.description} for kind, group in BUILTINS.items()
            for n, spec in group.items()]  # fmt: skip


def motion(
    name: str, output: str | Path | None = None, *, model: str | None = None, seconds: float | None = None, fps: float = 30.0
) -> Motion:
    """A built-in motion, written as an editable canonical .npz when ``output`` is given."""
    check_kind(model)
    check_finite("the length", seconds)
    check_fps(fps)
    spec = find_builtin(name, model)
    if spec is not None and model is not None and spec.kind != model:
        raise AvatarError(f"{name} is a {spec.kind} motion, not a {model} one; the {model} motions are {', '.join(BUILTINS[model])}")
    if output is not None:
        if not str(output).lower().endswith(".npz"):
            raise AvatarError(f"motions are written as .npz (got {output})")
        check_output(output)
    mot = builtin_motion(name, model, seconds, fps)
    if output is not None:
        write_motion(mot, output)
    return mot
