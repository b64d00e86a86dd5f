"""Reading and writing artifacts: atomically, with ``-`` meaning stdin/stdout.

An interrupted or failed write never leaves a partial file at the destination: data goes to
a temporary file in the same folder and is renamed over the target only once complete. A
folder output never deletes what a folder already holds: new files are written into a
temporary folder and moved in only when all are complete (:func:`atomic_folder`).

Inputs are read with bounds stated up front: :func:`read_bytes` refuses what is larger than
its limit or is not a file (``/dev/zero``), and :func:`read_arrays` reads ``.npy`` / ``.npz``
files without unpickling and without allocating what a header merely declares.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import math
import os
import shutil
import stat
import sys
import tempfile
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np

from avatarcli.errors import AvatarError
from avatarcli.signals import interruptions_held

STDIO = "-"
MAX_READ_BYTES = 4 << 30  # the default limit of read_bytes: 4 GiB
_CHUNK = 16 << 20
# errors of a write the user can do something about (space, permissions, a read-only disk)
WRITE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.EISDIR, errno.ENOTDIR, errno.ENAMETOOLONG}
)


def size_text(n: int) -> str:
    """``n`` bytes for a message: 1.5 GiB, 20 MiB, 512 bytes."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.3g} {unit}"
    return f"{n} bytes"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish_mode(path: Path, folder: bool = False) -> None:
    """Temporary files are created private (0600/0700); give the result the usual mode."""
    os.chmod(path, (0o777 if folder else 0o666) & ~_umask())


# -- reading ------------------------------------------------------------------------------------
def _read_at_most(fh: BinaryIO, limit: int, what: str, where: str) -> bytes:
    """Everything ``fh`` holds, refusing more than ``limit`` bytes (read a chunk at a time,
    so nothing larger than the data is ever allocated)."""
    parts: list[bytes] = []
    size = 0
    while True:
        block = fh.read(min(_CHUNK, limit + 1 - size))
        if not block:
            return b"".join(parts)
        parts.append(block)
        size += len(block)
        if size > limit:
            raise AvatarError(f"{what} {where} is larger than {size_text(limit)}, the most this command reads")


def check_input(path: str | Path, what: str = "file", limit: int = MAX_READ_BYTES) -> int:
    """Refuse an input that is missing, a folder, a device (``/dev/zero``) or larger than
    ``limit`` bytes before reading it; returns its size (0 for a pipe)."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise AvatarError(f"{what} {p} does not exist") from None
    except OSError as exc:
        raise AvatarError(f"cannot read {p}: {exc.strerror}") from exc
    if stat.S_ISDIR(st.st_mode):
        raise AvatarError(f"{what} {p} is a folder, not a file")
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISFIFO(st.st_mode)):
        raise AvatarError(f"{what} {p} is not a regular file")
    if stat.S_ISFIFO(st.st_mode) and _named_pipe(p):
        raise AvatarError(f"{what} {p} is a named pipe: reading it waits for a writer that may never come; give a regular file")
    if st.st_size > limit:
        raise AvatarError(f"{what} {p} is {size_text(st.st_size)}, more than {size_text(limit)}, the most this command reads")
    return st.st_size


def _named_pipe(path: Path) -> bool:
    """Whether ``path`` is a FIFO made in the filesystem (``mkfifo``), which blocks the reader
    until something opens it for writing, rather than a pipe that already has its writer (a
    shell's ``<(command)``, ``/dev/fd/N``, whose target is no file)."""
    try:
        return stat.S_ISFIFO(os.lstat(os.path.realpath(path)).st_mode)
    except OSError:
        return False


def _check_stdin(what: str) -> None:
    """Refuse a device as standard input (``< /dev/zero``, a terminal): files and pipes are read."""
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return  # not a real file descriptor (an in-memory stream): read it
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        raise AvatarError(f"standard input is a device, not a file or a pipe; pipe the {what} in or name it")


def read_bytes(path: str | Path, what: str = "file", limit: int = MAX_READ_BYTES) -> bytes:
    """The whole content of ``path`` (``-`` reads stdin), at most ``limit`` bytes.

    Regular files and pipes are read; devices (``/dev/zero``), folders and sockets are refused.
    """
    if str(path) == STDIO:
        _check_stdin(what)
        data = _read_at_most(sys.stdin.buffer, limit, what, "on standard input")
        if not data:
            raise AvatarError(f"no {what} on standard input")
        return data
    p = Path(path)
    check_input(p, what, limit)
    try:
        with open(p, "rb") as fh:
            return _read_at_most(fh, limit, what, str(p))
    except OSError as exc:
        raise AvatarError(f"cannot read {p}: {exc.strerror}") from exc


def _article(what: str) -> str:
    return "an" if what[:1] in "aeiou" else "a"


def _read_stream(stream: BinaryIO, n: int) -> bytes:
    """Up to ``n`` bytes of ``stream`` (fewer only at its end), a chunk at a time."""
    parts: list[bytes] = []
    size = 0
    while size < n:
        block = stream.read(min(_CHUNK, n - size))
        if not block:
            break
        parts.append(block)
        size += len(block)
    return b"".join(parts)


MAX_SAFETENSORS_HEADER = 64 << 20  # the largest safetensors header read (the tensor table and the metadata)


def _safetensors_size(header: bytes) -> int:
    """The data bytes a safetensors header declares (the end of its last tensor)."""
    table = json.loads(header)
    if not isinstance(table, dict):
        raise ValueError("the header is not a JSON object")
    end = 0
    for key, entry in table.items():
        if key == "__metadata__":
            continue
        offsets = entry["data_offsets"]
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) and o >= 0 for o in offsets)):
            raise ValueError(f"tensor {key[:40]!r} has no valid data offsets")
        end = max(end, offsets[1])
    return end


