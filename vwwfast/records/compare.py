"""Runs compared with the noise in mind: two runs paired image by image on the val images
both were scored on (their predictions.csv), every run of a table against the best one
shown, and replicates (runs that differ only in init_seed) as one group.

The formulas are in stats.py; this module finds what to feed them and says, in one line,
when there is nothing honest to feed: a run without predictions (named with the command
that makes them), runs scored on other val images (no p-value).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from vwwfast.errors import UserError
from vwwfast.records import stats
from vwwfast.records.predictions import FILE, Predictions, read_predictions
from vwwfast.records.runs import NOISE, Run

REPLICATE_KEY = "init_seed"
NO_PREDICTIONS, OTHER_VAL = "no predictions", "other val sets"


# ---------------------------------------------------------------------------------------
# A run's predictions

def eval_command(run: Run) -> str:
    """The command that writes a run's val predictions at its model.pt, as training does."""
    crop = " --center-crop" if run.config.get("val_center_crop") else ""
    return f"vwwfast eval {run.path} --predictions {run.path / FILE}{crop}"


class PredictionCache:
    """Each run's predictions read once: (Predictions, None) or (None, why there are none)."""

    def __init__(self):
        self._seen: dict = {}

    def get(self, run: Run) -> tuple[Optional[Predictions], Optional[str]]:
        key = str(run.path.resolve())
        if key not in self._seen:
            self._seen[key] = self._load(run)
        return self._seen[key]

    @staticmethod
    def _load(run: Run):
        path = run.path / FILE
        if not path.is_file():
            return None, (f"{run.short_id} has no {FILE} (a run made before runs kept their "
                          f"predictions, or one that saved no checkpoint); make them with "
                          f"`{eval_command(run)}`")
        try:
            preds = read_predictions(path)
        except UserError as e:
            return None, str(e)
        if not len(preds):
            return None, f"{path} holds no sample; remake it with `{eval_command(run)}`"
        return preds, None


def record_mismatch(run: Run, preds: Predictions) -> Optional[str]:
    """A warning when a run's predictions do not give the confusion matrix its record holds
    for model.pt: they were remade on another machine (a few images near 0.5 may flip) or are
    not of this checkpoint and val set at all."""
    recorded = run.summary.get("confusion")
    if not recorded or recorded == preds.confusion():
        return None
    n_rec = int(np.sum(recorded))
    acc_rec = (recorded[0][0] + recorded[1][1]) / n_rec if n_rec else None
    return (f"{run.short_id}: its {FILE} gives val acc {preds.acc:.4f} on {len(preds):,} images, "
            f"its record {acc_rec:.4f} on {n_rec:,}: they are not exactly the predictions of "
            f"its model.pt as it was scored in training (remade elsewhere, or of another "
            f"checkpoint; `{eval_command(run)}` remakes them)")


# ---------------------------------------------------------------------------------------
# Two runs, image by image

@dataclass
class Pairing:
    """The paired comparison of run B against run A, or why there is none."""
    result: Optional[dict] = None          # stats.paired_comparison, plus n_a, n_b
    reason: Optional[str] = None           # one line when there is no result
    why: Optional[str] = None              # "no predictions" or "other val sets"
    warnings: list[str] = field(default_factory=list)


def _shards_hash(run: Run) -> Optional[str]:
    return (run.summary.get("fingerprints") or {}).get("shards_content_hash")


def pair_predictions(a: Predictions, b: Predictions, name_a: str = "A",
                     name_b: str = "B") -> Pairing:
    """Pair two prediction files on the keys both hold. The same key must hold the same
    image: the same label, and the same source id / file where both files name them."""
    shared, ia, ib = np.intersect1d(a.keys, b.keys, assume_unique=True, return_indices=True)
    if not len(shared):
        return Pairing(reason=f"{name_a} and {name_b} share no val image (no key in common): "
                              f"they were scored on other val sets; no paired test",
                       why=OTHER_VAL)
    other = a.labels[ia] != b.labels[ib]
    named = (a.names[ia] != "") & (b.names[ib] != "")
    other |= named & (a.names[ia] != b.names[ib])
    if other.any():
        return Pairing(reason=f"{name_a} and {name_b} were scored on other val sets (the same key "
                              f"holds another image in {int(other.sum()):,} of {len(shared):,}); "
                              f"no paired test", why=OTHER_VAL)
    out = Pairing(result={**stats.paired_comparison(a.right[ia], b.right[ib]),
                          "n_a": len(a), "n_b": len(b)})
    if len(shared) < max(len(a), len(b)):
        out.warnings.append(f"paired on the {len(shared):,} val images both were scored on "
                            f"({name_a} has {len(a):,}, {name_b} {len(b):,})")
    return out


