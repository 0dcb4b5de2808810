"""The one place that talks to rich: a console, progress bars with images/s, tables."""

from __future__ import annotations

import contextlib
import sys
from typing import Iterable, Sequence

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn,
                           TextColumn, TimeElapsedColumn, TimeRemainingColumn)
from rich.table import Table
from rich.text import Text

console = Console(stderr=True, highlight=False)
out = Console(highlight=False)  # results people may pipe somewhere go to stdout


class _RateColumn(ProgressColumn):
    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} {self.unit}/s", style="cyan")


@contextlib.contextmanager
def bar(description: str, total: int | None, unit: str = "img", enabled: bool = True):
    """A progress bar; yields advance(n). Quiet when off or when stderr is not a terminal."""
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        _RateColumn(unit), TimeElapsedColumn(), TimeRemainingColumn(),
                        console=console, transient=False, disable=not (enabled and _interactive()))
    with progress:
        task = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(task, n)


def _interactive() -> bool:
    return console.is_terminal or bool(getattr(sys.stderr, "isatty", lambda: False)())


def info(message: str) -> None:
    console.print(message)


def warn(message: str) -> None:
    console.print(f"[yellow]warning:[/yellow] {message}")


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence]) -> Table:
    t = Table(title=title, show_lines=False)
    for c in columns:
        t.add_column(str(c))
    for r in rows:
        t.add_row(*[str(x) for x in r])
    return t


def print_table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence]) -> None:
    out.print(table(title, columns, rows))
