"""Materials: their ranges, flattening Gaussians onto the surface, the .avatar file's version 3
group (and version 1 and 2 files still read), and commands that carry them along."""

from __future__ import annotations

import json
import math
import struct

import pytest
import torch

from avatarcli.errors import AvatarError
from avatarcli.model import avatar_file
from avatarcli.model.material import ROUGHNESS_RANGE, SPECULAR_RANGE, Material, with_material
from avatarcli.model.normals import outward_signs, reference_normals, shortest_axes


def _material(n: int, light: bool = False) -> Material:
    g = torch.Generator().manual_seed(0)
    albedo = torch.rand(n, 3, generator=g) * 0.9 + 0.05
    rough, f0 = 0.2 + 0.7 * torch.rand(n, generator=g), 0.03 + 0.05 * torch.rand(n, generator=g)
    return Material.from_values(albedo, rough, f0, torch.rand(16, 32, 3, generator=g) if light else None)


def _meta_of(data: bytes) -> dict:
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(json.loads(data[8 : 8 + n])["__metadata__"]["avatarcli"])


def _with_meta(data: bytes, edit) -> bytes:  # type: ignore[no-untyped-def]
    """The same file with its avatarcli metadata edited (the header re-packed)."""
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    meta = json.loads(header["__metadata__"]["avatarcli"])
    edit(meta)
    header["__metadata__"]["avatarcli"] = json.dumps(meta)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data[8 + n :]


def test_activated_values_stay_in_their_ranges_and_round_trip():
    m = _material(50)
    lo, hi = ROUGHNESS_RANGE
    assert bool((m.roughness >= lo).all() and (m.roughness <= hi).all())
    lo, hi = SPECULAR_RANGE
    assert bool((m.specular >= lo).all() and (m.specular <= hi).all())
    again = Material.from_values(m.albedo, m.roughness, m.specular)
    assert torch.allclose(again.albedo, m.albedo, atol=1e-5) and torch.allclose(again.roughness, m.roughness, atol=1e-5)


@pytest.mark.parametrize("kind", ["head", "body"])
def test_adding_materials_flattens_gaussians_onto_their_surface(kind, head_avatar, body_avatar, head_template, body_template):
    av, tpl = (head_avatar, head_template) if kind == "head" else (body_avatar, body_template)
    lit = with_material(av, tpl)
    assert av.material is None and lit.material is not None and len(lit.material) == len(av)
    g = lit.gaussians
    ref = reference_normals(lit.binding, tpl, len(g))
    along = (shortest_axes(g.quats, g.log_scales) * ref).sum(-1).abs()
    assert float(along.min()) > 0.999
    s = torch.sort(g.log_scales, dim=-1).values
    assert torch.allclose(s[:, 0] - (s[:, 1] + s[:, 2]) / 2, torch.full((len(g),), math.log(0.15)), atol=1e-4)
    assert bool((outward_signs(g.quats, g.log_scales, ref) * (shortest_axes(g.quats, g.log_scales) * ref).sum(-1) > 0).all())
    assert torch.equal(lit.gaussians.means, av.gaussians.means)  # nothing moved
    assert with_material(lit, tpl) is lit


def test_materials_round_trip_through_the_file(head_avatar, tmp_path):
    av = head_avatar.select(torch.arange(len(head_avatar)))
    av.material = _material(len(av), light=True)
    path = tmp_path / "lit.avatar"
    avatar_file.save(av, path)
    back = avatar_file.load(path)
    assert back.material is not None and not any(k.startswith("material.") for k in back.extra)
    for name, t in av.material.tensors().items():
        assert torch.equal(back.material.tensors()[name], t)
    assert torch.equal(back.material.light, av.material.light)
    assert back.material.roughness_range == ROUGHNESS_RANGE and back.material.specular_range == SPECULAR_RANGE
    meta = _meta_of(path.read_bytes())
    assert meta["version"] == 3 and meta["material"]["light_size"] == [16, 32]
    # an avatar of colours writes no material group, even when its metadata once had one
    back.material = None
    assert "material" not in _meta_of(avatar_file.to_bytes(back))


@pytest.mark.parametrize("version", [1, 2])
def test_files_of_earlier_versions_read_as_avatars_of_colours(head_avatar, version):
    old = _with_meta(avatar_file.to_bytes(head_avatar), lambda m: m.update(version=version))
    back = avatar_file.from_bytes(old)
    assert back.material is None and torch.equal(back.gaussians.sh, head_avatar.gaussians.sh)


def test_bad_material_groups_are_one_line(head_avatar):
    av = head_avatar.select(torch.arange(len(head_avatar)))
    av.material = _material(len(av), light=True)
    data = avatar_file.to_bytes(av)
    cases = [
        (_with_meta(data, lambda m: m["material"].update(roughness_range=[0.5, 0.2])), "roughness_range"),
        (_with_meta(data, lambda m: m["material"].update(specular_range=[0, 3])), "specular_range"),
        (_with_meta(data, lambda m: m["material"].update(light_size=[100000, 3])), "light_size"),
        (_with_meta(data, lambda m: m["material"].update(light_size=[8, 16])), "material.light has shape"),
        (_with_meta(data, lambda m: m["material"].update(colour="blue")), "must be an object"),
        (_with_meta(data, lambda m: m.pop("material")), "no material settings"),
    ]
    for bad, message in cases:
        with pytest.raises(AvatarError, match=message) as info:
            avatar_file.from_bytes(bad)
        assert "\n" not in str(info.value)
    av.material.albedo_logits[0, 0] = float("nan")
    with pytest.raises(AvatarError, match="NaN"):
        avatar_file.from_bytes(avatar_file.to_bytes(av))


def test_copies_and_rigging_keep_each_gaussians_material(body_avatar, body_template):
    from avatarcli.model.rigging import rig_avatar

    av = body_avatar.select(torch.arange(len(body_avatar)))
    av.material = _material(len(av))
    idx = torch.tensor([5, 1, 9])
    assert torch.equal(av.select(idx).material.albedo_logits, av.material.albedo_logits[idx])
    assert av.to("meta").material.albedo_logits.device.type == "meta" and av.material.albedo_logits.device.type == "cpu"
    # push some Gaussians far off the body: rigging with drop_far removes them and their materials
    far = torch.zeros(len(av), dtype=torch.bool)
    far[::7] = True
    av.gaussians.means[far] += torch.tensor([0.0, 0.0, 3.0])
    rigged, report = rig_avatar(av, body_template, drop_far=True, max_distance=0.5)
    assert report.dropped == int(far.sum()) and rigged.material is not None
    assert torch.equal(rigged.material.albedo_logits, av.material.albedo_logits[~far])
