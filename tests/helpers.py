"""Helpers the tests share: running the CLI in-process, random poses, small renders."""

from __future__ import annotations

import contextlib
import io
import sys
from dataclasses import dataclass

import torch

from avatarcli.templates.template import Pose, Template


@dataclass
class Result:
    code: int
    stdout: bytes
    stderr: str


def patch_api(monkeypatch, name: str, replacement) -> None:  # type: ignore[no-untyped-def]
    """Replace ``name`` (a library function the commands call, e.g. ``load_template``) in every
    module of ``avatarcli.api`` that uses it."""
    import importlib
    import pkgutil

    import avatarcli.api

    found = False
    for info in pkgutil.iter_modules(avatarcli.api.__path__):
        module = importlib.import_module(f"avatarcli.api.{info.name}")
        if hasattr(module, name):
            monkeypatch.setattr(module, name, replacement)
            found = True
    assert found, f"no module of avatarcli.api uses {name}"


def _process_environment() -> dict[str, str]:
    """A child ``avatar``'s environment: this checkout's code, one CPU thread (so that runs
    compared with each other add their floats in the same order)."""
    import os
    from pathlib import Path

    return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}


def run_process(args: list[str], cwd, timeout: float = 600.0) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    """Run ``python -m avatarcli ARGS`` in a fresh process as :func:`sigterm_when` does; its
    exit status and stderr."""
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "avatarcli", *args], cwd=cwd, env=_process_environment(), capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip
    return proc.returncode, proc.stderr


def sigterm_when(args: list[str], cwd, ready, what: str, wait: float = 120.0) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    """Run ``python -m avatarcli ARGS`` (this checkout's code) in ``cwd``, send it SIGTERM once
    ``ready()`` holds, and return its exit status and stderr. Fails the test when ``what``
    (the awaited state) does not come within ``wait`` seconds, or the command is still
    running ``wait`` seconds after the signal."""
    import signal
    import subprocess
    import time

    proc = subprocess.Popen([sys.executable, "-m", "avatarcli", *args], cwd=cwd, env=_process_environment(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + wait
    while not ready():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"no {what} within {wait:g} s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    try:
        _, stderr = proc.communicate(timeout=wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"still running {wait:g} s after SIGTERM: {proc.communicate()[1][-3000:]}") from None
    return proc.returncode, stderr


def run_cli(*args: str, stdin: bytes = b"") -> Result:
    """Run ``avatar ARGS`` in this process; returns exit code, stdout bytes and stderr text."""
    from avatarcli import cli
    from avatarcli.console import console

    out = io.BytesIO()
    err = io.StringIO()

    stdout = io.TextIOWrapper(out, encoding="utf-8", write_through=True)
    stdin_w = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    old = (sys.stdout, sys.stdin, sys.argv, console.file)
    sys.stdout, sys.stdin, sys.argv = stdout, stdin_w, ["avatar", *args]
    console.file = err
    code = 0
    try:
        with contextlib.redirect_stderr(err):
            cli.main(list(args))
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        stdout.flush()
        sys.stdout, sys.stdin, sys.argv, console.file = old
    return Result(code, out.getvalue(), err.getvalue())


def random_pose(template: Template, batch: int, scale: float = 0.4, seed: int = 0) -> Pose:
    g = torch.Generator().manual_seed(seed)
    return Pose(
        torch.randn(batch, template.num_joints, 3, generator=g) * scale,
        torch.randn(batch, template.num_expression, generator=g),
        torch.randn(batch, 3, generator=g) * 0.1,
    )


def train_and_write(avatar, template, guidance, config, output, resume=False, on_step=None, preview_dir=None):  # type: ignore[no-untyped-def]
    """A generation run with a guidance and configuration the test built itself (what
    ``api.generate`` does once it has loaded the networks)."""
    from avatarcli.generate.checkpoint import checkpoint_path
    from avatarcli.generate.trainer import Trainer

    trainer = Trainer(avatar, template, guidance, config)
    if resume:
        trainer.restore(checkpoint_path(output))
    return trainer.run(output, on_step, preview_dir)


def random_head_motion(seconds: float, fps: float, seed: int = 0):  # type: ignore[no-untyped-def]
    """A head motion of smooth random curves: neck turns (yaw up to 0.4 rad, pitch 0.2, roll
    0.1), jaw opening (0 to 0.25 rad), gaze (0.2 rad), every expression of the built-in head
    (0 to 0.8) and a few blinks."""
    import math

    from avatarcli.motion.motion import Motion

    g = torch.Generator().manual_seed(seed)
    t = torch.arange(round(seconds * fps) + 1, dtype=torch.float32) / fps

    def curve(amplitude: float, positive: bool = False) -> torch.Tensor:
        freq = 0.3 + 1.2 * torch.rand(3, generator=g)
        phase = 2 * math.pi * torch.rand(3, generator=g)
        s = (torch.sin(2 * math.pi * freq[:, None] * t[None] + phase[:, None]) * torch.tensor([0.6, 0.3, 0.1])[:, None]).sum(0)
        return amplitude * (0.5 * (1 + s) if positive else s)

    rot = torch.zeros(len(t), 5, 3)
    rot[:, 1] = torch.stack([curve(0.2), curve(0.4), curve(0.1)], dim=-1)
    rot[:, 2, 0] = curve(0.25, positive=True)
    gaze = torch.stack([curve(0.2), curve(0.2), torch.zeros(len(t))], dim=-1)
    rot[:, 3], rot[:, 4] = gaze, gaze
    expr = torch.stack([curve(0.8, positive=True) for _ in range(10)], dim=-1)
    blink = torch.zeros(len(t))
    for tb in (torch.rand(2, generator=g) * seconds).tolist():
        blink = torch.maximum(blink, torch.exp(-(((t - tb) / 0.06) ** 2)))
    expr[:, 5] = blink
    return Motion("head", rot, expr, torch.zeros(len(t), 3), float(fps), f"random head motion (seed {seed})").validate()


def walk_across(seconds: float, fps: float):  # type: ignore[no-untyped-def]
    """The built-in walk turned a quarter to the subject's left: a front camera sees the body
    from its side, walking across the image."""
    import math

    from avatarcli.motion.builtin import builtin_motion
    from avatarcli.motion.motion import Motion
    from avatarcli.motion.readers import turn_world
    from avatarcli.rotations import axis_angle_to_matrix

    walk = builtin_motion("walk", "body", seconds=seconds, fps=fps)
    rot, trans = turn_world(walk.rotations, walk.translation, axis_angle_to_matrix(torch.tensor([0.0, math.pi / 2, 0.0])))
    return Motion("body", rot, walk.expression, trans, fps, "walk across").validate()


def peak_memory(args: list[str], stdin_command: str | None = None, timeout: float = 300.0) -> tuple[int, str, int]:
    """Run ``python -m avatarcli ARGS`` (this checkout's code), its standard input piped from
    the shell command ``stdin_command`` when given; returns its exit status, its stderr and
    the peak resident memory in bytes of the processes it took (measured by a Python process
    that runs nothing else)."""
    import os
    import shlex
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    command = shlex.join([sys.executable, "-m", "avatarcli", *args])
    if stdin_command is not None:
        command = f"{stdin_command} | {command}"
    probe = (
        "import resource, subprocess, sys; r = subprocess.run(sys.argv[1], shell=True, stdout=subprocess.DEVNULL); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)"
    )
    env = {**os.environ, "PYTHONPATH": str(root)}
    r = subprocess.run([sys.executable, "-c", probe, command], capture_output=True, text=True, env=env, timeout=timeout)
    return r.returncode, r.stderr, int(r.stdout.split()[-1]) * 1024  # ru_maxrss is in KiB on Linux


def encode_hdr(image, rle: bool = True) -> bytes:  # type: ignore[no-untyped-def]
    """Linear radiance (H, W, 3) as Radiance .hdr bytes, flat or run-length encoded (as Radiance
    and HDR tools write them), for tests of the reader and of ``--light FILE.hdr``."""
    import numpy as np

    h, w, _ = image.shape
    img = np.asarray(image, np.float64).clip(0, None)
    peak = img.max(-1)
    mant, exp = np.frexp(peak)
    keep = peak > 1e-32
    scale = np.where(keep, mant * 256.0 / np.where(keep, peak, 1.0), 0.0)
    rgbe = np.zeros((h, w, 4), np.uint8)
    rgbe[..., :3] = np.where(keep[..., None], np.floor(img * scale[..., None]).clip(0, 255), 0).astype(np.uint8)
    rgbe[..., 3] = np.where(keep, exp + 128, 0).astype(np.uint8)
    out = bytearray(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n" + f"-Y {h} +X {w}\n".encode())
    for row in rgbe:
        if not rle or not 8 <= w < 32768:
            out += row.tobytes()
            continue
        out += bytes([2, 2, w >> 8, w & 255])
        for c in range(4):
            chan, x = row[:, c], 0
            while x < w:
                run = 1
                while x + run < w and run < 127 and chan[x + run] == chan[x]:
                    run += 1
                if run >= 3:
                    out += bytes([128 + run, int(chan[x])])
                    x += run
                    continue
                start = x
                while x < w and x - start < 128 and not (x + 2 < w and chan[x] == chan[x + 1] == chan[x + 2]):
                    x += 1
                out += bytes([x - start]) + chan[start:x].tobytes()
    return bytes(out)


def with_pose_model(avatar, template, seed: int = 0, live: bool = True):  # type: ignore[no-untyped-def]
    """A copy of ``avatar`` with a pose-dependent model fitted to random poses; ``live`` gives
    its last layer random weights, so that its offsets are not zero and change with the pose."""
    from avatarcli.model.pose_dependent import new_pose_dependent

    av = avatar.to("cpu")
    with torch.no_grad():
        rest = av.posed(template.to("cpu")).means[0]
    av.pose_dependent = new_pose_dependent(template.kind, template.num_expression, random_pose(template, 64, 0.3), rest, 0.5, seed=seed)
    if live:
        g = torch.Generator().manual_seed(seed + 1)
        last = av.pose_dependent.network.net[-1]
        with torch.no_grad():
            last.weight.copy_(torch.randn(last.weight.shape, generator=g) * 0.3)
            last.bias.copy_(torch.randn(last.bias.shape, generator=g) * 0.3)
    return av
