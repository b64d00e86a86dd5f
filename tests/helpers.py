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
