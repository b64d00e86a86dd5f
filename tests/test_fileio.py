"""Reading within stated bounds, writing atomically, and output folders that never lose a
user's files."""

from __future__ import annotations

import errno
import io
import os
import signal
import struct
import sys
import zipfile

import numpy as np
import pytest

from avatarcli import fileio
from avatarcli.errors import AvatarError
from avatarcli.fileio import (
    PickledArrayError,
    atomic_folder,
    atomic_path,
    check_output,
    npy_array,
    npz_arrays,
    read_arrays,
    read_bytes,
    remove_partial_outputs,
)
from avatarcli.signals import Interrupted, interruptions_held, interrupts_raise


# -- reading ---------------------------------------------------------------------------------------
def test_read_bytes_refuses_what_is_too_large_or_not_a_file(tmp_path, monkeypatch):
    big = tmp_path / "big.avatar"
    big.write_bytes(b"x" * 11)
    assert read_bytes(big, limit=11) == b"x" * 11
    with pytest.raises(AvatarError, match="more than 10 bytes"):
        read_bytes(big, "avatar file", limit=10)
    with pytest.raises(AvatarError, match="not a regular file"):
        read_bytes("/dev/zero")
    with pytest.raises(AvatarError, match="is a folder"):
        read_bytes(tmp_path)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"y" * 100)))
    with pytest.raises(AvatarError, match="on standard input is larger than 50 bytes"):
        read_bytes("-", "avatar file", limit=50)


def _npy(header: str, payload: bytes = b"") -> bytes:
    header += " " * (-(len(header) + 11) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + payload


@pytest.mark.parametrize(
    "data, message",
    [
        (_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (10**12, 3), }"), "not a readable"),  # an expression, not a literal
        (_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000, 3), }", b"\0" * 64), "truncated"),
        (_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (-4, 3), }"), "negative size"),
        (_npy("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", b"\x80\x04N."), "pickled"),
        (_npy("{'descr': '<f4', 'shape': (2,), }"), "not a readable"),
        (b"\x93NUMPY\x09\x00", "not a readable"),
    ],
)
def test_npy_headers_are_checked_against_the_data_before_anything_is_allocated(data, message):
    with pytest.raises(AvatarError, match=message):
        npy_array(data, "m.npy")


def test_npy_arrays_of_either_byte_order_and_layout_are_read():
    a = np.arange(12, dtype=">f4").reshape(3, 4)
    for array in (a, np.asfortranarray(a), a.astype("<i2")):
        buf = io.BytesIO()
        np.save(buf, array)
        assert np.array_equal(npy_array(buf.getvalue(), "a.npy"), array)
    with pytest.raises(PickledArrayError):
        buf = io.BytesIO()
        np.save(buf, np.array([{}], dtype=object), allow_pickle=True)
        npy_array(buf.getvalue(), "a.npy")


def test_npz_members_are_bounded_and_checked(tmp_path):
    buf = io.BytesIO()
    np.savez_compressed(buf, a=np.zeros(1000), b=np.ones(3))
    arrays = npz_arrays(buf.getvalue(), "m.npz")
    assert sorted(arrays) == ["a", "b"] and arrays["b"].sum() == 3
    with pytest.raises(AvatarError, match="more than 1000 bytes unpacked"):
        npz_arrays(buf.getvalue(), "m.npz", limit=1000)  # a zip bomb is refused from its directory
    corrupt = bytearray(buf.getvalue())
    corrupt[60] ^= 0xFF
    with pytest.raises(AvatarError, match="corrupt"):
        npz_arrays(bytes(corrupt), "m.npz")
    with zipfile.ZipFile(tmp_path / "odd.npz", "w") as z:
        z.writestr("notes.txt", b"not an array")
    with pytest.raises(AvatarError, match=r"not a readable \.npy"):
        read_arrays(tmp_path / "odd.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(AvatarError, match=r"not a \.npy or \.npz"):
        read_arrays(tmp_path / "text.npz")


# -- writing -----------------------------------------------------------------------------------------
def test_a_write_that_runs_out_of_space_is_one_line_and_leaves_nothing(tmp_path):
    with pytest.raises(AvatarError, match=r"cannot write .*out\.avatar: No space left on device"):
        with atomic_path(tmp_path / "out.avatar") as tmp:
            tmp.write_bytes(b"half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert list(tmp_path.iterdir()) == []


def test_folder_outputs_never_remove_a_users_files(tmp_path):
    target = tmp_path / "frames"
    target.mkdir()
    (target / "important.txt").write_text("keep")
    (target / "frame_0000.png").write_text("old")
    with pytest.raises(AvatarError, match="not empty"):
        with atomic_folder(target) as tmp:
            (tmp / "frame_0000.png").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]
    assert (target / "frame_0000.png").read_text() == "old"
    with atomic_folder(target, force=True) as tmp:
        (tmp / "frame_0000.png").write_text("new")
        (tmp / "frame_0001.png").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["frame_0000.png", "frame_0001.png", "important.txt"]
    assert (target / "important.txt").read_text() == "keep" and (target / "frame_0000.png").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]


