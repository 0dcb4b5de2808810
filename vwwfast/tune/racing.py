"""A round's race while it trains: at each rung the settings still racing are read from their
runs' selection.jsonl (the --holdout predictions every epoch leaves) and tune/race.py decides;
the students of a setting cut stop (status `pruned`, with the rung, the test and the reason).

Decisions go into tune.json before any student stops, so a resume after a kill -9 stops the
same students again (`begin`) and decides a rung it missed from the same files.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from vwwfast.progress import info
from vwwfast.records import selection
from vwwfast.tune import race as R
from vwwfast.tune.record import TuneRecord


def arm_of(key: str, run_dirs: list[Path], epoch: int, control: bool = False) -> R.Arm:
    """A setting's correctness at `epoch` on the selection split, one row per seed (a run that
    stopped early counts with its last epoch before `epoch`)."""
    rows, indices = [], None
    for d in run_dirs:
        sel = selection.read(d)
        if sel is None:
            raise ValueError(f"{d} kept no selection predictions (a run without --holdout)")
        done = [k for k, e in enumerate(sel.epochs) if e <= epoch]
        if not done:
            raise ValueError(f"{d} has no selection predictions up to epoch {epoch}")
        if indices is not None and not np.array_equal(indices, sel.indices):
            raise ValueError(f"{d} was chosen on other samples than the other runs")
        indices = sel.indices
        rows.append(sel.preds[done[-1]] == sel.labels)
    return R.Arm(key, np.stack(rows), control)


class RoundRace:
    """fit's race (train/loop.Race) for one round of a tune."""

    def __init__(self, record: TuneRecord, round_index: int, rungs: list[int], eta: float,
                 level: float, sweep, on_rung: Optional[Callable[[int, list[R.Verdict]], None]] = None):
        self.record, self.k, self.rungs = record, round_index, rungs
        self.eta, self.level, self.sweep, self.on_rung = eta, level, sweep, on_rung

    @property
    def round(self) -> dict:
        return self.record.rounds[self.k]

    def _runs_dir(self) -> Path:
        return self.sweep.record.path.parent

    def begin(self, students: list) -> None:
        """Name each member's run in tune.json, stop again what recorded decisions cut, and
        decide rungs every member has passed (a resume after a kill -9)."""
        members = self.round["members"]
        for m, entry in zip(members, self.sweep.record.members):
            m["run"] = entry["run"]
        self.record.save()
        self._apply(students)
        done = [s.start_epoch - 1 for s in students if s.active]
        if done:
            self.epoch_ended(min(done), students)

    def epoch_ended(self, epoch: int, students: list) -> None:
        decided = {d["epoch"] for d in self.round["decisions"]}
        for rung in self.rungs:
            if rung <= epoch and rung not in decided:
                self._decide(rung)
                self._apply(students)

    def racing(self, before: int) -> list[str]:
        """The settings no decision before epoch `before` cut, in plan order."""
        cut = {k for k, c in R.stopped(self.round["decisions"]).items() if c["rung"] < before}
        keys = list(dict.fromkeys(m["key"] for m in self.round["members"]))
        return [k for k in keys if k not in cut]

    def _decide(self, rung: int) -> None:
        arms = []
        for key in self.racing(rung):
            dirs = [self._runs_dir() / m["run"] for m in self.round["members"] if m["key"] == key]
            arms.append(arm_of(key, dirs, rung, control=key == R.CONTROL))
        verdicts = R.decide(arms, eta=self.eta, level=self.level, rungs=len(self.rungs), epoch=rung)
        self.round["decisions"].append({"epoch": rung, "verdicts": [v.to_dict() for v in verdicts],
                                        "floor": verdicts[0].extra["floor"] if verdicts else None,
                                        "time": time.time()})
        self.record.save()
        say_rung(rung, verdicts)
        if self.on_rung is not None:
            self.on_rung(rung, verdicts)

    def _apply(self, students: list) -> None:
        """Stop every student of a setting that a recorded decision cut."""
        cut = R.stopped(self.round["decisions"])
        by_run = {m["run"]: m["key"] for m in self.round["members"]}
        for s in students:
            key = by_run.get(s.run.id) if s.run is not None else None
            if key in cut and s.active:
                s.prune(cut[key])


def say_rung(rung: int, verdicts: list[R.Verdict]) -> None:
    """The rung's verdicts, one line a setting (the reasons in full are in the records)."""
    if not verdicts:
        return
    extra = verdicts[0].extra
    floor = "none (one seed)" if extra["floor"] is None else f"{extra['floor'] * 100:.1f} pt"
    info(f"rung at epoch {rung}: leader {extra['leader']}, noise floor {floor}, Holm level "
         f"{extra['level']:.3g}")
    for v in verdicts:
        if v.key == extra["leader"]:
            info(f"  {v.key:<8} {v.mean:.4f}  leader")
            continue
        what = v.verdict
        if v.verdict == R.NOT_RESOLVED:
            what += " (budget)"
        elif v.verdict == R.GO_ON and v.reason:  # the control, worse, goes on
            what += " (the control)"
        info(f"  {v.key:<8} {v.mean:.4f}  {0.0 - v.gap * 100:+5.1f} pt  Holm p {v.p_holm:<8.2g} {what}")
