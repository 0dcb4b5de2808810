"""`vwwfast train-teacher` and `vwwfast distill`: one run, a sweep of several students, or the
resume of either. Each resolves its configs, makes the records and hands them to the loop."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Optional

from vwwfast import config as C
from vwwfast import distributed as D
from vwwfast.errors import UserError
from vwwfast.fmt import fmt_metric
from vwwfast.interrupts import interrupt_point
from vwwfast.progress import info, result, warn
from vwwfast.records.runs import ENDED_BY_ITSELF, SweepRecord, resolve_run
from vwwfast.records.table import print_sweep
from vwwfast.train.inputs import resolve_configs
from vwwfast.train.loop import fit


class SweepInfo:
    """A sweep's record (rank 0), and each member's swept settings and short label. A new
    sweep's record is made by `make` when its runs are (RunRecords.create_all), once every
    check has passed."""

    def __init__(self, record: Optional[SweepRecord], settings: list[dict],
                 make: Optional[Callable[[], SweepRecord]] = None,
                 continue_with: Optional[str] = None):
        self.record, self.settings, self._make = record, settings, make
        self.continue_with = continue_with  # the command that continues it (a tune's own)
        self.labels = [member_label(x) for x in settings]

    @property
    def id(self) -> Optional[str]:
        return self.record.id if self.record is not None else None

    def make_record(self) -> None:
        if self.record is None and self._make is not None and D.is_main():
            self.record = self._make()
            info(f"sweep of {len(self.settings)} students sharing every batch: {self.record.path}")


def member_label(settings: dict) -> str:
    """A sweep member's tag from its settings, by their short names (config.short_name):
    alpha 0.5, gamma 2 -> 'a0.5-gamma2'; text after a dash: 'opt-sgd', 'pretr-on', 'init-model'."""
    parts = []
    for k, v in settings.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            parts.append(f"{C.short_name(k)}{v:g}")
        else:
            text = Path(str(v)).stem if k == "init" and v else {True: "on", False: "off"}.get(v, str(v))
            parts.append(f"{C.short_name(k)}-{text}")
    return "-".join(parts)


def train_teacher(cfg: C.TrainConfig) -> dict:
    if cfg.resume:
        return _lone(_resume(cfg, C.TrainConfig, "teacher"))
    C.require(cfg, "shards")
    return _lone(fit(resolve_configs([cfg]), "teacher"))


def distill(cfg) -> dict | list[dict]:
    """`vwwfast distill`: a config, or a config.Sweep of several students."""
    if isinstance(cfg, C.Sweep):
        return _sweep(cfg)
    if cfg.resume:
        summaries = _resume(cfg, C.DistillConfig, "student")
        return summaries if len(summaries) > 1 else _lone(summaries)
    C.require(cfg, "shards")
    return _lone(fit(resolve_configs([cfg]), "student"))


def _lone(summaries: list[dict]) -> dict:
    """A lone run's summary; a run that failed (a loss that became NaN) exits non-zero."""
    s = summaries[0]
    if s.get("status") == "failed":
        raise UserError(f"run {Path(s.get('run_dir') or '?').name} failed: {s.get('error')}")
    if s.get("run_dir"):
        _report_of_ended_runs(lambda: result(
            f"run {s['run_dir']}: best val acc {fmt_metric(s.get('best_val_acc'), 4)} "
            f"at epoch {s.get('best_epoch') or '-'}"))
    return s


def _report_of_ended_runs(report: Callable[[], object]) -> None:
    """The report of runs that have all ended: a Ctrl-C while it prints cuts the report short,
    not the runs (the command exits 0, and says so)."""
    try:
        interrupt_point("report")
        report()
    except KeyboardInterrupt:
        warn("Ctrl-C while the report printed: every run had ended and its records are complete "
             "(`vwwfast runs` lists them)")


def _sweep(sweep: C.Sweep) -> list[dict]:
    base = sweep.configs[0]
    C.require(base, "shards")
    cfgs = resolve_configs(sweep.configs)
    # the record is made with its members' runs, once every check has passed
    members = SweepInfo(None, [{k: getattr(c, k) for k in sweep.swept} for c in sweep.configs],
                        lambda: SweepRecord.create(base.runs_dir, base.tag, sweep.mode, sweep.swept))
    cfgs = [dataclasses.replace(c, tag="_".join(t for t in (c.tag, label) if t))
            for c, label in zip(cfgs, members.labels)]
    summaries = fit(cfgs, "student", sweep=members)
    _report_sweep(summaries, members)
    return summaries


def _report_sweep(summaries: list[dict], sweep: SweepInfo) -> None:
    """The members side by side (stdout); a sweep where every student failed exits non-zero."""
    record = sweep.record
    if record is not None:
        _report_of_ended_runs(lambda: print_sweep(str(record.path), record.path.parent))
    failed = [s for s in summaries if s.get("status") == "failed"]
    if failed and len(failed) == len(summaries):
        raise UserError(f"every student of the sweep failed ({failed[0].get('error')})")


def saved_config(run, cls):
    """The settings a run started with (its config.yaml), to continue it with."""
    saved = C.load_yaml(run.path / "config.yaml")
    saved.pop("resume", None)
    return C.resolve(cls, saved, {}, where=str(run.path / "config.yaml"))


def _sweep_of(run) -> dict:
    """The record of the sweep a run belongs to ({} for a lone run, or one since removed)."""
    sweep = run.summary.get("sweep")
    path = run.path.parent / str(sweep) / "sweep.json"
    return SweepRecord(path.parent).data if sweep and path.is_file() else {}


def _refuse_a_tune_round(sweep: dict) -> None:
    """A tune's round continues with its tune, whose race decides the rungs still to come."""
    if sweep.get("continue_with"):
        raise UserError(f"sweep {sweep.get('id')} is a round of a tune; continue it with "
                        f"`{sweep['continue_with']}`")


def _resume(cfg, cls, kind: str) -> list[dict]:
    """Continue a run (or a whole sweep) with the settings it started with."""
    ref = cfg.resume
    sweep_dir = Path(ref) if (Path(ref) / "sweep.json").is_file() else None
    if sweep_dir is None and not Path(ref).is_dir():
        try:
            sweep_dir = SweepRecord.open(ref, cfg.runs_dir).path
        except UserError:
            sweep_dir = None
    if sweep_dir is not None:
        record = SweepRecord.open(str(sweep_dir), cfg.runs_dir)
        _refuse_a_tune_round(record.data)
        runs = [resolve_run(m["run"], record.path.parent) for m in record.members]
        sweep = SweepInfo(record, [m["settings"] for m in record.members])
    else:
        runs, sweep = [resolve_run(ref, cfg.runs_dir)], None
        _refuse_a_tune_round(_sweep_of(runs[0]))
        status = runs[0].summary.get("status")
        if status == "finished":
            raise UserError(f"{runs[0].id} already finished ({runs[0].summary.get('epochs_done')} "
                            f"epochs); to train longer start a new run from its weights: "
                            f"--init {runs[0].path}/model.pt")
    cfgs = [saved_config(run, cls) for run in runs]
    if sweep is not None and all(r.summary.get("status") in ENDED_BY_ITSELF for r in runs):
        raise UserError(f"every member of sweep {sweep.id} already ended; nothing to resume")
    info(f"resuming {len(runs)} run{'s' if len(runs) > 1 else ''}" + (f" of sweep {sweep.id}" if sweep else ""))
    summaries = fit(cfgs, kind, sweep=sweep, resume=runs)
    if sweep is not None:
        _report_sweep(summaries, sweep)
    return summaries
