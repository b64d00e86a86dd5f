"""Interruptions: Ctrl-C and SIGTERM end every command with "interrupted", exit status 130 and
no half-written file; SIGTERM unwinds like Ctrl-C does."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as st_save

from avatarcli.generate import checkpoint
from avatarcli.model import avatar_file
from avatarcli.signals import Interrupted, interrupts_raise

from helpers import patch_api, run_cli, sigterm_when


def test_sigterm_raises_within_the_block_and_not_after():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as caught:
        with interrupts_raise():
            assert signal.getsignal(signal.SIGTERM) is not before
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises before this ends
    assert caught.value.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.fixture(scope="module")
def small_head(tmp_path_factory, head_avatar) -> Path:
    path = tmp_path_factory.mktemp("avatar") / "head.avatar"
    avatar_file.save(head_avatar.select(torch.arange(0, len(head_avatar), 50)), path)
    return path


@pytest.mark.parametrize(
    "command",
    [
        ("init", "-k", "1", "-o", "{w}/a.avatar"),
        ("generate", "x", "--guidance", "tiny", "--steps", "1", "-o", "{w}/g.avatar"),
        ("info", "{a}"),
        ("render", "{a}", "-o", "{w}/v.png"),
        ("rig", "{a}", "-o", "{w}/r.avatar"),
        ("animate", "{a}", "talk", "-o", "{w}/t.mp4"),
        ("export", "{a}", "-o", "{w}/e.ply"),
        ("motions", "walk", "-o", "{w}/w.npz"),
    ],
)
def test_ctrl_c_in_any_command_is_exit_130(small_head, tmp_path, monkeypatch, command):
    patch_api(monkeypatch, "load_template", _interrupt)
    patch_api(monkeypatch, "builtin_motion", _interrupt)
    r = run_cli(*(a.format(a=small_head, w=tmp_path) for a in command))
    assert r.code == 130, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("interrupted"), r.stderr  # generate warns about tiny guidance first
    assert "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_during_generate_saves_and_exits_130(tmp_path, monkeypatch):
    """The trainer finishes the step under way and checkpoints; the command says how to
    continue and exits 130 (typer's exit status was dropped before)."""
    from avatarcli.generate.trainer import Trainer

    step = Trainer.train_step

    def step_then_ctrl_c(self):
        report = step(self)
        if self.step == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return report

    monkeypatch.setattr(Trainer, "train_step", step_then_ctrl_c)
    out = tmp_path / "g.avatar"
    r = run_cli("generate", "x", "--guidance", "tiny", "--steps", "5", "--batch", "1", "--resolution", "32", "-k", "1", "-o", str(out))
    assert r.code == 130, r.stderr
    assert "--resume" in r.stderr
    # the signal came after step 2 had looked for one: step 3 is the step under way, finished and
    # saved as g.unfinished.avatar; g.avatar is left for the finished run (a Makefile target)
    assert avatar_file.load(tmp_path / "g.unfinished.avatar").meta["stage"] == "animate@3"
    assert not out.exists()
    assert "g.unfinished.avatar" in r.stderr.replace("\n", "")  # the console wraps long lines


def test_ctrl_c_before_the_first_step_does_not_claim_an_old_checkpoint(tmp_path, monkeypatch):
    """A checkpoint left by an earlier run is not this run's: stopped while loading, the
    command says nothing was saved (and leaves the old file as it was)."""

    def interrupted_while_loading(*args, **kwargs):
        raise Interrupted(signal.SIGINT)

    patch_api(monkeypatch, "load_template", interrupted_while_loading)
    old = tmp_path / "g.ckpt"
    earlier = st_save({"x": torch.zeros(1)}, metadata={"avatarcli": json.dumps({"format": checkpoint.FORMAT, "step": 2})})
    old.write_bytes(earlier)
    r = run_cli("generate", "x", "--guidance", "tiny", "--steps", "5", "-o", str(tmp_path / "g.avatar"))
    assert r.code == 130, r.stderr
    assert "nothing was saved" in r.stderr and "--resume" not in r.stderr, r.stderr
    assert old.read_bytes() == earlier


def test_ctrl_c_leaves_the_users_avatar_at_the_output_as_it_was(small_head, tmp_path, monkeypatch):
    """``cp head.avatar mine.avatar; avatar generate ... -o mine.avatar``, Ctrl-C after the
    first checkpoint: exit 130 and mine.avatar as it was (the first checkpoint used to remove
    it); the resumed run, once finished, replaces it."""
    from avatarcli.generate.trainer import Trainer

    step, armed = Trainer.train_step, [True]

    def step_then_ctrl_c(self):
        report = step(self)
        if armed[0] and self.step == 2:
            armed[0] = False
            os.kill(os.getpid(), signal.SIGINT)
        return report

    monkeypatch.setattr(Trainer, "train_step", step_then_ctrl_c)
    mine = tmp_path / "mine.avatar"
    mine.write_bytes(small_head.read_bytes())
    args = ("generate", "x", "--guidance", "tiny", "--steps", "4", "--batch", "1", "--resolution", "32", "-k", "1",
            "--checkpoint-every", "1", "-o", str(mine))  # fmt: skip
    r = run_cli(*args)
    assert r.code == 130, r.stderr
    assert mine.read_bytes() == small_head.read_bytes()
    assert avatar_file.load(tmp_path / "mine.unfinished.avatar").meta["stage"] == "animate@3"
    assert run_cli(*args, "--resume").code == 0
    assert avatar_file.load(mine).meta["stage"] == "generated" and not (tmp_path / "mine.unfinished.avatar").exists()


def test_resume_keeps_the_commands_of_the_interrupted_run(tmp_path, monkeypatch):
    """The resumed avatar's history names the command that started the run and the one that
    resumed it (the checkpoint carries the first)."""
    from avatarcli.generate.trainer import Trainer

    step, armed = Trainer.train_step, [True]

    def step_then_ctrl_c(self):
        report = step(self)
        if armed[0] and self.step == 2:
            armed[0] = False
            os.kill(os.getpid(), signal.SIGINT)
        return report

    monkeypatch.setattr(Trainer, "train_step", step_then_ctrl_c)
    out = tmp_path / "g.avatar"
    args = ("generate", "x", "--guidance", "tiny", "--steps", "5", "--batch", "1", "--resolution", "32", "-k", "1", "-o", str(out))
    assert run_cli(*args).code == 130
    r = run_cli(*args, "--resume")
    assert r.code == 0, r.stderr
    commands = [h["command"] for h in avatar_file.load(out).meta["history"]]
    assert len(commands) == 2, commands
    assert "generate" in commands[0] and "--resume" not in commands[0] and "--resume" in commands[1]
    assert not (tmp_path / "g.unfinished.avatar").exists()


@pytest.mark.parametrize("output", ["clip.mp4", "clip.gif", "frames"])
def test_sigterm_during_animate_leaves_no_partial_file(small_head, tmp_path, output):
    """A real ``avatar animate`` process gets SIGTERM while it writes: it says it was
    interrupted, exits 130 and removes its partial output."""
    args = ["animate", str(small_head), "walk", "-o", str(tmp_path / output), "--fps", "60", "--size", "64", "--batch", "1"]
    code, stderr = sigterm_when(args, tmp_path, lambda: any(".partial" in p.name for p in tmp_path.iterdir()), "partial output")
    assert code == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == []
