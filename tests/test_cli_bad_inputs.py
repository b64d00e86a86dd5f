"""Every bad input through the real command line: one ``error:`` line, exit 2, and nothing
left behind (no output, no hidden ``.partial`` file, the user's files untouched).

Each case makes its bad input in a fresh folder from small good files (``avatar init``,
``avatar export`` and ``avatar motions`` output), runs the commands that read it, and checks
the message and the folder.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
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

from helpers import patch_api, peak_memory, run_cli


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, head_avatar, body_avatar) -> Path:
    """Small good files: head.avatar, body.avatar (every 50th Gaussian), head.ply, talk.npz."""
    folder = tmp_path_factory.mktemp("inputs")
    for av in (head_avatar, body_avatar):
        small = av.select(torch.arange(0, len(av), 50))
        avatar_file.save(small, folder / f"{av.kind}.avatar")
    api.export(folder / "head.avatar", folder / "head.ply", sh_degree=1)
    write_motion(builtin_motion("talk", fps=5), folder / "talk.npz")
    return folder


def files_in(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) and its content."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_error_line(r, message: str) -> None:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.code == 2, (r.code, r.stderr)
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert message in lines[0], r.stderr
    assert "Traceback" not in r.stderr


# -- making bad files --------------------------------------------------------------------------
def _avatar_parts(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    meta = json.loads(json.loads(data[8 : 8 + n])["__metadata__"]["avatarcli"])
    return dict(st_load(data)), meta


def edited_avatar(src: str, meta_edit: Callable[[dict], object] | None = None, tensor_edit: Callable[[dict], None] | None = None):
    """A maker: ``src`` (head or body) with its metadata replaced by ``meta_edit(meta)`` and its
    tensors changed in place by ``tensor_edit``, written as bad.avatar."""

    def make(inp: Path, work: Path) -> None:
        tensors, meta = _avatar_parts(inp / f"{src}.avatar")
        if tensor_edit is not None:
            tensor_edit(tensors)
        new_meta = meta_edit(meta) if meta_edit is not None else meta
        (work / "bad.avatar").write_bytes(st_save(tensors, metadata={"avatarcli": json.dumps(new_meta)}))

    return make


def raw_header_avatar(edit: Callable[[dict], None]):
    """A maker: the head's safetensors header (JSON) edited, data unchanged."""

    def make(inp: Path, work: Path) -> None:
        data = (inp / "head.avatar").read_bytes()
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + n])
        edit(header)
        text = json.dumps(header).encode()
        text += b" " * (-len(text) % 8)
        (work / "bad.avatar").write_bytes(struct.pack("<Q", len(text)) + text + data[8 + n :])

    return make


def meta_set(path: str, value: object) -> Callable[[dict], object]:
    """Set ``a.b`` in the metadata to ``value``."""

    def edit(meta: dict) -> dict:
        *parents, key = path.split(".")
        node = meta
        for p in parents:
            node = node[p]
        node[key] = value
        return meta

    return edit


def tensor_set(key: str, value: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[dict], None]:
    def edit(tensors: dict) -> None:
        tensors[key] = value(tensors[key])

    return edit


def _no_gaussians(tensors: dict) -> None:
    for k in list(tensors):
        if k.startswith(("gaussians.", "binding.")):
            tensors[k] = tensors[k][:0].contiguous()


def _with_residual(width: int) -> Callable[[dict], object]:
    """Declare a residual network of ``width`` (its tensors are not stored)."""

    def edit(meta: dict) -> dict:
        meta["residual"] = {"num_joints": meta["template"]["joints"], "scale": 1.0, "frequencies": 4, "width": width}
        return meta

    return edit


def motion_file(**arrays: object):
    """A maker: an .npz with these arrays (values: arrays or callables of nothing)."""

    def make(inp: Path, work: Path) -> None:
        np.savez(work / "m.npz", **{k: (v() if callable(v) else v) for k, v in arrays.items()})

    return make


def canonical(**changes: object):
    """A maker: the canonical talk.npz with arrays replaced (None removes one)."""

    def make(inp: Path, work: Path) -> None:
        with np.load(inp / "talk.npz") as data:
            arrays = {k: data[k] for k in data.files}
        for k, v in changes.items():
            if v is None:
                arrays.pop(k)
            else:
                arrays[k] = v(arrays[k]) if callable(v) else v
        np.savez(work / "m.npz", **arrays)

    return make


def _corrupt_member(inp: Path, work: Path) -> None:
    motion = builtin_motion("talk", fps=5)
    np.savez(work / "m.npz", avatarcli_motion=1, kind="head", rotations=motion.rotations.numpy(), fps=5.0)
    data = bytearray((work / "m.npz").read_bytes())
    at = data.find(b"rotations.npy") + 200  # inside the stored array
    data[at] ^= 0xFF
    (work / "m.npz").write_bytes(bytes(data))


def _huge_npy_header(inp: Path, work: Path) -> None:
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000, 165), }"
    header += " " * (-(len(header) + 11) % 64) + "\n"
    (work / "m.npy").write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + b"\x00" * 64)


