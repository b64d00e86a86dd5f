"""The ``avatar`` command: parse arguments, call the library, report.

Each subcommand is a thin wrapper over a plain function in its own module. Problems the user
can fix surface as one ``error: ...`` line on stderr and exit code 2, with no partial files.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import torch
import typer

try:  # typer >= 0.22 vendors its own click; its exceptions live there
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover - older typer on the real click
    from click import exceptions as click_exc  # type: ignore[no-redef]

from avatarcli import __version__
from avatarcli.console import console, summary
from avatarcli.errors import AvatarError

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
        help="Your own SMPL-X (body) or FLAME (head) model file or folder. Default: the built-in mannequin, "
        "or $AVATARCLI_BODY_TEMPLATE / $AVATARCLI_HEAD_TEMPLATE.",
    ),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]


def _command_line() -> str:
    return "avatar " + shlex.join(sys.argv[1:])


def parse_color(text: str) -> torch.Tensor:
    """'white', 'black', 'gray', '#rrggbb' or 'r,g,b' (0-1 floats) -> (3,) tensor."""
    names = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0), "gray": (0.5, 0.5, 0.5), "grey": (0.5, 0.5, 0.5)}
    t = text.strip().lower()
    if t in names:
        return torch.tensor(names[t])
    if t.startswith("#") and len(t) == 7:
        try:
            return torch.tensor([int(t[i : i + 2], 16) / 255.0 for i in (1, 3, 5)])
        except ValueError:
            pass
    parts = t.split(",")
    if len(parts) == 3:
        try:
            vals = [float(p) for p in parts]
        except ValueError:
            vals = []
        if vals and all(0.0 <= v <= 1.0 for v in vals):
            return torch.tensor(vals)
    raise AvatarError(f"cannot read colour {text!r}: use white, black, gray, #rrggbb or r,g,b in 0-1")


def parse_size(text: str) -> tuple[int, int]:
    """'512' or 'WxH' -> (width, height)."""
    try:
        if "x" in text.lower():
            w, h = (int(v) for v in text.lower().split("x"))
        else:
            w = h = int(text)
    except ValueError:
        raise AvatarError(f"cannot read size {text!r}: use N or WxH, e.g. 512 or 1024x768") from None
    if not (8 <= w <= 8192 and 8 <= h <= 8192):
        raise AvatarError(f"size {w}x{h} is out of range (8 to 8192 pixels a side)")
    return w, h


def _version(value: bool) -> None:
    if value:
        console.print(f"avatarcli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")] = False,
) -> None:
    """Animatable 3D Gaussian avatars from a text prompt, driven by motion files.

    Pipeline: init -> generate -> (rig) -> animate / export. Every command reads and writes
    files, so they chain in scripts; '-' is stdin/stdout for .avatar files.
    """


@app.command()
def init(
    output: OutputOpt,
    model: Annotated[str, typer.Option("--model", "-m", help="head (FLAME layout) or body (SMPL-X layout).")] = "head",
    template: TemplateOpt = None,
    points_per_triangle: Annotated[int, typer.Option("--points-per-triangle", "-k", help="Gaussians per template triangle.")] = 10,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Sample rigged Gaussians on a template (the starting point of generate)."""
    from avatarcli import avatar as avatar_file
    from avatarcli.fileio import check_writable
    from avatarcli.initialize import init_avatar
    from avatarcli.templates import load_template

    check_writable(output)
    if points_per_triangle < 1:
        raise AvatarError(f"--points-per-triangle must be at least 1 (got {points_per_triangle})")
    tpl = load_template(model, template)
    av = init_avatar(tpl, points_per_triangle, seed)
    av.add_history(_command_line())
    avatar_file.save(av, output)
    summary(
        "avatar init",
        [("wrote", output if output != "-" else "stdout"), ("kind", av.kind), ("Gaussians", f"{len(av):,}"), ("template", tpl.name)],
    )


@app.command()
def info(
    avatar: Annotated[str, typer.Argument(help="An .avatar file ('-' reads stdin).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON to stdout instead of a table.")] = False,
    template: TemplateOpt = None,
) -> None:
    """Show what an avatar file holds."""
    from avatarcli import avatar as avatar_file
    from avatarcli.info import describe

    av = avatar_file.load(avatar)
    facts = describe(av, template)
    if as_json:
        sys.stdout.write(json.dumps(facts, indent=2) + "\n")
        return
    from rich.table import Table

    table = Table(title=avatar if avatar != "-" else "standard input", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key in ("kind", "binding", "stage", "gaussians", "sh_degree", "prompt", "seed"):
        table.add_row(key, str(facts.get(key)))
    t = facts["template"]
    table.add_row("template", f"{t.get('name')} ({t.get('vertices')} vertices, sha256 {str(t.get('sha256'))[:12]})")
    if facts.get("bounds"):
        lo, hi = facts["bounds"]
        table.add_row("bounds (m)", "[" + ", ".join(f"{v:.3f}" for v in lo) + "] to [" + ", ".join(f"{v:.3f}" for v in hi) + "]")
    for i, h in enumerate(facts.get("history", [])):
        table.add_row("history" if i == 0 else "", f"{h.get('time', '')}  {h.get('command', '')}")
    console.print(table)


@app.command()
def render(
    avatar: Annotated[str, typer.Argument(help="An .avatar file ('-' reads stdin).")],
    output: Annotated[
        str, typer.Option("--output", "-o", help="A folder for view_NNNN.png files, or one .png with the views side by side.")
    ],
    views: Annotated[int, typer.Option(help="Number of views around the avatar.")] = 4,
    size: Annotated[str, typer.Option(help="Image size: N or WxH.")] = "512",
    elevation: Annotated[float, typer.Option(help="Camera elevation in degrees.")] = 5.0,
    background: Annotated[str, typer.Option(help="white, black, gray, #rrggbb or r,g,b.")] = "white",
    template: TemplateOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Render turntable views of an avatar in its rest pose."""
    from avatarcli import avatar as avatar_file
    from avatarcli.devices import resolve_device
    from avatarcli.fileio import check_writable
    from avatarcli.frames import grid, to_uint8, write_png, write_png_folder
    from avatarcli.preview import render_views
    from avatarcli.templates import load_template

    if views < 1:
        raise AvatarError("--views must be at least 1")
    check_writable(output)
    wh = parse_size(size)
    bg = parse_color(background)
    dev = resolve_device(device)
    av = avatar_file.load(avatar)
    tpl = load_template(av.kind, template, dev)
    images = to_uint8(render_views(av, tpl, views, wh, bg, elevation))
    if output.lower().endswith(".png"):
        write_png(grid(images), output)
    else:
        write_png_folder(images, output, stem="view")
    summary("avatar render", [("wrote", output), ("views", str(views)), ("size", f"{wh[0]}x{wh[1]}")])


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the app and turns every failure into one line and an exit code."""
    command = typer.main.get_command(app)
    try:
        command.main(args=argv, prog_name="avatar", standalone_mode=False)
    except AvatarError as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        sys.exit(exc.exit_code)
    except click_exc.NoArgsIsHelpError as exc:
        console.print(exc.ctx.get_help() if exc.ctx else str(exc))
        sys.exit(0)
    except click_exc.UsageError as exc:
        hint = f" (see 'avatar {exc.ctx.info_name} --help')" if exc.ctx and exc.ctx.info_name != "avatar" else ""
        console.print(f"[red]error:[/red] {exc.format_message()}{hint}", soft_wrap=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        console.print("[red]aborted[/red]")
        sys.exit(130)
    except KeyboardInterrupt:
        console.print("[red]interrupted[/red]")
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(1)
