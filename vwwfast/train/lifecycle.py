"""The records of one training pass, from the run folders to their cards, as one context
manager:

    with RunRecords(kind, sweep) as records:
        held = records.create(cfg)             # a new run folder, held from now on
        held.student = Student(..., held.run)
        records.resume(run, student)           # or: a run continued from its last.pt
        ...                                    # train; records.epoch_done(student, epoch)
    records.summaries                          # one per run, in the order they were added

On the way out every run held ends, and so does the sweep record: finished (a student whose
loss became NaN: failed, with its reason), interrupted on Ctrl-C (its summary says how to
continue), or failed with the one-line reason of the error; then its card and curves are
drawn (records.report). A run is never left `running`. A resumed run is held only from the
moment its training continues: a resume refused before that leaves the run as it was.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

from vwwfast import distributed as D
from vwwfast.errors import UserError
from vwwfast.progress import info
from vwwfast.records.report import write_report
from vwwfast.records.runs import Run


@dataclass
class Held:
    """One run of the pass: its folder (None on ranks other than 0), the student that trains
    it once made, or the summary of a sweep member that had ended before a resume."""
    run: Optional[Run]
    student: object = None
    kept: Optional[dict] = None


class RunRecords:
    def __init__(self, kind: str, sweep=None):
        self.kind, self.sweep = kind, sweep    # sweep: train.commands.SweepInfo or None
        self.held: list[Held] = []
        self.summaries: list[dict] = []
        self.wall0 = time.perf_counter()

    @property
    def command(self) -> str:
        return "vwwfast " + ("train-teacher" if self.kind == "teacher" else "distill")

    # -- what the pass holds ----------------------------------------------------------
    def create(self, cfg, settings: Optional[dict] = None) -> Held:
        """A new run folder for `cfg` (rank 0 only), listed in the sweep record with its swept
        `settings`; set .student on the returned entry once the student exists."""
        run = Run.create(cfg.runs_dir, self.kind, cfg) if D.is_main() else None
        if run is not None and self.sweep is not None and self.sweep.record is not None:
            self.sweep.record.add_member(run.id, settings or {})
        self.held.append(Held(run))
        return self.held[-1]

    def resume(self, run: Optional[Run], student) -> None:
        """`run` continues, trained by `student` (already loaded from its last.pt)."""
        self.held.append(Held(run, student))

    def keep(self, run: Run) -> None:
        """A sweep member that had finished or failed: left as it ended."""
        self.held.append(Held(run, kept=run.summary))

    @property
    def students(self) -> list:
        return [h.student for h in self.held if h.student is not None]

    def epoch_done(self, student, epoch: int) -> None:
        """After `student` ended `epoch` (its record logged, its checkpoint saved)."""
        if student.run is not None:
            student.run.update_summary({
                "epochs_done": epoch, "optimizer_steps": student.optimizer_steps,
                "wall_time_s": student.wall_before + (time.perf_counter() - self.wall0)})

    # -- the end ----------------------------------------------------------------------
    def __enter__(self) -> "RunRecords":
        return self

    def __exit__(self, kind, error, tb) -> bool:
        if kind is None:
            status, reason = None, None
        elif issubclass(kind, KeyboardInterrupt):
            status, reason = "interrupted", None
        else:
            status = "failed"
            reason = str(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}"
        self.summaries = [self._close(h, status, reason) for h in self.held]
        if self.sweep is not None and self.sweep.record is not None:
            self.sweep.record.finish(status or "finished")
        if status == "interrupted" and D.is_main() and any(h.run for h in self.held):
            target = self.sweep.record.path if self.sweep is not None and self.sweep.record \
                is not None else next(h.run.path for h in self.held if h.run)
            info(f"interrupted; records kept. Continue with: {self.command} --resume {target}")
        return False  # the error goes on

    def _close(self, held: Held, status: Optional[str], reason: Optional[str]) -> dict:
        """End one run: status None = as its student ended (finished, or failed)."""
        run, s = held.run, held.student
        if held.kept is not None:
            return {**held.kept, "run_dir": str(run.path)}
        wall = time.perf_counter() - self.wall0
        if s is None:  # ended before its student was made
            summary = {"wall_time_s": wall}
            own = status
        else:
            summary = {**s.summary(), "train_wall_s": s.train_s, "wall_time_s": s.wall_before + wall}
            # a student that had ended (early stop, a NaN loss) keeps its end
            own = s.status if s.status in ("finished", "failed") or status is None else status
            if own == "running":
                own = "finished"
            if own == "failed" and s.error:
                reason = s.error
        if own == "failed":
            summary["error"] = reason
        if own == "interrupted":
            summary["resume_command"] = f"{self.command} --resume {run.path if run else ''}"
        if run is None:
            return summary
        merged = run.finish(summary, status=own)
        write_report(run, merged)
        return {**merged, "run_dir": str(run.path)}
