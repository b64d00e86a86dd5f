"""The ``avatar`` application: its shared options, and the helpers its commands share."""

from __future__ import annotations

import functools
import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from avatarcli import __version__
from avatarcli.console import console
from avatarcli.generate.guidance.diffusion import DEFAULT_SPECS

app = typer.Typer(
    name="avatar",
    help="Animatable 3D Gaussian avatars from a text prompt, driven by motion files.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

OutputOpt = Annotated[str, typer.Option("--output", "-o", help="Output file ('-' writes to stdout).", show_default=False)]
TemplateOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--template",
        help="Your own SMPL-X (body) or FLAME (head) model file or folder.",
        show_default="the built-in mannequin, or $AVATARCLI_BODY_TEMPLATE / $AVATARCLI_HEAD_TEMPLATE",
    ),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
DIFFUSION_DEFAULTS = {kind: spec.base for kind, spec in DEFAULT_SPECS.items()}
CONTROLNET_DEFAULTS = {kind: spec.controlnet for kind, spec in DEFAULT_SPECS.items()}
SUBFOLDER_DEFAULTS = {kind: spec.controlnet_subfolder for kind, spec in DEFAULT_SPECS.items()}
LIGHT_HELP = "Lights an avatar with materials: studio, softbox, daylight, sunset, overcast, night or an .hdr / .exr panorama."
LightOpt = Annotated[Optional[str], typer.Option(help=LIGHT_HELP, show_default="its own light")]
RelightOpt = Annotated[bool, typer.Option(help="Learn materials (albedo, roughness, specular), not colours: relightable with --light.")]
ForceOpt = Annotated[
    bool, typer.Option("--force", help="Write into an output folder that already holds files (same-named files are replaced, others kept).")
]


def command_line() -> str:
    return "avatar " + shlex.join(sys.argv[1:])


def recipe_default(setting: str) -> str:
    """A recipe's default as --help shows it: one value, or the head's and the body's."""
    from avatarcli.generate.config import recipe

    def text(kind: str) -> str:
        value = functools.reduce(getattr, setting.split("."), recipe(kind, "x"))
        return ",".join(value) if isinstance(value, tuple) else f"{value:g}"

    head, body = text("head"), text("body")
    return head if head == body else f"head {head}, body {body}"


def per_kind(values: dict[str, str | None]) -> str:
    return ", ".join(f"{kind} {value}" for kind, value in values.items() if value)


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"avatarcli {__version__}\n")  # data: stdout, like the listing of `avatar motions`
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")] = False,
) -> None:
    """Animatable 3D Gaussian avatars from a text prompt, driven by motion files.

    Pipeline: init -> generate -> (rig) -> animate / export. Every command reads and writes
    files, so they chain in scripts; '-' is stdin/stdout for .avatar files.
    """


def file_stamp(path: Path) -> tuple[int, int] | None:
    """A file's inode and modification time (an atomic write makes a new file: a new inode,
    a new time), or None when there is none."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def report_interrupted(out: str, before: tuple[int, int] | None) -> None:
    """Say what an interrupted training run (generate, capture) saved, and exit 130."""
    from avatarcli import api

    ckpt = api.checkpoint_path(out)
    if file_stamp(ckpt) not in (None, before):
        saved = escape(
            f"saved {ckpt} and the avatar so far as {api.unfinished_path(out)}; continue with the same command and --resume"
            f" ({out} is written when the run ends)"
        )
        console.print(f"[yellow]interrupted:[/yellow] {saved}")
    else:
        console.print("[yellow]interrupted[/yellow] before the first step: nothing was saved")
    raise typer.Exit(130) from None
