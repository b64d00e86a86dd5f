"""``--light`` on animate, render and export: presets and panoramas, a light that turns, lights
baked into exported colours, and one line for a bad light."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from plyfile import PlyData

from avatarcli.model import avatar_file
from avatarcli.model.material import with_material

from helpers import encode_hdr, run_cli


@pytest.fixture(scope="module")
def lit_file(tmp_path_factory, head_avatar, head_template) -> Path:
    path = tmp_path_factory.mktemp("lit") / "lit.avatar"
    avatar_file.save(with_material(head_avatar, head_template), path)
    return path


def _one_line_error(r, fragment: str) -> None:  # type: ignore[no-untyped-def]
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert r.code == 2 and len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], r.stderr


def _frames(folder: Path) -> np.ndarray:
    return np.stack([iio.imread(p) for p in sorted(folder.glob("*.png"))]).astype(np.float32)


def test_animate_relights_and_turns_the_light(lit_file, tmp_path):
    common = ("nod", "--size", "24", "--fps", "10", "--end", "0.6", "--background", "black")
    for name, extra in (("studio", ()), ("sunset", ()), ("turning", ("--light-rotate", "180"))):
        light = "sunset" if name == "turning" else name
        r = run_cli("animate", str(lit_file), *common, "--light", light, *extra, "-o", str(tmp_path / name))
        assert r.code == 0, r.stderr
    studio, sunset, turning = (_frames(tmp_path / n) for n in ("studio", "sunset", "turning"))
    assert np.abs(studio - sunset).mean() > 3.0  # a different light, different frames
    assert np.array_equal(turning[0], sunset[0])  # the turn starts at zero ...
    assert np.abs(turning[-1] - sunset[-1]).mean() > 1.0  # ... and has turned by the end


def test_render_takes_a_panorama_and_the_default_is_the_avatars_own_light(lit_file, tmp_path):
    from avatarcli.render.lights import equirect_directions

    d = equirect_directions(32, 64).numpy()
    lamp = np.exp(-(np.arccos(np.clip(d @ np.array([0.8, 0.0, 0.6]), -1, 1)) ** 2) / 0.05)[..., None] * [1.0, 0.3, 0.1] + 0.02
    hdr = tmp_path / "lamp.hdr"
    hdr.write_bytes(encode_hdr(lamp))
    for name, extra in (("own", ()), ("studio", ("--light", "studio")), ("lamp", ("--light", str(hdr)))):
        r = run_cli("render", str(lit_file), "--views", "1", "--size", "24", *extra, "-o", str(tmp_path / f"{name}.png"))
        assert r.code == 0, r.stderr
    own, studio, lamp = (iio.imread(tmp_path / f"{n}.png").astype(np.float32) for n in ("own", "studio", "lamp"))
    assert np.array_equal(own, studio)  # an avatar made under random lights shows under the default preset
    assert np.abs(lamp - studio).mean() > 2.0


def test_exports_bake_the_light_into_their_colours(lit_file, tmp_path):
    dc = {}
    for light in ("studio", "sunset"):
        out = tmp_path / f"{light}.ply"
        r = run_cli("export", str(lit_file), "--light", light, "-o", str(out))
        assert r.code == 0, r.stderr
        v = PlyData.read(str(out))["vertex"].data
        dc[light] = np.stack([v[f"f_dc_{i}"] for i in range(3)], 1)
    assert np.abs(dc["studio"] - dc["sunset"]).mean() > 0.1
    sunset = dc["sunset"].mean(0)
    assert sunset[0] > sunset[2]  # a warm light, warm colours
    for name in ("a.glb", "a.splat.glb", "a.html"):
        r = run_cli("export", str(lit_file), "--light", "overcast", "-o", str(tmp_path / name))
        assert r.code == 0, r.stderr
    # the .avatar keeps its materials: nothing was baked into it
    assert avatar_file.load(lit_file).material is not None


def test_a_bad_light_is_one_line_and_nothing_is_written(lit_file, head_avatar, tmp_path):
    (tmp_path / "broken.hdr").write_bytes(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 4 +X 8\n\x02\x02")
    cases = [("broken.hdr", "truncated"), ("missing.hdr", "does not exist"), ("disco", "unknown light 'disco'")]
    for light, fragment in cases:
        spec = str(tmp_path / light) if light.endswith(".hdr") else light
        for command, out in (("animate", "f.mp4"), ("render", "v.png"), ("export", "a.ply")):
            args = (command, str(lit_file), *(("talk",) if command == "animate" else ()), "--light", spec, "-o", str(tmp_path / out))
            _one_line_error(run_cli(*args), fragment)
            assert not (tmp_path / out).exists()
    _one_line_error(run_cli("animate", str(lit_file), "talk", "--light-rotate", "inf", "-o", str(tmp_path / "f.mp4")), "rotation")


def test_an_avatar_of_colours_shows_them_under_any_light(head_avatar, tmp_path):
    path = tmp_path / "plain.avatar"
    avatar_file.save(head_avatar, path)
    frames = {}
    for light in ("studio", "night"):
        r = run_cli("animate", str(path), "nod", "--size", "16", "--end", "0.1", "--light", light, "-o", str(tmp_path / light))
        assert r.code == 0, r.stderr
        assert "no materials" in r.stderr
        frames[light] = _frames(tmp_path / light)
    assert np.array_equal(frames["studio"], frames["night"])
    assert torch.equal(avatar_file.load(path).gaussians.sh, head_avatar.gaussians.sh)
