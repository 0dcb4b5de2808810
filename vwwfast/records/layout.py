"""The runs table as rich draws it: its columns, cells and captions, fitted to a terminal width.

The narrow table fits a 100-column terminal: short ids, the goal (cut to fit), only the
settings that differ among the runs shown (short names), the teacher run, val acc, best epoch
and recalls. The wide one (--wide) shows everything unshortened.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Optional

from rich import box
from rich.table import Table

from vwwfast import config as C
from vwwfast.fmt import fmt_bytes, fmt_count, fmt_duration, fmt_metric, fmt_rate
from vwwfast.provenance import model_short
from vwwfast.records import stats
from vwwfast.records.compare import NO_PREDICTIONS
from vwwfast.records.predictions import FILE as PREDICTIONS_FILE
from vwwfast.records.rows import Row, setting_text
from vwwfast.records.runs import short_id
from vwwfast.records.stats import fmt_p

NARROW_MARK = {"best": "*"}  # one character in the narrow table
GOAL_MIN = 10  # the narrow table drops setting columns before the goal gets narrower
# What the narrow table gives up, in this order, to fit without cutting a run id: the goal
# (down to GOAL_MIN, then whole), the model's cost columns, then the last settings.
# Each entry: (show_goal, show_cost).
LAYOUTS = ((True, True), (False, True), (False, False))
WIDE_COLUMNS = ("TN FP FN TP", "epochs", "wall", "img/s", "started", "device", "sweep")


@dataclass(frozen=True)
class TablePlan:
    """One drawing of the runs table: what it shows beyond what its rows decide."""
    settings: tuple[str, ...]     # setting columns, the first ones matter most
    wide: bool = False            # everything unshortened, in a box
    title: Optional[str] = None
    show_goal: bool = True
    show_cost: bool = True        # the model's cost columns, once a run recorded them
    goal_max: Optional[int] = None  # the goal column's widest, in characters
    dropped: tuple[str, ...] = ()   # settings left out to fit, named in the caption


@dataclass(frozen=True)
class Columns:
    """The optional columns that the rows and the plan call for."""
    kind: bool      # teachers and students together (or wide)
    status: bool    # a run not finished (or wide)
    teacher: bool   # students of more than one teacher (or wide)
    marks: bool     # runs compared with the best: a mark by the val acc, the p-value (wide)
    cost: bool      # params and MACs
    files: bool     # the exported int8 file's flash and RAM
    cost_hidden: bool  # runs recorded costs that the plan leaves out
    mixed_selection: bool = False  # some best epochs chosen on val, some on a holdout: mark


def table_frame(wide: bool) -> dict[str, Any]:
    """The narrow table: a rule under the header, 2 spaces between columns; the wide: boxed."""
    return {"box": box.SQUARE if wide else box.SIMPLE_HEAD, "show_edge": wide, "pad_edge": wide,
            "padding": (0, 1) if wide else (0, 1, 0, 0)}


def fmt_acc_se(acc: Optional[float], se: Optional[float]) -> str:
    """0.8350±0.0041: an accuracy and one standard error."""
    if acc is None:
        return "-"
    return fmt_metric(acc) + ("" if se is None else f"±{se:.4f}")


def _chosen_on(rows: list[Row]) -> str:
    """Which split chose each run's best epoch: on val itself, its val acc is optimistic."""
    on_val = [r for r in rows if r.get("val_acc") is not None and r.get("selected_on") == "val"]
    if not on_val:
        return "best epochs chosen on a --holdout: val acc is only reported"
    if len(on_val) == sum(r.get("val_acc") is not None for r in rows):
        return ("best epochs chosen on val itself: each val acc is optimistic (the best of its "
                "epochs); --holdout N chooses on training samples set apart")
    return ("° best epoch chosen on val itself: that val acc is optimistic; the others were "
            "chosen on a --holdout")


