"""The ``.avatar`` file: one safetensors file holding a rigged Gaussian avatar.

Tensors:
    gaussians.means / log_scales / quats / opacity_logits / sh   the Gaussians (pre-activation)
    binding.face_idx                                              both bindings
    binding.weights, binding.bary                                 skinning binding (bodies)
    binding.residual.*                                            optional residual-weight network
    pose.latents, pose.network.*                                  optional pose-dependent model (version 3)
    template.betas                                                template shape (S,)
    material.albedo_logits / roughness_logits / specular_logits   optional materials (relightable avatars,
    material.light                                                ``meta["material"]``: model/material.py)

``__metadata__`` holds one key, ``avatarcli``, whose value is a JSON object: format name and
version, model kind, binding kind, template (name, file, sha256 and its vertex/face/joint
counts), stage, prompt, seed, the history of commands that made the file, and the settings
of the optional parts (``residual``, ``material``, ``pose_dependent``). Nothing is pickled;
unknown tensors are kept and written back. Version 3 added the optional material and
pose-dependent groups; files of versions 1 and 2 read as they always did.
"""

from __future__ import annotations

import json
import math
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
from avatarcli.fileio import read_safetensors, write_bytes
from avatarcli.model.avatar import Avatar
from avatarcli.model.binding import Binding, ResidualWeights, SkinningBinding, TriangleBinding
from avatarcli.model.gaussians import Gaussians
from avatarcli.model.material import check_material_config, material_from_record, material_record
from avatarcli.model.pose_dependent import FEATURES, GROUPS, PoseDependent, PoseNetwork, feature_size
from avatarcli.templates.skeletons import FLAME_JOINT_NAMES, SMPLX_JOINT_NAMES

FORMAT = "avatarcli.avatar"
VERSION = 3
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
    meta.pop("material", None)
    if avatar.material is not None:
        material_tensors, meta["material"] = material_record(avatar.material)
        tensors.update(material_tensors)
    pose = avatar.pose_dependent
    if pose is not None:
        tensors["pose.latents"] = pose.latents
        tensors.update({f"pose.network.{k}": v for k, v in pose.network.state_dict().items()})
        meta["pose_dependent"] = pose.network.config
    else:
        meta.pop("pose_dependent", None)
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
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise AvatarError(f"{name} is not an avatar file (unreadable header)") from exc
    if not isinstance(header, dict):
        raise AvatarError(f"{name} is not an avatar file (unreadable header)")
    return header


def from_bytes(data: bytes, name: str = "input") -> Avatar:
    """Parse and validate avatar bytes; raises AvatarError with a one-line reason.

    The metadata is checked against its schema (:func:`check_meta`) before any tensor is
    read; the tensors against the metadata's counts (:func:`_assemble`).
    """
    header = _header(data, name)
    stored = header.get("__metadata__")
    raw = stored.get("avatarcli") if isinstance(stored, dict) else None
    if raw is None:
        raise AvatarError(f"{name} is a safetensors file but not an avatar (no avatarcli metadata)")
    try:
        meta = json.loads(raw)
    except (TypeError, json.JSONDecodeError, RecursionError) as exc:
        raise AvatarError(f"{name}: avatar metadata is not valid JSON") from exc
    check_meta(meta, name)
    try:
        tensors = st_load(data)
    except (SafetensorError, ValueError, RuntimeError, TypeError, OverflowError) as exc:
        raise AvatarError(f"{name} is corrupt or truncated ({str(exc).splitlines()[0][:120]})") from exc
    try:
        return _assemble(meta, tensors)
    except ValueError as exc:
        raise AvatarError(f"{name} is not a valid avatar: {exc}") from exc


