"""`vwwfast tune --replay SWEEP`: the race run after the fact on a finished sweep whose members
kept their --holdout predictions (selection.jsonl): who it would have cut at which rung, the
student-epochs that saves, whether its pick can be told from the sweep's best on the report
split, and how well each rung's ranking foretells the final one (Kendall's tau)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from vwwfast import config as C
from vwwfast.errors import UserError
from vwwfast.progress import result
from vwwfast.records import selection
from vwwfast.records.runs import SweepRecord, read_json
from vwwfast.records.stats import ALPHA, fmt_p, kendall_tau, mcnemar_p
from vwwfast.train.commands import member_label
from vwwfast.tune import race as R
from vwwfast.tune.racing import arm_of
from vwwfast.tune.report import Group, group_of, pooled


def settings_groups(sweep: SweepRecord) -> tuple[dict[str, list[Path]], set[str]]:
    """The sweep's settings (its swept values but the init seed), each with its runs in seed
    order; and which of them are supervised controls (alpha 0)."""
    groups: dict[str, list[tuple]] = {}
    controls = set()
    for m in sweep.members:
        settings = {k: v for k, v in m["settings"].items() if k != "init_seed"}
        seed = m["settings"].get("init_seed") or 0
        key = member_label(settings) or "all"
        groups.setdefault(key, []).append((seed, sweep.path.parent / m["run"]))
        alpha = settings.get("alpha", C.load_yaml(sweep.path.parent / m["run"] / "config.yaml").get("alpha"))
        if alpha == 0:
            controls.add(key)
    return {k: [d for _, d in sorted(v, key=lambda x: x[0])] for k, v in groups.items()}, controls


def _check(sweep: SweepRecord, groups: dict[str, list[Path]]) -> int:
    """The sweep's epochs; a sweep the race cannot be replayed on is refused in one line."""
    dirs = [d for ds in groups.values() for d in ds]
    unfinished = [d.name for d in dirs if read_json(d / "summary.json").get("status") != "finished"]
    if unfinished:
        raise UserError(f"sweep {sweep.id}: {len(unfinished)} members did not finish "
                        f"({unfinished[0]}); replay needs a finished sweep")
    if any(selection.read(d) is None for d in dirs):
        raise UserError(f"sweep {sweep.id} ran without --holdout: its members kept no selection "
                        f"predictions to replay the race on")
    if max(len(ds) for ds in groups.values()) < 2:
        raise UserError(f"sweep {sweep.id} has one init seed per setting: the race needs "
                        f"replicates (--init-seed 0,1,2) for its noise floor")
    epochs = {int(C.load_yaml(d / "config.yaml")["epochs"]) for d in dirs}
    return max(epochs)


def replay(cfg) -> dict:
    sweep = SweepRecord.open(cfg.replay, cfg.runs_dir)
    groups, controls = settings_groups(sweep)
    epochs = _check(sweep, groups)
    rungs = R.parse_rungs(cfg.rungs, epochs)
    out = race_on(groups, rungs, cfg.eta, cfg.level, epochs, controls)
    out["sweep"] = sweep.id
    for line in replay_lines(out):
        result(line)
    return out