def ply_file(edit: Callable[[np.ndarray], np.ndarray], text: bool = False):
    """A maker: head.ply's vertex array changed by ``edit``, written as bad.ply."""

    def make(inp: Path, work: Path) -> None:
        v = PlyData.read(str(inp / "head.ply"))["vertex"].data
        PlyData([PlyElement.describe(edit(v.copy()), "vertex")], text=text).write(str(work / "bad.ply"))

    return make


def _renamed(old: str, new: str) -> Callable[[np.ndarray], np.ndarray]:
    def edit(v: np.ndarray) -> np.ndarray:
        names = list(v.dtype.names)
        names[names.index(old)] = new
        v.dtype.names = tuple(names)
        return v

    return edit


def _ply_count(inp: Path, work: Path) -> None:
    data = (inp / "head.ply").read_bytes()
    head, _, body = data.partition(b"end_header\n")
    lines = [b"element vertex 99999999999" if ln.startswith(b"element vertex") else ln for ln in head.split(b"\n")]
    (work / "bad.ply").write_bytes(b"\n".join(lines) + b"end_header\n" + body)


def _ply_long_header(comment_bytes: int):
    """A maker: head.ply with ``comment_bytes`` of comments in its header and a vertex count
    far beyond its data."""

    def make(inp: Path, work: Path) -> None:
        data = (inp / "head.ply").read_bytes()
        head, _, body = data.partition(b"end_header\n")
        lines = [b"element vertex 99999999999" if ln.startswith(b"element vertex") else ln for ln in head.split(b"\n")]
        comments = [b"comment " + b"x" * 992] * (comment_bytes // 1000 + 1)
        (work / "bad.ply").write_bytes(b"\n".join(lines[:1] + comments + lines[1:]) + b"end_header\n" + body)

    return make


def _zip_version_10(inp: Path, work: Path) -> None:
    """talk.npz whose archive says it needs zip version 10.0 to be opened."""
    data = bytearray((inp / "talk.npz").read_bytes())
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        data[at + 6 : at + 8] = (100).to_bytes(2, "little")  # version needed to extract
        at = data.find(b"PK\x01\x02", at + 4)
    (work / "m.npz").write_bytes(bytes(data))


def copied(src: str, name: str, link: str | None = None, hard: bool = False):
    """A maker: the input ``src`` copied into the work folder as ``name``, and ``link`` (when
    given) a symbolic or hard link to it."""

    def make(inp: Path, work: Path) -> None:
        shutil.copyfile(inp / src, work / name)
        if link is not None:
            os.link(work / name, work / link) if hard else os.symlink(name, work / link)

    return make


def users_file(name: str, content: bytes = b"mine\n"):
    def make(inp: Path, work: Path) -> None:
        (work / name).write_bytes(content)

    return make


def _ply_list_property(inp: Path, work: Path) -> None:
    v = PlyData.read(str(inp / "head.ply"))["vertex"].data
    names = [n for n in v.dtype.names if n != "opacity"]
    arr = np.empty(len(v), dtype=[*[(n, "<f4") for n in names], ("opacity", object)])
    for n in names:
        arr[n] = v[n]
    for i in range(len(v)):
        arr["opacity"][i] = np.zeros(2, np.float32)
    PlyData([PlyElement.describe(arr, "vertex", val_types={"opacity": "f4"})]).write(str(work / "bad.ply"))


def folder(name: str, with_file: bool = False):
    def make(inp: Path, work: Path) -> None:
        (work / name).mkdir()
        if with_file:
            (work / name / "important.txt").write_text("keep")

    return make


def nothing(inp: Path, work: Path) -> None:
    pass


INFO_RENDER = (("info", "{w}/bad.avatar"), ("render", "{w}/bad.avatar", "-o", "{w}/v.png", "--size", "16", "--views", "1"))
ANIMATE = ("animate", "{i}/head.avatar", "{w}/m.npz", "-o", "{w}/out.gif", "--size", "16")
RIG_PLY = ("rig", "{w}/bad.ply", "-m", "head", "-o", "{w}/out.avatar")
GOOD_ANIMATE = ("animate", "{i}/head.avatar", "{i}/talk.npz", "-o", "{w}/out.gif", "--size", "16")
TINY = ("--guidance", "tiny", "--steps", "1", "--batch", "1", "--resolution", "32", "-k", "1")

# (id, how the bad input is made, the commands that read it, what the message says)
# fmt: off
CASES = [
    # .avatar metadata of the wrong JSON type
    ("meta-list", edited_avatar("head", lambda m: [m]), INFO_RENDER, "metadata is a JSON list, not an object"),
    ("meta-string", edited_avatar("head", lambda m: "avatar"), INFO_RENDER, "metadata is a JSON str"),
    ("meta-number", edited_avatar("head", lambda m: 5), INFO_RENDER, "metadata is a JSON int"),
    ("metadata-field-number", raw_header_avatar(lambda h: h["__metadata__"].update(avatarcli=5)), INFO_RENDER, "not valid JSON"),
    ("metadata-not-object", raw_header_avatar(lambda h: h.update(__metadata__=["x"])), INFO_RENDER, "no avatarcli metadata"),
    ("template-list", edited_avatar("head", meta_set("template", [1, 2])), INFO_RENDER, "'template' must be a JSON object"),
    ("version-text", edited_avatar("head", meta_set("version", "abc")), INFO_RENDER, "'version' must be a whole number"),
    ("version-fraction", edited_avatar("head", meta_set("version", 0.5)), INFO_RENDER, "'version' must be a whole number"),
    ("faces-text", edited_avatar("head", meta_set("template.faces", "many")), INFO_RENDER, "'faces' must be a whole number"),
    ("joints-huge", edited_avatar("body", meta_set("template.joints", 10**9)), INFO_RENDER, "'joints' is 1000000000, outside"),
    ("history-text", edited_avatar("head", meta_set("history", "yesterday")), INFO_RENDER, "'history' must be a list"),
    ("history-numbers", edited_avatar("head", meta_set("history", [1, 2])), INFO_RENDER, "'history' must be a list"),
    ("seed-text", edited_avatar("head", meta_set("seed", "zero")), INFO_RENDER, "'seed' must be a whole number"),
    ("prompt-object", edited_avatar("head", meta_set("prompt", {"a": 1})), INFO_RENDER, "'prompt' must be text"),
    ("kind-unknown", edited_avatar("head", meta_set("kind", "tail")), INFO_RENDER, "unknown kind 'tail'"),
    # the residual network
    ("residual-width-20000", edited_avatar("body", _with_residual(20000)), INFO_RENDER, "'width' is 20000, outside 1 to 1024"),
    ("residual-no-tensors", edited_avatar("body", _with_residual(64)), INFO_RENDER, "residual network's tensors are missing"),
    ("residual-not-object", edited_avatar("body", meta_set("residual", "big")), INFO_RENDER, "'residual' must be an object"),
    ("residual-on-triangles", edited_avatar("head", _with_residual(64)), INFO_RENDER, "need a skinning binding"),
    # tensors against the metadata
    ("betas-nan", edited_avatar("head", tensor_edit=tensor_set("template.betas", lambda b: b * np.nan)), INFO_RENDER, "betas holds NaN"),
    ("betas-500", edited_avatar("head", tensor_edit=tensor_set("template.betas", lambda b: torch.zeros(500))), INFO_RENDER, "500 values"),
    ("betas-2x10", edited_avatar("head", tensor_edit=tensor_set("template.betas", lambda b: torch.zeros(2, 10))), INFO_RENDER, "(2, 10)"),
    ("weights-54-joints", edited_avatar("body", tensor_edit=tensor_set("binding.weights", lambda w: w[:, :54].contiguous())),
     INFO_RENDER, "binding.weights has shape"),
    ("face-index-floats", edited_avatar("head", tensor_edit=tensor_set("binding.face_idx", lambda f: f.float())), INFO_RENDER,
     "not whole numbers"),
    ("face-index-outside", edited_avatar("head", tensor_edit=tensor_set("binding.face_idx", lambda f: f + 10**6)), INFO_RENDER,
     "outside the template"),
    ("zero-gaussians", edited_avatar("head", tensor_edit=_no_gaussians), INFO_RENDER, "holds no Gaussians"),
    ("zero-quaternions", edited_avatar("head", tensor_edit=tensor_set("gaussians.quats", torch.zeros_like)), INFO_RENDER, "all zero"),
    ("sh-degree-4", edited_avatar("head", tensor_edit=tensor_set("gaussians.sh", lambda s: torch.zeros(len(s), 25, 3))), INFO_RENDER,
     "degree 4"),
    ("betas-of-another-template", edited_avatar("head", tensor_edit=tensor_set("template.betas", lambda b: torch.zeros(20))),
     (INFO_RENDER[1],), "shape has 20 coefficients"),
    # inputs that are not files, numbers out of range
    ("info-dev-zero", nothing, (("info", "/dev/zero"),), "is not a regular file"),
    ("info-folder", folder("d"), (("info", "{w}/d"),), "is a folder"),
    ("seed-2-to-70", nothing, (("init", "-k", "1", "--seed", str(2**70), "-o", "{w}/s.avatar"),), "seed must be between"),
    ("generate-seed-2-to-70", nothing, (("generate", "x", *TINY, "--seed", str(2**70), "-o", "{w}/g.avatar"),), "seed must be between"),
    ("seed-negative", nothing, (("init", "-k", "1", "--seed", "-1", "-o", "{w}/s.avatar"),), "seed must be between"),
    ("views-too-many", nothing, (("render", "{i}/head.avatar", "--views", "100000", "-o", "{w}/v.png"),), "pixels drawn at once"),
    ("batch-huge", nothing, ((*GOOD_ANIMATE, "--batch", "100000"),), "batch must be 1 to 256"),
    # output paths
    ("init-into-folder", folder("d"), (("init", "-k", "1", "-o", "{w}/d"),), "is a folder; name a file"),
    ("generate-into-folder", folder("d.avatar"), (("generate", "x", *TINY, "-o", "{w}/d.avatar"),), "is a folder; name a file"),
    ("generate-checkpoint-folder", folder("g.ckpt"), (("generate", "x", *TINY, "-o", "{w}/g.avatar"),), "g.ckpt is a folder"),
    ("generate-named-ckpt", nothing, (("generate", "x", *TINY, "-o", "{w}/x.ckpt"),), "the same name"),
    ("generate-pose-dependent-canonical-only", nothing,
     (("generate", "x", *TINY, "--model", "body", "--stages", "canonical", "--pose-dependent", "-o", "{w}/g.avatar"),),
     "add it to --stages"),
    ("generate-checkpoint-negative", nothing, (("generate", "x", *TINY, "--checkpoint-every", "-1", "-o", "{w}/g.avatar"),),
     "0 (off) or positive"),
    ("rig-into-folder", folder("d"), (("rig", "{i}/head.avatar", "-o", "{w}/d"),), "is a folder; name a file"),
    ("animate-into-folder", folder("d.gif"), ((*GOOD_ANIMATE[:4], "{w}/d.gif"),), "is a folder; name a file"),
    ("export-into-folder", folder("d.ply"), (("export", "{i}/head.avatar", "-o", "{w}/d.ply"),), "is a folder; name a file"),
    ("render-into-folder", folder("d.png"), (("render", "{i}/head.avatar", "-o", "{w}/d.png"),), "is a folder; name a file"),
    ("motions-into-folder", folder("d.npz"), (("motions", "walk", "-o", "{w}/d.npz"),), "is a folder; name a file"),
    ("init-over-a-device", nothing, (("init", "-k", "1", "-o", "/dev/null"),), "not a regular file"),
    ("render-jpg", nothing, (("render", "{i}/head.avatar", "-o", "{w}/v.jpg"),), "name a .png"),
    ("render-into-users-folder", folder("photos", True), (("render", "{i}/head.avatar", "--size", "16", "-o", "{w}/photos"),),
     "is not empty"),
    ("animate-into-users-folder", folder("photos", True), ((*GOOD_ANIMATE[:4], "{w}/photos", "--size", "16"),), "is not empty"),
    ("export-sequence-into-users-folder", folder("photos", True),
     (("export", "{i}/head.avatar", "--motion", "{i}/talk.npz", "--sequence", "-o", "{w}/photos"),), "is not empty"),
    ("output-folder-missing", nothing, (("motions", "walk", "-o", "{w}/no/such/w.npz"),), "does not exist"),
    # motion files
    ("canonical-without-kind", canonical(kind=None), (ANIMATE,), "'kind' is missing"),
    ("canonical-without-rotations", canonical(rotations=None), (ANIMATE,), "'rotations' is missing"),
    ("canonical-0d-rotations", canonical(rotations=np.float32(0.5)), (ANIMATE,), "'rotations' is a single value"),
    ("canonical-zero-frames", canonical(rotations=lambda r: r[:0], expression=lambda e: e[:0], translation=lambda t: t[:0]),
     (ANIMATE,), "'rotations' has no frames"),
    ("canonical-kind-number", canonical(kind=np.int64(3)), (ANIMATE,), "'kind' must be one string"),
    ("fps-text", canonical(fps="abc"), (ANIMATE,), "'fps' must be one number"),
    ("fps-empty", canonical(fps=np.zeros(0)), (ANIMATE,), "'fps' must be one number"),
    ("fps-1e9-in-file", canonical(fps=1e9), (ANIMATE,), "between 1 and 1000 fps (got 1e+09)"),
    ("fps-1e-3-in-file", canonical(fps=1e-3), (ANIMATE,), "between 1 and 1000 fps (got 0.001)"),
    ("fps-nan-in-file", canonical(fps=np.nan), (ANIMATE,), "between 1 and 1000 fps (got nan)"),
    ("rotations-inf", canonical(rotations=lambda r: np.full_like(r, np.inf)), (ANIMATE,), "NaN or infinite"),
    ("flame-0d-expression", motion_file(expression=np.float32(1.0), jaw_pose=np.zeros((4, 3))), (ANIMATE,), "'expression' is a single"),
    ("amass-rate-text", motion_file(poses=np.zeros((4, 165)), mocap_frame_rate="abc"), (ANIMATE,), "'mocap_frame_rate' must be one"),
    ("amass-0d-poses", motion_file(poses=np.float64(0.0), mocap_frame_rate=30.0), (ANIMATE,), "'poses' has shape ()"),
    ("npz-object-array", motion_file(poses=np.array([{"a": 1}], dtype=object)), (ANIMATE,), "pickled"),
    ("npz-corrupt-member", _corrupt_member, (ANIMATE,), "'rotations' is corrupt"),
    ("npy-huge-header", _huge_npy_header, ((*ANIMATE[:2], "{w}/m.npy", *ANIMATE[3:]),), "truncated"),
    ("motion-is-a-folder", folder("m.npz"), (ANIMATE,), "is a folder"),
    ("clip-too-long", canonical(rotations=lambda r: np.repeat(r[:1], 200, 0), expression=lambda e: np.repeat(e[:1], 200, 0),
                                translation=lambda t: np.repeat(t[:1], 200, 0), fps=1.0),
     ((*ANIMATE, "--fps", "1000"),), "would be 199001 frames; the most a clip may have is 100,000"),
    # options of animate and motions
    ("animate-fps-1e9", nothing, ((*GOOD_ANIMATE, "--fps", "1e9"),), "between 1 and 1000 fps"),
    ("animate-fps-nan", nothing, ((*GOOD_ANIMATE, "--fps", "nan"),), "between 1 and 1000 fps (got nan)"),
    ("animate-fps-inf", nothing, ((*GOOD_ANIMATE, "--fps", "inf"),), "between 1 and 1000 fps (got inf)"),
    ("animate-fps-zero", nothing, ((*GOOD_ANIMATE, "--fps", "0"),), "between 1 and 1000 fps"),
    ("animate-motion-fps-nan", nothing, ((*GOOD_ANIMATE, "--motion-fps", "nan"),), "motion frame rate"),
    ("animate-distance-nan", nothing, ((*GOOD_ANIMATE, "--distance", "nan"),), "camera distance must be a finite number"),
    ("animate-elevation-nan", nothing, ((*GOOD_ANIMATE, "--elevation", "nan"),), "elevation must be a finite number"),
    ("motions-seconds-1e7", nothing, (("motions", "walk", "--seconds", "1e7", "-o", "{w}/w.npz"),), "the most a clip may have"),
    ("motions-seconds-nan", nothing, (("motions", "walk", "--seconds", "nan", "-o", "{w}/w.npz"),), "length must be a finite number"),
    ("motions-seconds-negative", nothing, (("motions", "walk", "--seconds", "-2", "-o", "{w}/w.npz"),), "positive number of seconds"),
    ("motions-fps-1e9", nothing, (("motions", "walk", "--fps", "1e9", "-o", "{w}/w.npz"),), "between 1 and 1000 fps"),
    ("motions-seconds-inf", nothing, (("motions", "walk", "--seconds", "inf", "-o", "{w}/w.npz"),), "length must be a finite number"),
    ("motions-fps-nan", nothing, (("motions", "walk", "--fps", "nan", "-o", "{w}/w.npz"),), "between 1 and 1000 fps (got nan)"),
    ("motions-fps-tiny", nothing, (("motions", "walk", "--fps", "1e-3", "-o", "{w}/w.npz"),), "between 1 and 1000 fps"),
    ("render-elevation-nan", nothing, (("render", "{i}/head.avatar", "--elevation", "nan", "-o", "{w}/v.png"),), "elevation must be"),
    ("export-motion-fps-nan", nothing,
     (("export", "{i}/head.avatar", "--motion", "{i}/talk.npz", "--motion-fps", "nan", "-o", "{w}/e.ply"),), "motion frame rate"),
    # .ply files
    ("ply-f-rest-x", ply_file(_renamed("f_rest_0", "f_rest_x")), (RIG_PLY,), "'f_rest_x' is not named f_rest_<number>"),
    ("ply-f-rest-gap", ply_file(_renamed("f_rest_0", "f_rest_99")), (RIG_PLY,), "not numbered 0 to 8"),
    ("ply-count-huge", _ply_count, (RIG_PLY,), "is truncated: its header declares 99,999,999,999 vertex"),
    ("ply-list-property", _ply_list_property, (RIG_PLY,), "'opacity' is not a number"),
    ("ply-nan-ascii", ply_file(lambda v: (v.__setitem__("x", np.nan), v)[1], text=True), (RIG_PLY,), "NaN"),
    ("ply-dev-zero", nothing, (("rig", "/dev/zero", "-m", "head", "-o", "{w}/out.avatar"),), "not a regular file"),
    # found by trying every command (issue 23): an output that is an input, named as another
    # kind of file, or a user's file beside a run's output
    ("export-onto-its-input", copied("head.avatar", "h.avatar"), (("export", "{w}/h.avatar", "-o", "{w}/h.avatar", "--format", "ply"),),
     "names an avatar file"),
    ("export-onto-a-link-to-its-input", copied("head.avatar", "h.avatar", "link.ply"), (("export", "{w}/h.avatar", "-o", "{w}/link.ply"),),
     "the output is the input"),
    ("rig-ply-onto-itself", copied("head.ply", "h.ply"), (("rig", "{w}/h.ply", "--model", "head", "-o", "{w}/h.ply"),),
     "the output is the input"),
    ("rig-avatar-onto-itself", copied("head.avatar", "h.avatar"), (("rig", "{w}/h.avatar", "-o", "{w}/h.avatar"),),
     "the output is the input"),
    ("rig-onto-a-hard-link", copied("head.avatar", "h.avatar", "same.avatar", hard=True),
     (("rig", "{w}/h.avatar", "-o", "{w}/same.avatar"),), "the output is the input"),
    ("render-onto-a-link-to-its-input", copied("head.avatar", "h.avatar", "v.png"), (("render", "{w}/h.avatar", "-o", "{w}/v.png"),),
     "the output is the input"),
    ("generate-from-its-output", copied("head.avatar", "g.avatar"),
     (("generate", "x", *TINY, "--from", "{w}/g.avatar", "-o", "{w}/g.avatar"),), "the output is the input"),
    ("generate-from-its-unfinished", copied("head.avatar", "g.unfinished.avatar"),
     (("generate", "x", *TINY, "--from", "{w}/g.unfinished.avatar", "-o", "{w}/g.avatar"),), "the output is the input"),
    ("track-onto-its-video", users_file("clip.npz"), (("track", "{w}/clip.npz", "-o", "{w}/clip.npz"),), "the output is the input"),
    ("rig-named-ply", nothing, (("rig", "{i}/head.avatar", "-o", "{w}/new.ply"),), "an avatar is written as a .avatar file"),
    ("init-named-ply", nothing, (("init", "-k", "1", "-o", "{w}/x.ply"),), "an avatar is written as a .avatar file"),
    ("init-named-mp4", nothing, (("init", "-k", "1", "-o", "{w}/x.mp4"),), "an avatar is written as a .avatar file"),
    ("generate-named-txt", nothing, (("generate", "x", *TINY, "-o", "{w}/g.txt"),), "an avatar is written as a .avatar file"),
    ("generate-over-a-users-checkpoint", users_file("model.ckpt"), (("generate", "x", *TINY, "-o", "{w}/model.avatar"),),
     "model.ckpt is not a checkpoint of an earlier run"),
    ("generate-over-a-users-unfinished-avatar", copied("head.avatar", "m.unfinished.avatar"),
     (("generate", "x", *TINY, "-o", "{w}/m.avatar"),), "m.unfinished.avatar is not an earlier run's unfinished avatar"),
    ("generate-into-a-users-previews", folder("g.previews", True),
     (("generate", "x", *TINY, "--preview-every", "1", "-o", "{w}/g.avatar"),), "holds files that are not preview images"),
    # bounds
    ("npz-zip-version-10", _zip_version_10, (ANIMATE,), "not a readable .npz file"),
    ("ply-header-over-64-kib", _ply_long_header(70_000), (RIG_PLY,), "is truncated: its header declares 99,999,999,999 vertex"),
    ("ply-header-over-1-mib", _ply_long_header(1_100_000), (RIG_PLY,), "does not end (end_header) within 1 MiB"),
    ("render-size-8192", nothing, (("render", "{i}/head.avatar", "--size", "8192", "--views", "1", "-o", "{w}/v.png"),),
     "out of range: 8 to 4096 pixels a side"),
    ("animate-size-8192", nothing, ((*GOOD_ANIMATE[:-1], "8192"),), "out of range: 8 to 4096 pixels a side"),
    ("generate-resolution-100000", nothing, (("generate", "x", *TINY[:-4], "--resolution", "100000", "-k", "1", "-o", "{w}/g.avatar"),),
     "resolution must be at most 2048"),
    ("output-name-of-300-bytes", nothing, (("init", "-k", "1", "-o", "{w}/" + "a" * 293 + ".avatar"),), "is 300 bytes long"),
    # silently accepted before
    ("generate-stages-empty", nothing, (("generate", "x", *TINY, "--stages", "", "-o", "{w}/g.avatar"),), "no stage named"),
    ("motions-walk-as-head", nothing, (("motions", "walk", "--model", "head", "-o", "{w}/w.npz"),),
     "walk is a body motion, not a head one"),
    ("info-head-that-says-body", edited_avatar("head", meta_set("kind", "body")), INFO_RENDER, "its metadata says body"),
    ("motions-turn-of-which-model", nothing, (("motions", "turn", "-o", "{w}/x"),), "--model head or --model body"),
    ("animate-arguments-swapped", nothing, (("animate", "{i}/talk.npz", "{i}/head.avatar", "-o", "{w}/out.gif", "--size", "16"),),
     "the arguments look swapped"),
]
# fmt: on


@pytest.mark.parametrize("make, commands, message", [pytest.param(m, c, msg, id=i) for i, m, c, msg in CASES])
def test_bad_input_is_one_line_and_leaves_nothing(inputs, tmp_path, make, commands, message):
    make(inputs, tmp_path)
    before, inputs_before = files_in(tmp_path), files_in(inputs)
    for command in commands:
        r = run_cli(*(a.format(i=inputs, w=tmp_path) for a in command))
        one_error_line(r, message)
        assert files_in(tmp_path) == before  # no output, no partial file, the user's files as they were
    assert files_in(inputs) == inputs_before


@pytest.fixture
def read_only_folder(tmp_path) -> Iterator[Path]:
    """A folder no file can be made in: a folder made read-only, or where that does not bind
    (root), the kernel's /sys, which refuses new files to everyone."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        yield locked
        locked.chmod(0o755)
        return
    try:
        with tempfile.TemporaryFile(dir="/sys"):
            pass
    except OSError:
        yield Path("/sys")
        return
    pytest.skip("no folder here refuses new files to root")


@pytest.mark.parametrize(
    "command",
    [
        ("init", "-k", "1", "-o", "{w}/out.avatar"),
        ("rig", "{i}/head.avatar", "-o", "{w}/out.avatar"),
        ("export", "{i}/head.avatar", "-o", "{w}/out.ply"),
        ("export", "{i}/head.avatar", "--motion", "{i}/talk.npz", "--sequence", "-o", "{w}/frames"),
        ("render", "{i}/head.avatar", "--size", "16", "-o", "{w}/out.png"),
        ("render", "{i}/head.avatar", "--size", "16", "-o", "{w}/views"),
        (*GOOD_ANIMATE[:4], "{w}/out.gif"),
        (*GOOD_ANIMATE[:4], "{w}/frames"),
        ("motions", "walk", "-o", "{w}/out.npz"),
        ("generate", "x", *TINY, "-o", "{w}/out.avatar"),
    ],
)
def test_a_read_only_folder_is_refused_before_any_work(inputs, read_only_folder, command):
    before = sorted(os.listdir(read_only_folder))
    r = run_cli(*(a.format(i=inputs, w=read_only_folder) for a in command))
    one_error_line(r, "cannot write into folder")
    assert sorted(os.listdir(read_only_folder)) == before


def test_a_failed_rename_is_one_line_and_leaves_nothing(inputs, tmp_path, monkeypatch):
    """The disk filling up or a permission changing under a running command: the final
    rename fails; the temporary file goes and the error is one line."""

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", refuse)
    r = run_cli("motions", "walk", "-o", str(tmp_path / "w.npz"))
    one_error_line(r, "cannot write")
    assert list(tmp_path.iterdir()) == []


def test_the_users_files_survive_a_folder_output(inputs, tmp_path):
    """``render -o photos`` into a folder holding a user's file refuses; with --force the views
    are added and the user's file is kept (the old behaviour deleted it)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "important.txt").write_text("keep")
    args = ("render", str(inputs / "head.avatar"), "--size", "16", "--views", "2", "-o", str(photos))
    one_error_line(run_cli(*args), "is not empty")
    r = run_cli(*args, "--force")
    assert r.code == 0, r.stderr
    assert sorted(p.name for p in photos.iterdir()) == ["important.txt", "view_0000.png", "view_0001.png"]
    assert (photos / "important.txt").read_text() == "keep"
    assert [p.name for p in tmp_path.iterdir()] == ["photos"]  # no temporary folder left
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_cli(*args[:-1], str(empty)).code == 0  # an empty folder is fine without --force
    assert sorted(p.name for p in empty.iterdir()) == ["view_0000.png", "view_0001.png"]


def test_valid_inputs_that_looked_odd_are_read(inputs, tmp_path):
    """Big-endian arrays in a motion (valid data), an ASCII 3DGS .ply and a null residual network
    are accepted."""
    with np.load(inputs / "talk.npz") as data:
        arrays = {k: (data[k].astype(data[k].dtype.newbyteorder(">")) if data[k].dtype.kind == "f" else data[k]) for k in data.files}
    np.savez(tmp_path / "big.npz", **arrays)
    r = run_cli("animate", str(inputs / "head.avatar"), str(tmp_path / "big.npz"), "-o", str(tmp_path / "a.gif"), "--size", "16")
    assert r.code == 0, r.stderr
    ply = PlyData.read(str(inputs / "head.ply"))
    PlyData([PlyElement.describe(ply["vertex"].data, "vertex")], text=True).write(str(tmp_path / "ascii.ply"))
    r = run_cli("rig", str(tmp_path / "ascii.ply"), "-m", "head", "-o", str(tmp_path / "rigged.avatar"))
    assert r.code == 0, r.stderr
    assert len(avatar_file.load(tmp_path / "rigged.avatar")) == len(avatar_file.load(inputs / "head.avatar"))
    # "residual": null is a body without a residual network, as when the key is absent
    edited_avatar("body", meta_set("residual", None))(inputs, tmp_path)
    r = run_cli("info", str(tmp_path / "bad.avatar"))
    assert r.code == 0, r.stderr
    assert avatar_file.load(tmp_path / "bad.avatar").binding.residual is None


def test_the_table_has_no_duplicate_ids():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids))


