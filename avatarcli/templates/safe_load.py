"""Reading users' SMPL-X / FLAME files without running code from them.

The official releases ship pickles: the FLAME model (``generic_model.pkl``,
``flame2023.pkl``), its landmark embeddings (``flame_static_embedding.pkl``, and
``flame_dynamic_embedding.npy``, a pickled dict inside a .npy), SMPL-X as ``.pkl``, and
``.npz`` files with pickled dicts among the arrays. ``pickle.load`` on such a file runs
whatever the file asks for. Here a pickle may only build numpy arrays, scipy sparse
matrices, containers of them and chumpy arrays (whose value is read as a plain array);
anything else is refused before it is created. From an ``.npz``, only plain arrays are read.
The arrays then go into files this project writes (``templates/__init__.py``), and smplx
only ever opens those.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from avatarcli.errors import AvatarError

# (module, name) a template pickle may refer to: array and sparse-matrix reconstruction only
_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("copyreg", "_reconstructor"),  # how protocol-2 pickles rebuild plain objects
    ("builtins", "object"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
    *((m, c) for m in ("scipy.sparse.csc", "scipy.sparse._csc") for c in ("csc_matrix",)),
    *((m, c) for m in ("scipy.sparse.csr", "scipy.sparse._csr") for c in ("csr_matrix",)),
}
# Python 2 names in the older releases' pickles
_PY2_MODULES = {"copy_reg": "copyreg", "__builtin__": "builtins"}


class _ChumpyArray:
    """Stands in for a chumpy object while unpickling; keeps only its state."""

    def __init__(self, *args: object) -> None:
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _ArraysOnly(pickle.Unpickler):
    def __init__(self, fh: Any, source: Path) -> None:
        super().__init__(fh, encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        module = _PY2_MODULES.get(module, module)
        if module == "chumpy" or module.startswith("chumpy."):
            return _ChumpyArray
        if (module, name) not in _ALLOWED:
            raise AvatarError(
                f"{self.source}: refusing to load {module}.{name} from a pickle (template files may only hold arrays; pickles can run code)"
            )
        return super().find_class(module, name)


def load_pickle(path: Path) -> Any:
    """Unpickle a template file, allowing only arrays (see the module docstring)."""
    with open(path, "rb") as fh:
        try:
            return _ArraysOnly(fh, path).load()
        except AvatarError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
            raise AvatarError(f"{path}: not a readable pickle of arrays ({exc})") from exc


def load_npy(path: Path) -> Any:
    """A ``.npy`` file; an object array (a pickle inside) is read with ``load_pickle``'s rules."""
    with open(path, "rb") as fh:
        try:
            version = np.lib.format.read_magic(fh)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            _, _, dtype = read_header(fh)
        except ValueError as exc:
            raise AvatarError(f"{path}: not a .npy file ({exc})") from exc
        if not dtype.hasobject:
            fh.seek(0)
            return np.load(fh, allow_pickle=False)
        try:
            return _ArraysOnly(fh, path).load()
        except AvatarError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
            raise AvatarError(f"{path}: not a readable .npy ({exc})") from exc


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """The plain arrays of an ``.npz``; entries that would need unpickling are skipped."""
    out = {}
    with np.load(path, allow_pickle=False) as data:
        for key in data.files:
            try:
                out[key] = data[key]
            except ValueError:  # an object array: a pickle, never loaded
                continue
    return out


def plain(value: Any, where: str) -> np.ndarray | dict | None:
    """``value`` as a numpy array (dicts: recursively), or None when it holds no numbers
    (names, joint-name tables). Chumpy arrays give their value, sparse matrices their dense form."""
    if isinstance(value, _ChumpyArray):
        state = value.state
        if isinstance(state, dict) and "x" in state:
            return plain(state["x"], where)
        raise AvatarError(f"{where}: a chumpy expression, not a plain array; save the model with plain arrays (.npz)")
    if isinstance(value, dict):
        return {str(k): v for k, v in ((k, plain(v, f"{where}[{k!r}]")) for k, v in value.items()) if v is not None}
    if hasattr(value, "todense"):  # scipy sparse
        return np.asarray(value.todense())
    try:
        array = np.asarray(value)
    except (ValueError, TypeError):
        return None
    if array.dtype.hasobject and array.shape == ():
        return plain(array.item(), where)
    return array if array.dtype.kind in "biuf" else None