def noise_captions(rows: list[Row], marks: bool, wide: bool) -> list[str]:
    """What the ± and the marks mean, under the table."""
    sizes = {r.get("val_n") for r in rows if r.get("val_acc") is not None} - {None}
    on = f"{sizes.pop():,} val images" if len(sizes) == 1 else "each run's val images"
    lines = [f"± one standard error of the val acc (binomial, {on})", _chosen_on(rows)]
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
# Fitting a width

def runs_table(rows: list[Row], settings: list[str], *, wide: bool = False,
               title: Optional[str] = None, width: Optional[int] = None,
               values: Optional[list[dict[str, Any]]] = None) -> Table:
    """The rich table of `rows`, settings as columns (the first ones matter most).
    width (narrow table only): fit it by cutting the goal down to GOAL_MIN characters, then
    leaving out the goal, the cost columns and the last settings (LAYOUTS), named in the
    caption. values: per row, the setting values to show (a sweep's own record), else the
    config's."""
    plan = TablePlan(tuple(settings), wide=wide, title=title)
    if wide or width is None:
        return draw_table(rows, plan, values)
    return _fitted(rows, plan, values, width)


def _fitted(rows: list[Row], plan: TablePlan, values: Optional[list[dict[str, Any]]],
            width: int) -> Table:
    """The narrow table at most `width` wide: the first layout that keeps every setting, else
    the earliest of those that keep the most; the goal then takes what is left."""
    tries = [(layout, keep) for layout in _layouts(plan)
             if (keep := _most_settings(rows, layout, values, width)) is not None]
    tries = tries or [(_layouts(plan)[-1], ())]  # nothing fits: the fewest columns, cut by rich
    layout, keep = next(((lo, k) for lo, k in tries if len(k) == len(plan.settings)),
                        max(tries, key=lambda t: len(t[1])))  # the earliest of the best
    t = draw_table(rows, replace(layout, settings=keep, dropped=plan.settings[len(keep):]), values)
    if layout.show_goal:
        _shrink_goal(t, width)
    return t


def _layouts(plan: TablePlan) -> list[TablePlan]:
    return [replace(plan, show_goal=goal, show_cost=cost) for goal, cost in LAYOUTS]


def _most_settings(rows: list[Row], layout: TablePlan, values: Optional[list[dict[str, Any]]],
                   width: int) -> Optional[tuple[str, ...]]:
    """The most of the first settings that fit `width` with the goal at GOAL_MIN; None: none."""
    from vwwfast.progress import natural_width
    keep = layout.settings
    while natural_width(draw_table(rows, replace(layout, settings=keep, goal_max=GOAL_MIN),
                                   values)) > width:
        if not keep:
            return None
        keep = keep[:-1]
    return keep


def _shrink_goal(t: Table, width: int) -> None:
    """Narrow the goal column (not below GOAL_MIN) by what the table is too wide."""
    from vwwfast.progress import natural_width
    need = natural_width(t)
    if need <= width:
        return
    goal = next(c for c in t.columns if c.header == "goal")
    natural = max((len(str(x)) for x in goal.cells), default=GOAL_MIN)
    goal.max_width = max(GOAL_MIN, natural - (need - width))


# ---------------------------------------------------------------------------------------
# Drawing

def draw_table(rows: list[Row], plan: TablePlan,
               values: Optional[list[dict[str, Any]]] = None) -> Table:
    """The table of `rows` as `plan` says; values: per row, the setting values to show."""
    cols = _columns(rows, plan)
    t = Table(title=plan.title, **table_frame(plan.wide), title_justify="left",
              caption_justify="left")
    _add_columns(t, plan, cols)
    ids = [r["id"] for r in rows] if plan.wide else _unique_ids(rows)
    for i, r in enumerate(rows):
        shown = values[i] if values is not None else r["config"]
        t.add_row(*_row_cells(r, ids[i], shown, plan, cols))
    captions = _captions(rows, plan, cols)
    if captions:
        t.caption = "\n".join(captions)
    return t


def _teachers(rows: list[Row]) -> set[str]:
    """The students' teachers, in short."""
    return {r["teacher"] for r in rows if r["kind"] == "student" and r["teacher"] != "-"}


