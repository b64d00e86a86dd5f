"""The ``.avatar`` file: one safetensors file holding a rigged Gaussian avatar.

Tensors:
    gaussians.means / log_scales / quats / opacity_logits / sh   the Gaussians (pre-activation)
    binding.face_idx                                              both bindings
    binding.weights, binding.bary                                 skinning binding (bodies)
    binding.residual.*                                            optional residual-weight network
    template.betas                                                template shape (S,)

``__metadata__`` holds one key, ``avatarcli``, whose value is a JSON object: format name and
version, model kind, binding kind, template (name, file, sha256 and its vertex/face/joint
counts), stage, prompt, seed, and the history of commands that made the file. Nothing is
pickled; unknown tensors are kept and written back.
"""

from __future__ import annotations

import json
import struct
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from avatarcli.errors import AvatarError
from avatarcli.fileio import read_bytes, write_bytes
from avatarcli.model.avatar import Avatar
from avatarcli.model.binding import Binding, ResidualWeights, SkinningBinding, TriangleBinding
from avatarcli.model.gaussians import Gaussians

FORMAT = "avatarcli.avatar"
VERSION = 1
GAUSSIAN_KEYS = tuple(f.name for f in fields(Gaussians))


def to_bytes(avatar: Avatar) -> bytes:
    """Serialise to safetensors bytes (CPU, contiguous)."""
    tensors: dict[str, Tensor] = {f"gaussians.{k}": getattr(avatar.gaussians, k) for k in GAUSSIAN_KEYS}
    tensors.update({f"binding.{k}": v for k, v in avatar.binding.tensors().items()})
    tensors["template.betas"] = avatar.betas
    tensors.update(avatar.extra)
    meta = dict(avatar.meta)
    residual = getattr(avatar.binding, "residual", None)
    if residual is not None:
        tensors.update({f"binding.residual.{k}": v for k, v in residual.state_dict().items()})
        meta["residual"] = residual.config
    else:
        meta.pop("residual", None)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta.update(format=FORMAT, version=VERSION, kind=avatar.kind, binding=avatar.binding.kind)
    return st_save(tensors, metadata={"avatarcli": json.dumps(meta)})


def save(avatar: Avatar, path: str | Path) -> None:
    """Write ``avatar`` to ``path`` atomically (``-`` for stdout)."""
    write_bytes(path, to_bytes(avatar))


def _header(data: bytes, name: str) -> dict[str, Any]:
    if len(data) < 8:
        raise AvatarError(f"{name} is not an avatar file (too short)")
    (n,) = struct.unpack("<Q", data[:8])
    if n <= 0 or 8 + n > len(data):
        raise AvatarError(f"{name} is not an avatar file, or it is truncated")
    try:
        header = json.loads(data[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AvatarError(f"{name} is not an avatar file (unreadable header)") from exc
    if not isinstance(header, dict):
        raise AvatarError(f"{name} is not an avatar file (unreadable header)")
    return header


def from_bytes(data: bytes, name: str = "input") -> Avatar:
    """Parse and validate avatar bytes; raises AvatarError with a one-line reason."""
    header = _header(data, name)
    raw = (header.get("__metadata__") or {}).get("avatarcli")
    if raw is None:
        raise AvatarError(f"{name} is a safetensors file but not an avatar (no avatarcli metadata)")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise AvatarError(f"{name}: avatar metadata is not valid JSON") from exc
    if meta.get("format") != FORMAT:
        raise AvatarError(f"{name} is not an avatar file (format {meta.get('format')!r})")
    if int(meta.get("version", 0)) > VERSION:
        raise AvatarError(f"{name} was written by a newer avatarcli (format version {meta.get('version')}); upgrade to read it")
    try:
        tensors = st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise AvatarError(f"{name} is corrupt or truncated ({exc})") from exc
    try:
        return _assemble(meta, tensors)
    except (KeyError, ValueError, RuntimeError, TypeError) as exc:
        raise AvatarError(f"{name} is not a valid avatar: {exc}") from exc


def _assemble(meta: dict[str, Any], tensors: dict[str, Tensor]) -> Avatar:
    kind = meta.get("kind")
    if kind not in ("head", "body"):
        raise ValueError(f"unknown kind {kind!r}")
    missing = [f"gaussians.{k}" for k in GAUSSIAN_KEYS if f"gaussians.{k}" not in tensors]
    if missing:
        raise KeyError(f"missing tensors {', '.join(missing)}")
    g = Gaussians(**{k: tensors.pop(f"gaussians.{k}").float() for k in GAUSSIAN_KEYS})
    g.check()
    n = len(g)
    binding: Binding
    if meta.get("binding") == "triangle":
        binding = TriangleBinding(tensors.pop("binding.face_idx").long())
    elif meta.get("binding") == "skinning":
        binding = SkinningBinding(
            tensors.pop("binding.weights").float(), tensors.pop("binding.face_idx").long(), tensors.pop("binding.bary").float()
        )
        if binding.weights.dim() != 2 or binding.weights.shape[0] != n or binding.bary.shape != (n, 3):
            raise ValueError("skinning weights or barycentric coordinates do not match the Gaussians")
        if not bool(torch.isfinite(binding.weights).all()):
            raise ValueError("skinning weights hold NaN or infinite values")
        if "residual" in meta:
            res = ResidualWeights(**meta["residual"])
            prefix = "binding.residual."
            state = {k[len(prefix) :]: tensors.pop(k) for k in list(tensors) if k.startswith(prefix)}
            res.load_state_dict(state)
            binding.residual = res
    else:
        raise ValueError(f"unknown binding {meta.get('binding')!r}")
    if binding.face_idx.shape != (n,):
        raise ValueError("binding.face_idx does not match the Gaussians")
    faces = meta.get("template", {}).get("faces")
    if n and faces is not None and (int(binding.face_idx.min()) < 0 or int(binding.face_idx.max()) >= int(faces)):
        raise ValueError("binding.face_idx points outside the template")
    betas = tensors.pop("template.betas", torch.zeros(0)).float()
    return Avatar(kind, g, binding, betas, meta, tensors)


def load(path: str | Path) -> Avatar:
    """Read and validate an avatar file (``-`` for stdin)."""
    name = "standard input" if str(path) == "-" else str(path)
    return from_bytes(read_bytes(path, "avatar file"), name)
