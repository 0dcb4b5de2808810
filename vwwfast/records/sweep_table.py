"""`vwwfast runs --sweep REF`: one sweep's members, best first, and its replicate groups.

The members are shown with the settings the sweep gave them; a sweep over init_seed shows
one row per group of runs alike but for it (mean ± sd), and --wide every run as well.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from vwwfast import config as C
from vwwfast.fmt import fmt_metric, fmt_value
from vwwfast.records.compare import REPLICATE_KEY, replicate_groups, versus_best
from vwwfast.records.layout import runs_table, table_frame
from vwwfast.records.output import print_table, target_width, write_csv, write_json
from vwwfast.records.rows import Row, by_val_acc, differing, run_row, setting_text
from vwwfast.records.runs import Run, SweepRecord


def print_sweep(ref: str, runs_dir: Union[str, Path], kind: Optional[str] = None, *,
                wide: bool = False, fmt: str = "table",
                console: Optional[Console] = None) -> list[Row]:
    """The members of one sweep, best val acc first, its swept settings as columns."""
    record = SweepRecord.open(ref, runs_dir)
    rows = by_val_acc(_member_rows(record, kind))
    versus_best(rows)
    groups = sweep_replicates(rows)
    if fmt == "csv":
        write_csv(rows)
    elif fmt == "json":
        write_json({**record.data, "rows": rows, "replicates": groups})
    else:
        _print_tables(record, rows, groups, wide, console)
    return rows


def _member_rows(record: SweepRecord, kind: Optional[str]) -> list[Row]:
    """The rows of the sweep's runs still in their folder (of `kind`), each with the settings
    the sweep gave it."""
    from vwwfast.progress import warn
    rows = []
    for m in record.members:
        path = record.path.parent / m["run"]
        if not (path / "config.yaml").is_file():
            warn(f"sweep {record.short_id}: its run {m['run']} is no longer in {record.path.parent}")
            continue
        row = run_row(Run(path))
        if kind is None or row["kind"] == kind:
            rows.append({**row, "sweep_settings": m.get("settings") or {}})
    return rows


def _print_tables(record: SweepRecord, rows: list[Row], groups: list[dict[str, Any]],
                  wide: bool, console: Optional[Console]) -> None:
    """The replicate groups when the sweep has some, the members when it has none (or wide)."""
    data = record.data
    swept = list(record.swept) or differing([r["config"] for r in rows], wide)
    status = data.get("status", "?")
    head = f"sweep {record.short_id}: {data.get('mode', '?')} over {', '.join(swept) or '-'}"
    replicated = REPLICATE_KEY in swept and len(groups) < len(rows)
    if replicated:
        title = (f"{head}, {status}: {len(rows)} runs in {len(groups)} replicate group"
                 f"{'s' if len(groups) > 1 else ''} (alike but for {REPLICATE_KEY}), best "
                 f"mean first")
        print_table(replicates_table(groups, rows, [k for k in swept if k != REPLICATE_KEY],
                                     wide, title), console, wide)
    if wide or not replicated:
        title = f"{head}, {len(rows)} runs, {status} (best val acc first)"
        print_table(runs_table(rows, swept, wide=wide, title=title, width=target_width(console),
                               values=[r["sweep_settings"] for r in rows]), console, wide)


def sweep_replicates(rows: list[Row]) -> list[dict[str, Any]]:
    """The sweep's members grouped by every swept setting but init_seed, best mean first."""
    groups = replicate_groups([{"run": r["id"], "settings": r["sweep_settings"],
                                "val_acc": r["val_acc"]} for r in rows])
    return sorted(groups, key=lambda g: (g["mean"] is None, -(g["mean"] or 0.0)))


def replicates_table(groups: list[dict[str, Any]], rows: list[Row], settings: list[str],
                     wide: bool, title: str) -> Group:
    """One row per replicate group: its settings, n, mean ± sd of best val acc, the range."""
    t = Table(**table_frame(wide))
    for k in settings:
        t.add_column(k if wide else C.short_name(k), no_wrap=True, justify="right")
    t.add_column(REPLICATE_KEY if wide else C.short_name(REPLICATE_KEY), no_wrap=True)
    t.add_column("n", no_wrap=True, justify="right")
    t.add_column("best val acc\nmean ± sd", no_wrap=True, justify="right")
    t.add_column("min..max", no_wrap=True, justify="right")
    if wide:
        t.add_column("runs", no_wrap=False, overflow="fold")
    accs = {r["id"]: r["val_acc"] for r in rows}
    for g in groups:
        t.add_row(*_group_cells(g, accs, settings, wide))
    # title and notes as text around the table: a narrow table would wrap them to its width
    return Group(Text(title), t, Text("; ".join(_replicate_notes(rows, wide))))


def _group_cells(g: dict[str, Any], accs: dict[str, Any], settings: list[str],
                 wide: bool) -> list[str]:
    cells = [setting_text(k, g["settings"].get(k), short=not wide) for k in settings]
    cells.append(",".join(fmt_value(x) for x in g["init_seeds"]) or "-")
    cells.append(str(g["n"]))
    if g["mean"] is None:
        cells += ["-", "-"]
    else:
        got = [accs[m] for m in g["members"]]
        cells.append(fmt_metric(g["mean"]) + ("" if g["sd"] is None else f"±{g['sd']:.4f}"))
        cells.append(f"{min(got):.4f}..{max(got):.4f}" if len(got) > 1 else "-")
    if wide:
        cells.append(" ".join(g["members"] + g.get("without_result", [])))
    return cells


def _replicate_notes(rows: list[Row], wide: bool) -> list[str]:
    """What sd means, and one run's own noise on the val images beside it."""
    sizes = {r.get("val_n") for r in rows} - {None}
    ses = [r["val_acc_se"] for r in rows if r.get("val_acc_se") is not None]
    notes = ["sd: the spread of the members' best val acc over init seeds (sample sd; none for a "
             "group of one)"]
    if len(sizes) == 1 and ses:
        notes.append(f"one run's own noise on these {sizes.pop():,} val images: about "
                     f"±{max(ses):.4f} (one binomial standard error)")
    if not wide:
        notes.append("--wide lists every run")
    return notes