def test_an_unexpected_failure_is_one_line_naming_a_report(tmp_path, monkeypatch):
    """A bug, not a bad input: one ``error:`` line naming a report that holds the traceback
    and the command, exit 1, and no output file."""

    def broken(*args, **kwargs):
        raise RuntimeError("internal state\nwent wrong")

    patch_api(monkeypatch, "load_template", broken)
    monkeypatch.setenv("AVATARCLI_CACHE", str(tmp_path / "cache"))
    r = run_cli("init", "-k", "1", "-o", str(tmp_path / "a.avatar"))
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.code == 1, r.stderr
    assert len(lines) == 1 and lines[0].startswith("error: unexpected RuntimeError: internal state went wrong"), r.stderr
    assert "Traceback" not in r.stderr
    reports = list((tmp_path / "cache" / "reports").iterdir())
    assert len(reports) == 1 and str(reports[0]) in lines[0]
    text = reports[0].read_text()
    assert text.startswith("command: avatar init -k 1 -o ")
    assert "Traceback (most recent call last)" in text and "in broken" in text and "RuntimeError: internal state" in text
    assert not (tmp_path / "a.avatar").exists()


def test_an_unexpected_failure_without_a_writable_cache_still_says_so(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    patch_api(monkeypatch, "builtin_motion", broken)
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the report folders would be")
    monkeypatch.setenv("AVATARCLI_CACHE", str(blocker))
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(blocker))
    r = run_cli("motions", "walk", "-o", str(tmp_path / "w.npz"))
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.code == 1
    assert lines == ["error: unexpected RuntimeError: boom (no report could be written)"], r.stderr


