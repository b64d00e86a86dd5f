"""``init``, ``rig`` and ``info``: make an avatar on a template, bind one (or any 3DGS .ply)
to it, and describe one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from avatarcli.api.inputs import (
    AvatarInput,
    check_avatar_output,
    check_finite,
    check_kind,
    check_points_per_triangle,
    check_seed,
    load_avatar,
    paths,
    save_avatar,
)
from avatarcli.errors import AvatarError
from avatarcli.formats.ply import read_ply
from avatarcli.model.avatar import Avatar
from avatarcli.model.initialize import init_avatar
from avatarcli.model.rigging import RigReport, rig_avatar, rig_splat
from avatarcli.templates.loading import load_template


def init(
    model: str = "head",
    output: str | Path | None = None,
    *,
    template: str | Path | None = None,
    points_per_triangle: int = 10,
    seed: int = 0,
    history: str | None = None,
) -> Avatar:
    """Rigged Gaussians sampled on a template: ``points_per_triangle`` on every triangle.

    Writes ``output`` (``-``: stdout) when given; returns the avatar.
    """
    check_kind(model)
    check_points_per_triangle(points_per_triangle)
    check_seed(seed)
    if output is not None:
        check_avatar_output(output, paths(template))
    avatar = init_avatar(load_template(model, template), points_per_triangle, seed)
    save_avatar(avatar, output, history)
    return avatar


def rig(
    source: AvatarInput,
    output: str | Path | None = None,
    *,
    model: str | None = None,
    template: str | Path | None = None,
    fit: bool = False,
    max_distance: float | None = None,
    drop_far: bool = False,
    smooth: bool = True,
    history: str | None = None,
) -> tuple[Avatar, RigReport]:
    """Bind Gaussians to a template: an avatar (re-rigged from its rest-pose positions) or a
    3DGS .ply from any tool (``model`` says whether it is a head or a body).

    Args:
        fit: scale and move a .ply onto the template by bounding boxes first.
        max_distance: metres from the template beyond which Gaussians count as far.
        drop_far: remove the far Gaussians.
        smooth: smooth body weights over neighbouring Gaussians.
    """
    check_kind(model)
    check_finite("the far distance", max_distance)
    if max_distance is not None and max_distance <= 0:
        raise AvatarError(f"the far distance must be positive (got {max_distance})")
    if output is not None:
        check_avatar_output(output, paths(source, template))
    kwargs: dict[str, Any] = {"max_distance": max_distance, "drop_far": drop_far, "smooth": smooth}
    if not isinstance(source, Avatar) and str(source).lower().endswith(".ply"):
        if model is None:
            raise AvatarError("say what the splat is: a head or a body model")
        av, report = rig_splat(read_ply(source), load_template(model, template), fit=fit, **kwargs)
    else:
        start = load_avatar(source)
        if model is not None and model != start.kind:
            raise AvatarError(f"the avatar is a {start.kind}, not a {model}")
        if fit:
            raise AvatarError("fitting applies to .ply input; an avatar is already on its template")
        av, report = rig_avatar(start, load_template(start.kind, template), **kwargs)
    save_avatar(av, output, history)
    return av, report


def info(avatar: AvatarInput, template: str | Path | None = None) -> dict[str, Any]:
    """The facts of an avatar, as a dict ready for JSON. ``bounds`` (rest pose, metres) is
    None when the template cannot be loaded or does not match."""
    av = load_avatar(avatar)
    meta = av.meta
    bounds = None
    try:
        tpl = load_template(av.kind, template)
        with torch.no_grad():
            means = av.posed(tpl).means[0]
        if len(means):
            bounds = [means.min(0).values.tolist(), means.max(0).values.tolist()]
    except AvatarError:
        pass
    return {
        "kind": av.kind,
        "binding": av.binding.kind,
        "stage": meta.get("stage"),
        "gaussians": len(av),
        "sh_degree": av.gaussians.sh_degree,
        "prompt": meta.get("prompt"),
        "seed": meta.get("seed"),
        "template": meta.get("template", {}),
        "bounds": bounds,
        "extra_tensors": sorted(av.extra),
        "materials": None if av.material is None else {"light": "captured" if av.material.light is not None else None},
        "pose_dependent": meta.get("pose_dependent"),
        "history": meta.get("history", []),
        "format_version": meta.get("version"),
    }
