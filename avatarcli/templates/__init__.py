"""Body models: the built-in mannequins, or a user's own SMPL-X / FLAME files.

``load_template("head")`` gives the built-in FLAME-layout mannequin (generated on first use
and cached); ``load_template("body", "~/models/smplx")`` loads a user's licensed SMPL-X
files. The environment variables ``AVATARCLI_HEAD_TEMPLATE`` and ``AVATARCLI_BODY_TEMPLATE``
set a default path for each kind.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from avatarcli.errors import AvatarError
from avatarcli.templates.template import Kind, Pose, Posed, Template, skin_points

__all__ = ["KINDS", "Kind", "Pose", "Posed", "Template", "builtin_root", "load_template", "skin_points"]

KINDS: tuple[Kind, ...] = ("head", "body")
MANNEQUIN_VERSION = 1
ENV_PATH = {"head": "AVATARCLI_HEAD_TEMPLATE", "body": "AVATARCLI_BODY_TEMPLATE"}
_LOADED: dict[tuple[str, str], Template] = {}


def cache_dir() -> Path:
    """Where generated files live: ``$AVATARCLI_CACHE`` or ``~/.cache/avatarcli``."""
    env = os.environ.get("AVATARCLI_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "avatarcli"


def _builder_digest() -> str:
    """A short hash of the code that sculpts the mannequins: a changed sculpture never
    reuses a stale cache."""
    here = Path(__file__).parent
    names = ("sdf", "mesher", "skinning", "embedding", "formats", "head_shape", "body_shape", "head_mannequin", "body_mannequin")
    h = hashlib.sha256()
    for name in names:
        h.update((here / f"{name}.py").read_bytes())
    return h.hexdigest()[:10]


def builtin_root(kind: Kind) -> Path:
    """The folder of a built-in mannequin, generated and cached on first use."""
    root = cache_dir() / "templates" / f"mannequin-{kind}-v{MANNEQUIN_VERSION}-{_builder_digest()}"
    model = _builtin_model_file(root, kind)
    if model.exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one process builds, the others wait and reuse it
        if not model.exists():
            _build_builtin(root, kind)
    return root


def _builtin_model_file(root: Path, kind: Kind) -> Path:
    return root / ("flame/FLAME_NEUTRAL.npz" if kind == "head" else "smplx/SMPLX_NEUTRAL.npz")


def _build_builtin(root: Path, kind: Kind) -> None:
    from avatarcli.templates import body_mannequin, formats, head_mannequin

    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}."))
    try:
        if kind == "head":
            formats.write_flame(tmp, head_mannequin.build())
        else:
            formats.write_smplx(tmp, body_mannequin.build(), body_mannequin.relaxed_hands())
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _find_model_file(kind: Kind, path: Path) -> Path:
    """The model file a user's ``--template`` path points at (a file, or a folder holding one)."""
    if path.is_file():
        if path.suffix not in (".npz", ".pkl"):
            raise AvatarError(f"template {path}: expected a .npz or .pkl model file")
        return path
    if not path.is_dir():
        raise AvatarError(f"template {path} does not exist")
    stem = "FLAME" if kind == "head" else "SMPLX"
    names = [f"{stem}_NEUTRAL.npz", f"{stem}_NEUTRAL.pkl"]
    if kind == "head":
        names += ["generic_model.pkl", "flame2023.pkl"]
    for folder in (path, path / stem.lower()):
        for name in names:
            if (folder / name).is_file():
                return folder / name
    raise AvatarError(f"template folder {path} has no {' or '.join(names)}")


def _load_smplx_model(kind: Kind, model_file: Path) -> torch.nn.Module:
    import smplx

    ext = model_file.suffix[1:]
    # smplx announces component counts with print(); keep stdout clean for `-o -`.
    with contextlib.redirect_stdout(io.StringIO()):
        if kind == "body":
            model = smplx.SMPLX(
                str(model_file), ext=ext, use_pca=False, flat_hand_mean=True, use_face_contour=True,
                num_expression_coeffs=100, num_betas=10,
            )  # fmt: skip
        else:
            folder = model_file.parent
            missing = [n for n in ("flame_static_embedding.pkl", "flame_dynamic_embedding.npy") if not (folder / n).is_file()]
            if missing:
                raise AvatarError(f"FLAME template {folder} lacks {', '.join(missing)} (landmark embeddings from the FLAME release)")
            if model_file.name != f"FLAME_NEUTRAL.{ext}":
                # smplx.FLAME only opens FLAME_<GENDER>.<ext> in a folder: give it one
                staged = Path(tempfile.mkdtemp(prefix="avatarcli-flame-"))
                os.symlink(model_file.resolve(), staged / f"FLAME_NEUTRAL.{ext}")
                for n in ("flame_static_embedding.pkl", "flame_dynamic_embedding.npy"):
                    os.symlink((folder / n).resolve(), staged / n)
                folder = staged
            model = smplx.FLAME(str(folder), ext=ext, use_face_contour=True, num_expression_coeffs=100, num_betas=10)
    return model


def load_template(kind: str, path: str | Path | None = None, device: str | torch.device = "cpu") -> Template:
    """Load a template.

    Args:
        kind: "head" or "body".
        path: a user's model file or folder; None uses ``$AVATARCLI_<KIND>_TEMPLATE`` or the
            built-in mannequin.
        device: where the template's tensors live.

    Raises:
        AvatarError: unknown kind, missing or unreadable files.
    """
    if kind not in KINDS:
        raise AvatarError(f"unknown model kind {kind!r}: choose head or body")
    k: Kind = kind  # type: ignore[assignment]
    if path is None and os.environ.get(ENV_PATH[k]):
        path = os.environ[ENV_PATH[k]]
    if path is None:
        root = builtin_root(k)
        model_file = _builtin_model_file(root, k)
        name = f"mannequin-{k}"
    else:
        model_file = _find_model_file(k, Path(path).expanduser())
        name = model_file.stem
    key = (str(model_file.resolve()), str(torch.device(device)))
    if key in _LOADED:
        return _LOADED[key]
    try:
        model = _load_smplx_model(k, model_file)
    except AvatarError:
        raise
    except (OSError, KeyError, AttributeError, ValueError, IndexError, EOFError, AssertionError) as exc:
        raise AvatarError(f"cannot load {kind} template {model_file}: {exc}") from exc
    extras: dict[str, np.ndarray] = {}
    if model_file.suffix == ".npz":
        with np.load(model_file, allow_pickle=False) as data:
            extras = {key_: data[key_] for key_ in data.files if key_.startswith("avatarcli_")}
    if k == "body" and "avatarcli_extra_joints_idxs" in extras:
        model.vertex_joint_selector.extra_joints_idxs = torch.as_tensor(extras["avatarcli_extra_joints_idxs"], dtype=torch.long)
    template = Template(k, model, name, model_file, _sha256(model_file), extras).to(device)
    _LOADED[key] = template
    return template