def test_standard_input_is_read_from_files_and_pipes_not_devices(inputs, tmp_path):
    """``avatar info - < /dev/zero`` is refused at once (it used to read 4 GiB first);
    ``< head.avatar`` is read."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    command = [sys.executable, "-m", "avatarcli", "info", "-", "--json"]
    with open("/dev/zero", "rb") as zero:
        r = subprocess.run(command, stdin=zero, capture_output=True, text=True, env=env, timeout=120)
    assert (
        r.returncode == 2
        and r.stderr.strip() == "error: standard input is a device, not a file or a pipe; pipe the avatar file in or name it"
    )
    with open(inputs / "head.avatar", "rb") as fh:
        r = subprocess.run(command, stdin=fh, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["kind"] == "head"


def test_a_pipe_of_zeros_on_standard_input_is_refused_at_once():
    """``head -c 5000000000 /dev/zero | avatar info -`` was read whole first (gigabytes of
    memory, then a MemoryError): an avatar's header is read first, and zeros are not one."""
    code, stderr, peak = peak_memory(["info", "-"], stdin_command="head -c 5000000000 /dev/zero")
    assert code == 2 and stderr.strip() == "error: standard input is not an avatar file", stderr
    assert peak < 1 << 30, f"{peak / 2**30:.1f} GiB"