# -- the metadata's schema ------------------------------------------------------------------------
MAX_BETAS = 400  # shape coefficients (SMPL-X and FLAME releases have at most 300)
MAX_TEMPLATE_SIZE = 10_000_000  # vertices or faces of a template
MAX_JOINTS = 1000
# the residual skinning network's settings: (low, high); its size follows from them
RESIDUAL_LIMITS = {"frequencies": (0, 16), "width": (1, 1024)}
# what each kind is made of: heads ride FLAME's triangles, bodies are skinned to SMPL-X's joints
KIND_LAYOUT = {"head": ("triangle", len(FLAME_JOINT_NAMES), "FLAME"), "body": ("skinning", len(SMPLX_JOINT_NAMES), "SMPL-X")}
# the pose-dependent model's settings, likewise (its feature length follows from the layout)
POSE_LIMITS = {"components": (1, 256), "rank": (1, 256), "width": (1, 1024)}
MAX_EXPRESSION = 400


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _whole(obj: dict[str, Any], key: str, where: str, low: int, high: int, required: bool = True) -> None:
    value = obj.get(key)
    if value is None and not required:
        return
    if not _is_int(value):
        raise AvatarError(f"{where}: '{key}' must be a whole number (got {json.dumps(value)[:40]})")
    if not low <= value <= high:
        raise AvatarError(f"{where}: '{key}' is {value}, outside {low} to {high}")


def _of_type(obj: dict[str, Any], key: str, where: str, kind: type | tuple[type, ...], what: str) -> None:
    value = obj.get(key)
    if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
        raise AvatarError(f"{where}: '{key}' must be {what} (got {json.dumps(value)[:40]})")


def check_meta(meta: Any, name: str = "input") -> None:
    """Raise AvatarError unless ``meta`` is avatar metadata this version reads: a JSON object
    with the format and version, kind and binding, the template's counts, optional text
    fields, a list of history entries and, for skinning, the residual network's settings."""
    if not isinstance(meta, dict):
        raise AvatarError(f"{name}: the avatar metadata is a JSON {type(meta).__name__}, not an object")
    if meta.get("format") != FORMAT:
        raise AvatarError(f"{name} is not an avatar file (format {str(meta.get('format'))[:40]!r})")
    _whole(meta, "version", name, 0, 2**31)
    if meta["version"] > VERSION:
        raise AvatarError(f"{name} was written by a newer avatarcli (format version {meta['version']}); upgrade to read it")
    if meta.get("kind") not in ("head", "body"):
        raise AvatarError(f"{name}: unknown kind {str(meta.get('kind'))[:40]!r}")
    if meta.get("binding") not in ("triangle", "skinning"):
        raise AvatarError(f"{name}: unknown binding {str(meta.get('binding'))[:40]!r}")
    template = meta.get("template")
    if not isinstance(template, dict):
        raise AvatarError(f"{name}: 'template' must be a JSON object (got {json.dumps(template)[:40]})")
    for key in ("vertices", "faces"):
        _whole(template, key, f"{name}: template", 1, MAX_TEMPLATE_SIZE)
    _whole(template, "joints", f"{name}: template", 1, MAX_JOINTS)
    for key in ("name", "file", "sha256"):
        _of_type(template, key, f"{name}: template", str, "text")
    binding, joints, layout = KIND_LAYOUT[meta["kind"]]
    if meta["binding"] != binding or template["joints"] != joints:
        raise AvatarError(
            f"{name}: its metadata says {meta['kind']}, but a {meta['kind']} has a {binding} binding and the {joints} joints of {layout}"
            f" (this one: a {meta['binding']} binding, {template['joints']} joints)"
        )
    for key in ("stage", "prompt", "guidance"):
        _of_type(meta, key, name, str, "text")
    _of_type(meta, "seed", name, int, "a whole number")
    history = meta.get("history", [])
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        raise AvatarError(f"{name}: 'history' must be a list of JSON objects")
    if meta.get("residual") is not None:
        if meta["binding"] != "skinning":
            raise AvatarError(f"{name}: residual skinning weights need a skinning binding")
        check_residual_config(meta["residual"], template["joints"], name)
    if meta.get("material") is not None:
        check_material_config(meta["material"], name)
    if meta.get("pose_dependent") is not None:
        check_pose_config(meta["pose_dependent"], meta["kind"], name)


