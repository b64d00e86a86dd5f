"""Seeded fuzzing of every reader through the command line.

A few hundred mutants each of an ``.avatar`` (read by ``info``), a 3DGS ``.ply`` (read by
``rig``) and motion files (read by ``animate``): byte flips, truncations, spliced bytes,
numbers poked into the data, and edits that keep the container valid (metadata values of
other types, tensors and arrays of other shapes, dtypes and values, .ply header lines).
Every run must exit 0 or 2; an exit 2 is exactly one ``error:`` line; no run prints a
traceback or a Python warning or leaves a file behind. The mutants run in this process
through the command line's ``main`` (a process start costs more than most runs), and a few
of each through real ``python -m avatarcli`` processes. Torch runs on one thread here: the
inputs are tiny, and threads only contend for the cores. Some 40 s on two cores in all.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from plyfile import PlyData, PlyElement
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from avatarcli import api
from avatarcli.model import avatar_file
from avatarcli.motion.builtin import builtin_motion
from avatarcli.motion.readers import write_motion

from helpers import run_cli

ROOT = Path(__file__).resolve().parents[1]

SEED = 15
MUTANTS = {"avatar": 300, "ply": 250, "motion": 250}
Mutator = Callable[[bytes, np.random.Generator], bytes]


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory, head_avatar, body_avatar) -> dict[str, bytes]:
    """The files mutated: small avatars, a .ply (binary and ASCII) and motions in each layout."""
    folder = tmp_path_factory.mktemp("seeds")
    out: dict[str, bytes] = {}
    for av in (head_avatar, body_avatar):
        out[f"{av.kind}.avatar"] = avatar_file.to_bytes(av.select(torch.arange(0, len(av), 100)))
    (folder / "head.avatar").write_bytes(out["head.avatar"])
    api.export(folder / "head.avatar", folder / "head.ply", sh_degree=1)
    out["head.ply"] = (folder / "head.ply").read_bytes()
    ascii_ply = io.BytesIO()
    PlyData([PlyElement.describe(PlyData.read(str(folder / "head.ply"))["vertex"].data[:20], "vertex")], text=True).write(ascii_ply)
    out["ascii.ply"] = ascii_ply.getvalue()
    write_motion(builtin_motion("talk", fps=5, seconds=1.0), folder / "talk.npz")
    out["talk.npz"] = (folder / "talk.npz").read_bytes()
    rng = np.random.default_rng(0)
    out["amass.npz"] = _npz(poses=rng.normal(0, 0.2, (4, 165)), trans=np.zeros((4, 3)), mocap_frame_rate=np.float64(10))
    out["flame.npz"] = _npz(expression=rng.normal(size=(4, 10)), jaw_pose=rng.normal(0, 0.1, (4, 3)), fps=np.float64(10))
    npy = io.BytesIO()
    np.save(npy, rng.normal(0, 0.1, (4, 322)).astype(np.float32))
    out["motionx.npy"] = npy.getvalue()
    return out


def _npz(**arrays: object) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


# -- mutations of any bytes ------------------------------------------------------------------------
def flip(data: bytes, rng: np.random.Generator, region: tuple[int, int] | None = None) -> bytes:
    b = bytearray(data)
    lo, hi = region or (0, len(b))
    for _ in range(int(rng.integers(1, 9))):
        b[int(rng.integers(lo, max(hi, lo + 1)))] ^= int(rng.integers(1, 256))
    return bytes(b)


def truncate(data: bytes, rng: np.random.Generator) -> bytes:
    return data[: int(rng.integers(0, len(data)))]


def splice(data: bytes, rng: np.random.Generator) -> bytes:
    at, size = int(rng.integers(0, len(data))), int(rng.integers(1, 64))
    return data[:at] + data[at + size :] if rng.random() < 0.5 else data[:at] + data[at : at + size] * 2 + data[at + size :]


NUMBERS = [np.nan, np.inf, -np.inf, 1e38, -1e38, 3e38, 0.0, 1e-45, -1.0, 1e9]


def poke(data: bytes, rng: np.random.Generator) -> bytes:
    """Overwrite 4 or 8 bytes with an extreme float or integer."""
    at = int(rng.integers(0, max(len(data) - 8, 1)))
    value = NUMBERS[int(rng.integers(len(NUMBERS)))]
    raw = {0: struct.pack("<f", value), 1: struct.pack("<d", value), 2: struct.pack("<q", int(rng.integers(-(2**62), 2**62)))}
    chunk = raw[int(rng.integers(3))]
    return data[:at] + chunk + data[at + len(chunk) :]


BYTE_MUTATORS: list[Mutator] = [flip, truncate, splice, poke]


# -- .avatar edits that keep a readable safetensors file ---------------------------------------------
VALUES: list[object] = [None, "", "x", -1, 0, 1, 2, 10**12, 1.5, [], {}, [1, 2], {"a": 1}, True, "head", "body", "skinning"]


def _parts(data: bytes) -> tuple[dict[str, torch.Tensor], object]:
    (n,) = struct.unpack("<Q", data[:8])
    return dict(st_load(data)), json.loads(json.loads(data[8 : 8 + n])["__metadata__"]["avatarcli"])


def _paths(node: object, prefix: tuple = ()) -> list[tuple]:
    if isinstance(node, dict):
        return [prefix] + [p for k, v in node.items() for p in _paths(v, (*prefix, k))]
    if isinstance(node, list):
        return [prefix] + [p for i, v in enumerate(node) for p in _paths(v, (*prefix, i))]
    return [prefix]


def edit_meta(data: bytes, rng: np.random.Generator) -> bytes:
    tensors, meta = _parts(data)
    if rng.random() < 0.2:
        meta["residual"] = {"num_joints": int(rng.choice([55, 54, 10**6])), "scale": float(rng.choice([1.0, 0.0, -1.0])),
                            "frequencies": int(rng.choice([0, 4, 99])), "width": int(rng.choice([1, 64, 20000]))}  # fmt: skip
    else:
        paths = [p for p in _paths(meta) if p]
        *parents, key = paths[int(rng.integers(len(paths)))]
        node = meta
        for p in parents:
            node = node[p]
        if rng.random() < 0.2 and isinstance(node, dict):
            del node[key]
        else:
            node[key] = VALUES[int(rng.integers(len(VALUES)))]
    return st_save(tensors, metadata={"avatarcli": json.dumps(meta)})


def _tensor_variant(t: torch.Tensor, rng: np.random.Generator) -> torch.Tensor | None:
    op = int(rng.integers(11))
    if op == 0:
        return t[: int(rng.integers(0, max(len(t), 1)))].contiguous() if t.dim() else t
    if op == 1:
        return t.flatten()[:1].reshape(()).clone() if t.numel() else torch.zeros(())
    if op == 2:
        return t.unsqueeze(0).contiguous()
    if op == 3:
        return t.T.contiguous() if t.dim() == 2 else t.reshape(-1).contiguous()
    if op == 4:
        return t.to([torch.int32, torch.float16, torch.float64, torch.bool, torch.uint8, torch.bfloat16][int(rng.integers(6))])
    if op in (5, 6):
        out = t.clone().float()
        if out.numel():
            out.view(-1)[int(rng.integers(out.numel()))] = float(NUMBERS[int(rng.integers(len(NUMBERS)))])
        return out.to(t.dtype) if t.is_floating_point() else out
    if op == 7:
        return None  # dropped
    if op == 8:
        return torch.zeros(tuple(int(rng.integers(0, 5)) for _ in range(int(rng.integers(0, 4)))))
    if op == 9:
        return t * 0
    return t[..., : max(t.shape[-1] - 1, 0)].contiguous() if t.dim() else t


def edit_tensor(data: bytes, rng: np.random.Generator) -> bytes:
    tensors, meta = _parts(data)
    key = sorted(tensors)[int(rng.integers(len(tensors)))]
    new = _tensor_variant(tensors[key], rng)
    if new is None:
        del tensors[key]
    else:
        tensors[key] = new
    return st_save(tensors, metadata={"avatarcli": json.dumps(meta)})


def edit_header(data: bytes, rng: np.random.Generator) -> bytes:
    """Change a tensor entry of the safetensors header (dtype, shape, offsets)."""
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    key = sorted(k for k in header if k != "__metadata__")[int(rng.integers(len(header) - 1))]
    entry = header[key]
    field = ["dtype", "shape", "data_offsets"][int(rng.integers(3))]
    if field == "dtype":
        entry["dtype"] = ["F16", "F64", "I64", "U8", "BOOL", "C64", "X"][int(rng.integers(7))]
    elif field == "shape":
        entry["shape"] = [int(rng.integers(0, 10 ** int(rng.integers(1, 12)))) for _ in range(int(rng.integers(0, 4)))]
    else:
        entry["data_offsets"] = [int(v) + int(rng.integers(-64, 64)) for v in entry["data_offsets"]]
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data[8 + n :]


def header_flip(data: bytes, rng: np.random.Generator) -> bytes:
    (n,) = struct.unpack("<Q", data[:8])
    return flip(data, rng, (0, 8 + n))


AVATAR_MUTATORS: list[Mutator] = [*BYTE_MUTATORS, header_flip, edit_meta, edit_meta, edit_tensor, edit_tensor, edit_header]


# -- .ply header edits ---------------------------------------------------------------------------
PLY_TYPES = ["float", "double", "uchar", "int", "short", "list uchar float", "list int int", "float32", "half"]
PLY_NAMES = ["f_rest_x", "f_rest_-1", "f_rest_99", "x", "opacity", "f_dc_0", "rot_0", "nx", "", "scale_2"]


def edit_ply_header(data: bytes, rng: np.random.Generator) -> bytes:
    end = data.find(b"end_header\n") + len(b"end_header\n")
    lines = data[:end].decode("latin-1").split("\n")
    i = int(rng.integers(1, len(lines) - 2))
    words = lines[i].split()
    op = int(rng.integers(6))
    if op == 0 and words[:1] == ["element"]:
        words[2] = str(int(rng.choice([0, 1, int(words[2]) - 1, int(words[2]) + 1, 10**6, 10**12, 2**63 - 1])))
    elif op == 1 and words[:1] == ["property"]:
        words[-1] = PLY_NAMES[int(rng.integers(len(PLY_NAMES)))]
    elif op == 2 and words[:1] == ["property"]:
        words = ["property", *PLY_TYPES[int(rng.integers(len(PLY_TYPES)))].split(), words[-1]]
    elif op == 3:
        lines[1] = "format " + ["ascii 1.0", "binary_big_endian 1.0", "binary_little_endian 1.0", "binary 2.0"][int(rng.integers(4))]
    elif op == 4:
        del lines[i]
        return "\n".join(lines).encode("latin-1") + data[end:]
    else:
        lines.insert(i, lines[i])
    if op != 3:
        lines[i] = " ".join(words)
    return "\n".join(lines).encode("latin-1") + data[end:]


def ply_body_flip(data: bytes, rng: np.random.Generator) -> bytes:
    return flip(data, rng, (data.find(b"end_header\n") + 11, len(data)))


PLY_MUTATORS: list[Mutator] = [*BYTE_MUTATORS, edit_ply_header, edit_ply_header, edit_ply_header, ply_body_flip]


# -- motion arrays -------------------------------------------------------------------------------
def _array_variant(a: np.ndarray, rng: np.random.Generator) -> object:
    op = int(rng.integers(14))
    variants: list[Callable[[], object]] = [
        lambda: a.reshape(-1)[:1].reshape(()) if a.size else np.float64(1),  # 0-d
        lambda: a[:0],  # empty
        lambda: a.astype(a.dtype.newbyteorder(">")),  # big-endian
        lambda: a.astype(np.float16) if a.dtype.kind in "fiu" else a,  # float16 (may overflow to inf)
        lambda: a.astype(np.int64) if a.dtype.kind in "fiu" else a,
        lambda: a.astype(bool),
        lambda: np.asarray("abc"),
        lambda: np.full(a.shape, NUMBERS[int(rng.integers(len(NUMBERS)))]),
        lambda: a.T,
        lambda: a[None],
        lambda: np.zeros(tuple(int(rng.integers(0, 6)) for _ in range(int(rng.integers(0, 4))))),
        lambda: np.array([{"a": 1}], dtype=object),
        lambda: a.reshape(-1)[: max(a.size - 1, 0)],
        lambda: np.repeat(a, 3, axis=0) if a.ndim else a,
    ]
    return variants[op]()


def edit_arrays(data: bytes, rng: np.random.Generator) -> bytes:
    """Change, drop or add one array of an .npz (kept a valid zip)."""
    with np.load(io.BytesIO(data)) as npz:
        arrays: dict[str, object] = {k: npz[k] for k in npz.files}
    keys = sorted(arrays)
    key = keys[int(rng.integers(len(keys)))]
    op = rng.random()
    if op < 0.1:
        del arrays[key]
    elif op < 0.25:
        arrays[["fps", "mocap_frame_rate", "kind", "expression", "transl"][int(rng.integers(5))]] = [
            np.float64(0), np.float64(-1), np.float64(1e9), np.float64(1e-3), np.float64(np.nan), np.asarray("abc"),
            np.zeros(0), np.array([30.0, 60.0]), np.float64(1000), np.asarray("head"), np.asarray("body"),
        ][int(rng.integers(11))]  # fmt: skip
    else:
        arrays[key] = _array_variant(np.asarray(arrays[key]), rng)
    buf = io.BytesIO()
    (np.savez_compressed if rng.random() < 0.5 else np.savez)(buf, **arrays)  # type: ignore[operator]
    return buf.getvalue()


def edit_npy(data: bytes, rng: np.random.Generator) -> bytes:
    out = io.BytesIO()
    np.save(out, _array_variant(np.load(io.BytesIO(data)), rng), allow_pickle=True)
    return out.getvalue()


MOTION_MUTATORS: list[Mutator] = [*BYTE_MUTATORS, edit_arrays, edit_arrays, edit_arrays, edit_arrays]


# -- running ---------------------------------------------------------------------------------------
Command = Callable[[Path, Path], list[str]]


def mutants(seed_files: dict[str, bytes], mutators: list[Mutator], count: int, seed: int) -> Iterator[tuple[str, str, bytes]]:
    """``count`` seeded mutants: (seed file name, how it was mutated, the bytes)."""
    rng = np.random.default_rng(seed)
    names = sorted(seed_files)
    for _ in range(count):
        name = names[int(rng.integers(len(names)))]
        mutate = mutators[int(rng.integers(len(mutators)))]
        if name.endswith(".npy") and mutate is edit_arrays:
            mutate = edit_npy
        data = mutate(seed_files[name], rng)
        if rng.random() < 0.15:  # sometimes a second mutation on top
            data = mutators[int(rng.integers(len(BYTE_MUTATORS)))](data, rng)
        yield name, mutate.__name__, data


def misbehaviour(code: int, stderr: str, case: Path, path: Path) -> str | None:
    """What is wrong with a run that read ``path`` in ``case`` (None: nothing)."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    left = sorted(p.name for p in case.iterdir() if p != path and not (code == 0 and p.name.startswith("out")))
    if code not in (0, 2) or "Traceback" in stderr:
        return f"exit {code}, {lines[-1] if lines else ''}"
    if code == 2 and not (len(lines) == 1 and lines[0].startswith("error:")):
        return f"exit 2 with stderr {stderr!r}"
    if "Warning" in stderr:  # a Python warning printed on its way (numpy, torch)
        return f"exit {code} with a warning in {stderr!r}"
    if left:
        return f"exit {code}, left behind: {left}"
    if code == 2 and any(p.name.startswith("out") for p in case.iterdir()):
        return "exit 2 but wrote an output"
    return None


