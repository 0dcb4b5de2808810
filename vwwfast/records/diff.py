"""`vwwfast runs --diff A B`: the settings changed from run a to run b, and what that did.

The result change is b - a at each run's best epoch, with the paired test on the val images
both were scored on when both runs kept their predictions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

from rich import box
from rich.console import Console
from rich.table import Table

from vwwfast.fmt import fmt_delta, fmt_metric, fmt_value
from vwwfast.records import stats
from vwwfast.records.compare import pair_runs
from vwwfast.records.output import print_table, write_json
from vwwfast.records.rows import Row, run_row
from vwwfast.records.runs import config_changes, resolve_run

METRICS = (("val_acc", "val acc"), ("recall_0", "recall no-person"), ("recall_1", "recall person"))


def diff_runs(a: str, b: str, runs_dir: Union[str, Path]) -> dict[str, Any]:
    """Settings changed from run a to run b, and the result change (b - a)."""
    run_a, run_b = resolve_run(a, runs_dir), resolve_run(b, runs_dir)
    ra, rb = run_row(run_a), run_row(run_b)
    delta = {k: (rb[k] - ra[k] if ra[k] is not None and rb[k] is not None else None)
             for k in ("val_acc", "recall_0", "recall_1", "best_epoch")}
    changes = config_changes(ra["config"], rb["config"])
    if ra["teacher_run"] != rb["teacher_run"] and (ra["teacher_run"] or rb["teacher_run"]):
        changes.append(("teacher run", ra["teacher_run"], rb["teacher_run"]))
    pairing = pair_runs(run_a, run_b, name_a="a", name_b="b")
    paired = None
    if pairing.result is not None:
        paired = {**pairing.result, "in_words": stats.in_words(pairing.result, "b"),
                  "warnings": pairing.warnings}
    return {"a": ra, "b": rb, "changes": changes, "delta": delta, "paired": paired,
            "paired_reason": pairing.reason}


def print_diff(a: str, b: str, runs_dir: Union[str, Path], fmt: str = "table",
               console: Optional[Console] = None) -> dict[str, Any]:
    """The diff as tables (fmt 'table') or as JSON on stdout ('json')."""
    from vwwfast.progress import out
    d = diff_runs(a, b, runs_dir)
    if fmt == "json":
        write_json({**d, "changes": [{"setting": k, "a": x, "b": y} for k, x, y in d["changes"]]})
        return d
    target = console or out
    ra, rb = d["a"], d["b"]
    target.print(f"a = {ra['short_id']}  ({ra['id']}, {ra['status']})\n"
                 f"b = {rb['short_id']}  ({rb['id']}, {rb['status']})", markup=False)
    if d["changes"]:
        print_table(_changes_table(d["changes"]), console, wide=False)
    else:
        target.print("same settings (note, tag, resume and runs_dir aside)")
    print_table(_results_table(ra, rb, d["delta"]), console, wide=False)
    target.print(paired_text(d), markup=False, highlight=False)
    return d


def _changes_table(changes: list[tuple[str, Any, Any]]) -> Table:
    t = Table(title="settings changed (a -> b)", box=box.SIMPLE_HEAD, title_justify="left")
    for name in ("setting", "a", "b"):
        t.add_column(name, overflow="fold")
    for k, x, y in changes:
        t.add_row(k, fmt_value(x), fmt_value(y))
    return t


def _results_table(ra: Row, rb: Row, delta: dict[str, Any]) -> Table:
    t = Table(title="result (best epoch)", box=box.SIMPLE_HEAD, title_justify="left")
    for name in ("metric", "a", "b", "b - a"):
        t.add_column(name, justify="left" if name == "metric" else "right", no_wrap=True)
    for k, name in METRICS:
        t.add_row(name, fmt_metric(ra[k]), fmt_metric(rb[k]), fmt_delta(delta[k]))
    de = delta["best_epoch"]
    t.add_row("best epoch", str(ra["best_epoch"] or "-"), str(rb["best_epoch"] or "-"),
              "-" if de is None else f"{int(de):+d}")
    t.add_row("chosen on", ra["selected_on"], rb["selected_on"], "")
    return t


def paired_text(d: dict[str, Any]) -> str:
    """The paired comparison of a diff in words, or the one line that says why there is none."""
    p = d["paired"]
    if p is None:
        return d["paired_reason"]
    lines = [f"paired, image by image, on {p['n']:,} val images (the report split): a right and b wrong on "
             f"{p['b']:,}, a wrong and b right on {p['c']:,}", p["in_words"]]
    return "\n".join(lines + [f"note: {w}" for w in p["warnings"]])
