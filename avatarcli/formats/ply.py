"""3D Gaussian splat files: the INRIA .ply that every viewer reads, SuperSplat's compressed
.ply and antimatter15's .splat.

The INRIA layout is written here with plyfile rather than through gsplat's exporter, which
leaves out the ``nx ny nz`` properties that some viewers (the original SIBR viewer among
them) insist on; the compressed .ply and .splat come from gsplat's exporter, the compressed
.ply without the empty ``sh`` element it declares for SH degree 0.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import torch
from plyfile import PlyData, PlyElement
from torch import Tensor

from avatarcli.errors import AvatarError
from avatarcli.fileio import atomic_path, check_input, size_text
from avatarcli.model.gaussians import Gaussians

SH_DEGREE_OUT = 3  # viewers built for the INRIA files expect all 45 f_rest values


def ply_fields(sh_coeffs: int) -> list[str]:
    rest = 3 * (sh_coeffs - 1)
    return (
        ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
        + [f"f_rest_{i}" for i in range(rest)]
        + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    )


def ply_array(g: Gaussians, sh_degree: int = SH_DEGREE_OUT) -> np.ndarray:
    """Structured array (N,) in the INRIA property order."""
    g = g.with_sh_degree(max(sh_degree, 0))
    n = len(g)
    k = g.sh.shape[1]
    fields = ply_fields(k)
    rest = g.sh[:, 1:].transpose(1, 2).reshape(n, -1)  # all red coefficients, then green, then blue
    cols = [g.means, torch.zeros(n, 3), g.sh[:, 0], rest, g.opacity_logits[:, None], g.log_scales, g.quats]
    data = torch.cat([c.detach().float().cpu() for c in cols], dim=1).numpy()
    out = np.empty(n, dtype=[(f, "<f4") for f in fields])
    for i, f in enumerate(fields):
        out[f] = data[:, i]
    return out


def write_ply(g: Gaussians, path: str | Path, sh_degree: int = SH_DEGREE_OUT) -> None:
    """Write an INRIA 3DGS .ply (binary little endian, world space, pre-activation values)."""
    element = PlyElement.describe(ply_array(g, sh_degree), "vertex")
    with atomic_path(path, suffix=".ply") as tmp:
        PlyData([element], byte_order="<").write(str(tmp))


MAX_PLY_BYTES = 8 << 30  # the largest .ply read: 8 GiB (some 30 million Gaussians)
_PLY_TYPE_BYTES = {
    **dict.fromkeys(("char", "uchar", "int8", "uint8"), 1),
    **dict.fromkeys(("short", "ushort", "int16", "uint16"), 2),
    **dict.fromkeys(("int", "uint", "int32", "uint32", "float", "float32"), 4),
    **dict.fromkeys(("double", "float64"), 8),
}
_F_REST = re.compile(r"f_rest_(0|[1-9][0-9]*)")


MAX_PLY_HEADER = 1 << 20  # the longest .ply header read: 1 MiB (3DGS headers are a few KiB)


def _check_declared_counts(path: Path, size: int) -> None:
    """Refuse a header whose element counts need more bytes than the file holds (before the
    reader allocates arrays of those counts), or that does not end within MAX_PLY_HEADER.
    Each row takes at least its scalar sizes in a binary file, two characters a value in an
    ASCII one, and one byte in any case."""
    with open(path, "rb") as fh:
        head = fh.read(MAX_PLY_HEADER + 1)
    if not head.startswith(b"ply"):
        return  # the reader refuses it
    end = head.find(b"end_header")
    newline = head.find(b"\n", end)
    ended = end >= 0 and 0 <= newline <= MAX_PLY_HEADER
    if not ended and len(head) > MAX_PLY_HEADER:
        raise AvatarError(f"{path.name}: its header does not end (end_header) within {size_text(MAX_PLY_HEADER)}, the most read")
    if not ended:
        return  # a short file without end_header: the reader refuses it
    binary = b"format binary" in head[:end]
    elements: list[tuple[str, int, int]] = []  # name, count, bytes a row takes at least
    for line in head[:end].decode("latin-1").splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == "element" and words[2].isdigit():
            elements.append((words[1], int(words[2]), 0))
        elif len(words) >= 2 and words[0] == "property" and elements:
            kind = words[2] if words[1] == "list" and len(words) > 2 else words[1]
            name_, count, row = elements[-1]
            elements[-1] = (name_, count, row + (_PLY_TYPE_BYTES.get(kind, 1) if binary else 2))
    available = size - newline - 1
    needed = sum(count * max(row, 1) for _, count, row in elements)
    if needed > available:
        counts = ", ".join(f"{count:,} {name_}" for name_, count, _ in elements)
        raise AvatarError(f"{path.name} is truncated: its header declares {counts}, more than its {size_text(available)} of data hold")


def read_ply(path: str | Path) -> Gaussians:
    """Read an INRIA-layout 3DGS .ply (from any tool; binary or ASCII) as pre-activation
    Gaussians.

    Raises:
        AvatarError: not a ply, declared sizes beyond the file, missing 3DGS properties or
            ones that are not numbers, ``f_rest_*`` not numbered 0 to K-1 or not a whole SH
            degree, NaN values, no points, all-zero rotations.
    """
    p = Path(path)
    _check_declared_counts(p, check_input(p, "ply file", MAX_PLY_BYTES))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy's loadtxt warns about empty ASCII rows; they are refused below
            ply = PlyData.read(str(p))
    except Exception as exc:  # plyfile raises many types for malformed input
        raise AvatarError(f"{p.name} is not a readable .ply file ({type(exc).__name__})") from exc
    if "vertex" not in [e.name for e in ply.elements]:
        raise AvatarError(f"{p.name} has no vertex element")
    v = ply["vertex"].data
    names = set(v.dtype.names or ())
    need = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    missing = [n for n in need if n not in names]
    if missing:
        raise AvatarError(f"{p.name} is not a 3D Gaussian splat .ply: missing {', '.join(missing)}")
    n = len(v)
    if n == 0:
        raise AvatarError(f"{p.name} holds no Gaussians")
    rest_names = sorted(f for f in names if f.startswith("f_rest_"))
    odd = [f for f in rest_names if not _F_REST.fullmatch(f)]
    if odd:
        raise AvatarError(f"{p.name}: property {odd[0]!r} is not named f_rest_<number>")
    rest_names.sort(key=lambda f: int(f.split("_")[-1]))
    if [int(f.split("_")[-1]) for f in rest_names] != list(range(len(rest_names))):
        raise AvatarError(f"{p.name}: the f_rest properties are not numbered 0 to {len(rest_names) - 1}")
    lists = [f for f in need + rest_names if v.dtype[f].kind not in "fiu"]
    if lists:
        raise AvatarError(f"{p.name}: property {lists[0]!r} is not a number")
    coeffs = len(rest_names) // 3 + 1
    degree = round(coeffs**0.5) - 1
    if (degree + 1) ** 2 != coeffs or len(rest_names) % 3:
        raise AvatarError(f"{p.name}: {len(rest_names)} f_rest values do not make a whole SH degree")

    def col(names_: list[str]) -> Tensor:
        with np.errstate(over="ignore", invalid="ignore"):  # beyond float32: inf, refused below
            return torch.from_numpy(np.stack([np.asarray(v[f], dtype=np.float32) for f in names_], axis=1))

    sh0 = col(["f_dc_0", "f_dc_1", "f_dc_2"])[:, None]
    if rest_names:
        rest = col(rest_names).reshape(n, 3, coeffs - 1).transpose(1, 2)
        sh = torch.cat([sh0, rest], dim=1)
    else:
        sh = sh0
    g = Gaussians(
        means=col(["x", "y", "z"]),
        log_scales=col(["scale_0", "scale_1", "scale_2"]),
        quats=col(["rot_0", "rot_1", "rot_2", "rot_3"]),
        opacity_logits=col(["opacity"])[:, 0],
        sh=sh,
    )
    try:
        g.check()
    except ValueError as exc:
        raise AvatarError(f"{p.name}: {exc}") from exc
    return g


def write_gsplat_format(g: Gaussians, path: str | Path, fmt: str) -> None:
    """``fmt`` "splat" or "ply_compressed", through gsplat's exporter."""
    from gsplat.exporter import export_splats

    data = export_splats(
        g.means.detach().cpu(), g.log_scales.detach().cpu(), g.quats.detach().cpu(), g.opacity_logits.detach().cpu(),
        g.sh[:, :1].detach().cpu(), g.sh[:, 1:].detach().cpu(), format=fmt,  # type: ignore[arg-type]
    )  # fmt: skip
    if fmt == "ply_compressed":
        data = drop_empty_ply_elements(data)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def drop_empty_ply_elements(data: bytes) -> bytes:
    """A binary .ply without the elements that declare no properties.

    gsplat's compressed-ply writer always declares ``element sh N``, with no properties when
    the Gaussians have SH degree 0. Such an element holds no bytes, but readers built on
    column tables refuse it (splat-transform: "DataTable must have at least one column") and
    the PlayCanvas engine hangs on it. Only header lines change, so the header is edited as
    text here: reading and re-writing through plyfile would re-encode every value.
    """
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply\n") or end < 0:
        raise ValueError("not a .ply header")
    blocks: list[list[str]] = [[]]  # the lines before the first element, then one block per element
    for line in data[:end].decode("ascii").splitlines():
        if line.startswith("element "):
            blocks.append([])
        blocks[-1].append(line)
    keep = blocks[0] + [line for b in blocks[1:] if any(x.startswith("property ") for x in b) for line in b]
    return ("\n".join(keep) + "\n").encode("ascii") + data[end:]