def fuzz(seed_files: dict[str, bytes], mutators: list[Mutator], count: int, command: Command, work: Path, seed: int) -> list[str]:
    """Run ``count`` mutants in this process through the command line's ``main``; returns a
    description of every run that misbehaved."""
    problems = []
    for i, (name, how, data) in enumerate(mutants(seed_files, mutators, count, seed)):
        case = work / f"case{i}"
        case.mkdir()
        path = case / name
        path.write_bytes(data)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            r = run_cli(*command(path, case / "out"))
        wrong = misbehaviour(r.code, r.stderr, case, path)
        if wrong is None and caught:
            wrong = f"exit {r.code} with a warning: {caught[0].category.__name__}: {caught[0].message}"
        if wrong is not None:
            problems.append(f"#{i} {name} {how}: {wrong}")
    return problems


def avatar_command(path: Path, out: Path) -> list[str]:
    return ["info", str(path), "--json"]


def ply_command(path: Path, out: Path) -> list[str]:
    return ["rig", str(path), "-m", "head", "-o", f"{out}.avatar"]


def motion_command(avatar: Path) -> Command:
    return lambda path, out: ["animate", str(avatar), str(path), "-o", f"{out}.gif", "--size", "16"]


def test_fuzzed_avatar_files(seeds, one_thread, tmp_path):
    files = {k: v for k, v in seeds.items() if k.endswith(".avatar")}
    problems = fuzz(files, AVATAR_MUTATORS, MUTANTS["avatar"], avatar_command, tmp_path, SEED)
    assert not problems, "\n".join(problems)


