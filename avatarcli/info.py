"""``avatar info``: the facts of an avatar file, as a dict ready for JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from avatarcli.avatar import Avatar, check_template
from avatarcli.binding import deform
from avatarcli.errors import AvatarError
from avatarcli.templates import load_template


def rest_bounds(avatar: Avatar, template_path: Path | None) -> list[list[float]] | None:
    """World-space bounds of the Gaussians in the rest pose, or None without the template."""
    try:
        tpl = load_template(avatar.kind, template_path)
        check_template(avatar, tpl)
    except AvatarError:
        return None
    with torch.no_grad():
        posed = tpl.pose(tpl.zero_pose(1), avatar.betas if avatar.betas.numel() else None)
        means = deform(avatar.gaussians, avatar.binding, tpl, posed).means[0]
    if len(means) == 0:
        return None
    return [means.min(0).values.tolist(), means.max(0).values.tolist()]


def describe(avatar: Avatar, template_path: Path | None = None) -> dict[str, Any]:
    meta = avatar.meta
    return {
        "kind": avatar.kind,
        "binding": avatar.binding.kind,
        "stage": meta.get("stage"),
        "gaussians": len(avatar),
        "sh_degree": avatar.gaussians.sh_degree,
        "prompt": meta.get("prompt"),
        "seed": meta.get("seed"),
        "template": meta.get("template", {}),
        "bounds": rest_bounds(avatar, template_path),
        "extra_tensors": sorted(avatar.extra),
        "history": meta.get("history", []),
        "format_version": meta.get("version"),
    }
