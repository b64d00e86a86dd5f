"""Terminal output: progress bars and summaries on stderr, so stdout stays free for data.

Text that comes from users (paths, prompts, messages naming them) is escaped before it is
printed: a file called ``a[/b].avatar`` is a name, not rich markup.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

console = Console(stderr=True, highlight=False)


@contextlib.contextmanager
def progress(*extra_columns: TextColumn) -> Iterator[Progress]:
    """A progress display on stderr: description, bar, count, elapsed, remaining, extras.

    It stays on screen when the work completes and is erased when an error or an
    interruption ends it, so that a failure reads as its one ``error:`` line.
    """
    bar = Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        *extra_columns,
        console=console,
        transient=False,
    )
    with bar:
        try:
            yield bar
        except BaseException:
            bar.live.transient = True
            raise


def note(message: str) -> None:
    """A line of information on stderr (why a command pauses, where something went)."""
    console.print(f"[dim]note:[/dim] {escape(message)}")


def warn(message: str) -> None:
    console.print(f"[yellow]warning:[/yellow] {escape(message)}")


def error(message: str) -> None:
    """The one ``error:`` line of a failed command (a message of several lines is joined)."""
    console.print(f"[red]error:[/red] {escape(' '.join(message.splitlines()))}", soft_wrap=True)


def summary(title: str, rows: Sequence[tuple[str, str]]) -> None:
    """The panel at the end of a command: what it made and where."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, escape(value))
    console.print(Panel(table, title=title, expand=False, border_style="green"))
