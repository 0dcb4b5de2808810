"""The one training loop: teacher training, supervised students and distillation, one
student or a sweep of several that share every rendered batch. Only the loss (losses.py)
and where views and logits come from (teach/teacher.py) differ.

    for epoch in epochs:
        e = inputs.epoch(epoch)                                  # views and this rank's order
        for x, y, z_t, idx in inputs.train_batches(e, B):       # every batch full-size;
            for s in students: s.step(x, y, z_t)                 # z_t a table lookup when cached
        settle BatchNorm and evaluate every student on the same batches
        for s in students: s.end_epoch(...)                      # record, checkpoint, stop

The batches come from inputs.py, the same code `vwwfast.KDData` hands other trainers.
Around it, lifecycle.RunRecords makes and ends the run records.
"""

from __future__ import annotations

import time
from typing import Protocol

import numpy as np
import torch

from vwwfast import distributed as D
from vwwfast.devices import device_name
from vwwfast.errors import UserError
from vwwfast.fmt import fmt_duration, fmt_metric
from vwwfast.progress import bar, info, warn
from vwwfast.records.runs import ENDED_BY_ITSELF
from vwwfast.teach.description import TeacherDescription, who_teaches
from vwwfast.train.evaluate import evaluate_many, settle_bn
from vwwfast.train.inputs import Inputs, full_steps
from vwwfast.interrupts import interrupt_point
from vwwfast.train.lifecycle import RunRecords
from vwwfast.train.losses import KDRecipe
from vwwfast.train.stacked import Stacks
from vwwfast.train.student import Student, load_last, views_digest


class Race(Protocol):
    """What fit asks of a race (tune/racing.py): it may stop students (Student.prune)."""

    def begin(self, students: list[Student]) -> None: ...

    def epoch_ended(self, epoch: int, students: list[Student]) -> None: ...


def fit(cfgs: list, kind: str, sweep=None, resume: list | None = None,
        race: Race | None = None) -> list[dict]:
    """Train one student per config on cfgs[0].shards, every batch shared; the configs agree
    on everything a student cannot own (checked by config.resolve_sweep). Each student gets a
    new run, or continues its run in `resume` (one per config). `race` (tune) may stop
    students once they are made and after each epoch. Returns the runs' summaries."""
    base = cfgs[0]
    needs_teacher = any(KDRecipe.of_config(c).uses_teacher for c in cfgs)
    with RunRecords(kind, sweep, resume) as records, Inputs(base, needs_teacher=needs_teacher) as inputs:
        steps = _steps(inputs, base.batch_size)
        if resume:
            _check_fingerprints(resume, inputs.fingerprints)
        if D.is_main():
            info(teacher_line(inputs.source.describe()))
        students = _hold(records, cfgs, kind, inputs, steps, sweep, resume)
        interrupt_point("runs-made")
        if race is not None:
            race.begin(students)
        stacks = Stacks() if base.stacks_students() else None
        epoch_seconds: list[float] = []
        for epoch in range(min((s.start_epoch for s in students), default=1), base.epochs + 1):
            if not any(s.active for s in students):
                break
            active = [s for s in students if s.active and s.start_epoch <= epoch]
            if not active:
                continue
            t0 = time.perf_counter()
            results = train_epoch(active, epoch, base, inputs, steps, stacks)
            epoch_seconds.append(time.perf_counter() - t0)
            eta = (base.epochs - epoch) * float(np.mean(epoch_seconds[-3:]))
            for s, (record, metrics, holdout) in zip(active, results):
                s.end_epoch(epoch, record, metrics, holdout)
                records.epoch_done(s, epoch)
                _say(s, epoch, base.epochs, record, eta)
            if race is not None:
                race.epoch_ended(epoch, students)
            interrupt_point("epoch-ended")
    return records.summaries


