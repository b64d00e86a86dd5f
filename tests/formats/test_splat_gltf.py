"""KHR_gaussian_splatting .glb: the structure the extension's specification asks for, and the
values of the .ply in the extension's activated form."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from plyfile import PlyData

from avatarcli import api
from avatarcli.errors import AvatarError
from avatarcli.formats.glb import FLOAT, UINT8, accessor_array, read_glb_json
from avatarcli.formats.splat_gltf import EXTENSION, build_splat_glb, sh_attribute
from avatarcli.model.gaussians import Gaussians
from avatarcli.motion.builtin import builtin_motion

CORE = ["POSITION", f"{EXTENSION}:ROTATION", f"{EXTENSION}:SCALE", f"{EXTENSION}:OPACITY"]


def _splat_primitive(data: bytes):
    js, binary = read_glb_json(data)
    (mesh,) = js["meshes"]
    (prim,) = mesh["primitives"]
    return js, binary, prim, {name: accessor_array(js, binary, i) for name, i in prim["attributes"].items()}


def _ply_columns(path):
    v = PlyData.read(str(path))["vertex"].data
    return lambda *names: np.stack([np.asarray(v[n], np.float64) for n in names], 1)


def test_structure_follows_the_extension(head_avatar, tmp_path):
    out = tmp_path / "h.splat.glb"
    assert api.export(head_avatar, out) == [out]
    js, _, prim, attrs = _splat_primitive(out.read_bytes())
    assert js["extensionsUsed"] == [EXTENSION] and "extensionsRequired" not in js  # points where unsupported
    assert prim["mode"] == 0  # POINTS
    assert prim["extensions"][EXTENSION]["kernel"] == "ellipse"
    assert prim["extensions"][EXTENSION]["colorSpace"] in ("srgb_rec709_display", "lin_rec709_display")
    assert "material" not in prim
    # a degree-0 avatar: the diffuse coefficient only, no zero-filled bands
    assert set(prim["attributes"]) == {*CORE, f"{EXTENSION}:SH_DEGREE_0_COEF_0", "COLOR_0"}
    want = {"POSITION": ("VEC3", FLOAT), "ROTATION": ("VEC4", FLOAT), "SCALE": ("VEC3", FLOAT), "OPACITY": ("SCALAR", FLOAT),
            "SH_DEGREE_0_COEF_0": ("VEC3", FLOAT), "COLOR_0": ("VEC4", UINT8)}  # fmt: skip
    for name, index in prim["attributes"].items():
        acc = js["accessors"][index]
        assert (acc["type"], acc["componentType"]) == want[name.split(":")[-1]], name
        assert acc["count"] == len(head_avatar)
    pos = js["accessors"][prim["attributes"]["POSITION"]]
    assert np.allclose(pos["min"], attrs["POSITION"].min(0)) and np.allclose(pos["max"], attrs["POSITION"].max(0))
    assert js["accessors"][prim["attributes"]["COLOR_0"]]["normalized"] is True
    # the rules the stock validator cannot check
    rot = attrs[f"{EXTENSION}:ROTATION"].astype(np.float64)
    assert np.abs(np.linalg.norm(rot, axis=1) - 1).max() < 1e-6
    assert (attrs[f"{EXTENSION}:SCALE"] >= 0).all()
    assert ((attrs[f"{EXTENSION}:OPACITY"] >= 0) & (attrs[f"{EXTENSION}:OPACITY"] <= 1)).all()


def test_values_match_the_ply(head_avatar, tmp_path):
    api.export(head_avatar, tmp_path / "h.splat.glb")
    api.export(head_avatar, tmp_path / "h.ply", sh_degree=0)
    _, _, _, attrs = _splat_primitive((tmp_path / "h.splat.glb").read_bytes())
    col = _ply_columns(tmp_path / "h.ply")
    assert np.allclose(attrs["POSITION"], col("x", "y", "z"), atol=1e-7)
    assert np.allclose(attrs[f"{EXTENSION}:SCALE"], np.exp(col("scale_0", "scale_1", "scale_2")), rtol=1e-6)
    assert np.allclose(attrs[f"{EXTENSION}:OPACITY"], 1 / (1 + np.exp(-col("opacity")[:, 0])), atol=1e-7)
    assert np.allclose(attrs[f"{EXTENSION}:SH_DEGREE_0_COEF_0"], col("f_dc_0", "f_dc_1", "f_dc_2"), atol=1e-7)
    wxyz = col("rot_0", "rot_1", "rot_2", "rot_3")
    wxyz /= np.linalg.norm(wxyz, axis=1, keepdims=True)
    xyzw = attrs[f"{EXTENSION}:ROTATION"]
    assert (xyzw[:, 3] >= 0).all()
    assert np.allclose(np.abs((xyzw * wxyz[:, [1, 2, 3, 0]]).sum(1)), 1, atol=1e-6)  # the same rotation, glTF's order
    # the fallback colour: the diffuse colour decoded to linear, and the opacity
    rgb = np.clip(0.5 + 0.28209479177387814 * col("f_dc_0", "f_dc_1", "f_dc_2"), 0, 1)
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    assert np.abs(attrs["COLOR_0"][:, :3] / 255 - linear).max() <= 0.5 / 255 + 1e-9


def test_a_motion_frame(body_avatar, body_template, tmp_path):
    motion = builtin_motion("walk", fps=10)
    api.export(body_avatar, tmp_path / "b.splat.glb", motion=motion, frame=15)
    api.export(body_avatar, tmp_path / "b.ply", motion=motion, frame=15, sh_degree=0)
    _, _, _, attrs = _splat_primitive((tmp_path / "b.splat.glb").read_bytes())
    col = _ply_columns(tmp_path / "b.ply")
    assert np.allclose(attrs["POSITION"], col("x", "y", "z"), atol=1e-7)
    rest = body_avatar.posed(body_template).means[0].numpy()
    assert np.abs(attrs["POSITION"] - rest).max() > 0.5  # walked on


@pytest.mark.parametrize(("have", "ask", "written"), [(2, 3, 2), (3, 1, 1), (1, 0, 0)])
def test_sh_bands_are_whole_degrees(have, ask, written):
    n = 50
    gen = torch.Generator().manual_seed(have)
    sh = torch.randn(n, (have + 1) ** 2, 3, generator=gen)
    g = Gaussians(torch.randn(n, 3, generator=gen), torch.randn(n, 3, generator=gen) - 4, torch.randn(n, 4, generator=gen),
                  torch.randn(n, generator=gen), sh)  # fmt: skip
    _, _, prim, attrs = _splat_primitive(build_splat_glb(g, ask))
    names = [sh_attribute(k) for k in range((written + 1) ** 2)]
    assert sorted(a for a in prim["attributes"] if "SH_DEGREE" in a) == sorted(names)
    for k, name in enumerate(names):  # coefficient k of the .ply's order, RGB
        assert np.allclose(attrs[name], sh[:, k].numpy(), atol=1e-6)


def test_sh_attribute_names():
    got = [sh_attribute(k).split(":")[1] for k in (0, 1, 3, 4, 8, 9, 15)]
    assert got == ["SH_DEGREE_0_COEF_0", "SH_DEGREE_1_COEF_0", "SH_DEGREE_1_COEF_2", "SH_DEGREE_2_COEF_0", "SH_DEGREE_2_COEF_4",
                   "SH_DEGREE_3_COEF_0", "SH_DEGREE_3_COEF_6"]  # fmt: skip


def test_format_by_name_and_by_option(head_avatar, tmp_path):
    assert api.export_format("a.splat.glb") == "splat-gltf" and api.export_format("a.GLB") == "glb"
    out = tmp_path / "named.glb"
    api.export(head_avatar, out, fmt="splat-gltf")
    js, _ = read_glb_json(out.read_bytes())
    assert EXTENSION in js["extensionsUsed"] and "skins" not in js
    with pytest.raises(AvatarError, match=r"names a \.ply file but glb is written as \.glb"):
        api.export_format("k.ply", "glb")
    assert api.export_format("k.ply", "compressed-ply") == "compressed-ply"
