"""`vwwfast runs`: runs side by side, the members of a sweep, two runs diffed, several plotted.

The table fits a 100-column terminal: short ids, the goal (cut to fit), only the settings
that differ among the runs shown (short names), the teacher run, val acc, best epoch and
recalls. --wide shows everything unshortened; --csv and --json are for scripts.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path
from typing import Optional

from rich import box
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from vwwfast import config as C
from vwwfast.errors import UserError
from vwwfast.fmt import fmt_bytes, fmt_count, fmt_delta, fmt_duration, fmt_metric, fmt_rate, fmt_value
from vwwfast.provenance import arch_short, model_short
from vwwfast.records import stats
from vwwfast.records.compare import (
    NO_PREDICTIONS,
    REPLICATE_KEY,
    pair_runs,
    replicate_groups,
    replicate_key,
    versus_best,
)
from vwwfast.records.predictions import FILE as PREDICTIONS_FILE
from vwwfast.records.runs import (
    KINDS,
    NOISE,
    Run,
    SweepRecord,
    _json_default,
    config_changes,
    find_runs,
    resolve_run,
    short_id,
)
from vwwfast.records.stats import fmt_p

# Settings of how a run is executed, not of what it learns: --wide shows them, the table not.
EXECUTION = {"device", "compile", "renderer", "decoded_size", "decoded_budget_gb", "sweep_mode"}
PATHS = {"shards", "cache", "teacher", "init", "resume"}
SORTS = ("time", "val_acc")


# ---------------------------------------------------------------------------------------
# Rows

def teacher_short(teacher: Optional[dict]) -> str:
    """The teacher run in short: its short id, else its checkpoint's file (or run folder)."""
    if not teacher:
        return "-"
    if teacher.get("members"):  # an ensemble: its members, joined
        return "+".join(teacher_short(m) for m in teacher["members"])
    if teacher.get("run"):
        return short_id(teacher["run"])
    ckpt = teacher.get("checkpoint")
    if not ckpt:
        return "?"
    p = Path(str(ckpt).replace("\\", "/"))
    return short_id(p.parent.name) if p.name in ("model.pt", "last.pt") and p.parent.name else p.stem


def run_row(run: Run) -> dict:
    s, c = run.summary, run.config
    t = s.get("teacher") or None
    return {"id": run.id, "short_id": run.short_id, "path": str(run.path), "kind": run.kind,
            "status": s.get("status", "unknown"), "goal": c.get("note") or "",
            "started": s.get("started"), "ended": s.get("ended"),
            "val_acc": s.get("best_val_acc"), "best_epoch": s.get("best_epoch"),
            "recall_0": s.get("recall_0"), "recall_1": s.get("recall_1"),
            "confusion": s.get("confusion"), "epochs_done": s.get("epochs_done"),
            "epochs": c.get("epochs"), "wall_time_s": s.get("wall_time_s"),
            "img_per_s": s.get("img_per_s"), "device": s.get("device"), "sweep": s.get("sweep"),
            "teacher": teacher_short(t) if run.kind == "student" else "-",
            "teacher_run": _teacher_run(t), "teacher_val_acc": _teacher_val_acc(t),
            "model": model_short(c.get("arch") or "?", c.get("width")),
            "params": s.get("params"), "macs": s.get("macs"), **_exported(run),
            "config": c, "summary": s}


def _exported(run: Run) -> dict:
    """The deployed file's figures, when the run was exported: the int8 file's size (flash)
    and estimated activation peak (RAM), the smallest int8 file's when there are several."""
    from vwwfast.records.runs import read_json
    files = (read_json(run.path / "export" / "export.json").get("files") or {}).values()
    int8 = [f for f in files if isinstance(f, dict) and f.get("precision") == "int8"
            and f.get("size_bytes") is not None]
    best = min(int8, key=lambda f: f["size_bytes"], default={})
    return {"flash_bytes": best.get("size_bytes"), "ram_bytes": best.get("peak_activation_bytes")}


