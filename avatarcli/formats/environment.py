"""Environment images users light avatars with: Radiance ``.hdr`` and OpenEXR ``.exr`` panoramas
(equirectangular, linear radiance) read into an :class:`~avatarcli.render.lights.EnvironmentLight`.

The ``.hdr`` reader is written here: imageio reads the format only through FreeImage, a
library it downloads at run time (which these machines cannot do, and a user's machine
should not have to). It reads what Radiance and every HDR tool write: the text header
(``#?RADIANCE`` or ``#?RGBE``, ``FORMAT=32-bit_rle_rgbe``, other lines ignored), the
resolution line in any of its eight orientations, and scanlines flat or run-length encoded
(the "new" encoding: per scanline ``2 2 W/256 W%256``, then each of the four RGBE channels in
runs). Sizes are bounded before anything is allocated, and a truncated or malformed file is
one line. ``.exr`` goes through the OpenEXR package (the ``exr`` extra), which reads it with
no network.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from avatarcli.errors import AvatarError
from avatarcli.fileio import check_input, read_bytes
from avatarcli.render.lights import MAX_LIGHT_SIZE, EnvironmentLight

MAX_ENVIRONMENT_BYTES = 1 << 30  # the largest panorama file read
MAX_HEADER_BYTES = 1 << 16
MAX_TEXELS = MAX_LIGHT_SIZE * MAX_LIGHT_SIZE // 2  # 8192 x 4096, the largest panoramas published
ENVIRONMENT_SUFFIXES = (".hdr", ".exr")


def read_environment(path: str | Path) -> EnvironmentLight:
    """The light of a panorama file (.hdr or .exr); AvatarError (one line) for anything else."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".hdr":
        image = read_hdr(p)
    elif suffix == ".exr":
        image = read_exr(p)
    else:
        raise AvatarError(f"cannot read {p.name} as a light: name a preset or an .hdr / .exr panorama")
    return EnvironmentLight.from_image(torch.from_numpy(image), p.name)


# -- Radiance .hdr --------------------------------------------------------------------------------
def _header(data: bytes, name: str) -> tuple[int, int, str, str, int]:
    """The header's (height, width, row axis, column axis, offset of the pixels)."""
    if not (data.startswith(b"#?RADIANCE") or data.startswith(b"#?RGBE")):
        raise AvatarError(f"{name} is not a Radiance .hdr file (no #?RADIANCE signature)")
    end = data.find(b"\n\n", 0, MAX_HEADER_BYTES)
    if end < 0:
        raise AvatarError(f"{name}: the .hdr header does not end within {MAX_HEADER_BYTES} bytes")
    for line in data[:end].split(b"\n")[1:]:
        if line.startswith(b"FORMAT=") and line.strip() != b"FORMAT=32-bit_rle_rgbe":
            fmt = line[7:].decode("latin-1", "replace").strip()[:40]
            raise AvatarError(f"{name}: pixel format {fmt!r} is not read (only 32-bit_rle_rgbe)")
    newline = data.find(b"\n", end + 2, end + 2 + 256)
    if newline < 0:
        raise AvatarError(f"{name}: the .hdr file has no resolution line")
    words = data[end + 2 : newline].decode("latin-1", "replace").split()
    axes = ("-Y", "+Y", "-X", "+X")
    if len(words) != 4 or words[0] not in axes or words[2] not in axes or words[0][1] == words[2][1]:
        raise AvatarError(f"{name}: unreadable .hdr resolution line {' '.join(words)[:40]!r}")
    try:
        a, b = int(words[1]), int(words[3])
    except ValueError:
        raise AvatarError(f"{name}: unreadable .hdr resolution line {' '.join(words)[:40]!r}") from None
    if not (1 <= a <= MAX_LIGHT_SIZE and 1 <= b <= MAX_LIGHT_SIZE) or a * b > MAX_TEXELS:
        raise AvatarError(f"{name}: the panorama is {b}x{a}; at most {MAX_LIGHT_SIZE} texels a side and {MAX_TEXELS:,} in all are read")
    return a, b, words[0], words[2], newline + 1


