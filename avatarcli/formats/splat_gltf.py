"""Gaussian splats in glTF 2.0 (.splat.glb): the Khronos ``KHR_gaussian_splatting`` extension
(Release Candidate; its specification is in KhronosGroup/glTF, extensions/2.0/Khronos/
KHR_gaussian_splatting).

One POINTS primitive carries the Gaussians as the extension's attributes, the values the
specification asks for (not the pre-activation values of a 3DGS .ply):

    POSITION                                   VEC3   float  centres, metres (with min / max)
    KHR_gaussian_splatting:ROTATION            VEC4   float  unit quaternion x, y, z, w (w >= 0)
    KHR_gaussian_splatting:SCALE               VEC3   float  linear scales, exp(log-scale)
    KHR_gaussian_splatting:OPACITY             SCALAR float  sigmoid(logit), in [0, 1]
    KHR_gaussian_splatting:SH_DEGREE_l_COEF_n  VEC3   float  SH coefficient l*l + n, RGB, as stored
    COLOR_0                                    VEC4   ubyte  point-cloud fallback: linear diffuse
                                                             colour and opacity (normalized)

The project's world space (y up, metres, subjects facing +z) is glTF's, so nothing is turned.
The extension is listed in ``extensionsUsed`` only: a viewer without it shows coloured points.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from avatarcli.fileio import atomic_path
from avatarcli.formats.glb import ARRAY_BUFFER, FLOAT, POINTS, UINT8, GlbBuffer
from avatarcli.model.gaussians import Gaussians, sh0_to_rgb

EXTENSION = "KHR_gaussian_splatting"
COLOR_SPACE = "srgb_rec709_display"  # colours are SH0 * C0 + 0.5 shown as they are, as the renderer does


def sh_attribute(index: int) -> str:
    """The attribute name of SH coefficient ``index`` (0 .. 15): degree l = floor(sqrt(index)),
    coefficient n = index - l * l."""
    degree = int(np.sqrt(index))
    return f"{EXTENSION}:SH_DEGREE_{degree}_COEF_{index - degree * degree}"


def _srgb_to_linear(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def build_splat_glb(g: Gaussians, sh_degree: int = 3) -> bytes:
    """``g`` (N Gaussians, world space, pre-activation) as a KHR_gaussian_splatting .glb (bytes).

    ``sh_degree``: the most SH degrees to write; never more than the Gaussians have (bands a
    .ply pads with zeros are left out here).
    """
    g = g.detach().to("cpu")
    degree = max(0, min(sh_degree, g.sh_degree))
    means = g.means.double().numpy()
    quats = torch.nn.functional.normalize(g.quats.double(), dim=-1).numpy()
    quats = quats * np.where(quats[:, :1] < 0, -1.0, 1.0)  # q and -q turn alike: keep w >= 0
    scales = np.exp(g.log_scales.double().numpy())
    opacity = torch.sigmoid(g.opacity_logits.double()).numpy()
    sh = g.sh.double().numpy()  # (N, K, 3)
    rgb = sh0_to_rgb(g.sh[:, 0].double()).numpy().clip(0, 1)
    fallback = np.round(np.concatenate([_srgb_to_linear(rgb), opacity[:, None]], 1) * 255)

    buf = GlbBuffer()
    attributes = {
        "POSITION": buf.add(means.astype(np.float32), FLOAT, "VEC3", ARRAY_BUFFER, minmax=True),
        f"{EXTENSION}:ROTATION": buf.add(quats[:, [1, 2, 3, 0]].astype(np.float32), FLOAT, "VEC4", ARRAY_BUFFER),
        f"{EXTENSION}:SCALE": buf.add(scales.astype(np.float32), FLOAT, "VEC3", ARRAY_BUFFER),
        f"{EXTENSION}:OPACITY": buf.add(opacity.astype(np.float32), FLOAT, "SCALAR", ARRAY_BUFFER),
    }
    for k in range((degree + 1) ** 2):
        attributes[sh_attribute(k)] = buf.add(sh[:, k].astype(np.float32), FLOAT, "VEC3", ARRAY_BUFFER)
    attributes["COLOR_0"] = buf.add(fallback.astype(np.uint8), UINT8, "VEC4", ARRAY_BUFFER, normalized=True)
    primitive = {
        "attributes": attributes,
        "mode": POINTS,
        "extensions": {EXTENSION: {"kernel": "ellipse", "colorSpace": COLOR_SPACE, "projection": "perspective",
                                   "sortingMethod": "cameraDistance"}},
    }  # fmt: skip
    gltf = {
        "asset": {"version": "2.0", "generator": "avatarcli"},
        "extensionsUsed": [EXTENSION],
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"name": "avatar", "mesh": 0}],
        "meshes": [{"name": "gaussians", "primitives": [primitive]}],
    }
    return buf.glb(gltf)


def write_splat_glb(g: Gaussians, path: str | Path, sh_degree: int = 3) -> None:
    """Write :func:`build_splat_glb` to ``path`` atomically."""
    data = build_splat_glb(g, sh_degree)
    with atomic_path(path, suffix=".glb") as tmp:
        tmp.write_bytes(data)