def _teacher_run(t: Optional[dict]) -> Optional[str]:
    if t and t.get("members"):
        return "+".join(m.get("run") or "?" for m in t["members"])
    return (t or {}).get("run")


def _teacher_val_acc(t: Optional[dict]):
    """The teacher run's val accuracy; an ensemble's own, on its store's val view."""
    if t and t.get("members"):
        return t.get("val_acc")
    return (t or {}).get("run_val_acc")


def _by_val_acc(rows: list[dict]) -> list[dict]:
    # runs without a result go last, in the order they came
    return sorted(rows, key=lambda r: (r["val_acc"] is None, -(r["val_acc"] or 0.0)))


def list_runs(runs_dir, kind: Optional[str] = None, sort: str = "time") -> list[dict]:
    """One row per run: oldest first (sort='time') or best val acc first (sort='val_acc')."""
    if kind is not None and kind not in KINDS:
        raise UserError(f"--kind must be 'teacher' or 'student', got '{kind}'")
    if sort not in SORTS:
        raise UserError(f"--sort must be 'time' or 'val_acc', got '{sort}'")
    rows = [run_row(r) for r in find_runs(runs_dir)]
    rows = [r for r in rows if kind is None or r["kind"] == kind]
    return _by_val_acc(rows) if sort == "val_acc" else rows


def differing(configs: list[dict], wide: bool = False) -> list[str]:
    """Settings whose value differs among the runs that have them (a teacher has no alpha),
    the swept knobs first. The table leaves out execution settings (--wide keeps them)."""
    skip = NOISE if wide else NOISE | EXECUTION | {"teacher"}  # the teacher has its own column
    keys: list[str] = []
    for c in configs:
        keys += [k for k in c if k not in keys and k not in skip]
    keys = [k for k in keys
            if len({json.dumps(c[k], sort_keys=True, default=str) for c in configs if k in c}) > 1]
    first = C.kd_settings() + ["lr"]  # the knobs people sweep, in the order config.py has them
    return sorted(keys, key=lambda k: first.index(k) if k in first else len(first))


def setting_text(key: str, value, short: bool = True) -> str:
    if value is None:
        return "-"
    if not short:
        return json.dumps(value) if isinstance(value, (dict, list)) else fmt_value(value)
    if isinstance(value, bool):
        return "on" if value else "off"
    if key in ("arch", "teacher_arch") and isinstance(value, str):
        return arch_short(value)
    if key in PATHS and isinstance(value, list):  # several teachers
        return "+".join(setting_text(key, v) for v in value) or "-"
    if key in PATHS and isinstance(value, str):
        p = Path(value.replace("\\", "/"))
        return short_id(p.parent.name) if p.name in ("model.pt", "last.pt") else p.stem or value
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "-"
    return fmt_value(value)


NARROW_MARK = {"best": "*"}  # one character in the narrow table


def fmt_acc_se(acc, se) -> str:
    """0.8350±0.0041: an accuracy and one standard error."""
    if acc is None:
        return "-"
    return fmt_metric(acc) + ("" if se is None else f"±{se:.4f}")


def noise_captions(rows: list[dict], marks: bool, wide: bool) -> list[str]:
    """What the ± and the marks mean, under the table."""
    sizes = {r.get("val_n") for r in rows if r.get("val_acc") is not None} - {None}
    on = f"{sizes.pop():,} val images" if len(sizes) == 1 else "each run's val images"
    lines = [f"± one standard error of the val acc (binomial, {on})"]
    if not marks:
        return lines
    bests = {r["kind"]: r for r in rows if (r.get("vs_best") or {}).get("mark") == "best"}
    whose = "the best" if len(bests) == 1 else "the best of its kind"
    best = "best" if wide else "*"
    lines[0] += (f"; {best} the best shown{'' if len(bests) == 1 else ' of its kind'}; ≈ not "
                 f"distinguishable from {whose}: paired McNemar p >= {stats.ALPHA:g} on the "
                 f"images both were scored on")
    whys = {(r.get("vs_best") or {}).get("why") for r in rows
            if (r.get("vs_best") or {}).get("mark") == "?"}
    if whys == {NO_PREDICTIONS}:
        lines[0] += (f"; ? no paired test: no {PREDICTIONS_FILE} (`vwwfast eval RUN --predictions "
                     f"RUN/{PREDICTIONS_FILE}` makes them)")
    elif whys:
        lines[0] += "; ? no paired test (`vwwfast runs --diff` says why)"
    return lines