def train_epoch(students: list[Student], epoch: int, base, inputs: Inputs, steps: int,
                stacks: Stacks | None = None) -> list[tuple[dict, dict, dict | None]]:
    """One epoch of every student: each batch rendered once and every student's step on it
    (with `stacks`, --stack-students on: one batched step for all), then BatchNorm settled and
    every student evaluated on the same val batches (and --holdout samples). Returns each
    student's epoch record (metrics.jsonl), val metrics and holdout metrics (None without)."""
    source, train, B = inputs.source, inputs.train, base.batch_size
    this = inputs.epoch(epoch)  # BN settles on its order too
    params = this.params
    for s in students:
        s.begin_epoch(epoch)
    stack = stacks.get(students) if stacks is not None and len(students) > 1 else None
    t0 = time.perf_counter()
    with bar(f"epoch {epoch}/{base.epochs}", steps * B) as advance:
        for x, y, z_t, _ in inputs.train_batches(this, B):
            x = x.contiguous(memory_format=torch.channels_last)
            if stack is not None:
                stack.step(x, y, z_t)
            else:
                for s in students:
                    s.step(x, y, z_t)
            advance(len(y))
    if stack is not None:
        stack.release()  # each student its own weights: settle, evaluate, checkpoint
    if train.renderer.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    images = steps * B * D.world_size()
    losses = [s.epoch_losses() for s in students]
    settle_bn([s.model for s in students], train, this.order, params, B, [s.cfg.bn_settle for s in students])
    models = [s.model for s in students]
    metrics = evaluate_many(models, inputs.val, B * 2, base.val_center_crop, outputs=True)
    # --holdout: training samples never trained on, where the checkpoint is chosen
    holdouts: list = (evaluate_many(models, train, B * 2, base.val_center_crop, outputs=True,
                                    indices=inputs.holdout) if len(inputs.holdout)
                      else [None] * len(students))
    digest = views_digest(params)
    # compilation (every student's first step) is reported apart, not as training time
    compiling = sum(s.compile_s for s in students if epoch == s.start_epoch)
    train_s = max(seconds - compiling, 1e-9)
    results = []
    for s, loss, m, h in zip(students, losses, metrics, holdouts):
        s.train_s += train_s
        s.images += images
        record = {"epoch": epoch, **loss, "lr": s.scheduler.get_last_lr()[0],
                  **({} if h is None else {"holdout_acc": h["acc"]}),
                  "val_acc": m["acc"], "recall_0": m["recall_0"], "recall_1": m["recall_1"],
                  "confusion": m["confusion"], "img_per_s": images / train_s,
                  "time_s": seconds, "views_sha256": digest, **source.epoch_note(epoch)}
        results.append((record, m, h))
    return results


# ---------------------------------------------------------------------------------------
# What the students share, and the students

def _steps(inputs: Inputs, batch_size: int) -> int:
    """Steps an epoch, every one a full batch (a resume reaches here without resolve_configs)."""
    return full_steps(len(inputs.subset), batch_size)


def _hold(records: RunRecords, cfgs: list, kind: str, inputs: Inputs, steps: int, sweep,
          resume: list | None) -> list[Student]:
    """Every student made (or loaded) first, so that a bad --init or last.pt is refused
    before anything is written; then their runs made (or held) together."""
    device = inputs.device
    started = lambda s: _started(s, device, inputs) if s is not None and D.is_main() else {}  # noqa: E731
    if resume is None:
        students = _new_students(cfgs, kind, device, steps, sweep)
        records.create_all(students, [started(s) for s in students])
    else:
        loaded = _resumed_students(cfgs, kind, device, steps, sweep, resume)
        records.resume_all(resume, loaded, [started(s) for s in loaded])
    students = records.students
    for s in students:
        if s.run is not None:
            info(f"run {s.run.path}" + (f"  ({s.label})" if s.label else ""))
    return students


def _new_students(cfgs, kind, device, steps, sweep) -> list[Student]:
    """A student per config, none with a run yet (RunRecords.create_all makes them)."""
    return [Student(cfg, kind, device, steps, None, sweep.labels[k] if sweep else "")
            for k, cfg in enumerate(cfgs)]


def _resumed_students(cfgs, kind, device, steps, sweep, runs) -> list[Student | None]:
    """A student per run, loaded from its last.pt; a run that had ended no epoch starts again
    from epoch 1 (a new student makes the same first epoch); None for a sweep member that had
    ended. Nothing is written here: a refused resume changes no run."""
    loaded: list[Student | None] = []
    for k, (cfg, run) in enumerate(zip(cfgs, runs)):
        if sweep is not None and run.summary.get("status") in ENDED_BY_ITSELF:
            loaded.append(None)
            continue
        s = Student(cfg, kind, device, steps, run if D.is_main() else None,
                    sweep.labels[k] if sweep else "")
        wall = float(run.summary.get("wall_time_s") or 0.0)
        if (run.path / "last.pt").exists() or run.summary.get("epochs_done"):
            s.resume(load_last(run), wall)
        else:
            s.wall_before = wall
        loaded.append(s)
    return loaded