def _columns(rows: list[Row], plan: TablePlan) -> Columns:
    wide = plan.wide
    teachers = _teachers(rows)
    costs = any(r.get("params") is not None for r in rows)
    return Columns(kind=wide or len({r["kind"] for r in rows}) > 1,
                   status=wide or {r["status"] for r in rows} != {"finished"},
                   teacher=bool(teachers) and (wide or len(teachers) > 1),
                   marks=any(r.get("vs_best") for r in rows),
                   cost=plan.show_cost and costs,
                   files=plan.show_cost and any(r.get("flash_bytes") is not None for r in rows),
                   cost_hidden=costs and not plan.show_cost,
                   mixed_selection=len({r.get("selected_on") for r in rows
                                        if r.get("val_acc") is not None}) > 1)


def _unique_ids(rows: list[Row]) -> list[str]:
    shorts = [r["short_id"] for r in rows]
    return [r["short_id"] if shorts.count(r["short_id"]) == 1 else r["id"] for r in rows]


def _setting_name(key: str, wide: bool) -> str:
    return key if wide else C.short_name(key)


def _add_columns(t: Table, plan: TablePlan, cols: Columns) -> None:
    """The columns, left to right, in the order _row_cells fills them."""
    t.add_column("run", no_wrap=True)
    if cols.kind:
        t.add_column("kind", no_wrap=True)
    if cols.status:
        t.add_column("status", no_wrap=True)
    if plan.show_goal:
        t.add_column("goal", no_wrap=not plan.wide, overflow="fold" if plan.wide else "ellipsis",
                     max_width=plan.goal_max)
    for k in plan.settings:
        t.add_column(_setting_name(k, plan.wide), no_wrap=True, justify="right")
    if cols.teacher:
        t.add_column("teacher", no_wrap=True)
        if plan.wide:
            t.add_column("teacher\nval acc", no_wrap=True, justify="right")
    _add_result_columns(t, plan, cols)
    if plan.wide:
        for name in WIDE_COLUMNS:
            t.add_column(name, no_wrap=True, justify="right" if name in ("epochs", "wall", "img/s")
                         else "left")


def _add_result_columns(t: Table, plan: TablePlan, cols: Columns) -> None:
    """Val acc (and the mark against the best), best epoch, recalls, what the model costs."""
    # the mark against the best run: inside the accuracy's cell in the narrow table (it fits
    # 100 columns), in columns of its own with the p-value in the wide one
    t.add_column("val acc\n± se", no_wrap=True, justify="right")
    if cols.marks and plan.wide:
        t.add_column("vs\nbest", no_wrap=True, justify="center")
        t.add_column("p vs\nbest", no_wrap=True, justify="right")
    for name in ("best\nepoch", "recall\nno-pers", "recall\nperson"):
        t.add_column(name, no_wrap=True, justify="right")
    # what the model costs: shown once a run recorded it (int8 flash / RAM once exported)
    if cols.cost:
        t.add_column("params", no_wrap=True, justify="right")
        t.add_column("MACs", no_wrap=True, justify="right")
    if cols.files:
        t.add_column("int8\nflash", no_wrap=True, justify="right")
        t.add_column("int8\nRAM est", no_wrap=True, justify="right")


def _row_cells(r: Row, run_id: str, shown: dict[str, Any], plan: TablePlan,
               cols: Columns) -> list[str]:
    """One run's cells, in the order _add_columns made the columns."""
    cells = [run_id]
    if cols.kind:
        cells.append(r["kind"] or "?")
    if cols.status:
        cells.append(r["status"])
    if plan.show_goal:
        cells.append(r["goal"] or "-")
    cells += _setting_cells(r, shown, plan)
    if cols.teacher:
        cells += _teacher_cells(r, plan.wide)
    cells += _result_cells(r, plan.wide, cols)
    if plan.wide:
        cells += _wide_cells(r)
    return cells


def _setting_cells(r: Row, shown: dict[str, Any], plan: TablePlan) -> list[str]:
    settings = plan.settings
    cells = [setting_text(k, shown.get(k), short=not plan.wide) if k in shown else ""
             for k in settings]
    if "arch" in settings and "arch" in shown and not plan.wide:  # mbv3s-0.35: the arch at its width
        cells[settings.index("arch")] = model_short(shown["arch"], r["config"].get("width"))
    return cells