def read_safetensors(path: str | Path, what: str, limit: int) -> bytes:
    """The bytes of a safetensors file (``-`` reads stdin), at most ``limit``.

    A file's size is checked before it is read (:func:`read_bytes`). Standard input has no
    size to check: its header is read first, and then only the data it declares, so a stream
    that is not a safetensors file (``/dev/zero``) or declares more than ``limit`` is refused
    before anything of that size is read.
    """
    if str(path) != STDIO:
        return read_bytes(path, what, limit)
    _check_stdin(what)
    stream = sys.stdin.buffer
    prefix = _read_stream(stream, 8)
    if not prefix:
        raise AvatarError(f"no {what} on standard input")
    n = int.from_bytes(prefix, "little") if len(prefix) == 8 else 0
    if not 2 <= n <= MAX_SAFETENSORS_HEADER:
        raise AvatarError(f"standard input is not {_article(what)} {what}")
    header = _read_stream(stream, n)
    try:
        size = _safetensors_size(header) if len(header) == n else -1
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError):
        raise AvatarError(f"standard input is not {_article(what)} {what} (unreadable header)") from None
    if size < 0:
        raise AvatarError(f"the {what} on standard input is truncated")
    if 8 + n + size > limit:
        raise AvatarError(
            f"the {what} on standard input declares {size_text(8 + n + size)}, more than {size_text(limit)}, the most this command reads"
        )
    data = _read_stream(stream, size)
    if len(data) < size:
        raise AvatarError(f"the {what} on standard input is truncated")
    return prefix + header + data


def safetensors_metadata(path: str | Path, key: str = "avatarcli") -> dict | None:
    """The JSON object a safetensors file keeps under ``key`` in its metadata, read from the
    header alone (the tensors are not read); None for a file that is not such a file."""
    try:
        with open(path, "rb") as fh:
            prefix = fh.read(8)
            n = int.from_bytes(prefix, "little") if len(prefix) == 8 else 0
            if not 2 <= n <= MAX_SAFETENSORS_HEADER:
                return None
            header = json.loads(fh.read(n))
            meta = json.loads(header["__metadata__"][key])
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError):
        return None
    return meta if isinstance(meta, dict) else None


class PickledArrayError(AvatarError):
    """An array stored as pickled Python objects; it is never loaded here."""


