"""Reading and writing artifacts: atomically, with ``-`` meaning stdin/stdout.

An interrupted or failed write never leaves a partial file at the destination: data goes to
a temporary file in the same folder and is renamed over the target only once complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from avatarcli.errors import AvatarError

STDIO = "-"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish_mode(path: Path, folder: bool = False) -> None:
    """Temporary files are created private (0600/0700); give the result the usual mode."""
    os.chmod(path, (0o777 if folder else 0o666) & ~_umask())


def read_bytes(path: str | Path, what: str = "file") -> bytes:
    """The whole content of ``path`` (``-`` reads stdin)."""
    if str(path) == STDIO:
        data = sys.stdin.buffer.read()
        if not data:
            raise AvatarError(f"no {what} on standard input")
        return data
    p = Path(path)
    if not p.exists():
        raise AvatarError(f"{what} {p} does not exist")
    if p.is_dir():
        raise AvatarError(f"{what} {p} is a folder, not a file")
    try:
        return p.read_bytes()
    except OSError as exc:
        raise AvatarError(f"cannot read {p}: {exc.strerror}") from exc


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (``-`` writes stdout)."""
    if str(path) == STDIO:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """A temporary path beside ``path`` that replaces it when the block succeeds.

    Writers that need a file name (video encoders, numpy) write to the yielded path. On an
    exception the temporary file is removed and ``path`` is left as it was.
    """
    target = Path(path)
    parent = target.parent
    if not parent.exists():
        raise AvatarError(f"folder {parent} does not exist")
    suffix = target.suffix if suffix is None else suffix
    fd, name = tempfile.mkstemp(dir=parent, prefix=f".{target.name}.", suffix=f".partial{suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _publish_mode(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """A temporary folder that becomes ``path`` when the block succeeds.

    An existing ``path`` is replaced only after the new content is complete.
    """
    target = Path(path)
    parent = target.parent
    if not parent.exists():
        raise AvatarError(f"folder {parent} does not exist")
    if target.exists() and not target.is_dir():
        raise AvatarError(f"{target} exists and is not a folder")
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{target.name}.partial-"))
    try:
        yield tmp
        _publish_mode(tmp, folder=True)
        if target.exists():
            old = Path(tempfile.mkdtemp(dir=parent, prefix=f".{target.name}.old-"))
            os.replace(target, old / "x")
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_writable(path: str | Path) -> None:
    """Fail early (before long work) when the output's folder does not exist."""
    if str(path) == STDIO:
        return
    parent = Path(path).parent
    if not parent.exists():
        raise AvatarError(f"folder {parent} does not exist")
