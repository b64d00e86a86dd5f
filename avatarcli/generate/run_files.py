"""The files a training run keeps beside its output, and what protects a user's files there.

A run writing ``NAME.avatar`` keeps ``NAME.ckpt`` (its checkpoint), ``NAME.unfinished.avatar``
(the avatar as it stands at the last checkpoint) and, with previews, ``NAME.previews/``.
``NAME.avatar`` itself is only ever written by a finished run, atomically: an interrupted or
killed run leaves a file already there as it was.

A file of those sibling names is replaced only when a run wrote it (this run, or an earlier
one of the same output); anything else there is a user's and is refused unless ``force``.
A run tells its own files by their content, read from the header alone: a checkpoint by its
format marker, an unfinished avatar by its stage, ``STAGE@STEP`` (finished, initial and
rigged avatars have ``generated``, ``init``, ``rigged``), a previews folder by holding only
``step_NNNNNN.png`` images.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from avatarcli.errors import AvatarError
from avatarcli.fileio import PathInput, check_output, safetensors_metadata
from avatarcli.generate import checkpoint
from avatarcli.generate.checkpoint import checkpoint_path, unfinished_path
from avatarcli.model import avatar_file

RUN_STAGE = re.compile(r"[A-Za-z_-]+@[0-9]+")  # the stage of an avatar a run saved on its way
PREVIEW_NAME = re.compile(r"step_[0-9]{6,}\.png")


def previews_path(output: str | Path) -> Path:
    """Where a run writing ``output`` puts its preview images: ``NAME.previews/``."""
    return Path(output).with_suffix(".previews")


def is_run_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a checkpoint a run wrote (its header has the format marker)."""
    meta = safetensors_metadata(path)
    return meta is not None and meta.get("format") == checkpoint.FORMAT


def is_unfinished_avatar(path: Path) -> bool:
    """Whether ``path`` is an avatar a run saved beside a checkpoint (stage ``STAGE@STEP``)."""
    meta = safetensors_metadata(path)
    stage = meta.get("stage") if meta is not None else None
    return meta is not None and meta.get("format") == avatar_file.FORMAT and isinstance(stage, str) and bool(RUN_STAGE.fullmatch(stage))


def is_previews_folder(path: Path) -> bool:
    """Whether the folder ``path`` holds only preview images (or nothing)."""
    return all(p.is_file() and PREVIEW_NAME.fullmatch(p.name) for p in path.iterdir())


def check_run_files(output: str | Path, *, previews: bool = False, force: bool = False, inputs: Iterable[PathInput] = ()) -> None:
    """Refuse, before any work, a run's output or sibling that cannot be written, that is one
    of the run's ``inputs``, or that is a user's file the run would replace (unless ``force``).

    Args:
        output: the ``.avatar`` the run writes when it finishes.
        previews: whether the run writes ``NAME.previews/``.
        force: replace sibling files that no run wrote (and add previews to a folder that
            holds other files).
    """
    out = Path(output)
    sources = list(inputs)
    ckpt, unfinished, folder = checkpoint_path(out), unfinished_path(out), previews_path(out)
    for path in (out, ckpt, unfinished):
        check_output(path, inputs=sources)
    if previews:
        check_output(folder, "folder", force=True, inputs=sources)  # a resumed run adds to its own previews
    if force:
        return
    hint = "move it away, or pass --force to let the run replace it"
    if ckpt.exists() and not is_run_checkpoint(ckpt):
        raise AvatarError(f"{ckpt} is not a checkpoint of an earlier run, and this run would replace it: {hint}")
    if unfinished.exists() and not is_unfinished_avatar(unfinished):
        raise AvatarError(f"{unfinished} is not an earlier run's unfinished avatar, and this run would replace it: {hint}")
    if previews and folder.is_dir() and not is_previews_folder(folder):
        raise AvatarError(f"folder {folder} holds files that are not preview images: {hint} (adding its images to the folder)")