def _teacher_cells(r: Row, wide: bool) -> list[str]:
    student = r["kind"] == "student"
    cells = [((r["teacher_run"] or r["teacher"]) if wide else r["teacher"]) if student else "-"]
    if wide:
        cells.append(fmt_metric(r["teacher_val_acc"]) if student else "-")
    return cells


def _result_cells(r: Row, wide: bool, cols: Columns) -> list[str]:
    vs = r.get("vs_best") or {}
    mark = vs.get("mark", "")
    acc = fmt_acc_se(r["val_acc"], r.get("val_acc_se"))
    if cols.marks and wide:
        cells = [acc, mark, fmt_p(vs["mcnemar_p"]) if "mcnemar_p" in vs else "-"]
    else:
        cells = [acc + (NARROW_MARK.get(mark, mark) or " " if cols.marks else "")]
    cells += [_best_epoch(r, rows_mixed=cols.mixed_selection), fmt_metric(r["recall_0"], 3),
              fmt_metric(r["recall_1"], 3)]
    if cols.cost:
        cells += [fmt_count(r.get("params")), fmt_count(r.get("macs"))]
    if cols.files:
        cells += [fmt_bytes(r.get("flash_bytes")), fmt_bytes(r.get("ram_bytes"))]
    return cells


def _best_epoch(r: Row, rows_mixed: bool) -> str:
    """The best epoch, marked ° where val chose it among runs of which some chose on a holdout."""
    mark = "°" if rows_mixed and r.get("selected_on") == "val" and r["best_epoch"] else ""
    return f"{r['best_epoch'] or '-'}{mark}"


def _wide_cells(r: Row) -> list[str]:
    """The cells of WIDE_COLUMNS."""
    cm = r["confusion"]
    epochs = f"{r['epochs_done'] if r['epochs_done'] is not None else '-'}/{r['epochs'] or '-'}"
    return [" ".join(str(v) for row in cm for v in row) if cm else "-", epochs,
            fmt_duration(r["wall_time_s"]), fmt_rate(r["img_per_s"]),
            str(r["started"] or "-"), str(r["device"] or "-"),
            short_id(r["sweep"]) if r["sweep"] else "-"]


# ---------------------------------------------------------------------------------------
# Captions

def _captions(rows: list[Row], plan: TablePlan, cols: Columns) -> list[str]:
    """Under the table: the one teacher, what ± and the marks mean, the units of the costs,
    the short names, and what the narrow table left out."""
    captions = _teacher_caption(rows, cols) + noise_captions(rows, cols.marks, plan.wide)
    if cols.cost:
        captions.append("params, MACs: per image at the run's input size"
                        + ("; int8 flash: the exported int8 file's size, RAM est: its estimated "
                           "activation peak (KB = 1000 bytes)" if cols.files else ""))
    abbreviated = [f"{name} = {k}" for k in plan.settings
                   if (name := _setting_name(k, plan.wide)) != k]
    if abbreviated:
        captions.append(", ".join(abbreviated))
    if plan.dropped:
        captions.append(f"also differ: {', '.join(plan.dropped)} (--wide shows them)")
    hidden = [what for what, gone in (("goals", not plan.show_goal),
                                      ("params, MACs, flash and RAM", cols.cost_hidden)) if gone]
    if hidden:
        captions.append(f"{' and '.join(hidden)}: --wide shows them")
    return captions


def _teacher_caption(rows: list[Row], cols: Columns) -> list[str]:
    """The teacher of every student, when one teacher taught them all (no teacher column)."""
    if cols.teacher or not _teachers(rows):
        return []
    r = next(r for r in rows if r["kind"] == "student" and r["teacher"] != "-")
    acc = r["teacher_val_acc"]
    return [f"teacher of every KD student: {r['teacher']}"
            + (f" (val acc {acc:.4f})" if acc is not None else "")]
