"""The .avatar file: round trips, validation, atomic writes."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from avatarcli.errors import AvatarError
from avatarcli.fileio import atomic_path
from avatarcli.model import avatar_file
from avatarcli.model.avatar import Avatar

from helpers import random_pose, with_pose_model


def test_round_trip(head_avatar, body_avatar, tmp_path):
    for av in (head_avatar, body_avatar):
        path = tmp_path / f"{av.kind}.avatar"
        av.add_history("avatar test")
        avatar_file.save(av, path)
        back = avatar_file.load(path)
        assert back.kind == av.kind and back.binding.kind == av.binding.kind
        for name in ("means", "log_scales", "quats", "opacity_logits", "sh"):
            assert torch.equal(getattr(back.gaussians, name), getattr(av.gaussians, name))
        for name, t in av.binding.tensors().items():
            assert torch.equal(back.binding.tensors()[name], t)
        assert back.meta["history"][-1]["command"] == "avatar test"
        assert back.meta["template"]["sha256"] == av.meta["template"]["sha256"]


def test_extra_tensors_survive(head_avatar):
    av = Avatar(head_avatar.kind, head_avatar.gaussians, head_avatar.binding, head_avatar.betas, dict(head_avatar.meta),
                            {"binding.residual.layer0": torch.arange(6.0).reshape(2, 3)})  # fmt: skip
    back = avatar_file.from_bytes(avatar_file.to_bytes(av))
    assert torch.equal(back.extra["binding.residual.layer0"], torch.arange(6.0).reshape(2, 3))


def test_metadata_is_plain_json(head_avatar):
    data = avatar_file.to_bytes(head_avatar)
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    meta = json.loads(header["__metadata__"]["avatarcli"])
    assert meta["format"] == "avatarcli.avatar" and meta["version"] == avatar_file.VERSION and meta["kind"] == "head"


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda data: b"", "too short"),
        (lambda data: data[: len(data) // 2], "truncated"),
        (lambda data: b"PK\x03\x04" + b"\x00" * 100, "not an avatar"),
        (lambda data: st_save({"x": torch.zeros(3)}), "not an avatar"),
        (lambda data: data[:8] + b"X" + data[9:], "not an avatar"),
    ],
)
def test_bad_files_are_refused(head_avatar, make, message):
    with pytest.raises(AvatarError, match=message):
        avatar_file.from_bytes(make(avatar_file.to_bytes(head_avatar)))


def test_nan_and_wrong_shapes_are_refused(head_avatar):
    g = head_avatar.gaussians
    bad = Avatar("head", type(g)(g.means.clone(), g.log_scales, g.quats, g.opacity_logits, g.sh), head_avatar.binding,
                             head_avatar.betas, dict(head_avatar.meta))  # fmt: skip
    bad.gaussians.means[3, 1] = float("nan")
    with pytest.raises(AvatarError, match="NaN"):
        avatar_file.from_bytes(avatar_file.to_bytes(bad))
    short = Avatar("head", g, type(head_avatar.binding)(head_avatar.binding.face_idx[:-1]), head_avatar.betas,
                               dict(head_avatar.meta))  # fmt: skip
    with pytest.raises(AvatarError, match="face_idx"):
        avatar_file.from_bytes(avatar_file.to_bytes(short))


def test_newer_versions_are_refused(head_avatar):
    meta = dict(head_avatar.meta)
    av = Avatar("head", head_avatar.gaussians, head_avatar.binding, head_avatar.betas, meta)
    data = avatar_file.to_bytes(av)
    data = data.replace(f'\\"version\\": {avatar_file.VERSION}'.encode(), b'\\"version\\": 9')
    with pytest.raises(AvatarError, match="newer"):
        avatar_file.from_bytes(data)


def test_files_of_earlier_versions_read(head_avatar):
    data = avatar_file.to_bytes(head_avatar)
    for version in (1, 2):
        back = avatar_file.from_bytes(data.replace(b'\\"version\\": 3', f'\\"version\\": {version}'.encode()))
        assert back.pose_dependent is None and torch.equal(back.gaussians.means, head_avatar.gaussians.means)


@pytest.mark.parametrize("kind", ["head", "body"])
def test_a_pose_dependent_model_round_trips(kind, head_avatar, body_avatar, head_template, body_template):
    av, tpl = (head_avatar, head_template) if kind == "head" else (body_avatar, body_template)
    model = with_pose_model(av, tpl)
    back = avatar_file.from_bytes(avatar_file.to_bytes(model))
    assert back.meta["pose_dependent"] == model.pose_dependent.network.config
    assert torch.equal(back.pose_dependent.latents, model.pose_dependent.latents)
    assert not any(k.startswith("pose.") for k in back.extra)
    pose = random_pose(tpl, 2, 0.3, seed=3)
    a, b = model.posed(tpl, pose), back.posed(tpl, pose)
    assert torch.equal(a.means, b.means) and torch.equal(a.sh, b.sh) and torch.equal(a.opacities, b.opacities)
    # an avatar that lost its model is written without its settings
    back.pose_dependent = None
    assert "pose_dependent" not in avatar_file.from_bytes(avatar_file.to_bytes(back)).meta


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c.update(rank=100_000), "rank"),
        (lambda c: c.update(features="body"), "features"),
        (lambda c: c.update(clip=-1.0), "clip"),
        (lambda c: c["scales"].pop("color"), "scales"),
        (lambda c: c.update(components=40), "components"),
        (lambda c: c.pop("width"), "pose_dependent"),
    ],
)
def test_bad_pose_dependent_settings_are_refused_before_anything_is_built(edit, message, head_avatar, head_template):
    model = with_pose_model(head_avatar, head_template)
    data = avatar_file.to_bytes(model)
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    meta = json.loads(header["__metadata__"]["avatarcli"])
    edit(meta["pose_dependent"])
    tensors = st_load(data)
    with pytest.raises(AvatarError, match=message):
        avatar_file.from_bytes(st_save(tensors, metadata={"avatarcli": json.dumps(meta)}))


def test_pose_dependent_tensors_are_checked(head_avatar, head_template):
    model = with_pose_model(head_avatar, head_template)
    tensors = st_load(avatar_file.to_bytes(model))
    meta = {"avatarcli": json.dumps({**model.meta, "format": "avatarcli.avatar", "version": 3, "kind": "head", "binding": "triangle",
                                     "pose_dependent": model.pose_dependent.network.config})}  # fmt: skip
    for key, value, message in (("pose.latents", tensors["pose.latents"][:-1], "pose.latents"),
                                ("pose.network.std", -tensors["pose.network.std"], "not positive"),
                                ("pose.network.net.0.weight", tensors["pose.network.net.0.weight"] * float("nan"), "NaN")):  # fmt: skip
        bad = dict(tensors)
        bad[key] = value
        with pytest.raises(AvatarError, match=message):
            avatar_file.from_bytes(st_save(bad, metadata=meta))
    missing = {k: v for k, v in tensors.items() if k != "pose.network.mean"}
    with pytest.raises(AvatarError, match="missing"):
        avatar_file.from_bytes(st_save(missing, metadata=meta))


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.avatar"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.avatar"]


def test_moving_a_copy_leaves_the_original_where_it_was(body_avatar, body_template):
    """``.to`` and ``select`` return copies: the residual network and the metadata of the
    original are never moved or changed through them (``Module.to`` works in place)."""
    from avatarcli.model.binding import ResidualWeights, SkinningBinding

    b = body_avatar.binding
    own = ResidualWeights(body_template.num_joints, 1.0)
    av = Avatar("body", body_avatar.gaussians, SkinningBinding(b.weights, b.face_idx, b.bary, own), body_avatar.betas,
                            {"template": dict(body_avatar.meta["template"]), "history": []})  # fmt: skip
    moved = av.to("meta")
    assert all(p.device.type == "meta" for p in moved.binding.residual.parameters())
    assert all(p.device.type == "cpu" for p in own.parameters())  # the original's network stayed
    assert av.binding.residual is own and moved.binding.residual is not own
    assert av.select(torch.arange(3)).binding.residual is not own
    moved.add_history("avatar edit")
    av.select(torch.arange(3)).add_history("avatar edit")
    assert av.meta["history"] == []  # nor is its metadata shared
