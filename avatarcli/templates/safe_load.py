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

Sizes a file declares are bounded before anything of that size is made: an array a pickle
rebuilds, a sparse matrix made dense, an ``.npy`` / ``.npz`` array (each at most
``MAX_ARRAY_BYTES``; a template's largest, SMPL-X's pose correctives, is about 120 MB).
"""

from __future__ import annotations

import io
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from avatarcli.errors import AvatarError
from avatarcli.fileio import npy_array, npy_header, npz_arrays, read_bytes, size_text

MAX_ARRAY_BYTES = 1 << 30  # the largest array a template file may declare: 1 GiB
MAX_FILE_BYTES = 4 << 30  # the largest template .npz / .npy read

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


def _check_size(shape: Any, itemsize: int, where: str) -> None:
    """Refuse a declared array shape beyond MAX_ARRAY_BYTES (or not a shape at all)."""
    dims = (shape,) if isinstance(shape, int) else shape
    if not isinstance(dims, tuple) or not all(isinstance(d, int) and d >= 0 for d in dims):
        raise AvatarError(f"{where}: an array with an invalid shape {str(shape)[:40]}")
    if math.prod(dims) * max(itemsize, 1) > MAX_ARRAY_BYTES:
        raise AvatarError(f"{where}: an array of shape {dims} is larger than {size_text(MAX_ARRAY_BYTES)}, the most a template may hold")


def _check_nested_size(value: list | tuple, where: str) -> None:
    """Refuse nested lists that would make an array beyond MAX_ARRAY_BYTES. A pickle can share
    one list many times, so a few bytes of file can declare billions of elements: the count
    follows the first element down each level (a ragged list is not an array anyway) and is
    bounded before numpy builds anything."""
    dims: list[int] = []
    node: Any = value
    while isinstance(node, (list, tuple)):
        dims.append(len(node))
        if math.prod(dims) * 8 > MAX_ARRAY_BYTES:
            raise AvatarError(f"{where}: nested lists of at least {math.prod(dims):,} values, more than a template may hold")
        if not node:
            break
        node = node[0]


class _BoundedArray(np.ndarray):
    """What a pickle's arrays are rebuilt as: an ndarray whose state (shape, dtype, data) is
    checked against MAX_ARRAY_BYTES before numpy allocates it."""

    source = "template"

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) in (4, 5):
            shape, dtype = state[-4], state[-3]
            _check_size(shape, dtype.itemsize if isinstance(dtype, np.dtype) else 1, self.source)
        super().__setstate__(state)


def _bounded_reconstruct(source: Path) -> Any:
    def reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
        _check_size(shape, 1, str(source))
        array = np.ndarray.__new__(_BoundedArray, shape, dtype)
        array.source = str(source)
        return array

    return reconstruct


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
        if name == "_reconstruct":
            return _bounded_reconstruct(self.source)
        return super().find_class(module, name)


def load_pickle(path: Path) -> Any:
    """Unpickle a template file, allowing only arrays (see the module docstring)."""
    data = read_bytes(path, "template file", MAX_FILE_BYTES)
    with io.BytesIO(data) as fh:
        try:
            return _ArraysOnly(fh, path).load()
        except AvatarError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, MemoryError) as exc:
            raise AvatarError(f"{path}: not a readable pickle of arrays ({exc})") from exc


def load_npy(path: Path) -> Any:
    """A ``.npy`` file; an object array (a pickle inside) is read with ``load_pickle``'s rules."""
    data = read_bytes(path, "template file", MAX_FILE_BYTES)
    _, _, dtype, offset = npy_header(data, str(path))
    if not dtype.hasobject:
        return np.array(npy_array(data, str(path)))  # a writable copy, as np.load gives
    try:
        return _ArraysOnly(io.BytesIO(data[offset:]), path).load()
    except AvatarError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, MemoryError) as exc:
        raise AvatarError(f"{path}: not a readable .npy ({exc})") from exc


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """The plain arrays of an ``.npz``; entries that would need unpickling are skipped."""
    arrays = npz_arrays(read_bytes(path, "template file", MAX_FILE_BYTES), str(path), MAX_FILE_BYTES, skip_pickled=True)
    return {k: np.array(v) for k, v in arrays.items()}  # writable copies, as np.load gives


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
    if hasattr(value, "todense"):  # scipy sparse: its declared shape is checked before it is made dense
        try:
            _check_size(tuple(value.shape), 8, where)
            value.check_format(full_check=True)  # indices within the shape
            return np.asarray(value.todense())
        except (AttributeError, ValueError, TypeError, IndexError) as exc:
            raise AvatarError(f"{where}: not a readable sparse matrix ({str(exc)[:80]})") from exc
    if isinstance(value, (list, tuple)):
        _check_nested_size(value, where)
    try:
        array = np.asarray(value)
    except (ValueError, TypeError):
        return None
    if array.dtype.hasobject and array.shape == ():
        return plain(array.item(), where)
    return array if array.dtype.kind in "biuf" else None
