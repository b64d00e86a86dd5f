"""``avatar generate``: staged score distillation from a 2D diffusion model into an avatar.

``generate`` is the entry point; the recipes live in :mod:`avatarcli.generate.config`, the
loop in :mod:`avatarcli.generate.trainer`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from avatarcli.avatar import Avatar
from avatarcli.errors import AvatarError
from avatarcli.generate.checkpoint import checkpoint_path
from avatarcli.generate.config import GenerateConfig, recipe
from avatarcli.generate.trainer import Guidance, StepReport, Trainer
from avatarcli.templates import Template

__all__ = ["GenerateConfig", "StepReport", "Trainer", "generate", "recipe"]


def generate(
    avatar: Avatar,
    template: Template,
    guidance: Guidance,
    config: GenerateConfig,
    output: str | Path,
    resume: bool = False,
    on_step: Callable[[StepReport], None] | None = None,
    preview_dir: Path | None = None,
) -> Avatar:
    """Train ``avatar`` towards ``config.prompt`` and write it to ``output``.

    With ``resume`` the run continues from the checkpoint beside ``output``.
    """
    trainer = Trainer(avatar, template, guidance, config)
    if resume:
        ckpt = checkpoint_path(output)
        if not ckpt.exists():
            raise AvatarError(f"--resume: there is no checkpoint {ckpt}")
        trainer.restore(ckpt)
    return trainer.run(output, on_step, preview_dir)
