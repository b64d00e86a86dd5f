"""Body models: the built-in mannequins, or a user's own SMPL-X / FLAME files.

``load_template("head")`` gives the built-in FLAME-layout mannequin (generated on first use
and cached); ``load_template("body", "~/models/smplx")`` loads a user's licensed SMPL-X
files. The environment variables ``AVATARCLI_HEAD_TEMPLATE`` and ``AVATARCLI_BODY_TEMPLATE``
set a default path for each kind. A user's files are read for their arrays only (no code in
a pickle runs) and copied, once, into the cache. The cache holds plain arrays only and is
read without unpickling (it may be shared, or writable by others): smplx reads files made
from those arrays in a private temporary folder (``model_files.write_smplx_files``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import io
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from avatarcli.console import note
from avatarcli.errors import AvatarError
from avatarcli.templates.template import Kind, Template

KINDS: tuple[Kind, ...] = ("head", "body")
MANNEQUIN_VERSION = 2  # 2: no pickles in the cache
USER_COPY_VERSION = 2  # bump when the copies of users' files change layout
FLAME_EMBEDDINGS = ("flame_static_embedding.pkl", "flame_dynamic_embedding.npy")
ENV_PATH = {"head": "AVATARCLI_HEAD_TEMPLATE", "body": "AVATARCLI_BODY_TEMPLATE"}
_LOADED: dict[tuple[str, str], Template] = {}


def cache_dir() -> Path:
    """Where generated files live: ``$AVATARCLI_CACHE`` or ``~/.cache/avatarcli``."""
    env = os.environ.get("AVATARCLI_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "avatarcli"


# The libraries whose arithmetic shapes a mannequin: another version may mesh, decimate or
# skin it differently, so each version gets its own cached build.
BUILDER_LIBRARIES = ("numpy", "scipy", "scikit-image", "trimesh", "fast-simplification", "torch")


def _builder_digest() -> str:
    """A short hash of what sculpts the mannequins: the code (the builders and the modules
    they use) and the versions of ``BUILDER_LIBRARIES``. A changed sculpture never reuses a
    stale cache."""
    here = Path(__file__).parent
    h = hashlib.sha256()
    sources = [here / "model_files.py", here / "skeletons.py", here.parent / "geometry.py", *sorted((here / "mannequin").glob("*.py"))]
    for path in sources:
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    for name in BUILDER_LIBRARIES:
        h.update(f"{name}=={_version(name)}\n".encode())
    return h.hexdigest()[:10]


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def builtin_root(kind: Kind) -> Path:
    """The folder of a built-in mannequin, generated and cached on first use."""
    from avatarcli.templates import model_files
    from avatarcli.templates.mannequin import body as body_mannequin
    from avatarcli.templates.mannequin import head as head_mannequin

    def build(folder: Path) -> None:
        if kind == "head":
            model_files.write_flame(folder, head_mannequin.build())
        else:
            model_files.write_smplx(folder, body_mannequin.build(), body_mannequin.relaxed_hands())

    root = cache_dir() / "templates" / f"mannequin-{kind}-v{MANNEQUIN_VERSION}-{_builder_digest()}"
    return _cached_folder(root, kind, build, f"building the built-in {kind} template, once (under a minute); it is kept in {root.parent}")


def _model_file(root: Path, kind: Kind) -> Path:
    """The model file in a cached template's folder."""
    from avatarcli.templates.model_files import MODEL_FILES

    return root / MODEL_FILES[kind]


def _cached_folder(root: Path, kind: Kind, build: Callable[[Path], None], notice: str | None = None) -> Path:
    """``root``, written by ``build(folder)`` unless it already holds a model: one process
    builds (the others wait and reuse it), into a temporary folder renamed into place.
    ``notice`` is printed (stderr) when this process builds."""
    if _model_file(root, kind).exists():
        return root
    try:
        return _build_locked(root, kind, build, notice)
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise AvatarError(f"cannot write the template cache {root.parent} ({why}); set AVATARCLI_CACHE to a writable folder") from exc


def _build_locked(root: Path, kind: Kind, build: Callable[[Path], None], notice: str | None) -> Path:
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _model_file(root, kind).exists():
            return root
        if notice is not None:
            note(notice)
        tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}."))
        try:
            build(tmp)
            if root.exists():
                shutil.rmtree(root)
            os.replace(tmp, root)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return root