# ---------------------------------------------------------------------------------------
# The table

def _unique_ids(rows: list[dict]) -> list[str]:
    shorts = [r["short_id"] for r in rows]
    return [r["short_id"] if shorts.count(r["short_id"]) == 1 else r["id"] for r in rows]


GOAL_MIN = 10  # the narrow table drops setting columns before the goal gets narrower
# What the narrow table gives up, in this order, to fit without cutting a run id: the goal
# (down to GOAL_MIN, then whole), the model's cost columns, then the last settings.
LAYOUTS = ({"show_goal": True, "show_cost": True}, {"show_goal": False, "show_cost": True},
           {"show_goal": False, "show_cost": False})


def runs_table(rows: list[dict], settings: list[str], *, wide: bool = False,
               title: Optional[str] = None, width: Optional[int] = None,
               values: Optional[list[dict]] = None) -> Table:
    """The rich table of `rows`, settings as columns (the first ones matter most).
    width (narrow table only): fit it by cutting the goal down to GOAL_MIN characters, then
    leaving out the goal, the cost columns and the last settings (LAYOUTS), named in the
    caption. values: per row, the setting values to show (a sweep's own record), else the
    config's."""
    if wide or width is None:
        return _table(rows, settings, wide, title, values, [], None)
    from vwwfast.progress import natural_width

    def fitting(layout) -> Optional[list[str]]:  # the most settings that fit; None: none do
        keep = list(settings)
        while natural_width(_table(rows, keep, False, title, values, [], GOAL_MIN, **layout)) > width:
            if not keep:
                return None
            keep.pop()
        return keep

    tries = [(layout, k) for layout in LAYOUTS if (k := fitting(layout)) is not None]
    tries = tries or [(LAYOUTS[-1], [])]  # nothing fits: the fewest columns, cut by rich
    layout, keep = next(((lo, k) for lo, k in tries if len(k) == len(settings)),
                        max(tries, key=lambda t: len(t[1])))  # the earliest of the best
    t = _table(rows, keep, False, title, values, settings[len(keep):], None, **layout)
    need = natural_width(t)
    if need > width and layout["show_goal"]:  # the goal takes what is left
        goal = next(c for c in t.columns if c.header == "goal")
        natural = max((len(str(x)) for x in goal.cells), default=GOAL_MIN)
        goal.max_width = max(GOAL_MIN, natural - (need - width))
    return t


