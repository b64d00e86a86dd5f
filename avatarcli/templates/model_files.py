"""Template arrays in files: the cache's own layout, and the official FLAME and SMPL-X
layouts that ``smplx`` loads.

The cache holds plain arrays only, nothing that is ever unpickled: FLAME as
``flame/FLAME_NEUTRAL.npz`` and ``flame/flame_embeddings.npz`` (the landmark embeddings),
SMPL-X as ``smplx/SMPLX_NEUTRAL.npz``. smplx never reads the cache: it reads the official
layout, which for FLAME includes two pickles (``flame_static_embedding.pkl`` and
``flame_dynamic_embedding.npy``, the only formats smplx reads them in), written by
:func:`write_smplx_files` into a private temporary folder from arrays just read from the cache
without unpickling (a cache can be shared, or written by others). A user's own files are
read for their arrays only (``safe_load``) and copied into the cache in its layout.

Keys beginning with ``avatarcli_`` are extras smplx ignores: the face-contour embedding
drawn in the face condition and, for SMPL-X, the vertex ids of smplx's extra joints.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class TemplateArrays:
    """Everything a template file holds.

    Shapes: V vertices, F faces, J joints, S shape and E expression components.
    """

    v_template: np.ndarray  # (V, 3)
    faces: np.ndarray  # (F, 3)
    shapedirs: np.ndarray  # (V, 3, S + E): shape first, then expression
    weights: np.ndarray  # (V, J)
    joint_regressor: np.ndarray  # (J, V)
    parents: tuple[int, ...]  # (J,)
    lmk_faces_idx: np.ndarray  # (51,) static iBUG landmarks 17..67
    lmk_bary_coords: np.ndarray  # (51, 3)
    dynamic_lmk_faces_idx: np.ndarray  # (79, 17) jaw contour per head yaw
    dynamic_lmk_bary_coords: np.ndarray  # (79, 17, 3)
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # avatarcli_* keys

    def common_keys(self) -> dict[str, np.ndarray]:
        j = len(self.parents)
        kintree = np.stack([np.asarray(self.parents, dtype=np.int64), np.arange(j)])
        kintree[0, 0] = 4294967295  # how the official files mark the root
        v = len(self.v_template)
        return {
            "v_template": self.v_template.astype(np.float64),
            "f": self.faces.astype(np.uint32),
            "shapedirs": self.shapedirs.astype(np.float64),
            "posedirs": np.zeros((v, 3, 9 * (j - 1)), dtype=np.float32),
            "J_regressor": self.joint_regressor.astype(np.float64),
            "weights": self.weights.astype(np.float64),
            "kintree_table": kintree,
            **self.extras,
        }


def _npz_bytes(arrays: dict[str, np.ndarray], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp.npz")
    os.close(fd)
    try:
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


MODEL_FILES = {"head": "flame/FLAME_NEUTRAL.npz", "body": "smplx/SMPLX_NEUTRAL.npz"}  # under a cached template's folder
EMBEDDINGS = "flame_embeddings.npz"  # beside a cached FLAME model: the landmark embeddings, as plain arrays
_EMBEDDING_PARTS = ("static", "dynamic")


def write_model(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """A model file of the cache (atomically; plain arrays only)."""
    _npz_bytes(arrays, path)


def write_flame_embeddings(folder: Path, static: dict[str, np.ndarray], dynamic: dict[str, np.ndarray]) -> None:
    """FLAME's two landmark embeddings (dicts of arrays) as one file of plain arrays beside
    the cached model: ``static_<key>`` and ``dynamic_<key>``."""
    arrays = {f"{part}_{k}": np.asarray(v) for part, d in zip(_EMBEDDING_PARTS, (static, dynamic), strict=True) for k, v in d.items()}
    _npz_bytes(arrays, folder / EMBEDDINGS)


def split_embeddings(arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The static and dynamic embeddings of :func:`write_flame_embeddings`'s file, as dicts."""
    static, dynamic = ({k[len(part) + 1 :]: v for k, v in arrays.items() if k.startswith(f"{part}_")} for part in _EMBEDDING_PARTS)
    return static, dynamic


def write_smplx_files(folder: Path, kind: str, model: dict[str, np.ndarray], embeddings: dict[str, np.ndarray] | None = None) -> Path:
    """The files smplx reads for a template, written from plain arrays into ``folder`` (a
    private temporary folder: smplx unpickles the FLAME embeddings, so what it reads is made
    here, from arrays, just before it reads them); returns the model file.

    Args:
        kind: "head" (FLAME: the model, and the embeddings smplx reads as a pickled dict and
            a dict pickled inside a .npy) or "body" (SMPL-X: the model).
        embeddings: a head's, as :func:`write_flame_embeddings` stores them.
    """
    path = folder / MODEL_FILES[kind]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **model)  # uncompressed: written and read once, at once
    if kind == "head":
        static, dynamic = split_embeddings(embeddings or {})
        (path.parent / "flame_static_embedding.pkl").write_bytes(pickle.dumps(static, protocol=2))
        np.save(path.parent / "flame_dynamic_embedding.npy", np.array(dynamic, dtype=object), allow_pickle=True)
    return path


def write_flame(root: Path, arrays: TemplateArrays) -> Path:
    """Write a FLAME-format template into the cache folder ``root``: ``flame/FLAME_NEUTRAL.npz``
    with its embeddings beside it; returns the model file."""
    model = root / MODEL_FILES["head"]
    folder = model.parent
    _npz_bytes(arrays.common_keys(), model)
    write_flame_embeddings(
        folder,
        {"lmk_face_idx": arrays.lmk_faces_idx.astype(np.int64), "lmk_b_coords": arrays.lmk_bary_coords},
        {"lmk_face_idx": arrays.dynamic_lmk_faces_idx.astype(np.int64), "lmk_b_coords": arrays.dynamic_lmk_bary_coords},
    )
    return model


def write_smplx(root: Path, arrays: TemplateArrays, hands_mean: np.ndarray) -> Path:
    """Write an SMPL-X-format template into the cache folder ``root``: ``smplx/SMPLX_NEUTRAL.npz``; returns it.

    Args:
        hands_mean: (2, 45) relaxed left and right hand poses (smplx adds them unless it is
            created with ``flat_hand_mean=True``).
    """
    model = root / MODEL_FILES["body"]
    keys = arrays.common_keys()
    keys.update(
        hands_componentsl=np.eye(45),
        hands_componentsr=np.eye(45),
        hands_meanl=hands_mean[0].astype(np.float64),
        hands_meanr=hands_mean[1].astype(np.float64),
        lmk_faces_idx=arrays.lmk_faces_idx.astype(np.int64),
        lmk_bary_coords=arrays.lmk_bary_coords,
        dynamic_lmk_faces_idx=arrays.dynamic_lmk_faces_idx.astype(np.int64),
        dynamic_lmk_bary_coords=arrays.dynamic_lmk_bary_coords,
    )
    _npz_bytes(keys, model)
    return model
