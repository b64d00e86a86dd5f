"""The ``avatar`` command: parse options, call :mod:`avatarcli.api`, print a summary.

Each subcommand is a thin wrapper over the API function of the same name, which checks its
inputs and does the work. Problems the user can fix surface as one ``error: ...`` line on
stderr and exit code 2, with no partial files.
"""

from __future__ import annotations

import functools
import io
import os
import signal
import sys
from pathlib import Path

import torch
import typer

try:  # typer >= 0.22 vendors its own click; its exceptions live there
    from typer._click import exceptions as click_exc
    from typer._click.core import Command as ClickCommand
except ImportError:  # pragma: no cover - older typer on the real click
    from click import Command as ClickCommand  # type: ignore[assignment]
    from click import exceptions as click_exc  # type: ignore[no-redef]

from avatarcli import __version__
from avatarcli.cli import making, using  # noqa: F401  (registering their commands on app)
from avatarcli.cli.app import (
    app,
    command_line,
)
from avatarcli.console import console, error
from avatarcli.errors import AvatarError
from avatarcli.fileio import remove_partial_outputs
from avatarcli.signals import Interrupted, interrupts_raise


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs a command and exits with its status: 0 done, 2 a problem with the
    input (one ``error:`` line), 130 interrupted (Ctrl-C or SIGTERM; partial files removed),
    1 an unexpected failure (one line naming a report with the traceback)."""
    sys.exit(run(sys.argv[1:] if argv is None else argv))


def run(argv: list[str]) -> int:
    """Run ``avatar ARGV``; returns the exit status (see :func:`main`)."""
    try:
        return _run_command(argv)
    finally:
        remove_partial_outputs()  # what an interruption at an unlucky moment left


def _run_command(argv: list[str]) -> int:
    command = _command()
    try:
        with interrupts_raise():
            # invoked directly rather than through command.main, which turns Ctrl-C into a bare
            # exit status before it could be reported
            with command.make_context("avatar", list(argv)) as ctx:
                command.invoke(ctx)
        return 0
    except AvatarError as exc:
        error(str(exc))
        return exc.exit_code
    except click_exc.NoArgsIsHelpError as exc:
        text = exc.format_message()  # typer's rich help has printed itself already and gives ""
        if text.strip():
            console.print(text)
        return 0
    except click_exc.UsageError as exc:
        hint = f" (see 'avatar {exc.ctx.info_name} --help')" if exc.ctx and exc.ctx.info_name != "avatar" else ""
        error(f"{exc.format_message()}{hint}")
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        console.print("[red]aborted[/red]")
        return 130
    except KeyboardInterrupt as exc:
        signame = " by SIGTERM" if isinstance(exc, Interrupted) and exc.signum == signal.SIGTERM else ""
        console.print(f"[yellow]interrupted{signame}[/yellow]: nothing half-written was left behind")
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return 1
    except Exception as exc:  # the last resort: one line, the traceback in a report
        report = _write_report(exc)
        where = f"report written to {report}" if report else "no report could be written"
        message = " ".join(str(exc).split())[:200]
        error(f"unexpected {type(exc).__name__}: {message} ({where})")
        return 1


@functools.cache
def _command() -> ClickCommand:
    """The click command of the app (made once: building it inspects every signature)."""
    return typer.main.get_command(app)


def _silence_stdout() -> None:
    """After the reader of stdout went away: send the rest to /dev/null so that Python's own
    flush at exit does not complain."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        pass


def _write_report(exc: Exception) -> Path | None:
    """The traceback of an unexpected failure, with the command and versions, in a file under
    the cache folder (or the temporary folder); None if neither can be written."""
    import datetime
    import platform
    import tempfile
    import traceback

    from avatarcli.templates.loading import cache_dir

    now = datetime.datetime.now(datetime.timezone.utc)
    text = "".join(
        [
            f"command: {command_line()}\n",
            f"time: {now.isoformat(timespec='seconds')}\n",
            f"avatarcli {__version__}, Python {platform.python_version()}, torch {torch.__version__}, {platform.platform()}\n\n",
            *traceback.format_exception(type(exc), exc, exc.__traceback__),
        ]
    )
    name = f"error-{now.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    for folder in (cache_dir() / "reports", Path(tempfile.gettempdir()) / "avatarcli-reports"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text)
            return folder / name
        except OSError:
            continue
    return None
