"""Several processes training one avatar: N processes with batch B/N each reproduce one
process with batch B (the same Gaussians after densification, the same losses within float
tolerance). Two CPU processes talk through gloo here; on GPUs the same code uses NCCL."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from avatarcli.generate import distributed
from avatarcli.generate.config import DensifyConfig, recipe
from avatarcli.generate.guidance.diffusion import DiffusionGuidance, GuidanceConfig
from avatarcli.generate.guidance.random_weights import tiny_components
from avatarcli.generate.trainer import Trainer
from avatarcli.model import avatar_file
from avatarcli.model.initialize import init_avatar
from avatarcli.templates.loading import load_template

STEPS = 4


def _train(rank: int, size: int, port: int, kind: str, folder: str, passes: int) -> None:
    """One process of a run (``size`` 1: the whole run); the first writes what it made."""
    torch.set_num_threads(1)
    cpu = torch.device("cpu")
    group = distributed.join(rank, size, cpu, port=port) if size > 1 else None
    try:
        tpl = load_template(kind)
        guide = DiffusionGuidance(tiny_components(cpu, 0), GuidanceConfig(score="nfsd" if kind == "head" else "asd", resolution=64))
        cfg = recipe(kind, "a knight", steps=STEPS, batch=4, resolution=64, checkpoint_every=0)
        cfg.densify = DensifyConfig(start=2, stop=STEPS, every=2, grad_threshold=5e-6)  # about a tenth of them grow
        trainer = Trainer(init_avatar(tpl, 1, 0), tpl, guide, cfg, group, passes)
        losses: list[float] = []
        trainer.train(lambda r: losses.append(r.loss))
        if rank == 0:
            avatar_file.save(trainer.avatar(), Path(folder) / "avatar")
            (Path(folder) / "losses.json").write_text(json.dumps(losses))
    finally:
        distributed.leave()


def _run(size: int, passes: int, kind: str, folder: Path) -> tuple[avatar_file.Avatar, list[float]]:
    """A run in ``size`` fresh processes of one thread each (so every one computes alike)."""
    folder.mkdir()
    port = distributed.free_port()
    mp.start_processes(_train, args=(size, port, kind, str(folder), passes), nprocs=size, start_method="spawn")
    return avatar_file.load(folder / "avatar"), json.loads((folder / "losses.json").read_text())


def _fields(av: avatar_file.Avatar) -> dict[str, torch.Tensor]:
    return {n: getattr(av.gaussians, n) for n in ("means", "log_scales", "quats", "opacity_logits", "sh")}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["head", "body"])
def test_two_processes_reproduce_one(kind: str, tmp_path: Path, head_template, body_template) -> None:
    """Two processes with 2 views each give exactly what one process gives with the 4 views
    in two passes (its gradients added up in the same order: a + b); one pass over all 4
    views differs from both only by float rounding."""
    two, two_losses = _run(2, 1, kind, tmp_path / "two")
    one, one_losses = _run(1, 2, kind, tmp_path / "one")
    start = init_avatar(head_template if kind == "head" else body_template, 1, 0)
    assert len(two) == len(one) != len(start)  # densification grew it, the same way
    for name, value in _fields(one).items():
        assert torch.equal(value, _fields(two)[name]), name
    assert two_losses == one_losses
    if kind == "body":
        ra, rb = one.binding.residual.state_dict(), two.binding.residual.state_dict()
        assert all(torch.equal(ra[k], rb[k]) for k in ra)
    _, single_losses = _run(1, 1, kind, tmp_path / "single")
    assert single_losses == pytest.approx(one_losses, rel=1e-4)  # Adam magnifies rounding a little, step by step


def test_the_views_of_a_step_split_evenly() -> None:
    shares = [distributed.Group(r, 4, torch.device("cpu")).share(8) for r in range(4)]
    assert [(s.start, s.stop) for s in shares] == [(0, 2), (2, 4), (4, 6), (6, 8)]
    from avatarcli.errors import AvatarError

    with pytest.raises(AvatarError, match="divide evenly"):
        distributed.Group(0, 3, torch.device("cpu")).share(8)


@pytest.mark.slow
def test_cli_generate_on_two_processes(tmp_path: Path) -> None:
    """`avatar generate --gpus 2` (CPU processes here): the first process writes the avatar
    and checkpoint once, the run's record says two processes took part."""
    from helpers import run_cli

    out = tmp_path / "k.avatar"
    r = run_cli("generate", "a knight", "--guidance", "tiny", "--gpus", "2", "--device", "cpu", "--steps", "3", "--batch", "2",
                "--resolution", "64", "-k", "1", "--checkpoint-every", "2", "-o", str(out))  # fmt: skip
    assert r.code == 0, r.stderr
    av = avatar_file.load(out)
    assert av.meta["stage"] == "generated" and av.meta["steps"] == 3 and av.meta["run"]["processes"] == 2
    assert out.with_suffix(".ckpt").exists()
    bad = run_cli("generate", "a knight", "--guidance", "tiny", "--gpus", "3", "--device", "cpu", "--batch", "2", "-o", str(out))
    assert bad.code == 2 and "divide evenly" in bad.stderr


def test_sigterm_to_the_first_process_stops_them_all(tmp_path: Path) -> None:
    """`kill PID` reaches only the process the user started: it tells the training processes,
    which finish their step and checkpoint; the command exits 130 well before the run's end."""
    from helpers import sigterm_when

    out = tmp_path / "k.avatar"
    args = ["generate", "a knight", "--guidance", "tiny", "--gpus", "2", "--device", "cpu", "--steps", "100000", "--batch", "2",
            "--resolution", "32", "-k", "1", "--checkpoint-every", "1", "-o", str(out)]  # fmt: skip
    code, err = sigterm_when(args, tmp_path, out.with_suffix(".ckpt").exists, "checkpoint", wait=240.0)
    assert code == 130, err
    assert "interrupted" in err
    assert not out.exists()  # only a finished run writes the output
    av = avatar_file.load(out.with_suffix(".unfinished.avatar"))
    assert av.meta["stage"].startswith("animate@") or av.meta["stage"].startswith("canonical@"), av.meta["stage"]


def _children(pid: int) -> list[int]:
    """The training processes (multiprocessing's spawned children) of process ``pid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and b"spawn_main" in cmdline:
            found.append(int(stat.parent.name))
    return found


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the processes end with their parent on Linux")
def test_sigkill_of_the_first_process_stops_them_all(tmp_path: Path) -> None:
    """SIGKILL of the process the user started cannot be passed on: the training processes
    learn of it from the system (SIGTERM at their parent's death), checkpoint and end."""
    import os
    import subprocess
    import time

    out = tmp_path / "k.avatar"
    root = Path(__file__).resolve().parents[2]
    cmd = [sys.executable, "-m", "avatarcli", "generate", "a knight", "--guidance", "tiny", "--gpus", "2", "--device", "cpu",
           "--steps", "100000", "--batch", "2", "--resolution", "32", "-k", "1", "--checkpoint-every", "1", "-o", str(out)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children: list[int] = []
    try:
        deadline = time.monotonic() + 240
        while not out.with_suffix(".ckpt").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint"
            time.sleep(0.1)
        children = _children(proc.pid)
        assert len(children) == 2, children
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 120
        while any(_running(c) for c in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_running(c) for c in children), "the training processes outlived their parent"
        assert avatar_file.load(out.with_suffix(".unfinished.avatar")).meta["stage"].split("@")[0] in ("canonical", "animate")
    finally:
        proc.kill()
        for c in children:
            if _running(c):
                os.kill(c, 9)
