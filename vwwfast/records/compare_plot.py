"""`vwwfast runs --plot`: the runs named, grouped by replicate and labelled, in one figure.

A sweep stands for its runs; runs alike but for init_seed are drawn as one (their mean and a
band); each is labelled by the settings that differ among them. plots.py draws the figure.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Union

from vwwfast import config as C
from vwwfast.errors import UserError
from vwwfast.fmt import fmt_value
from vwwfast.records import stats
from vwwfast.records.compare import REPLICATE_KEY, replicate_key
from vwwfast.records.rows import differing, run_row, setting_text
from vwwfast.records.runs import Run, SweepRecord, resolve_run


def _plot_refs(refs: list[str], runs_dir: Union[str, Path]) -> list[Run]:
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


def plot_labels(runs: list[Run], skip: Collection[str] = ()) -> list[str]:
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


def _title(runs: list[Run], groups: list[list[Run]]) -> str:
    title = f"{len(runs)} run{'s' if len(runs) > 1 else ''}, labelled by what differs between them"
    if len(groups) < len(runs):
        title += ("; runs that differ only in init_seed drawn as one: their mean, and a band "
                  "from their min to their max")
    teachers = {run_row(r)["teacher"] for r in runs if r.kind == "student"} - {"-"}
    if len(teachers) == 1:
        title += f"; teacher of every KD student: {teachers.pop()}"
    return title


def plot_runs(refs: list[str], runs_dir: Union[str, Path],
              out: Union[str, Path, None] = None) -> Path:
    """The compare figure of the runs `refs` name (RUNS_DIR/compare.png unless `out`)."""
    from vwwfast.progress import warn
    from vwwfast.records import plots
    runs = _plot_refs(refs, runs_dir)
    for r in runs:
        if not r.epochs():
            warn(f"{r.short_id} has no epoch recorded yet; it draws nothing")
    path = Path(out) if out else Path(runs_dir) / "compare.png"
    if path.suffix.lower() != ".png":
        raise UserError(f"--out {path}: the figure is a PNG; give a file name ending in .png")
    groups = replicate_sets(runs)
    labels = group_labels(groups)
    return plots.write_compare([g if len(g) > 1 else g[0] for g in groups], labels, path,
                               _title(runs, groups))
