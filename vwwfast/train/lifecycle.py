"""The records of one training pass, from the run folders to their cards, as one context
manager:

    with RunRecords(kind, sweep, resuming) as records:
        students = [Student(...), ...]         # every check passed: nothing written yet
        records.create_all(students, started)  # a run folder each, held from now on
        records.resume_all(runs, students, started)   # or: runs continued
        ...                                    # train; records.epoch_done(student, epoch)
    records.summaries                          # one per run, in the order they were added

On the way out every run held ends, and so does the sweep record: finished (a student whose
loss became NaN: failed, with its reason), interrupted on Ctrl-C (its summary says how to
continue), or failed with the one-line reason of the error; then its card and curves are
drawn (records.report). A run is never left `running`. A resumed run is held only from the
moment its training continues: a resume refused before that leaves the run as it was.

Every check of what the user named runs before `create_all`, which makes the sweep record and
every run folder of the pass at once (Ctrl-C held back meanwhile): a refused command leaves
nothing, and an interrupted one leaves every run it made resumable, from epoch 1 when none had
ended an epoch. A Ctrl-C that arrives once every run has ended changes nothing: the runs stay
finished and the command goes on (and exits 0).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from vwwfast import distributed as D
from vwwfast.errors import UserError
from vwwfast.interrupts import held_interrupt, interrupt_point
from vwwfast.progress import info
from vwwfast.records.report import write_report
from vwwfast.records.runs import ENDED_BY_ITSELF, Run

if TYPE_CHECKING:  # a Student is handed in; this module never makes one
    from vwwfast.train.student import Student


@dataclass
class Held:
    """One run of the pass: its folder (None on ranks other than 0), the student that trains
    it once made, or the summary of a sweep member that had ended before a resume."""
    run: Optional[Run]
    student: Optional[Student] = None
    kept: Optional[dict] = None


class RunRecords:
    def __init__(self, kind: str, sweep=None, resuming: Optional[list] = None):
        self.kind, self.sweep = kind, sweep    # sweep: train.commands.SweepInfo or None
        self.resuming = resuming               # the runs a resume continues
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

    def create_all(self, students: list, started: list[dict]) -> None:
        """The sweep record (of a new sweep) and a run folder for each student, each with what
        it records when it starts (`started`), made together: a Ctrl-C waits until all are."""
        with held_interrupt():
            if self.sweep is not None:
                self.sweep.make_record()
            for k, (s, fields) in enumerate(zip(students, started)):
                held = self.create(s.cfg, self.sweep.settings[k] if self.sweep else None)
                held.student, s.run = s, held.run
                if s.run is not None:
                    s.run.update_summary({**fields, **self._sweep_field()})

    def resume_all(self, runs: list[Run], students: list, started: list) -> None:
        """Each of `runs` continued by its student (loaded from its last.pt, or new where the
        run had ended no epoch); a sweep member that had ended (student None) stays as it
        ended. Records logged after the checkpoint continued from are dropped."""
        with held_interrupt():
            for run, s, fields in zip(runs, students, started):
                if s is None:
                    self.keep(run)
                    continue
                self.resume(s.run, s)
                if s.run is not None:
                    s.run.truncate_epochs(s.start_epoch - 1)  # epochs logged, never checkpointed
                    s.run.update_summary({**fields, **self._sweep_field()})

    def _sweep_field(self) -> dict:
        return {"sweep": self.sweep.id} if self.sweep is not None else {}

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
        """End every run held (Ctrl-C held back meanwhile). A Ctrl-C that finds every run
        ended is no interruption: the runs stay as they ended and the command goes on."""
        status, reason = _ending(kind, error)
        with held_interrupt(raise_after=False) as late:
            interrupt_point("closing")
            self.summaries = [self._close(h, status, reason) for h in self.held]
            cut = any(s.get("status") == "interrupted" for s in self.summaries)
            if self.held and self.sweep is not None and self.sweep.record is not None:
                self.sweep.record.finish("interrupted" if cut else "failed" if status == "failed"
                                         else "finished")
        if status == "interrupted" and (cut or not self.held):
            self._say_interrupted()
            return False
        if status != "failed" and (status == "interrupted" or late) and D.is_main():
            info("Ctrl-C arrived as the runs ended: each ended as it would have, records complete; "
                 "nothing to resume")
        return status == "interrupted"  # swallowed: every run had ended; an error goes on

    def _say_interrupted(self) -> None:
        """The command that continues what was interrupted, or that there is nothing to."""
        if not D.is_main():
            return
        if self.sweep is not None and self.sweep.record is not None:
            target = self.sweep.record.path
        else:
            target = next((h.run.path for h in self.held if h.run), None)
            if target is None and self.resuming:
                target = self.resuming[0].path
        if target is None:
            info("interrupted before any run folder was made; nothing to resume (run the command again)")
        else:
            info(f"interrupted; records kept. Continue with: {self._continue_command(target)}")

    def _continue_command(self, target) -> str:
        """What continues `target` (this pass's sweep or a run of it): a tune's round
        continues with its tune, anything else with --resume."""
        if self.sweep is not None and self.sweep.continue_with:
            return self.sweep.continue_with
        return f"{self.command} --resume {target}"

    def _close(self, held: Held, status: Optional[str], reason: Optional[str]) -> dict:
        """End one run: status None = as its student ended (finished, or failed)."""
        run, s = held.run, held.student
        if held.kept is not None:
            return {**held.kept, "run_dir": str(run.path) if run else None}
        wall = time.perf_counter() - self.wall0
        summary: dict[str, Any]
        if s is None:  # ended before its student was made
            summary = {"wall_time_s": wall}
            own = status
        else:
            summary = {**s.summary(), "train_wall_s": s.train_s, "wall_time_s": s.wall_before + wall}
            # a student that had ended (early stop, a NaN loss) keeps its end
            own = s.status if s.status in ENDED_BY_ITSELF or status is None else status
            if own == "running":
                own = "finished"
            if own == "failed" and s.error:
                reason = s.error
        if own == "failed":
            summary["error"] = reason
        if own == "interrupted":
            summary["resume_command"] = self._continue_command(run.path if run else "")
        if run is None:
            return {**summary, "status": own}
        assert own is not None, "a run without a student ends with the pass's status"
        merged = run.finish(summary, status=own)
        write_report(run, merged)
        return {**merged, "run_dir": str(run.path)}


def _ending(kind, error) -> tuple[Optional[str], Optional[str]]:
    """(status, reason) of a pass that ends with exception `kind` (None: as its students ended)."""
    if kind is None:
        return None, None
    if issubclass(kind, KeyboardInterrupt):
        return "interrupted", None
    return "failed", str(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}"
