"""Reading users' panoramas: Radiance .hdr (flat and run-length scanlines, every orientation,
bounded, one line for a bad file) and OpenEXR .exr (through the optional package)."""

from __future__ import annotations

import builtins
from pathlib import Path

import numpy as np
import pytest
import torch

from avatarcli.api.inputs import load_light
from avatarcli.errors import AvatarError
from avatarcli.formats.environment import decode_hdr, read_environment, read_hdr

from helpers import encode_hdr


def _panorama(h: int = 16, w: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.random((h, w, 3)) * np.array([2.0, 1.0, 0.5])
    img[:, : w // 4] = img[0, 0]  # a flat stretch, so the run-length encoder makes runs
    img[3, 5] = [50.0, 40.0, 30.0]  # a bright lamp
    return img.astype(np.float32)


def _rgbe_error(a: np.ndarray, b: np.ndarray) -> float:
    return float((np.abs(a - b) / np.maximum(a.max(-1, keepdims=True), 1e-6)).max())  # RGBE keeps 8 bits of the largest channel


@pytest.mark.parametrize("rle", [True, False])
def test_hdr_files_read_back_what_was_written(tmp_path: Path, rle: bool):
    img = _panorama()
    path = tmp_path / "room.hdr"
    path.write_bytes(encode_hdr(img, rle=rle))
    back = read_hdr(path)
    assert back.shape == img.shape and back.dtype == np.float32
    assert _rgbe_error(back, img) < 1 / 128


def test_every_orientation_of_the_resolution_line_reads_the_same_image():
    img = _panorama(8, 12)
    data = encode_hdr(img, rle=False)
    head, body = data.split(b"-Y 8 +X 12\n")
    px = np.frombuffer(body, np.uint8).reshape(8, 12, 4)
    want = decode_hdr(data)
    for line, stored in ((b"+Y 8 +X 12", px[::-1]), (b"-Y 8 -X 12", px[:, ::-1]), (b"+X 12 -Y 8", px.transpose(1, 0, 2)),
                         (b"-X 12 +Y 8", px[::-1, ::-1].transpose(1, 0, 2))):  # fmt: skip
        got = decode_hdr(head + line + b"\n" + np.ascontiguousarray(stored).tobytes())
        assert np.array_equal(got, want), line


def test_bad_hdr_files_are_one_line(tmp_path: Path):
    good = encode_hdr(_panorama())
    cases = {
        "text.hdr": b"hello",
        "cut.hdr": good[: len(good) // 2],
        "xyz.hdr": good.replace(b"32-bit_rle_rgbe", b"32-bit_rle_xyze"),
        "huge.hdr": good.replace(b"-Y 16 +X 32", b"-Y 900000 +X 900000"),
        "noline.hdr": good.split(b"\n\n")[0] + b"\n\nnonsense\n",
    }
    expect = {"text.hdr": "no #?RADIANCE", "cut.hdr": "truncated", "xyz.hdr": "not read", "huge.hdr": "at most", "noline.hdr": "resolution"}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(AvatarError) as info:
            read_environment(tmp_path / name)
        message = str(info.value)
        assert "\n" not in message and expect[name] in message, message
    with pytest.raises(AvatarError, match="does not exist"):
        read_environment(tmp_path / "missing.hdr")


def test_a_panorama_becomes_a_normalised_light_and_names_pick_presets(tmp_path: Path):
    img = _panorama(32, 64)
    (tmp_path / "room.hdr").write_bytes(encode_hdr(img))
    light = load_light(str(tmp_path / "room.hdr"))
    assert light.name == "room.hdr" and light.radiance.shape == (32, 64, 3)
    scaled = tmp_path / "bright.hdr"
    scaled.write_bytes(encode_hdr(img * 64.0))  # a power of two: RGBE stores it exactly
    assert torch.allclose(load_light(str(scaled)).radiance, light.radiance, rtol=1e-5)
    assert load_light("sunset").name == "sunset"
    with pytest.raises(AvatarError, match="unknown light 'moon'"):
        load_light("moon")
    with pytest.raises(AvatarError, match=r"unknown light"):
        load_light(str(tmp_path / "room.png"))


def test_exr_panoramas_read_through_openexr(tmp_path: Path):
    OpenEXR = pytest.importorskip("OpenEXR")
    img = _panorama(16, 32)
    path = tmp_path / "room.exr"
    with OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}, {"RGB": img}) as f:
        f.write(str(path))
    light = read_environment(path)
    direct = read_environment_from_array(img)
    assert torch.allclose(light.radiance, direct, rtol=1e-5)
    (tmp_path / "bad.exr").write_bytes(b"not an exr at all")
    with pytest.raises(AvatarError, match="not an OpenEXR file"):
        read_environment(tmp_path / "bad.exr")


def read_environment_from_array(img: np.ndarray) -> torch.Tensor:
    from avatarcli.render.lights import EnvironmentLight

    return EnvironmentLight.from_image(torch.from_numpy(img), "array").radiance


def test_without_openexr_an_exr_is_refused_with_what_to_install(tmp_path: Path, monkeypatch):
    (tmp_path / "room.exr").write_bytes(b"v/1\x01" + bytes(100))
    real = builtins.__import__

    def no_openexr(name, *args, **kwargs):  # type: ignore[no-untyped-def]
        if name == "OpenEXR":
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_openexr)
    with pytest.raises(AvatarError, match=r"avatarcli\[exr\]"):
        read_environment(tmp_path / "room.exr")
