"""The one place that talks to rich: a console, progress bars with images/s, tables.

Results (summaries, tables, the path of a figure) go to stdout through `out`, `result`,
`print_table` and `print_result`; progress and logs go to stderr through `console`, `info`,
`warn` and `bar`. So `vwwfast runs > runs.txt` keeps the table and `vwwfast distill ... >
log.txt` keeps the result, while the bars stay on the terminal.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterable, Optional, Sequence

from rich.console import Console
from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

# soft_wrap: a long line (a path) is never broken with a newline when it goes to a file.
console = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)  # results people may pipe somewhere go to stdout


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
    """A log line (stderr)."""
    console.print(message)


def warn(message: str) -> None:
    console.print(f"[yellow]warning:[/yellow] {message}")


def result(message: str) -> None:
    """A result line (stdout): what a person wants in `... > file`."""
    out.print(message, markup=False)


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence]) -> Table:
    t = Table(title=title, show_lines=False)
    for c in columns:
        t.add_column(str(c))
    for r in rows:
        t.add_row(*[str(x) for x in r])
    return t


def fits_terminal(target: Optional[Console] = None) -> bool:
    """Whether a result should be fitted to a width: a terminal (or COLUMNS set) or a console
    a caller made with its own width; stdout piped into a file is not squeezed to 80."""
    if target is not None and target is not out:
        return True
    return out.is_terminal or bool(os.environ.get("COLUMNS"))


def natural_width(renderable) -> int:
    """The width a renderable takes when nothing is squeezed."""
    probe = Console(width=100_000, highlight=False)
    return Measurement.get(probe, probe.options, renderable).maximum


def print_result(renderable, target: Optional[Console] = None, fit: Optional[bool] = None) -> None:
    """Print a table (or any renderable) to stdout. Fitted to the terminal when `fit` (by
    default: when stdout is a terminal); otherwise at its natural width, nothing folded."""
    target = target or out
    fit = fits_terminal(target) if fit is None else fit
    need = natural_width(renderable)
    if fit or need <= target.width:
        # fitted: the title and caption wrap at the width too (soft_wrap lets them run past it)
        target.print(renderable, soft_wrap=False if fit else None)
        return
    saved = target._width  # a wider console for this print only: rich prints at most its width
    target.width = need
    try:
        target.print(renderable)
    finally:
        target._width = saved


def print_table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence]) -> None:
    print_result(table(title, columns, rows))