def check_residual_config(config: Any, joints: int, name: str = "input") -> None:
    """Raise AvatarError unless ``config`` describes a residual skinning network for
    ``joints`` joints within RESIDUAL_LIMITS (checked before the network is built: its size
    follows from them)."""
    if not isinstance(config, dict) or set(config) != {"num_joints", "scale", "frequencies", "width"}:
        raise AvatarError(f"{name}: 'residual' must be an object of num_joints, scale, frequencies and width")
    where = f"{name}: residual"
    _whole(config, "num_joints", where, joints, joints)
    for key, (low, high) in RESIDUAL_LIMITS.items():
        _whole(config, key, where, low, high)
    scale = config["scale"]
    if not (isinstance(scale, (int, float)) and not isinstance(scale, bool) and math.isfinite(scale) and scale > 0):
        raise AvatarError(f"{where}: 'scale' must be a positive number (got {json.dumps(scale)[:40]})")


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def check_pose_config(config: Any, kind: str, name: str = "input") -> None:
    """Raise AvatarError unless ``config`` describes a pose-dependent model for a ``kind``
    avatar within POSE_LIMITS (checked before the network is built: its size follows)."""
    keys = {"features", "dims", "components", "rank", "width", "scales", "clip"}
    if not isinstance(config, dict) or set(config) != keys:
        raise AvatarError(f"{name}: 'pose_dependent' must be an object of {', '.join(sorted(keys))}")
    where = f"{name}: pose_dependent"
    if config["features"] not in FEATURES or config["features"] != kind:
        raise AvatarError(f"{where}: 'features' is {json.dumps(config['features'])[:40]}; a {kind} avatar's are {kind!r}")
    for key, (low, high) in POSE_LIMITS.items():
        _whole(config, key, where, low, high)
    if kind == "body":
        _whole(config, "dims", where, feature_size("body", 0), feature_size("body", 0))
    else:
        _whole(config, "dims", where, feature_size("head", 0), feature_size("head", MAX_EXPRESSION))
    if config["components"] > config["dims"]:
        raise AvatarError(f"{where}: {config['components']} components of a {config['dims']}-value feature")
    scales = config["scales"]
    if not isinstance(scales, dict) or set(scales) != set(GROUPS) or not all(_positive(v) for v in scales.values()):
        raise AvatarError(f"{where}: 'scales' must give a positive number for each of {', '.join(GROUPS)}")
    if not _positive(config["clip"]):
        raise AvatarError(f"{where}: 'clip' must be a positive number (got {json.dumps(config['clip'])[:40]})")


# -- the tensors ----------------------------------------------------------------------------------
def _float(tensors: dict[str, Tensor], key: str) -> Tensor:
    if key not in tensors:
        raise ValueError(f"tensor {key} is missing")
    t = tensors.pop(key)
    if not t.is_floating_point():
        raise ValueError(f"{key} holds {t.dtype}, not floating-point numbers")
    return t.float()


def _index(tensors: dict[str, Tensor], key: str) -> Tensor:
    if key not in tensors:
        raise ValueError(f"tensor {key} is missing")
    t = tensors.pop(key)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{key} holds {t.dtype}, not whole numbers")
    return t.long()


def _finite(key: str, t: Tensor) -> None:
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{key} holds NaN or infinite values")


def _shape(key: str, t: Tensor, want: tuple[int, ...]) -> None:
    if tuple(t.shape) != want:
        raise ValueError(f"{key} has shape {tuple(t.shape)}, expected {want}")


def _residual(config: dict[str, Any], tensors: dict[str, Tensor]) -> ResidualWeights:
    """The residual network the (checked, bounded) config describes, with its stored weights."""
    res = ResidualWeights(**config)
    prefix = "binding.residual."
    state = {k[len(prefix) :]: tensors.pop(k) for k in sorted(tensors) if k.startswith(prefix)}
    want = res.state_dict()
    missing = sorted(set(want) - set(state))
    if missing:
        raise ValueError(f"the residual network's tensors are missing ({', '.join(prefix + k for k in missing)})")
    unknown = sorted(set(state) - set(want))
    if unknown:
        raise ValueError(f"unexpected residual network tensor {prefix + unknown[0]}")
    for k, t in state.items():
        if not t.is_floating_point():
            raise ValueError(f"{prefix}{k} holds {t.dtype}, not floating-point numbers")
        _shape(prefix + k, t, tuple(want[k].shape))
        _finite(prefix + k, t)
    res.load_state_dict({k: t.float() for k, t in state.items()})
    return res