def npy_header(data: bytes, name: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """The header of a ``.npy`` image: shape, Fortran order, dtype and where the data start."""
    fh = io.BytesIO(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy warns about headers written by Python 2
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                raise ValueError(f"unsupported .npy version {version}")
    except (ValueError, SyntaxError, TypeError, UnicodeDecodeError, RecursionError, MemoryError) as exc:
        raise AvatarError(f"{name} is not a readable .npy array ({str(exc).splitlines()[0][:80]})") from None
    if any(d < 0 for d in shape):
        raise AvatarError(f"{name}: the array header has a negative size {shape}")
    return shape, fortran, dtype, fh.tell()


def npy_array(data: bytes, name: str) -> np.ndarray:
    """Parse one ``.npy`` image (its bytes) into a read-only array over those bytes.

    The header's shape is checked against the bytes that follow it before anything is
    allocated; arrays of Python objects (pickles) raise :class:`PickledArrayError`.
    """
    shape, fortran, dtype, offset = npy_header(data, name)
    if dtype.hasobject:
        raise PickledArrayError(f"{name} holds pickled Python objects; refusing to load it (pickles can run code)")
    count = math.prod(shape)
    if count * dtype.itemsize > len(data) - offset:
        raise AvatarError(f"{name}: the array is truncated (its header says {shape} of {dtype})")
    try:
        flat = np.frombuffer(data, dtype=dtype, count=count, offset=offset) if count else np.empty(0, dtype)
        return flat.reshape(shape, order="F" if fortran else "C")
    except (ValueError, TypeError) as exc:
        raise AvatarError(f"{name} is not a readable .npy array ({exc})") from None


ArrayCheck = Callable[[str, tuple[int, ...], np.dtype], None]
_NPY_PROBE = 1 << 16  # bytes of an .npz member read to find its array's header


def _member_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> tuple[tuple[int, ...], np.dtype] | None:
    """The shape and dtype an ``.npz`` member declares, from its first bytes (the rest is not
    unpacked); None when they hold no readable ``.npy`` header (reading the member says why)."""
    with archive.open(info) as fh:
        head = fh.read(_NPY_PROBE)
    if not head.startswith(b"\x93NUMPY"):
        return None
    try:
        shape, _, dtype, _ = npy_header(head, name)
    except AvatarError:
        return None
    return shape, dtype


def npz_arrays(
    data: bytes, name: str, limit: int = MAX_READ_BYTES, skip_pickled: bool = False, check: ArrayCheck | None = None
) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` image, by name (``.npy`` dropped), at most ``limit`` bytes
    unpacked in all; ``skip_pickled`` leaves out object arrays instead of refusing the file.
    ``check(key, shape, dtype)`` sees each array's header before the array is unpacked, and
    raises to refuse it (a few bytes of archive can unpack to a gigabyte)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, UnicodeDecodeError, NotImplementedError) as exc:
        raise AvatarError(f"{name} is not a readable .npz file, or it is truncated ({str(exc)[:80]})") from None
    arrays: dict[str, np.ndarray] = {}
    unpacked = 0
    with archive:
        for info in members:
            if info.filename.endswith("/"):  # a folder entry
                continue
            key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            unpacked += info.file_size
            if unpacked > limit:
                raise AvatarError(f"{name} holds more than {size_text(limit)} unpacked, the most this command reads")
            try:
                declared = _member_header(archive, info, f"{name}: '{key}'") if check is not None else None
                if declared is not None:
                    assert check is not None
                    check(key, *declared)
                member = archive.read(info)
            except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, RuntimeError, NotImplementedError) as exc:
                raise AvatarError(f"{name}: '{key}' is corrupt ({str(exc)[:80]})") from None
            try:
                arrays[key] = npy_array(member, f"{name}: '{key}'")
            except PickledArrayError:
                if not skip_pickled:
                    raise
    return arrays


def read_arrays(
    path: str | Path, what: str = "file", limit: int = MAX_READ_BYTES, check: ArrayCheck | None = None
) -> np.ndarray | dict[str, np.ndarray]:
    """A ``.npy`` file's array or an ``.npz`` file's arrays (by their content, as ``np.load``
    tells them apart), read within ``limit`` bytes and never unpickled; ``check`` sees each
    array's shape and dtype before anything is made of it (see :func:`npz_arrays`; a ``.npy``
    file's one array has the key "")."""
    data = read_bytes(path, what, limit)
    name = Path(path).name
    if data.startswith(b"PK\x03\x04") or data.startswith(b"PK\x05\x06"):
        return npz_arrays(data, name, limit, check=check)
    if data.startswith(b"\x93NUMPY"):
        array = npy_array(data, name)  # a view of the bytes read: nothing is made of them yet
        if check is not None:
            check("", array.shape, array.dtype)
        return array
    raise AvatarError(f"{name} is not a .npy or .npz file")


# -- writing ------------------------------------------------------------------------------------
_PARTIAL: set[Path] = set()  # temporary outputs being written, until renamed into place or removed
# temporary names are ".NAME.XXXXXXXX.partialSUFFIX": NAME and SUFFIX are cut so that they stay
# within the 255 bytes a file name may have wherever the output's own name fits
_STEM_ROOM, _SUFFIX_ROOM = 160, 32


def _stem(name: str) -> str:
    """``name`` cut to at most _STEM_ROOM bytes, for the temporary names made from it."""
    return os.fsdecode(os.fsencode(name)[:_STEM_ROOM])


def _temporary(make: Callable[[], str]) -> Path:
    """A new temporary file or folder (``make`` creates it), noted in one step."""
    with interruptions_held():
        path = Path(make())
        _PARTIAL.add(path)
    return path


def _discard(path: Path) -> None:
    """Remove a temporary output and forget it."""
    with interruptions_held():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        _PARTIAL.discard(path)


def remove_partial_outputs() -> None:
    """Remove every temporary output still noted: what a writer interrupted at an unlucky
    moment (twice, or before its clean-up was set up) could not remove itself. The command
    line calls this on its way out."""
    for path in list(_PARTIAL):
        _discard(path)


def write_error(target: Path, exc: OSError) -> AvatarError | None:
    """The one-line error for a failed write the user can fix (no space, no permission, a
    read-only disk, a folder in the way); None for other failures."""
    if exc.errno not in WRITE_ERRNOS:
        return None
    return AvatarError(f"cannot write {target}: {exc.strerror}")


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
    exception or an interruption the temporary file is removed and ``path`` is left as it
    was; a write that fails for want of space or permission is one ``AvatarError``.
    """
    target = Path(path)
    suffix = target.suffix if suffix is None else suffix
    suffix = suffix if len(os.fsencode(suffix)) <= _SUFFIX_ROOM else ""

    def make() -> str:
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{_stem(target.name)}.", suffix=f".partial{suffix}")
        os.close(fd)
        return name

    def publish(tmp: Path) -> None:
        _publish_mode(tmp)
        os.replace(tmp, target)

    with _staged(target, make, publish) as tmp:
        yield tmp


@contextlib.contextmanager
def atomic_folder(path: str | Path, force: bool = False) -> Iterator[Path]:
    """A temporary folder whose files appear in ``path`` when the block succeeds.

    A new or empty ``path`` receives the folder whole (one rename). The files of a non-empty
    one are never removed: it is refused unless ``force``, which moves the new files in,
    replacing only files of the same names.
    """
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise AvatarError(f"{target} exists and is not a folder")

    def publish(tmp: Path) -> None:
        _publish_mode(tmp, folder=True)
        _move_into(tmp, target, force)

    with _staged(target, lambda: tempfile.mkdtemp(dir=target.parent, prefix=f".{_stem(target.name)}.partial-"), publish) as tmp:
        yield tmp


@contextlib.contextmanager
def _staged(target: Path, make: Callable[[], str], publish: Callable[[Path], None]) -> Iterator[Path]:
    """The temporary ``make`` creates beside ``target``, given to ``publish`` (uninterrupted)
    when the block succeeds and removed otherwise; a write that fails for want of space or
    permission is one ``AvatarError``."""
    parent = target.parent
    if not parent.is_dir():
        raise AvatarError(f"folder {parent} does not exist")
    try:
        tmp = _temporary(make)
    except OSError as exc:
        raise AvatarError(f"cannot write into folder {parent}: {exc.strerror}") from exc
    try:
        yield tmp
        with interruptions_held():
            publish(tmp)
            _PARTIAL.discard(tmp)
    except OSError as exc:
        _discard(tmp)
        error = write_error(target, exc)
        if error is None:
            raise
        raise error from exc
    except BaseException:
        _discard(tmp)
        raise


def _move_into(tmp: Path, target: Path, force: bool) -> None:
    """Give ``target`` the files of ``tmp`` (see :func:`atomic_folder`); ``tmp`` is gone after."""
    empty = not target.exists() or not any(target.iterdir())
    if empty and not target.is_symlink():
        try:
            os.rename(tmp, target)  # a new name, or over an empty folder: one step
            return
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            empty = False  # filled meanwhile
    if not empty and not force:
        raise AvatarError(f"folder {target} is not empty; choose a new or empty folder, or pass --force to add the files to it")
    names = sorted(p.name for p in tmp.iterdir())
    blocked = [n for n in names if (target / n).is_dir()]
    if blocked:
        raise AvatarError(f"cannot write {target / blocked[0]}: a folder of that name is in the way")
    for n in names:
        os.replace(tmp / n, target / n)
    tmp.rmdir()


OutputKind = Literal["file", "folder"]
PathInput = str | Path | None


def _stat(path: Path) -> os.stat_result | None:
    """``path``'s status (links followed); None when nothing is there; a path that cannot
    be looked at (a name too long, no permission) is one ``AvatarError``."""
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise AvatarError(f"cannot use {path}: {exc.strerror}") from exc


def _name_max(folder: Path) -> int:
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return 255


def check_output(path: str | Path, kind: OutputKind = "file", force: bool = False, *, inputs: Iterable[PathInput] = ()) -> None:
    """Refuse, before any work, an output that cannot be written or would harm what is there.

    Args:
        path: the output; ``-`` (stdout) passes.
        kind: "file" (an existing folder or device in its place is refused) or "folder"
            (an existing non-empty folder is refused unless ``force``).
        force: allow adding files to a non-empty folder.
        inputs: the files the command reads: an output that is one of them (the same file,
            or a link to it) is refused (see :func:`check_not_an_input`).
    """
    if str(path) == STDIO:
        return
    target = Path(path)
    parent = target.parent
    parent_status = _stat(parent)
    if parent_status is None:
        raise AvatarError(f"folder {parent} does not exist")
    if not stat.S_ISDIR(parent_status.st_mode):
        raise AvatarError(f"{parent} is not a folder")
    length, most = len(os.fsencode(target.name)), _name_max(parent)
    if length > most:
        raise AvatarError(f"the name {target.name[:40]}... is {length} bytes long; a file name in {parent} may have at most {most}")
    status = _stat(target)
    is_dir = status is not None and stat.S_ISDIR(status.st_mode)
    if kind == "file":
        if is_dir:
            raise AvatarError(f"{target} is a folder; name a file to write")
        if status is not None and not stat.S_ISREG(status.st_mode):
            raise AvatarError(f"{target} exists and is not a regular file")
    else:
        if status is not None and not is_dir:
            raise AvatarError(f"{target} exists and is not a folder")
        if is_dir and any(target.iterdir()) and not force:
            raise AvatarError(f"folder {target} is not empty; choose a new or empty folder, or pass --force to add the files to it")
    check_not_an_input(target, inputs)
    for folder in (parent, target) if is_dir else (parent,):
        _check_can_create(folder)


def check_not_an_input(output: str | Path, inputs: Iterable[PathInput]) -> None:
    """Refuse an output that is one of the command's ``inputs``: the same file under the same
    name, another name or a link (writing it would replace what is being read). ``-`` and
    None among the inputs are skipped, as is an output that does not exist yet."""
    if str(output) == STDIO:
        return
    written = _stat(Path(output))
    if written is None:
        return
    for source in inputs:
        if source is None or str(source) == STDIO:
            continue
        try:
            read = os.stat(source)
        except OSError:
            continue  # the command's own check of that input says what is wrong with it
        if (read.st_dev, read.st_ino) == (written.st_dev, written.st_ino):
            same = "" if str(source) == str(output) else f" (as {output})"
            raise AvatarError(f"the output is the input {source}{same}: it would be replaced while it is read; write to a new name")


def _check_can_create(folder: Path) -> None:
    """Whether a file can be made in ``folder``: permission and a writable disk."""
    if not os.access(folder, os.W_OK | os.X_OK):
        raise AvatarError(f"cannot write into folder {folder}: permission denied")
    try:
        with tempfile.TemporaryFile(dir=folder):  # O_TMPFILE where there is one: nothing shows
            pass
    except OSError as exc:
        raise AvatarError(f"cannot write into folder {folder}: {exc.strerror}") from exc


def check_writable(path: str | Path) -> None:
    """:func:`check_output` for a file output."""
    check_output(path, "file")