def test_an_empty_or_new_folder_is_filled_whole(tmp_path):
    for name in ("new", "empty"):
        if name == "empty":
            (tmp_path / name).mkdir()
        with atomic_folder(tmp_path / name) as tmp:
            (tmp / "a.png").write_text("a")
        assert [p.name for p in (tmp_path / name).iterdir()] == ["a.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "new"]


@pytest.mark.parametrize(
    "setup, kind, force, message",
    [
        (lambda p: p.mkdir(), "file", False, "is a folder; name a file"),
        (lambda p: p.write_text("x"), "folder", False, "is not a folder"),
        (lambda p: (p.mkdir(), (p / "f").write_text("x")), "folder", False, "not empty"),
        (lambda p: None, "file", False, None),
        (lambda p: p.write_text("old"), "file", False, None),  # replaced when the new file is complete
        (lambda p: (p.mkdir(), (p / "f").write_text("x")), "folder", True, None),
    ],
)
def test_check_output(tmp_path, setup, kind, force, message):
    setup(tmp_path / "out")
    if message is None:
        check_output(tmp_path / "out", kind, force)
    else:
        with pytest.raises(AvatarError, match=message):
            check_output(tmp_path / "out", kind, force)
    with pytest.raises(AvatarError, match="not a regular file"):
        check_output("/dev/null")
    with pytest.raises(AvatarError, match="does not exist"):
        check_output(tmp_path / "missing" / "out.avatar")


def test_a_writer_abandoned_half_way_is_cleaned_up_on_the_way_out(tmp_path):
    """A temporary output is noted the moment it is made: one whose writer never reached its
    clean-up (interrupted twice) is removed by the command line on its way out."""
    ctx = atomic_path(tmp_path / "out.mp4")
    tmp = ctx.__enter__()
    tmp.write_bytes(b"half")
    folder_ctx = atomic_folder(tmp_path / "frames")
    folder_ctx.__enter__()
    assert len(list(tmp_path.iterdir())) == 2
    remove_partial_outputs()
    assert list(tmp_path.iterdir()) == []
    assert not fileio._PARTIAL


def test_an_interruption_inside_a_held_step_comes_at_its_end():
    steps = []
    with pytest.raises(Interrupted) as caught:
        with interrupts_raise():
            with interruptions_held():
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(1000):  # the handler has run by now, and only noted the signal
                    steps.append(1)
                steps.append("end")
    assert steps[-1] == "end" and caught.value.signum == signal.SIGTERM


def test_an_output_that_is_an_input_is_refused_by_any_name(tmp_path):
    source = tmp_path / "head.avatar"
    source.write_bytes(b"the input")
    (tmp_path / "soft.avatar").symlink_to(source)
    os.link(source, tmp_path / "hard.avatar")
    for output in (source, tmp_path / "soft.avatar", tmp_path / "hard.avatar", tmp_path / "." / "head.avatar"):
        with pytest.raises(AvatarError, match="the output is the input"):
            check_output(output, inputs=[source])
    (tmp_path / "other.avatar").write_bytes(b"the input")  # the same bytes, another file
    check_output(tmp_path / "other.avatar", inputs=[source, "-", None, tmp_path / "missing.npz"])
    check_output(tmp_path / "new.avatar", inputs=[source])
    assert source.read_bytes() == b"the input"


def test_names_too_long_are_refused_and_temporary_names_fit(tmp_path):
    with pytest.raises(AvatarError, match="is 256 bytes long"):
        check_output(tmp_path / ("x" * 256))
    name = "é" * 120 + ".png"  # 244 bytes: fits, but ".NAME.XXXXXXXX.partial.png" would not
    check_output(tmp_path / name)
    with atomic_path(tmp_path / name) as tmp:
        assert len(os.fsencode(tmp.name)) <= 255
        tmp.write_bytes(b"png")
    with atomic_folder(tmp_path / ("f" * 250)) as tmp:
        (tmp / "a.txt").write_text("a")
    assert sorted(len(os.fsencode(p.name)) for p in tmp_path.iterdir()) == [244, 250]


def test_a_safetensors_stream_is_read_from_its_header(monkeypatch, tmp_path):
    from safetensors.numpy import save

    data = save({"a": np.arange(4, dtype=np.float32)}, metadata={"avatarcli": '{"format": "x", "step": 3}'})
    for stream, message in ((b"\0" * 64, "standard input is not an avatar file"), (data[:-3], "truncated"), (b"", "no avatar file")):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stream)))
        with pytest.raises(AvatarError, match=message):
            fileio.read_safetensors("-", "avatar file", 1 << 20)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data + b"more")))
    assert fileio.read_safetensors("-", "avatar file", 1 << 20) == data  # only what the header declares
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    with pytest.raises(AvatarError, match="declares"):
        fileio.read_safetensors("-", "avatar file", len(data) - 1)
    (tmp_path / "c.ckpt").write_bytes(data)
    assert fileio.safetensors_metadata(tmp_path / "c.ckpt") == {"format": "x", "step": 3}
    (tmp_path / "c.ckpt").write_bytes(b"mine\n")
    assert fileio.safetensors_metadata(tmp_path / "c.ckpt") is None


def test_npz_arrays_are_checked_from_their_headers_before_they_are_unpacked(tmp_path):
    buf = io.BytesIO()
    np.savez_compressed(buf, a=np.zeros((5000, 2)), b=np.ones(3))
    seen = []

    def check(key, shape, dtype):
        seen.append((key, shape, str(dtype)))
        if shape[0] > 1000:
            raise AvatarError(f"{key} is too long")

    with pytest.raises(AvatarError, match="a is too long"):
        npz_arrays(buf.getvalue(), "m.npz", check=check)
    assert seen == [("a", (5000, 2), "float64")]
    np.save(tmp_path / "m.npy", np.zeros((3, 2), np.float32))
    assert read_arrays(tmp_path / "m.npy", check=check).shape == (3, 2) and seen[-1] == ("", (3, 2), "float32")