def _table(rows, settings, wide, title, values, dropped, goal_max, show_goal=True,
           show_cost=True) -> Table:
    students = [r for r in rows if r["kind"] == "student"]
    teachers = {r["teacher"] for r in students if r["teacher"] != "-"}
    show_kind = wide or len({r["kind"] for r in rows}) > 1
    show_teacher = bool(teachers) and (wide or len(teachers) > 1)
    show_status = wide or {r["status"] for r in rows} != {"finished"}
    captions = []
    if teachers and not show_teacher:
        r = next(r for r in students if r["teacher"] != "-")
        acc = r["teacher_val_acc"]
        captions.append(f"teacher of every KD student: {r['teacher']}"
                        + (f" (val acc {acc:.4f})" if acc is not None else ""))
    t = Table(title=title, box=box.SIMPLE_HEAD if not wide else box.SQUARE, show_edge=wide,
              pad_edge=wide, padding=(0, 1) if wide else (0, 1, 0, 0),  # 2 spaces between columns
              title_justify="left", caption_justify="left")
    t.add_column("run", no_wrap=True)
    if show_kind:
        t.add_column("kind", no_wrap=True)
    if show_status:
        t.add_column("status", no_wrap=True)
    if show_goal:
        t.add_column("goal", no_wrap=not wide, overflow="ellipsis" if not wide else "fold",
                     max_width=goal_max)
    abbreviated = []
    for k in settings:
        name = k if wide else C.short_name(k)
        if name != k:
            abbreviated.append(f"{name} = {k}")
        t.add_column(name, no_wrap=True, justify="right")
    if show_teacher:
        t.add_column("teacher", no_wrap=True)
        if wide:
            t.add_column("teacher\nval acc", no_wrap=True, justify="right")
    # the mark against the best run: inside the accuracy's cell in the narrow table (it fits
    # 100 columns), in columns of its own with the p-value in the wide one
    marks = any(r.get("vs_best") for r in rows)
    t.add_column("val acc\n± se", no_wrap=True, justify="right")
    if marks and wide:
        t.add_column("vs\nbest", no_wrap=True, justify="center")
        t.add_column("p vs\nbest", no_wrap=True, justify="right")
    for name in ("best\nepoch", "recall\nno-pers", "recall\nperson"):
        t.add_column(name, no_wrap=True, justify="right")
    # what the model costs: shown once a run recorded it (int8 flash / RAM once exported)
    costs = any(r.get("params") is not None for r in rows)
    show_files = show_cost and any(r.get("flash_bytes") is not None for r in rows)
    show_cost = show_cost and costs
    if show_cost:
        t.add_column("params", no_wrap=True, justify="right")
        t.add_column("MACs", no_wrap=True, justify="right")
    if show_files:
        t.add_column("int8\nflash", no_wrap=True, justify="right")
        t.add_column("int8\nRAM est", no_wrap=True, justify="right")
    if wide:
        for name in ("TN FP FN TP", "epochs", "wall", "img/s", "started", "device", "sweep"):
            t.add_column(name, no_wrap=True, justify="right" if name in ("epochs", "wall", "img/s")
                         else "left")
    ids = [r["id"] for r in rows] if wide else _unique_ids(rows)
    for i, r in enumerate(rows):
        shown = values[i] if values is not None else r["config"]
        cells = [ids[i]]
        if show_kind:
            cells.append(r["kind"] or "?")
        if show_status:
            cells.append(r["status"])
        if show_goal:
            cells.append(r["goal"] or "-")
        cells += [setting_text(k, shown.get(k), short=not wide) if k in shown else "" for k in settings]
        if "arch" in settings and "arch" in shown and not wide:  # mbv3s-0.35: the arch at its width
            cells[-len(settings) + settings.index("arch")] = model_short(
                shown["arch"], r["config"].get("width"))
        if show_teacher:
            student = r["kind"] == "student"
            cells.append(((r["teacher_run"] or r["teacher"]) if wide else r["teacher"]) if student else "-")
            if wide:
                cells.append(fmt_metric(r["teacher_val_acc"]) if student else "-")
        vs = r.get("vs_best") or {}
        mark = vs.get("mark", "")
        if marks and wide:
            cells += [fmt_acc_se(r["val_acc"], r.get("val_acc_se")), mark,
                      fmt_p(vs["mcnemar_p"]) if "mcnemar_p" in vs else "-"]
        else:
            cells.append(fmt_acc_se(r["val_acc"], r.get("val_acc_se"))
                         + (NARROW_MARK.get(mark, mark) or " " if marks else ""))
        cells += [str(r["best_epoch"] or "-"), fmt_metric(r["recall_0"], 3),
                  fmt_metric(r["recall_1"], 3)]
        if show_cost:
            cells += [fmt_count(r.get("params")), fmt_count(r.get("macs"))]
        if show_files:
            cells += [fmt_bytes(r.get("flash_bytes")), fmt_bytes(r.get("ram_bytes"))]
        if wide:
            cm = r["confusion"]
            cells += [" ".join(str(v) for row in cm for v in row) if cm else "-",
                      f"{r['epochs_done'] if r['epochs_done'] is not None else '-'}/{r['epochs'] or '-'}",
                      fmt_duration(r["wall_time_s"]), fmt_rate(r["img_per_s"]),
                      str(r["started"] or "-"), str(r["device"] or "-"),
                      short_id(r["sweep"]) if r["sweep"] else "-"]
        t.add_row(*cells)
    captions += noise_captions(rows, marks, wide)
    if show_cost:
        captions.append("params, MACs: per image at the run's input size"
                        + ("; int8 flash: the exported int8 file's size, RAM est: its estimated "
                           "activation peak (KB = 1000 bytes)" if show_files else ""))
    if abbreviated:
        captions.append(", ".join(abbreviated))
    if dropped:
        captions.append(f"also differ: {', '.join(dropped)} (--wide shows them)")
    hidden = [what for what, shown in (("goals", show_goal), ("params, MACs, flash and RAM",
                                                             show_cost or not costs)) if not shown]
    if hidden:
        captions.append(f"{' and '.join(hidden)}: --wide shows them")
    if captions:
        t.caption = "\n".join(captions)
    return t


