"""`vwwfast runs`: the command; its flags pick runs side by side, a sweep, a diff or a plot.

The runs table by default (layout.py draws it, rows.py makes its rows); --sweep one sweep's
members (sweep_table.py); --diff two runs (diff.py); --plot several on one figure
(compare_plot.py); --csv and --json every column for scripts (output.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from rich.console import Console

from vwwfast import config as C
from vwwfast.errors import UserError
from vwwfast.records.compare import versus_best
from vwwfast.records.compare_plot import plot_runs
from vwwfast.records.diff import print_diff
from vwwfast.records.layout import runs_table
from vwwfast.records.output import print_table, target_width, write_csv, write_json
from vwwfast.records.rows import Row, differing, list_runs
from vwwfast.records.sweep_table import print_sweep

__all__ = ["print_runs", "print_sweep", "runs_command"]  # print_sweep: for train/commands.py


def print_runs(runs_dir: Union[str, Path], kind: Optional[str] = None, sort: str = "time", *,
               wide: bool = False, fmt: str = "table",
               console: Optional[Console] = None) -> list[Row]:
    """The runs table (fmt 'table'), or every column as 'csv' / 'json' on stdout."""
    from vwwfast.progress import info
    rows = list_runs(runs_dir, kind, sort)
    versus_best(rows)
    if fmt == "csv":
        write_csv(rows)
    elif fmt == "json":
        write_json(rows)
    elif not rows:
        which = f"{kind} runs" if kind else "runs"
        info(f"no {which} in {runs_dir} yet; `vwwfast train-teacher` or `vwwfast distill` makes one")
    else:
        settings = differing([r["config"] for r in rows], wide)
        print_table(runs_table(rows, settings, wide=wide, title=_title(rows, runs_dir, kind, sort),
                               width=target_width(console)), console, wide)
    return rows


def _title(rows: list[Row], runs_dir: Union[str, Path], kind: Optional[str], sort: str) -> str:
    what = f"{kind} runs" if kind else "runs"
    order = "oldest first" if sort == "time" else "best val acc first"
    return f"{len(rows)} {what} in {runs_dir} ({order})"


def runs_command(cfg: C.RunsConfig, console: Optional[Console] = None) -> None:
    """`vwwfast runs`: the mode its flags name, once they are known to go together."""
    from vwwfast.progress import result
    _check_flags(cfg)
    fmt = "csv" if cfg.csv else "json" if cfg.json else "table"
    if cfg.diff:
        print_diff(cfg.diff[0], cfg.diff[1], cfg.runs_dir, fmt, console)
    elif cfg.plot:
        result(str(plot_runs(cfg.plot, cfg.runs_dir, cfg.out)))
    elif cfg.sweep:
        print_sweep(cfg.sweep, cfg.runs_dir, cfg.kind, wide=cfg.wide, fmt=fmt, console=console)
    else:
        print_runs(cfg.runs_dir, cfg.kind, cfg.sort, wide=cfg.wide, fmt=fmt, console=console)


def _check_flags(cfg: C.RunsConfig) -> None:
    """Refuse, in one line, flags that do not go together."""
    if cfg.csv and cfg.json:
        raise UserError("--csv and --json: choose one")
    if cfg.out and not cfg.plot:
        raise UserError("--out names the figure of --plot; add --plot RUN [RUN ...] or drop --out")
    if cfg.diff:
        _refuse("--diff", {"--plot": cfg.plot, "--sweep": cfg.sweep, "--csv": cfg.csv,
                           "--wide": cfg.wide, "--kind": cfg.kind,
                           "--sort val_acc": cfg.sort != "time"})
        if len(cfg.diff) != 2:
            raise UserError("--diff takes two runs (folders, ids or short ids)")
    elif cfg.plot:
        _refuse("--plot", {"--sweep": cfg.sweep, "--csv": cfg.csv, "--json": cfg.json,
                           "--wide": cfg.wide, "--kind": cfg.kind,
                           "--sort val_acc": cfg.sort != "time"})


def _refuse(mode: str, flags: dict[str, object]) -> None:
    given = [flag for flag, on in flags.items() if on]
    if given:
        raise UserError(f"{mode} does not take {', '.join(given)}; drop "
                        f"{'it' if len(given) == 1 else 'them'}")