def _user_copy(kind: Kind, model_file: Path, model_sha256: str) -> Path:
    """A copy of a user's model (and, for FLAME, its landmark embeddings) in the layout smplx
    reads, holding only plain arrays and written by this project: the user's pickles are read
    with ``safe_load`` (arrays only), never handed to smplx, which would unpickle them freely."""
    from avatarcli.templates import model_files, safe_load

    embeddings = [model_file.parent / n for n in FLAME_EMBEDDINGS] if kind == "head" else []
    missing = [p.name for p in embeddings if not p.is_file()]
    if missing:
        raise AvatarError(f"FLAME template {model_file.parent} lacks {', '.join(missing)} (landmark embeddings from the FLAME release)")
    digest = hashlib.sha256("".join([model_sha256, *(_sha256(p) for p in embeddings)]).encode()).hexdigest()[:16]

    def read_dict(path: Path, data: object) -> dict[str, np.ndarray]:
        arrays = safe_load.plain(data, str(path))
        if not isinstance(arrays, dict):
            raise AvatarError(f"{path}: expected a dictionary of arrays")
        # the arrays; nested tables (joint names to numbers) are nothing smplx reads
        return {k: v for k, v in arrays.items() if isinstance(v, np.ndarray)}

    def build(folder: Path) -> None:
        raw = safe_load.load_npz(model_file) if model_file.suffix == ".npz" else safe_load.load_pickle(model_file)
        model = read_dict(model_file, raw)
        model_files.write_model(_model_file(folder, kind), model)
        if kind == "head":
            static, dynamic = embeddings
            model_files.write_flame_embeddings(
                _model_file(folder, kind).parent,
                read_dict(static, safe_load.load_pickle(static)),
                read_dict(dynamic, safe_load.load_npy(dynamic)),
            )

    return _cached_folder(cache_dir() / "templates" / f"user-{kind}-v{USER_COPY_VERSION}-{digest}", kind, build)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError as exc:
        raise AvatarError(f"cannot read {path}: {exc.strerror or exc}") from exc
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


def _cached_arrays(root: Path, kind: Kind) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    """The model's arrays in a cached template's folder (and a head's landmark embeddings),
    read without unpickling: a file there that holds pickled data is refused."""
    from avatarcli.fileio import npz_arrays, read_bytes
    from avatarcli.templates.model_files import EMBEDDINGS
    from avatarcli.templates.safe_load import MAX_FILE_BYTES

    def read(path: Path) -> dict[str, np.ndarray]:
        return npz_arrays(read_bytes(path, "template file", MAX_FILE_BYTES), str(path), MAX_FILE_BYTES)

    model = _model_file(root, kind)
    try:
        return read(model), (read(model.parent / EMBEDDINGS) if kind == "head" else None)
    except AvatarError as exc:
        raise AvatarError(f"the template cache {root} is damaged ({exc}); remove that folder to have it made again") from exc


def _load_smplx_model(kind: Kind, arrays: dict[str, np.ndarray], embeddings: dict[str, np.ndarray] | None) -> torch.nn.Module:
    """An smplx model of ``arrays``, through files written for it in a private temporary folder."""
    import smplx

    from avatarcli.templates.model_files import write_smplx_files

    with tempfile.TemporaryDirectory(prefix="avatarcli-smplx-") as private:
        path = write_smplx_files(Path(private), kind, arrays, embeddings)
        # smplx announces component counts with print(); keep stdout clean for `-o -`.
        with contextlib.redirect_stdout(io.StringIO()):
            if kind == "body":
                return smplx.SMPLX(
                    str(path), ext="npz", use_pca=False, flat_hand_mean=True, use_face_contour=True, num_expression_coeffs=100,
                    num_betas=10,
                )  # fmt: skip
            return smplx.FLAME(str(path.parent), ext="npz", use_face_contour=True, num_expression_coeffs=100, num_betas=10)


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
    root: Path | None = None
    if path is None:
        root = builtin_root(k)
        source = _model_file(root, k)
        name = f"mannequin-{k}"
    else:
        source = _find_model_file(k, Path(path).expanduser())
        name = source.stem
    key = (str(source.resolve()), str(torch.device(device)))
    if key in _LOADED:
        return _LOADED[key]
    sha = _sha256(source)
    try:
        if root is None:
            root = _user_copy(k, source, sha)
        arrays, embeddings = _cached_arrays(root, k)
        model = _load_smplx_model(k, arrays, embeddings)
    except AvatarError:
        raise
    except (OSError, KeyError, AttributeError, ValueError, IndexError, EOFError, AssertionError) as exc:
        raise AvatarError(f"cannot load {kind} template {source}: {exc}") from exc
    extras = {key_: np.array(value) for key_, value in arrays.items() if key_.startswith("avatarcli_")}
    if k == "body" and "avatarcli_extra_joints_idxs" in extras:
        model.vertex_joint_selector.extra_joints_idxs = torch.as_tensor(extras["avatarcli_extra_joints_idxs"], dtype=torch.long)
    template = Template(k, model, name, source, sha, extras).to(device)
    _LOADED[key] = template
    return template
