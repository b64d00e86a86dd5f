"""Write template arrays in the official FLAME and SMPL-X file layouts that ``smplx`` loads.

FLAME: ``FLAME_NEUTRAL.npz`` plus the two landmark embedding files smplx reads beside it
(``flame_static_embedding.pkl``, ``flame_dynamic_embedding.npy``; smplx only reads these
formats, which are pickles: they are written here and read by smplx; a user's own embedding
files are read for their arrays only and written again here, see ``safe_load``). SMPL-X: ``smplx/SMPLX_NEUTRAL.npz``.

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


def _atomic_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


def write_model(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """A model file smplx reads with ``ext="npz"`` (atomically; plain arrays only)."""
    _npz_bytes(arrays, path)


def write_flame_embeddings(folder: Path, static: dict[str, np.ndarray], dynamic: dict[str, np.ndarray]) -> None:
    """The two landmark embedding files smplx reads beside a FLAME model. smplx only reads
    them as pickles (a pickled dict, and a dict pickled inside a .npy): the dicts of arrays
    given here are written by this project, never copied from a download."""
    _atomic_bytes(folder / "flame_static_embedding.pkl", pickle.dumps(dict(static), protocol=2))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".dyn.", suffix=".npy")
    os.close(fd)
    try:
        np.save(tmp, np.array(dict(dynamic), dtype=object), allow_pickle=True)
        os.replace(tmp, folder / "flame_dynamic_embedding.npy")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_flame(root: Path, arrays: TemplateArrays) -> Path:
    """Write a FLAME-format template as ``root/flame/FLAME_NEUTRAL.npz`` (the layout
    ``smplx.create(root, model_type="flame")`` reads) with its embeddings; returns the model file."""
    folder = root / "flame"
    model = folder / "FLAME_NEUTRAL.npz"
    _npz_bytes(arrays.common_keys(), model)
    write_flame_embeddings(
        folder,
        {"lmk_face_idx": arrays.lmk_faces_idx.astype(np.int64), "lmk_b_coords": arrays.lmk_bary_coords},
        {"lmk_face_idx": arrays.dynamic_lmk_faces_idx.astype(np.int64), "lmk_b_coords": arrays.dynamic_lmk_bary_coords},
    )
    return model


def write_smplx(root: Path, arrays: TemplateArrays, hands_mean: np.ndarray) -> Path:
    """Write an SMPL-X-format template as ``root/smplx/SMPLX_NEUTRAL.npz``; returns it.

    Args:
        hands_mean: (2, 45) relaxed left and right hand poses (smplx adds them unless it is
            created with ``flat_hand_mean=True``).
    """
    model = root / "smplx" / "SMPLX_NEUTRAL.npz"
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