def test_fuzzed_ply_files(seeds, one_thread, tmp_path):
    files = {k: v for k, v in seeds.items() if k.endswith(".ply")}
    problems = fuzz(files, PLY_MUTATORS, MUTANTS["ply"], ply_command, tmp_path, SEED + 1)
    assert not problems, "\n".join(problems)


def test_fuzzed_motion_files(seeds, one_thread, tmp_path):
    files = {k: v for k, v in seeds.items() if k.endswith((".npz", ".npy"))}
    avatar = tmp_path / "head.avatar"
    avatar.write_bytes(seeds["head.avatar"])
    problems = fuzz(files, MOTION_MUTATORS, MUTANTS["motion"], motion_command(avatar), tmp_path, SEED + 2)
    assert not problems, "\n".join(problems)


SUBPROCESS_MUTANTS = 3  # of each reader


def test_fuzzed_files_through_the_real_command(seeds, tmp_path):
    """A few mutants of each reader through ``python -m avatarcli`` processes, as a user runs
    it: the exit status, stderr (Python's warnings print there) and the folder, run two at a
    time."""
    avatar = tmp_path / "head.avatar"
    avatar.write_bytes(seeds["head.avatar"])
    readers: list[tuple[str, list[Mutator], Command]] = [
        (".avatar", AVATAR_MUTATORS, avatar_command),
        (".ply", PLY_MUTATORS, ply_command),
        (".np", MOTION_MUTATORS, motion_command(avatar)),
    ]
    runs: list[tuple[str, Path, Path, list[str]]] = []
    for k, (suffix, mutators, command) in enumerate(readers):
        files = {n: v for n, v in seeds.items() if suffix in n}
        for i, (name, how, data) in enumerate(mutants(files, mutators, SUBPROCESS_MUTANTS, SEED + 10 + k)):
            case = tmp_path / f"{suffix[1:]}{i}"
            case.mkdir()
            (case / name).write_bytes(data)
            runs.append((f"{name} {how}", case, case / name, command(case / name, case / "out")))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    problems = []
    for start in range(0, len(runs), 2):
        procs = [
            (what, case, path, subprocess.Popen([sys.executable, "-m", "avatarcli", *args], cwd=case, env=env, stdout=subprocess.PIPE,
                                                stderr=subprocess.PIPE, text=True))
            for what, case, path, args in runs[start : start + 2]
        ]  # fmt: skip
        for what, case, path, proc in procs:
            _, stderr = proc.communicate(timeout=300)
            wrong = misbehaviour(proc.returncode, stderr, case, path)
            if wrong is not None:
                problems.append(f"{what}: {wrong}")
    assert len(runs) == 3 * SUBPROCESS_MUTANTS
    assert not problems, "\n".join(problems)