def _pose_dependent(config: dict[str, Any], tensors: dict[str, Tensor], n: int) -> PoseDependent:
    """The pose-dependent model the (checked, bounded) config describes, with its stored tensors."""
    network = PoseNetwork(**config)
    prefix = "pose.network."
    state = {k[len(prefix) :]: tensors.pop(k) for k in sorted(tensors) if k.startswith(prefix)}
    want = network.state_dict()
    missing = sorted(set(want) - set(state))
    if missing:
        raise ValueError(f"the pose-dependent model's tensors are missing ({', '.join(prefix + k for k in missing)})")
    unknown = sorted(set(state) - set(want))
    if unknown:
        raise ValueError(f"unexpected pose-dependent model tensor {prefix + unknown[0]}")
    for k, t in state.items():
        if not t.is_floating_point():
            raise ValueError(f"{prefix}{k} holds {t.dtype}, not floating-point numbers")
        _shape(prefix + k, t, tuple(want[k].shape))
        _finite(prefix + k, t)
    if not bool((state["std"] > 0).all()):
        raise ValueError(f"{prefix}std holds values that are not positive")
    network.load_state_dict({k: t.float() for k, t in state.items()})
    latents = _float(tensors, "pose.latents")
    _shape("pose.latents", latents, (n, config["rank"]))
    _finite("pose.latents", latents)
    return PoseDependent(network, latents)


def _assemble(meta: dict[str, Any], tensors: dict[str, Tensor]) -> Avatar:
    """The avatar from checked metadata and its tensors, each checked against the metadata:
    shapes, dtypes, finite values, indices within the template."""
    g = Gaussians(**{k: _float(tensors, f"gaussians.{k}") for k in GAUSSIAN_KEYS})
    g.check()
    n = len(g)
    if n == 0:
        raise ValueError("it holds no Gaussians")
    joints, faces = meta["template"]["joints"], meta["template"]["faces"]
    binding: Binding
    if meta["binding"] == "triangle":
        binding = TriangleBinding(_index(tensors, "binding.face_idx"))
    else:
        weights, bary = _float(tensors, "binding.weights"), _float(tensors, "binding.bary")
        _shape("binding.weights", weights, (n, joints))
        _shape("binding.bary", bary, (n, 3))
        _finite("binding.weights", weights)
        _finite("binding.bary", bary)
        binding = SkinningBinding(weights, _index(tensors, "binding.face_idx"), bary)
        if meta.get("residual") is not None:
            binding.residual = _residual(meta["residual"], tensors)
    _shape("binding.face_idx", binding.face_idx, (n,))
    if int(binding.face_idx.min()) < 0 or int(binding.face_idx.max()) >= faces:
        raise ValueError("binding.face_idx points outside the template")
    betas = _float(tensors, "template.betas") if "template.betas" in tensors else torch.zeros(0)
    if betas.dim() != 1:
        raise ValueError(f"template.betas has shape {tuple(betas.shape)}, expected (S,)")
    if len(betas) > MAX_BETAS:
        raise ValueError(f"template.betas has {len(betas)} values, more than the {MAX_BETAS} a template may have")
    _finite("template.betas", betas)
    material = material_from_record(meta.get("material"), tensors, n)
    pose = _pose_dependent(meta["pose_dependent"], tensors, n) if meta.get("pose_dependent") is not None else None
    return Avatar(meta["kind"], g, binding, betas, meta, tensors, material=material, pose_dependent=pose)


MAX_AVATAR_BYTES = 4 << 30  # the largest .avatar file read: 4 GiB (some 15 million Gaussians)


def load(path: str | Path) -> Avatar:
    """Read and validate an avatar file (``-`` for stdin)."""
    name = "standard input" if str(path) == "-" else str(path)
    return from_bytes(read_safetensors(path, "avatar file", MAX_AVATAR_BYTES), name)