def _title(rows: list[dict], runs_dir, kind: Optional[str], sort: str) -> str:
    what = f"{kind} runs" if kind else "runs"
    order = "oldest first" if sort == "time" else "best val acc first"
    return f"{len(rows)} {what} in {runs_dir} ({order})"


# ---------------------------------------------------------------------------------------
# Output

def _print(table: Table, console: Optional[Console], wide: bool) -> None:
    from vwwfast.progress import fits_terminal, print_result
    print_result(table, console, fit=False if wide else fits_terminal(console))


def _target_width(console: Optional[Console]) -> Optional[int]:
    from vwwfast.progress import fits_terminal, out
    return (console or out).width if fits_terminal(console) else None


def write_csv(rows: list[dict], file=None) -> None:
    """Every column: the result fields, then every setting (union over the runs, named as
    in config.yaml; `epochs` is the setting, `epochs_done` what ran)."""
    file = file or sys.stdout
    keys = ["id", "short_id", "kind", "status", "goal", "started", "ended", "val_acc",
            "val_acc_se", "val_n", "vs_best", "mcnemar_p_vs_best", "best_epoch", "recall_0", "recall_1", "tn", "fp", "fn", "tp", "epochs_done",
            "wall_time_s", "img_per_s", "device", "model", "params", "macs", "flash_bytes", "ram_bytes",
            "teacher_short_id", "teacher_run", "teacher_val_acc",
            "sweep", "path"]
    settings: list[str] = []
    for r in rows:
        settings += [k for k in r["config"] if k not in settings]

    def cell(v):
        if v is None:
            return ""
        return json.dumps(v, default=_json_default) if isinstance(v, (dict, list)) else v

    w = csv.writer(file, lineterminator="\n")
    w.writerow(keys + settings)
    for r in rows:
        cm = r["confusion"] or [[None, None], [None, None]]
        vs = r.get("vs_best") or {}
        flat = {**r, "tn": cm[0][0], "fp": cm[0][1], "fn": cm[1][0], "tp": cm[1][1],
                "teacher_short_id": r["teacher"], "vs_best": vs.get("mark"),
                "mcnemar_p_vs_best": vs.get("mcnemar_p")}
        w.writerow([cell(flat.get(k)) for k in keys] + [cell(r["config"].get(k)) for k in settings])


def write_json(data, file=None) -> None:
    file = file or sys.stdout
    file.write(json.dumps(data, indent=1, default=_json_default) + "\n")


