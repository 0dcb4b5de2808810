"""The figures of docs/TUNE_EVIDENCE.md from a lab's records (read only; trains nothing):

    python tools/tune_evidence.py RUNS_DIR

RUNS_DIR holds a full grid sweep tagged `grid` (several settings, 3 init seeds, --holdout), a
sweep tagged `null` (one setting, 9 init seeds, --holdout) and a tune tagged `lab`.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path

import numpy as np

from vwwfast.records.runs import SweepRecord, find_sweeps
from vwwfast.tune import race as R
from vwwfast.tune.racing import arm_of
from vwwfast.tune.replay import race_on, replay_lines, settings_groups

NULL_PARTITIONS = ([[0, 1, 2], [3, 4, 5], [6, 7, 8]], [[0, 3, 6], [1, 4, 7], [2, 5, 8]],
                   [[0, 4, 8], [1, 5, 6], [2, 3, 7]])


def sweep_tagged(root: Path, tag: str) -> SweepRecord:
    [sweep] = [s for s in find_sweeps(root) if s.id.endswith(f"_sweep_{tag}")]
    return sweep


def grid_replays(root: Path) -> None:
    sweep = sweep_tagged(root, "grid")
    groups, controls = settings_groups(sweep)
    epochs = 12
    print(f"## grid {sweep.id}: {len(groups)} settings x 3 seeds, {epochs} epochs")
    for rungs in ([1, 4], [2, 6], [3, 6]):
        out = race_on(groups, rungs, 3.0, 0.05, epochs, controls)
        out["sweep"] = sweep.id
        print(f"\n### rungs {rungs}, eta 3")
        for line in replay_lines(out):
            print(line)
        print("report means:", {k: round(v, 4) for k, v in out["report_mean"].items()})


def null_races(root: Path) -> None:
    sweep = sweep_tagged(root, "null")
    groups, _ = settings_groups(sweep)
    [dirs] = groups.values()
    print(f"\n## null {sweep.id}: one setting, {len(dirs)} init seeds, as races of 3 settings x 3 seeds")
    worse = tested = alone = 0
    for part in NULL_PARTITIONS:
        for rung in (1, 4):
            arms = [arm_of(f"s{k}", [dirs[i] for i in seeds], rung) for k, seeds in enumerate(part)]
            out = R.decide(arms, eta=1.0, level=0.05, rungs=2)
            lead = max(range(3), key=lambda i: arms[i].mean)
            for i, v in enumerate(out):
                if i == lead:
                    continue
                tested += 3
                worse += 3 * (v.verdict == R.WORSE)
                alone += 3 * (v.p <= 0.025)
            floor = out[0].extra["floor"]
            print(f"partition {part} rung {rung}: means {[round(a.mean, 4) for a in arms]}, floor "
                  f"{floor * 100:.1f} pt, verdicts {[v.verdict for v in out]}, p "
                  f"{[round(v.p, 4) for v in out]}")
    print(f"member-rungs tested (members of non-leading settings): {tested}; declared worse: {worse}; "
          f"one-sided per-image p <= 0.025 without the floor and Holm: {alone}")


def the_race(root: Path) -> None:
    [path] = [p for p in root.iterdir() if p.name.endswith("_tune_lab") and (p / "tune.json").is_file()]
    tune = json.loads((path / "tune.json").read_text())
    [rnd] = tune["rounds"]
    settings, seeds, epochs = len(rnd["trials"]) + 1, tune["seeds"], tune["base"]["epochs"]
    sweep = SweepRecord(root / rnd["sweep"])
    start = sweep.data["created_ns"] / 1e9
    first = rnd["decisions"][0]["time"]
    ended = datetime.fromisoformat(tune["ended"]).timestamp()
    print(f"\n## tune {tune['id']}: {len(rnd['trials'])} settings + control x {seeds} seeds, {epochs} epochs")
    spent = rnd["student_epochs"]
    print(f"student-epochs {spent}; 3-seed grid {settings * seeds * epochs} "
          f"({spent / (settings * seeds * epochs):.2f}); one-seed grid {settings * epochs} "
          f"({spent / (settings * epochs):.2f})")
    print(f"wall from the sweep's start: {ended - start:.0f} s; epoch 1 with all "
          f"{settings * seeds} students: {first - start:.0f} s; a grid's {epochs} such epochs: "
          f"{epochs * (first - start):.0f} s; ratio {(ended - start) / (epochs * (first - start)):.2f}")
    for d in rnd["decisions"]:
        print(f"rung {d['epoch']} floor {d['floor'] * 100:.1f} pt: " + ", ".join(
            f"{v['setting']} {v['mean']:.4f} {v['verdict']} (p_holm {v['p_holm']:.3g})" for v in d["verdicts"]))
    print(json.dumps(rnd["report"], indent=1, default=float))
    print("trials:", [(t["number"], t["params"]) for t in rnd["trials"]])


if __name__ == "__main__":
    root = Path(sys.argv[1])
    np.set_printoptions(precision=4)
    grid_replays(root)
    null_races(root)
    the_race(root)