def _scanline(data: bytes, pos: int, width: int, name: str) -> tuple[np.ndarray, int]:
    """One scanline (width, 4) uint8 from ``pos``; returns it and where the next begins."""
    size = len(data)
    rle = 8 <= width < 32768 and pos + 4 <= size and data[pos] == 2 and data[pos + 1] == 2 and data[pos + 2] < 128
    if not rle:
        end = pos + 4 * width
        if end > size:
            raise AvatarError(f"{name} is truncated (a scanline ends past the end of the file)")
        return np.frombuffer(data, np.uint8, 4 * width, pos).reshape(width, 4), end
    if (data[pos + 2] << 8) | data[pos + 3] != width:
        raise AvatarError(f"{name}: a run-length scanline is not {width} pixels wide")
    pos += 4
    line = np.empty((4, width), np.uint8)
    for c in range(4):
        x = 0
        row = line[c]
        while x < width:
            if pos >= size:
                raise AvatarError(f"{name} is truncated (inside a run-length scanline)")
            count = data[pos]
            run = count > 128  # a run: one byte repeated; else ``count`` bytes as they are
            count = count - 128 if run else count
            if count == 0 or x + count > width:
                raise AvatarError(f"{name}: a run-length scanline overruns its {width} pixels")
            if pos + 1 + (1 if run else count) > size:
                raise AvatarError(f"{name} is truncated (inside a run-length scanline)")
            if run:
                row[x : x + count] = data[pos + 1]
                pos += 2
            else:
                row[x : x + count] = np.frombuffer(data, np.uint8, count, pos + 1)
                pos += 1 + count
            x += count
    return line.T, pos


def decode_hdr(data: bytes, name: str = "input") -> np.ndarray:
    """Radiance RGBE bytes -> linear radiance (H, W, 3) float32, top row first, left to right."""
    a, b, major, minor, pos = _header(data, name)
    rows = np.empty((a, b, 4), np.uint8)
    for i in range(a):
        rows[i], pos = _scanline(data, pos, b, name)
    e = rows[..., 3].astype(np.int32)
    scale = np.where(e > 0, np.ldexp(np.float32(1.0), e - 136), np.float32(0.0)).astype(np.float32)
    rgb = (rows[..., :3].astype(np.float32) + 0.5) * scale[..., None]
    # the standard orientation is "-Y H +X W": rows from the top, columns from the left
    if major[1] == "X":  # columns were stored as rows
        rgb = rgb.transpose(1, 0, 2)
        major, minor = minor, major
    if major == "+Y":
        rgb = rgb[::-1]
    if minor == "-X":
        rgb = rgb[:, ::-1]
    return np.ascontiguousarray(rgb)


def read_hdr(path: str | Path) -> np.ndarray:
    """A Radiance .hdr file's pixels (H, W, 3), linear float32."""
    p = Path(path)
    return decode_hdr(read_bytes(p, "light file", MAX_ENVIRONMENT_BYTES), p.name)


# -- OpenEXR .exr ---------------------------------------------------------------------------------
def read_exr(path: str | Path) -> np.ndarray:
    """An OpenEXR file's R, G, B (or Y) channels (H, W, 3), linear float32, through the OpenEXR
    package; AvatarError when it is not installed or the file is not a readable image."""
    p = Path(path)
    check_input(p, "light file", MAX_ENVIRONMENT_BYTES)
    try:
        import OpenEXR
    except ImportError:
        raise AvatarError(f"reading {p.name} needs the OpenEXR package: pip install 'avatarcli[exr]' (or use an .hdr)") from None
    try:
        if not OpenEXR.isOpenExrFile(str(p)):
            raise AvatarError(f"{p.name} is not an OpenEXR file")
        with OpenEXR.File(str(p), header_only=True) as f:
            lo, hi = f.header()["dataWindow"]
        w, h = int(hi[0] - lo[0] + 1), int(hi[1] - lo[1] + 1)
        if not (1 <= w <= MAX_LIGHT_SIZE and 1 <= h <= MAX_LIGHT_SIZE) or w * h > MAX_TEXELS:
            most = f"at most {MAX_LIGHT_SIZE} texels a side and {MAX_TEXELS:,} in all are read"
            raise AvatarError(f"{p.name}: the panorama is {w}x{h}; {most}")
        with OpenEXR.File(str(p), separate_channels=True) as f:
            channels = {k: v.pixels for k, v in f.channels().items()}
    except AvatarError:
        raise
    except Exception as exc:  # the bindings raise their own types for damaged files
        raise AvatarError(f"{p.name} is not a readable OpenEXR image ({type(exc).__name__})") from exc
    names = ("R", "G", "B") if all(c in channels for c in "RGB") else ("Y", "Y", "Y") if "Y" in channels else None
    if names is None:
        raise AvatarError(f"{p.name} has no R, G, B or Y channels (it has {', '.join(sorted(channels))[:60]})")
    planes = [np.asarray(channels[n], np.float32) for n in names]
    if any(pl.shape != (h, w) for pl in planes):
        raise AvatarError(f"{p.name}: its colour channels are subsampled; only full-resolution channels are read")
    return np.stack(planes, axis=-1)