def print_runs(runs_dir, kind: Optional[str] = None, sort: str = "time", *, wide: bool = False,
               fmt: str = "table", console: Optional[Console] = None) -> list[dict]:
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
        _print(runs_table(rows, settings, wide=wide, title=_title(rows, runs_dir, kind, sort),
                          width=_target_width(console)), console, wide)
    return rows


def print_sweep(ref: str, runs_dir, kind: Optional[str] = None, *, wide: bool = False,
                fmt: str = "table", console: Optional[Console] = None) -> list[dict]:
    """The members of one sweep, best val acc first, its swept settings as columns."""
    from vwwfast.progress import warn
    record = SweepRecord.open(ref, runs_dir)
    data = record.data
    rows = []
    for m in record.members:
        path = record.path.parent / m["run"]
        if not (path / "config.yaml").is_file():
            warn(f"sweep {record.short_id}: its run {m['run']} is no longer in {record.path.parent}")
            continue
        row = run_row(Run(path))
        if kind is None or row["kind"] == kind:
            rows.append({**row, "sweep_settings": m.get("settings") or {}})
    rows = _by_val_acc(rows)
    versus_best(rows)
    values = [r["sweep_settings"] for r in rows]
    groups = sweep_replicates(rows)
    if fmt == "csv":
        write_csv(rows)
    elif fmt == "json":
        write_json({**data, "rows": rows, "replicates": groups})
    else:
        swept = list(record.swept) or differing([r["config"] for r in rows], wide)
        status = data.get("status", "?")
        head = f"sweep {record.short_id}: {data.get('mode', '?')} over {', '.join(swept) or '-'}"
        replicated = REPLICATE_KEY in swept and len(groups) < len(rows)
        if replicated:
            title = (f"{head}, {status}: {len(rows)} runs in {len(groups)} replicate group"
                     f"{'s' if len(groups) > 1 else ''} (alike but for {REPLICATE_KEY}), best "
                     f"mean first")
            _print(replicates_table(groups, rows, [k for k in swept if k != REPLICATE_KEY],
                                    wide, title), console, wide)
        if wide or not replicated:
            title = f"{head}, {len(rows)} runs, {status} (best val acc first)"
            _print(runs_table(rows, swept, wide=wide, title=title, width=_target_width(console),
                              values=values), console, wide)
    return rows


def sweep_replicates(rows: list[dict]) -> list[dict]:
    """The sweep's members grouped by every swept setting but init_seed, best mean first."""
    groups = replicate_groups([{"run": r["id"], "settings": r["sweep_settings"],
                                "val_acc": r["val_acc"]} for r in rows])
    return sorted(groups, key=lambda g: (g["mean"] is None, -(g["mean"] or 0.0)))


def replicates_table(groups: list[dict], rows: list[dict], settings: list[str], wide: bool,
                     title: str) -> Group:
    """One row per replicate group: its settings, n, mean ± sd of best val acc, the range."""
    t = Table(box=box.SIMPLE_HEAD if not wide else box.SQUARE, show_edge=wide, pad_edge=wide,
              padding=(0, 1) if wide else (0, 1, 0, 0))
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
        t.add_row(*cells)
    sizes = {r.get("val_n") for r in rows} - {None}
    ses = [r["val_acc_se"] for r in rows if r.get("val_acc_se") is not None]
    notes = ["sd: the spread of the members' best val acc over init seeds (sample sd; none for a "
             "group of one)"]
    if len(sizes) == 1 and ses:
        notes.append(f"one run's own noise on these {sizes.pop():,} val images: about "
                     f"±{max(ses):.4f} (one binomial standard error)")
    if not wide:
        notes.append("--wide lists every run")
    # title and notes as text around the table: a narrow table would wrap them to its width
    return Group(Text(title), t, Text("; ".join(notes)))


def diff_runs(a: str, b: str, runs_dir) -> dict:
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