def _started(s: Student, device, inputs: Inputs) -> dict:
    """What a run records when it starts: inputs, teacher, loss terms, device."""
    from vwwfast.footprint import model_figures
    source = inputs.source
    return {
        # what the model costs on a device: parameters, MACs at the run's input size,
        # estimated int8 weight and activation bytes (footprint.py)
        **model_figures(s.model, s.cfg.input_size), "width": s.cfg.width,
        "fingerprints": inputs.fingerprints,
        "teacher": _teacher_record(source) if s.recipe.uses_teacher or _has_cache(s.cfg) else None,
        "remarks": source.remarks(s.cfg.epochs), "device": device_name(device),
        "loss_terms": s.recipe.labels()}


def _teacher_record(source) -> dict | None:
    description = source.describe()
    return None if description is None else description.to_dict()


def _has_cache(cfg) -> bool:
    teacher = cfg.teacher_settings()
    return teacher is not None and teacher.cache is not None


# ---------------------------------------------------------------------------------------
# The console

def _short(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def epoch_line(epoch: int, epochs: int, record: dict, recipe: KDRecipe, eta_s: float | None,
               label: str = "") -> str:
    """What the console shows after an epoch, every figure labelled: each term in the loss
    (by its mean), then each scheduled weight that is not 0."""
    terms = [f"{t.name} {record[f'loss_{t.name}']:.3f}" for t in recipe.terms
             if record.get(f"term_{t.name}")]
    weights = [f"{k} {record[k]:.3g}" for k in recipe.scheduled if record.get(k)]
    holdout = (f"holdout acc {fmt_metric(record['holdout_acc'], 4)}  "
               if record.get("holdout_acc") is not None else "")
    line = (f"epoch {epoch:>3}/{epochs}  {holdout}val acc {fmt_metric(record['val_acc'], 4)}  "
            f"recall no-person {_short(record['recall_0'])} / person {_short(record['recall_1'])}  "
            f"loss {record['loss']:.4f} ({' '.join(terms)}" + (f"; {' '.join(weights)}" if weights else "")
            + f")  lr {record['lr']:.1e}  {record['img_per_s']:,.0f} img/s")
    if eta_s is not None:
        line += f"  ETA {fmt_duration(eta_s)}"
    return f"{label}  {line}" if label else line


def _say(s: Student, epoch: int, epochs: int, record: dict, eta: float) -> None:
    if s.run is None:  # rank 0 speaks
        return
    who = f"{s.label}: " if s.label else ""
    info(epoch_line(epoch, epochs, record, s.recipe, eta if s.active else None, s.label))
    if s.stopped_early:
        split = "val" if s.cfg.holdout is None else "holdout"
        info(f"{who}early stop: no better {split} accuracy for {s.cfg.patience} epochs")
    if s.status == "failed":
        warn(f"{who}{s.error}; this student stops")


def teacher_line(t: TeacherDescription | None) -> str:
    """Which model teaches, said once when a run starts."""
    if t is None:
        return "teacher: none (supervised)"
    who = who_teaches(t)
    if t.mode == "cached":
        used = "" if t.logits_used else "; only its views are used (alpha 0)"
        return f"teacher: cached in {t.store} ({t.views} views): {who}{used}"
    return f"teacher: online, {t.checkpoint}: {who}"


def _check_fingerprints(runs, now: dict) -> None:
    """A resume refuses any change of what the run depends on (shards, store, teacher, code)."""
    names = {"shards_content_hash": "the shards", "store_fingerprint": "the teacher cache",
             "teacher_sha256": "the teacher checkpoint", "vwwfast_version": "the vwwfast version",
             "git": "the vwwfast code (git commit)"}
    for run in runs:
        was = run.summary.get("fingerprints") or {}
        changed = [names.get(k, k) for k in sorted(set(was) | set(now)) if was.get(k) != now.get(k)]
        if changed:
            raise UserError(f"cannot resume {run.id}: {', '.join(changed)} changed since it started; "
                            f"start a new run (--init {run.path}/last.pt keeps its weights)")