def test_a_small_npz_that_unpacks_to_a_gigabyte_is_refused_from_its_headers(inputs, tmp_path):
    """A 1 MB .npz of 0.99 GB of zeros took 3 GB of memory before it was refused: what its
    directory declares is bounded, and each array's header is read before it is unpacked."""
    for frames, message in ((750_000, "bomb.npz holds more than 512 MiB unpacked"), (300_000, "bomb.npz: 'poses' has 300,000 frames")):
        bomb = tmp_path / "bomb.npz"
        np.savez_compressed(bomb, poses=np.zeros((frames, 165)), mocap_frame_rate=np.float64(30))
        assert bomb.stat().st_size < 2 << 20
        out = str(tmp_path / "a.gif")
        code, stderr, peak = peak_memory(["animate", str(inputs / "head.avatar"), str(bomb), "-o", out, "--size", "16"])
        lines = stderr.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {message}"), stderr
        assert peak < 1 << 30, f"{peak / 2**30:.1f} GiB"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.npz"]


@pytest.mark.parametrize("name", ["m.npz", "h.avatar"])
def test_a_named_pipe_as_input_is_refused_rather_than_waited_on(inputs, tmp_path, name):
    """A FIFO that nothing writes to blocked the reader forever; a pipe that has its writer
    (a shell's ``<(...)``, ``/dev/fd/N``) is still read."""
    os.mkfifo(tmp_path / name)
    args = ("animate", str(inputs / "head.avatar"), str(tmp_path / name)) if name.endswith(".npz") else ("info", str(tmp_path / name))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    command = [sys.executable, "-m", "avatarcli", *args, *(("-o", str(tmp_path / "a.gif")) if name.endswith(".npz") else ())]
    r = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "is a named pipe" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    with open(inputs / "head.avatar", "rb") as fh:
        r = subprocess.run([sys.executable, "-m", "avatarcli", "info", f"/dev/fd/{fh.fileno()}", "--json"], pass_fds=(fh.fileno(),),
                           capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert r.returncode == 0 and json.loads(r.stdout)["kind"] == "head", r.stderr


def test_outputs_that_looked_wrong_but_are_fine_are_written(inputs, tmp_path):
    """A folder for ``export --sequence`` may have a dot in its name; a name of 250 bytes,
    which fits, is written (its temporary name is shorter than it would be)."""
    r = run_cli("export", str(inputs / "head.avatar"), "--motion", str(inputs / "talk.npz"), "--sequence", "-o", str(tmp_path / "head.seq"))
    assert r.code == 0, r.stderr
    assert (tmp_path / "head.seq" / "frame_0000.ply").is_file()
    long = tmp_path / ("a" * 243 + ".avatar")
    r = run_cli("init", "-k", "1", "-o", str(long))
    assert r.code == 0, r.stderr
    assert avatar_file.load(long).kind == "head"
    r = run_cli("export", str(inputs / "head.avatar"), "--motion", "talk", "--sequence", "-o", str(tmp_path / "x.ply"))
    assert r.code == 2 and "names a .ply file: name a folder" in r.stderr, r.stderr


def test_refusals_found_by_trying_the_commands(inputs, tmp_path):
    """Sizes that would exhaust memory, a span with no frames, and a motion that is neither a
    file nor a built-in name: one line each, exit 2, naming what is wrong."""
    r = run_cli("init", "-k", "100000", "-o", str(tmp_path / "a.avatar"))
    assert r.code == 2 and "points per triangle must be 1 to 100 (got 100000)" in r.stderr, r.stderr
    head = str(inputs / "head.avatar")
    r = run_cli("animate", head, "talk", "--start", "10", "--size", "16", "-o", str(tmp_path / "a.gif"))
    assert r.code == 2 and "no frames after 10 s" in r.stderr and "None" not in r.stderr, r.stderr
    r = run_cli("animate", head, "nosuch", "--size", "16", "-o", str(tmp_path / "a.gif"))
    assert r.code == 2 and "nosuch is neither a motion file nor a built-in motion (" in r.stderr and "talk" in r.stderr, r.stderr
    r = run_cli("export", head, "-o", str(tmp_path / "k.ply"), "--format", "glb")
    assert r.code == 2 and "names a .ply file" in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []
