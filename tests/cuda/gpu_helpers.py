"""The CUDA suite's shared pieces: full-size random-weight diffusion folders and the real CLI.

The networks are the Stable Diffusion 1.5 architecture at random weights (speed and memory do
not depend on the weights), written once per machine as diffusers folders with
``save_pretrained`` and loaded back by ``avatar generate`` through ``from_pretrained``, the
path real weights take. The head's face ControlNet and the body's OpenPose ControlNet share
one architecture, so one folder serves both.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
MODELS = Path(os.environ.get("AVATARCLI_GPU_MODELS", "/tmp/avatarcli-gpu-models"))


@dataclass
class Models:
    base: Path
    controlnet: Path
    taesd: Path


def random_weight_models() -> Models:
    """The random-weight folders, built once per machine (other test processes wait)."""
    from avatarcli.generate.guidance.random_weights import write_sd15_folders

    paths = write_sd15_folders(MODELS, torch.device("cuda"))
    return Models(paths["base"], paths["controlnet"], paths["taesd"])


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    seconds: float


def _environment() -> dict[str, str]:
    """The environment of a CLI run: with several GPUs, each test worker (pytest-xdist) runs
    its commands on its own one."""
    env = dict(os.environ)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    count = torch.cuda.device_count()
    if count > 1 and "CUDA_VISIBLE_DEVICES" not in os.environ:
        env["CUDA_VISIBLE_DEVICES"] = str(int(worker.removeprefix("gw") or 0) % count)
    return env


def avatar(*args: str | Path, timeout: float = 900, check: bool = True) -> Run:
    """Run ``avatar ARGS`` as a user would: a fresh Python process on the real CLI."""
    cmd = [sys.executable, "-m", "avatarcli", *map(str, args)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=_environment())
    run = Run(proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - t0)
    if check and run.code != 0:
        raise AssertionError(f"avatar {' '.join(map(str, args))} exited {run.code}:\n{run.stderr[-4000:]}")
    return run


def metadata(path: Path) -> dict:
    """The avatarcli metadata of an .avatar or .ckpt file (read from its header only); {} if unreadable."""
    try:
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
        return json.loads(header["__metadata__"]["avatarcli"])
    except (OSError, ValueError, KeyError):
        return {}


def generate_killed_at(step: int, args: list[str | Path], checkpoint: Path, timeout: float = 900) -> float:
    """Start ``avatar generate ARGS``, SIGKILL it as soon as ``checkpoint`` records ``step``
    (a periodic checkpoint), and return the seconds it ran."""
    cmd = [sys.executable, "-m", "avatarcli", "generate", *map(str, args)]
    t0 = time.perf_counter()
    log = checkpoint.with_suffix(".log")
    with open(log, "w") as err:  # a file, not a pipe: nobody reads while it runs
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, text=True, cwd=ROOT, env=_environment())
        try:
            while metadata(checkpoint).get("step") != step:
                if proc.poll() is not None:
                    raise AssertionError(f"generate ended (exit {proc.returncode}) before step {step}:\n{log.read_text()[-4000:]}")
                if time.perf_counter() - t0 > timeout:
                    raise AssertionError(f"no checkpoint of step {step} within {timeout} s")
                time.sleep(0.5)
        finally:
            proc.kill()
            proc.wait()
    return time.perf_counter() - t0