def print_diff(a: str, b: str, runs_dir, fmt: str = "table",
               console: Optional[Console] = None) -> dict:
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
        t = Table(title="settings changed (a -> b)", box=box.SIMPLE_HEAD, title_justify="left")
        for name in ("setting", "a", "b"):
            t.add_column(name, overflow="fold")
        for k, x, y in d["changes"]:
            t.add_row(k, fmt_value(x), fmt_value(y))
        _print(t, console, wide=False)
    else:
        target.print("same settings (note, tag, resume and runs_dir aside)")
    t = Table(title="result (best epoch)", box=box.SIMPLE_HEAD, title_justify="left")
    for name in ("metric", "a", "b", "b - a"):
        t.add_column(name, justify="left" if name == "metric" else "right", no_wrap=True)
    for k, name in (("val_acc", "val acc"), ("recall_0", "recall no-person"),
                    ("recall_1", "recall person")):
        t.add_row(name, fmt_metric(ra[k]), fmt_metric(rb[k]), fmt_delta(d["delta"][k]))
    de = d["delta"]["best_epoch"]
    t.add_row("best epoch", str(ra["best_epoch"] or "-"), str(rb["best_epoch"] or "-"),
              "-" if de is None else f"{int(de):+d}")
    _print(t, console, wide=False)
    target.print(paired_text(d), markup=False, highlight=False)
    return d


def paired_text(d: dict) -> str:
    """The paired comparison of a diff in words, or the one line that says why there is none."""
    p = d["paired"]
    if p is None:
        return d["paired_reason"]
    lines = [f"paired, image by image, on {p['n']:,} val images: a right and b wrong on "
             f"{p['b']:,}, a wrong and b right on {p['c']:,}", p["in_words"]]
    return "\n".join(lines + [f"note: {w}" for w in p["warnings"]])


# ---------------------------------------------------------------------------------------
# --plot

def _plot_refs(refs: list[str], runs_dir) -> list[Run]:
    """Runs named by folder, id or short id; a sweep stands for its runs."""
    runs: list[Run] = []
    for ref in refs:
        try:
            found = [resolve_run(ref, runs_dir)]
        except UserError as e:
            try:
                found = SweepRecord.open(ref, runs_dir).runs()
            except UserError:
                raise e from None
        runs += [r for r in found if r.path.resolve() not in {x.path.resolve() for x in runs}]
    return runs


def plot_labels(runs: list[Run], skip=()) -> list[str]:
    """Each run labelled by the settings that differ among them ('alpha=0.7, T=4'; unset ones
    left out); by its short id too when that leaves two alike or nothing differs."""
    rows = [run_row(r) for r in runs]
    keys = [k for k in differing([r["config"] for r in rows]) if k not in skip]
    labels = [", ".join(f"{C.short_name(k)}={setting_text(k, r['config'][k])}"
                        for k in keys if r["config"].get(k) is not None) for r in rows]
    teachers = {r["teacher"] for r in rows if r["kind"] == "student" and r["teacher"] != "-"}
    if len(teachers) > 1:
        labels = [", ".join(x for x in (label, f"teacher {r['teacher']}") if x)
                  if r["teacher"] != "-" else label for label, r in zip(labels, rows)]
    if len(runs) == 1 or any(not x for x in labels) or len(set(labels)) < len(labels):
        labels = [f"{r['short_id']}" + (f": {label}" if label else "") for r, label in zip(rows, labels)]
    return labels


def replicate_sets(runs: list[Run]) -> list[list[Run]]:
    """The runs grouped with those that differ from them only in init_seed, in order."""
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(replicate_key(r.config), []).append(r)
    return list(groups.values())


