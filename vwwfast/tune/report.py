"""A round's end, on the report split (val): the settings that ran every epoch, each over its
init seeds (mean ± sd of the checkpoints the selection split chose), paired against the
supervised control, the set the report split cannot tell from the pick, and the smallest
difference it could have resolved. The race chose on the selection split only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from vwwfast.records import predictions as P
from vwwfast.records.runs import read_json
from vwwfast.records.stats import ALPHA, fmt_p, mcnemar_p, mean_sd, smallest_resolvable
from vwwfast.tune.race import CONTROL



@dataclass
class Group:
    """A setting's finished seeds: selection and report accuracies, report correctness."""
    key: str
    label: str
    selection: list[float]
    report: list[float]
    right: np.ndarray          # bool [seeds, val images]

    @property
    def selection_mean(self) -> float:
        return float(np.mean(self.selection))


def pooled(a: Group, b: Group) -> tuple[int, int]:
    """Seed-matched discordant counts, summed: b_ where a's seed k is right and b's wrong."""
    k = min(len(a.right), len(b.right))
    x, y = a.right[:k], b.right[:k]
    return int((x & ~y).sum()), int((~x & y).sum())


def group_of(key: str, label: str, run_dirs: list[Path]) -> Optional[Group]:
    """A setting whose every seed finished with a checkpoint and its val predictions."""
    sel, rep, rows = [], [], []
    for d in run_dirs:
        s = read_json(d / "summary.json")
        pred_path = d / P.FILE
        if s.get("status") != "finished" or not pred_path.is_file():
            return None
        preds = P.read_predictions(pred_path)
        sel.append(float(s.get("best_holdout_acc") or s.get("best_val_acc") or 0.0))
        rep.append(float(s.get("best_val_acc") or 0.0))
        rows.append(preds.right)
    return Group(key, label, sel, rep, np.stack(rows)) if rows else None


def summarize(groups: list[Group]) -> dict:
    """The report as data (tune.json keeps it): per setting, and the pick's comparisons."""
    control = next((g for g in groups if g.key == CONTROL), None)
    searched = [g for g in groups if g.key != CONTROL]
    if not searched:
        return {"settings": [], "pick": None}
    pick = max(searched, key=lambda g: g.selection_mean)
    n = int(pick.right.shape[1])
    rows = []
    for g in sorted(groups, key=lambda g: -g.selection_mean):
        mean, sd = mean_sd(g.report)
        row = {"setting": g.key, "label": g.label, "seeds": len(g.report), "report_mean": mean,
               "report_sd": sd, "selection_mean": g.selection_mean}
        if control is not None and g is not control:
            b, c = pooled(g, control)
            row.update(vs_control_diff=float(np.mean(g.report) - np.mean(control.report)), vs_control_b=b,
                       vs_control_c=c, vs_control_p=mcnemar_p(b, c))
        if g is not pick:
            b, c = pooled(pick, g)
            row.update(vs_pick_p=mcnemar_p(b, c), like_pick=mcnemar_p(b, c) >= ALPHA)
        rows.append(row)
    other = control if control is not None else next((g for g in searched if g is not pick), None)
    resolvable = None
    if other is not None:
        b, c = pooled(pick, other)
        resolvable = smallest_resolvable(round((b + c) / max(1, min(len(pick.right), len(other.right)))), n)
    return {"settings": rows, "pick": pick.key, "pick_label": pick.label, "n": n,
            "smallest_resolvable": resolvable,
            "like_pick": [r["setting"] for r in rows if r.get("like_pick")]}


def lines(report: dict) -> list[str]:
    """The report in words, for a 100-column terminal."""
    if not report.get("pick"):
        return ["no searched setting ran every epoch: nothing to report"]
    out = [f"on the report split (val, {report['n']:,} images), each setting's checkpoints "
           f"chosen on the selection split:",
           f"  {'setting':<8} {'seeds':>5} {'report acc':>16}  {'vs control':>24}  vs the pick"]
    for r in report["settings"]:
        sd = "" if r["report_sd"] is None else f" ± {r['report_sd']:.4f}"
        vs = ("" if "vs_control_p" not in r else
              f"{r['vs_control_diff'] * 100:+.1f} pt p {fmt_p(r['vs_control_p'])}")
        pick = ("the pick" if r["setting"] == report["pick"] else
                "" if "vs_pick_p" not in r else
                f"{'cannot tell apart' if r['like_pick'] else 'told apart'} (p {fmt_p(r['vs_pick_p'])})")
        out.append(f"  {r['setting']:<8} {r['seeds']:>5} {r['report_mean']:.4f}{sd:<10}  {vs:>24}  {pick}")
    labels = {r["setting"]: r["label"] for r in report["settings"]}
    out.append(f"pick: {report['pick']} ({labels[report['pick']]}), chosen on the selection split")
    like = report["like_pick"]
    out.append("cannot be told from the pick on the report split: "
               + (", ".join(f"{k} ({labels[k]})" for k in like) if like else "none"))
    if report.get("smallest_resolvable") is not None:
        out.append(f"smallest difference this report split resolves between two such students "
                   f"(McNemar p < {ALPHA}): {report['smallest_resolvable'] * 100:.1f} pt")
    return out