def pair_runs(run_a: Run, run_b: Run, cache: Optional[PredictionCache] = None,
              name_a: str = "A", name_b: str = "B") -> Pairing:
    """Run B against run A on the val images both were scored on."""
    cache = cache or PredictionCache()
    ha, hb = _shards_hash(run_a), _shards_hash(run_b)
    if ha and hb and ha != hb:
        return Pairing(reason=f"{name_a} and {name_b} were trained and scored on other shards "
                              f"(content hash {ha[:12]} vs {hb[:12]}): other val sets, no paired test",
                       why=OTHER_VAL)
    (pa, why_a), (pb, why_b) = cache.get(run_a), cache.get(run_b)
    if pa is None or pb is None:
        return Pairing(reason=f"no paired test: {why_a if pa is None else why_b}",
                       why=NO_PREDICTIONS)
    out = pair_predictions(pa, pb, name_a, name_b)
    if out.result is not None:
        out.warnings += [w for w in (record_mismatch(run_a, pa), record_mismatch(run_b, pb)) if w]
    return out


# ---------------------------------------------------------------------------------------
# Every run of a table against the best one shown

def val_n(row: dict) -> Optional[int]:
    """How many val images a run's best result was measured on (its confusion matrix)."""
    cm = row.get("confusion")
    try:
        return int(np.sum(cm)) if cm else None
    except (TypeError, ValueError):
        return None


def versus_best(rows: list[dict], cache: Optional[PredictionCache] = None) -> None:
    """Add to each row: val_n, val_acc_se (one binomial standard error) and vs_best: against
    the best run of its kind shown (highest val acc), {"best": id, "mark": "best" | "≈" | "" |
    "?", ...}: ≈ when the paired McNemar p is 0.05 or more (the val set cannot tell them
    apart), "" when it tells them apart, "?" with a reason when there is no paired test."""
    cache = cache or PredictionCache()
    for r in rows:
        r["val_n"] = val_n(r)
        r["val_acc_se"] = stats.binomial_se(r.get("val_acc"), r["val_n"])
        r["vs_best"] = None
    for kind in {r["kind"] for r in rows}:
        ranked = [r for r in rows if r["kind"] == kind and r.get("val_acc") is not None]
        if not ranked:
            continue
        best = max(ranked, key=lambda r: r["val_acc"])
        best["vs_best"] = {"best": best["id"], "mark": "best"}
        best_run = Run(best["path"])
        for r in ranked:
            if r is best:
                continue
            p = pair_runs(best_run, Run(r["path"]), cache, best["short_id"], r["short_id"])
            if p.result is None:
                r["vs_best"] = {"best": best["id"], "mark": "?", "reason": p.reason, "why": p.why}
                continue
            res = p.result
            mark = "" if stats.distinguishable(res["mcnemar_p"]) else "≈"
            r["vs_best"] = {"best": best["id"], "mark": mark, **res, "warnings": p.warnings}


# ---------------------------------------------------------------------------------------
# Replicates: runs that differ only in init_seed

def replicate_groups(members: list[dict]) -> list[dict]:
    """Group runs whose settings differ only in init_seed. members: [{"run": id, "settings":
    the settings that tell them apart (a sweep member's swept settings), "val_acc": best val
    acc or None}]. Returns, in order of first appearance, [{settings (without init_seed), n,
    mean, sd, members, init_seeds}], members by init seed; n, mean and sd count the members
    with a result (the others are listed under without_result); a group of one has no sd."""
    groups: dict = {}
    for m in members:
        settings = {k: v for k, v in (m.get("settings") or {}).items() if k != REPLICATE_KEY}
        key = repr(sorted(settings.items(), key=lambda kv: kv[0]))
        g = groups.setdefault(key, {"settings": settings, "members": [], "init_seeds": [],
                                    "without_result": [], "_accs": []})
        if m.get("val_acc") is None:
            g["without_result"].append(m["run"])
            continue
        g["members"].append(m["run"])
        g["init_seeds"].append((m.get("settings") or {}).get(REPLICATE_KEY))
        g["_accs"].append(float(m["val_acc"]))
    out = []
    for g in groups.values():
        order = sorted(range(len(g["members"])), key=lambda i: _seed_order(g["init_seeds"][i]))
        for k in ("members", "init_seeds", "_accs"):
            g[k] = [g[k][i] for i in order]
        mean, sd = stats.mean_sd(g.pop("_accs"))
        if not g["without_result"]:
            g.pop("without_result")
        out.append({"settings": g["settings"], "n": len(g["members"]), "mean": mean, "sd": sd,
                    **{k: v for k, v in g.items() if k != "settings"}})
    return out


def _seed_order(seed) -> tuple:
    return (seed is None, seed if isinstance(seed, (int, float)) else 0)


def replicate_key(config: dict) -> str:
    """What runs must share to be replicates: every setting but init_seed, leaving out what
    never changes what a run learns (note, tag, resume, runs_dir). seed (the epoch order and
    views) is shared: replicates see the same batches."""
    import json
    same = {k: v for k, v in config.items() if k not in NOISE and k != REPLICATE_KEY}
    return json.dumps(same, sort_keys=True, default=str)