def group_labels(groups: list[list[Run]]) -> list[str]:
    """plot_labels for replicate groups: the settings that differ among the groups, then for
    a group its init seeds and the mean ± sd of its best val acc."""
    if all(len(g) == 1 for g in groups):
        return plot_labels([g[0] for g in groups])
    labels = plot_labels([g[0] for g in groups], skip={REPLICATE_KEY})
    out = []
    for g, label in zip(groups, labels):
        seeds = [r.config.get(REPLICATE_KEY) for r in g]
        seeds = [r.config.get("seed") if x is None else x for r, x in zip(g, seeds)]
        if len(g) == 1:
            out.append(f"{label}, {C.short_name(REPLICATE_KEY)}={fmt_value(seeds[0])}")
            continue
        mean, sd = stats.mean_sd([r.summary["best_val_acc"] for r in g
                                  if r.summary.get("best_val_acc") is not None])
        acc = "" if mean is None else f": best val acc mean {mean:.4f}" + ("" if sd is None else f", sd {sd:.4f}")
        out.append(f"{label}, {len(g)} init seeds ({','.join(fmt_value(x) for x in seeds)}){acc}")
    return out


def plot_runs(refs: list[str], runs_dir, out=None) -> Path:
    from vwwfast.progress import warn
    from vwwfast.records import plots
    runs = _plot_refs(refs, runs_dir)
    for r in runs:
        if not r.epochs():
            warn(f"{r.short_id} has no epoch recorded yet; it draws nothing")
    out = Path(out) if out else Path(runs_dir) / "compare.png"
    if out.suffix.lower() != ".png":
        raise UserError(f"--out {out}: the figure is a PNG; give a file name ending in .png")
    groups = replicate_sets(runs)
    labels = group_labels(groups)
    title = f"{len(runs)} run{'s' if len(runs) > 1 else ''}, labelled by what differs between them"
    if len(groups) < len(runs):
        title += ("; runs that differ only in init_seed drawn as one: their mean, and a band "
                  "from their min to their max")
    teachers = {run_row(r)["teacher"] for r in runs if r.kind == "student"} - {"-"}
    if len(teachers) == 1:
        title += f"; teacher of every KD student: {teachers.pop()}"
    return plots.write_compare([g if len(g) > 1 else g[0] for g in groups], labels, out, title)


# ---------------------------------------------------------------------------------------
# The command

def _refuse(cfg, mode: str, flags: dict) -> None:
    given = [flag for flag, on in flags.items() if on]
    if given:
        raise UserError(f"{mode} does not take {', '.join(given)}; drop "
                        f"{'it' if len(given) == 1 else 'them'}")


def runs_command(cfg, console: Optional[Console] = None) -> None:
    try:
        _command(cfg, console)
    except BrokenPipeError:  # `vwwfast runs --csv | head`: the reader took what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit


def _command(cfg, console: Optional[Console]) -> None:
    from vwwfast.progress import result
    if cfg.csv and cfg.json:
        raise UserError("--csv and --json: choose one")
    if cfg.out and not cfg.plot:
        raise UserError("--out names the figure of --plot; add --plot RUN [RUN ...] or drop --out")
    fmt = "csv" if cfg.csv else "json" if cfg.json else "table"
    if cfg.diff:
        _refuse(cfg, "--diff", {"--plot": cfg.plot, "--sweep": cfg.sweep, "--csv": cfg.csv,
                                "--wide": cfg.wide, "--kind": cfg.kind,
                                "--sort val_acc": cfg.sort != "time"})
        if len(cfg.diff) != 2:
            raise UserError("--diff takes two runs (folders, ids or short ids)")
        print_diff(cfg.diff[0], cfg.diff[1], cfg.runs_dir, fmt, console)
    elif cfg.plot:
        _refuse(cfg, "--plot", {"--sweep": cfg.sweep, "--csv": cfg.csv, "--json": cfg.json,
                                "--wide": cfg.wide, "--kind": cfg.kind,
                                "--sort val_acc": cfg.sort != "time"})
        path = plot_runs(cfg.plot, cfg.runs_dir, cfg.out)
        result(str(path))
    elif cfg.sweep:
        print_sweep(cfg.sweep, cfg.runs_dir, cfg.kind, wide=cfg.wide, fmt=fmt, console=console)
    else:
        print_runs(cfg.runs_dir, cfg.kind, cfg.sort, wide=cfg.wide, fmt=fmt, console=console)
