"""The files a run keeps beside its output: its own are replaced, a user's only with --force,
and the user's avatar at the output survives until the run finishes."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save as st_save

from avatarcli.errors import AvatarError
from avatarcli.generate import checkpoint
from avatarcli.generate.run_files import check_run_files, is_run_checkpoint, is_unfinished_avatar
from avatarcli.model import avatar_file

from helpers import run_cli

TINY = ("--guidance", "tiny", "--steps", "2", "--batch", "1", "--resolution", "32", "-k", "1")


def _safetensors(path, meta: dict) -> None:
    path.write_bytes(st_save({"x": torch.zeros(1)}, metadata={"avatarcli": json.dumps(meta)}))


def test_a_run_tells_its_own_files_by_their_content(tmp_path, head_avatar):
    ckpt, unfinished = tmp_path / "g.ckpt", tmp_path / "g.unfinished.avatar"
    _safetensors(ckpt, {"format": checkpoint.FORMAT, "step": 5})
    assert is_run_checkpoint(ckpt)
    for content in (b"mine\n", b"", st_save({"x": torch.zeros(1)})):
        ckpt.write_bytes(content)
        assert not is_run_checkpoint(ckpt)
    snapshot = head_avatar.select(torch.arange(10))
    for stage, own in (("animate@5", True), ("canonical@120", True), ("init", False), ("generated", False), ("rigged", False)):
        snapshot.meta["stage"] = stage
        avatar_file.save(snapshot, unfinished)
        assert is_unfinished_avatar(unfinished) == own, stage
    check_run_files(tmp_path / "g.avatar", force=True)  # --force lets the run replace them
    with pytest.raises(AvatarError, match=r"g\.ckpt is not a checkpoint of an earlier run"):
        check_run_files(tmp_path / "g.avatar")
    ckpt.unlink()
    with pytest.raises(AvatarError, match="not an earlier run's unfinished avatar"):
        check_run_files(tmp_path / "g.avatar")


def test_a_users_checkpoint_is_replaced_only_with_force_and_a_runs_own_without(tmp_path):
    """``echo mine > model.ckpt; avatar generate ... -o model.avatar`` destroyed model.ckpt:
    refused now (the table in test_cli_bad_inputs), and replaced with --force. A run's own
    checkpoint, from an earlier run of the same output, is replaced without a word."""
    (tmp_path / "model.ckpt").write_bytes(b"mine\n")
    out = tmp_path / "model.avatar"
    r = run_cli("generate", "x", *TINY, "-o", str(out))
    assert r.code == 2 and "not a checkpoint of an earlier run" in r.stderr, r.stderr
    assert (tmp_path / "model.ckpt").read_bytes() == b"mine\n"
    r = run_cli("generate", "x", *TINY, "--force", "-o", str(out))
    assert r.code == 0, r.stderr
    assert is_run_checkpoint(tmp_path / "model.ckpt") and avatar_file.load(out).meta["stage"] == "generated"
    r = run_cli("generate", "y", *TINY, "-o", str(out))  # the earlier run's checkpoint and avatar: replaced
    assert r.code == 0, r.stderr
    assert avatar_file.load(out).meta["prompt"] == "y"
