"""Where `vwwfast runs` writes: tables to the terminal at its width, CSV and JSON to stdout.

--csv and --json are for scripts: every column, unshortened, whatever the terminal.
"""

from __future__ import annotations

import csv
import json
import sys
from typing import Any, Optional, TextIO

from rich.console import Console, RenderableType

from vwwfast.records.rows import Row
from vwwfast.records.runs import _json_default

# --csv's result columns, before the settings (named as in config.yaml)
CSV_FIELDS = ["id", "short_id", "kind", "status", "goal", "started", "ended", "val_acc",
              "val_acc_se", "val_n", "vs_best", "mcnemar_p_vs_best", "best_epoch", "recall_0",
              "recall_1", "tn", "fp", "fn", "tp", "epochs_done", "wall_time_s", "img_per_s",
              "device", "model", "params", "macs", "flash_bytes", "ram_bytes", "teacher_short_id",
              "teacher_run", "teacher_val_acc", "sweep", "path"]


def print_table(table: RenderableType, console: Optional[Console], wide: bool) -> None:
    """A table on the console, fitted to the terminal unless wide (then at its natural width)."""
    from vwwfast.progress import fits_terminal, print_result
    print_result(table, console, fit=False if wide else fits_terminal(console))


def target_width(console: Optional[Console]) -> Optional[int]:
    """The width to fit the narrow table to; None when the output is not a terminal."""
    from vwwfast.progress import fits_terminal, out
    return (console or out).width if fits_terminal(console) else None


def _csv_cell(v: Any) -> Any:
    if v is None:
        return ""
    return json.dumps(v, default=_json_default) if isinstance(v, (dict, list)) else v


def _csv_fields(r: Row) -> Row:
    """The row with the confusion matrix and the mark against the best flattened."""
    cm = r["confusion"] or [[None, None], [None, None]]
    vs = r.get("vs_best") or {}
    return {**r, "tn": cm[0][0], "fp": cm[0][1], "fn": cm[1][0], "tp": cm[1][1],
            "teacher_short_id": r["teacher"], "vs_best": vs.get("mark"),
            "mcnemar_p_vs_best": vs.get("mcnemar_p")}


def write_csv(rows: list[Row], file: Optional[TextIO] = None) -> None:
    """Every column: the result fields, then every setting (union over the runs, named as
    in config.yaml; `epochs` is the setting, `epochs_done` what ran)."""
    file = file or sys.stdout
    settings: list[str] = []
    for r in rows:
        settings += [k for k in r["config"] if k not in settings]
    w = csv.writer(file, lineterminator="\n")
    w.writerow(CSV_FIELDS + settings)
    for r in rows:
        flat = _csv_fields(r)
        w.writerow([_csv_cell(flat.get(k)) for k in CSV_FIELDS]
                   + [_csv_cell(r["config"].get(k)) for k in settings])


def write_json(data: Any, file: Optional[TextIO] = None) -> None:
    """`data` as indented JSON, one document."""
    file = file or sys.stdout
    file.write(json.dumps(data, indent=1, default=_json_default) + "\n")
