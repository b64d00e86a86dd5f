"""3D Gaussian splat files: the INRIA .ply that every viewer reads, SuperSplat's compressed
.ply and antimatter15's .splat.

The INRIA layout is written here with plyfile rather than through gsplat's exporter, which
leaves out the ``nx ny nz`` properties that some viewers (the original SIBR viewer among
them) insist on; the compressed .ply and .splat come from gsplat's exporter, the compressed
.ply without the empty ``sh`` element it declares for SH degree 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from plyfile import PlyData, PlyElement
from torch import Tensor

from avatarcli.errors import AvatarError
from avatarcli.fileio import atomic_path
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


def read_ply(path: str | Path) -> Gaussians:
    """Read an INRIA-layout 3DGS .ply (from any tool) as pre-activation Gaussians.

    Raises:
        AvatarError: not a ply, missing 3DGS properties, NaN values or no points.
    """
    p = Path(path)
    if not p.exists():
        raise AvatarError(f"ply file {p} does not exist")
    try:
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
    rest_names = sorted((f for f in names if f.startswith("f_rest_")), key=lambda f: int(f.split("_")[-1]))
    coeffs = len(rest_names) // 3 + 1
    degree = round(coeffs**0.5) - 1
    if (degree + 1) ** 2 != coeffs:
        raise AvatarError(f"{p.name}: {len(rest_names)} f_rest values do not make a whole SH degree")

    def col(names_: list[str]) -> Tensor:
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
    if bool((g.quats.norm(dim=-1) < 1e-12).any()):
        raise AvatarError(f"{p.name}: some rotations are all zero")
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