def race_on(groups: dict[str, list[Path]], rungs: list[int], eta: float, level: float,
            epochs: int, controls: Optional[set[str]] = None) -> dict:
    """The race's decisions at `rungs` on logged runs, and what they would have cost and chosen."""
    controls = controls or set()
    racing, decisions, taus = list(groups), [], []
    finals = {k: group_of(k, k, ds) for k, ds in groups.items()}
    report_mean = {k: float(np.mean(g.report)) for k, g in finals.items() if g is not None}
    for rung in rungs:
        every = [arm_of(k, groups[k], rung, k in controls) for k in groups]
        keys = [a.key for a in every]
        taus.append(kendall_tau([a.mean for a in every], [report_mean[k] for k in keys]))
        verdicts = R.decide([a for a in every if a.key in racing], eta=eta, level=level,
                            rungs=len(rungs), epoch=rung)
        decisions.append({"epoch": rung, "verdicts": [v.to_dict() for v in verdicts],
                          "floor": verdicts[0].extra["floor"] if verdicts else None})
        racing = [v.key for v in verdicts if v.verdict == R.GO_ON]
    spent = sum(_cut_epochs(k, decisions, epochs) * len(ds) for k, ds in groups.items())
    grid = sum(epochs * len(ds) for ds in groups.values())
    searched = [k for k in racing if k not in controls]
    pick = max(searched, key=lambda k: _selection(finals[k])) if searched else None
    every_searched = [k for k in groups if k not in controls]
    grid_pick = max(every_searched, key=lambda k: _selection(finals[k]))
    hindsight = max(every_searched, key=lambda k: report_mean[k])
    return {"rungs": rungs, "decisions": decisions, "taus": taus, "student_epochs": spent,
            "grid_student_epochs": grid, "pick": pick, "grid_pick": grid_pick,
            "hindsight_best": hindsight, "report_mean": report_mean,
            "vs_grid_pick": _versus(finals, pick, grid_pick),
            "vs_hindsight_best": _versus(finals, pick, hindsight)}


def _selection(g: Optional[Group]) -> float:
    return g.selection_mean if g is not None else -1.0


def _cut_epochs(key: str, decisions: list[dict], epochs: int) -> int:
    """The epochs a setting's runs would have trained: to its cut, else to the end."""
    return int(R.stopped(decisions).get(key, {}).get("rung", epochs))


def _versus(finals: dict, a: Optional[str], b: str) -> Optional[dict]:
    """The pick against another setting on the report split, seed-matched discordant images."""
    if a is None or finals.get(a) is None or finals.get(b) is None:
        return None
    if a == b:
        return {"same": True, "diff": 0.0, "p": 1.0}
    ga, gb = finals[a], finals[b]
    b_, c_ = pooled(ga, gb)
    return {"same": False, "diff": float(np.mean(ga.report) - np.mean(gb.report)),
            "b": b_, "c": c_, "p": mcnemar_p(b_, c_)}


def replay_lines(out: dict) -> list[str]:
    lines = [f"replay of sweep {out.get('sweep', '')}: rungs at epochs "
             f"{', '.join(map(str, out['rungs']))}"]
    for d, tau in zip(out["decisions"], out["taus"]):
        cut = [f"{v['setting']} {v['verdict']} (p {fmt_p(v['p_holm'])})" for v in d["verdicts"]
               if v["verdict"] != R.GO_ON]
        floor = "-" if d["floor"] is None else f"{d['floor'] * 100:.1f} pt"
        lines.append(f"  rung {d['epoch']} (noise floor {floor}, Kendall tau to the final "
                     f"ranking {'-' if tau is None else f'{tau:.2f}'}): "
                     + (", ".join(cut) if cut else "every setting goes on"))
    spent, grid = out["student_epochs"], out["grid_student_epochs"]
    lines.append(f"student-epochs: {spent} of the sweep's {grid} ({spent / grid:.2f}); "
                 f"{grid - spent} saved")
    lines.append(f"pick: {out['pick']}; the sweep's own pick (every setting to the end, chosen "
                 f"on the selection split): {out['grid_pick']}; best on the report split: "
                 f"{out['hindsight_best']}")
    for name, key in (("the sweep's pick", "vs_grid_pick"), ("the report split's best", "vs_hindsight_best")):
        v = out[key]
        if v is None:
            continue
        if v["same"]:
            lines.append(f"  against {name}: the same setting")
        else:
            told = "told apart" if v["p"] < ALPHA else "cannot be told apart"
            lines.append(f"  against {name}: {v['diff'] * 100:+.1f} pt on the report split, "
                         f"b {v['b']} / c {v['c']}, McNemar p {fmt_p(v['p'])}: {told}")
    return lines
