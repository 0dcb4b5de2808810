"""The one training loop: teacher training, supervised students and distillation, one
student or a sweep of several that share every rendered batch. Only the loss (losses.py)
and where views and logits come from (teacher.py) differ.

    for epoch in epochs:
        views = source.views(epoch)
        for x, y, idx in train.batches(order(epoch), views):     # every batch full-size
            z_t = source.logits(epoch, idx, views)              # a table lookup when cached
            for s in students: s.step(x, y, z_t)
        settle BatchNorm and evaluate every student on the same batches
        for s in students: s.end_epoch(...)                      # record, checkpoint, stop
"""

from __future__ import annotations

import time

import numpy as np
import torch

from vwwfast import config as C
from vwwfast import distributed as D
from vwwfast.data.epochs import epoch_order, steps_per_rank
from vwwfast.data.shards import ShardSet
from vwwfast.data.split import SplitData
from vwwfast.devices import device_name, resolve_device
from vwwfast.errors import UserError
from vwwfast.fmt import fmt_duration, fmt_metric
from vwwfast.progress import bar, info, warn
from vwwfast.records.report import write_report
from vwwfast.records.runs import Run
from vwwfast.teach import teacher as TS
from vwwfast.train.evaluate import evaluate_many, settle_bn
from vwwfast.train.losses import KDRecipe
from vwwfast.train.student import Student, views_digest

# ---------------------------------------------------------------------------------------
# The loop

def _short(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def epoch_line(epoch: int, epochs: int, record: dict, eta_s: float | None, label: str = "") -> str:
    """What the console shows after an epoch, every figure labelled."""
    line = (f"epoch {epoch:>3}/{epochs}  val acc {fmt_metric(record['val_acc'], 4)}  "
            f"recall no-person {_short(record['recall_0'])} / person {_short(record['recall_1'])}  "
            f"loss {record['loss']:.4f} (ce {record['loss_ce']:.3f}")
    if record.get("alpha") or record.get("term_kl"):
        line += f" kl {record['loss_kl']:.3f} alpha {record['alpha']:.2f}"
    if record.get("margin_weight"):
        line += f" margin {record['loss_margin']:.3f}"
    line += f")  lr {record['lr']:.1e}  {record['img_per_s']:,.0f} img/s"
    if eta_s is not None:
        line += f"  ETA {fmt_duration(eta_s)}"
    return f"{label}  {line}" if label else line


def teacher_line(t: dict | None) -> str:
    """Which model teaches, said once when a run starts."""
    if not t:
        return "teacher: none (supervised)"
    who = f"{t.get('arch')} at {t.get('input_size')} px"
    if t.get("role") == "student":
        who += ", a STUDENT's checkpoint (--self-distill)"
    if t.get("run"):
        acc = t.get("run_val_acc")
        who += f", run {t['run']}" + (f" (val acc {acc:.4f})" if acc is not None else "")
    if t.get("mode") == "cached":
        used = "" if t.get("logits_used", True) else "; only its views are used (alpha 0)"
        return f"teacher: cached in {t['store']} ({t.get('views')} views): {who}{used}"
    return f"teacher: online, {t.get('checkpoint')}: {who}"


def _steps(n: int, batch_size: int) -> int:
    steps = steps_per_rank(n, D.world_size(), batch_size, drop_last=True)
    if steps < 1:
        raise UserError(f"--batch-size {batch_size} is larger than the {n // D.world_size()} training "
                        f"samples each process gets; lower it")
    return steps


def fit(cfgs: list, kind: str, runs: list | None = None, sweep=None, fresh: bool = False) -> list[dict]:
    """Train one student per config on cfgs[0].shards, every batch shared. The configs agree
    on everything a student cannot own (checked by config.resolve_sweep). `runs`: the run
    records, one per config: new ones (fresh=True) or ones to continue (resume)."""
    base = cfgs[0]
    C.require(base, "shards")
    device = D.device() if D.active() else resolve_device(base.device)
    needs_teacher = any(KDRecipe.from_config(c).uses_teacher for c in cfgs)
    train = val = source = None
    students: list[Student] = []
    wall0 = time.perf_counter()
    try:
        shards = ShardSet.open(base.shards)
        for split in ("train", "val"):
            shards.require_both_classes(split)
        source = TS.make_source(base, shards, device, needs_teacher=needs_teacher)
        train = SplitData(shards, "train", base, device, base.input_size)
        val = SplitData(shards, "val", base, device, base.input_size)
        steps = _steps(len(train), base.batch_size)
        fingerprints = TS.source_fingerprints(source, shards)
        if runs and not fresh:
            _check_fingerprints(runs, fingerprints)
        if D.is_main():
            info(teacher_line(source.describe()))
        students = _make_students(cfgs, kind, device, steps, runs, sweep, source, fingerprints,
                                  resume=bool(runs) and not fresh)
        _loop(students, base, source, train, val, steps, wall0)
    except KeyboardInterrupt:
        closed = _close_records(students, "interrupted", None, wall0, source)
        if closed and D.is_main():
            target = sweep.record.path if sweep is not None and sweep.record is not None \
                else closed[0].get("run_dir")
            info(f"interrupted; records kept. Continue with: vwwfast "
                 f"{'train-teacher' if kind == 'teacher' else 'distill'} --resume {target}")
        raise
    except BaseException as e:
        message = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
        if students:
            _close_records(students, "failed", message, wall0, source)
        elif fresh and runs and D.is_main():  # records made before the first student
            for run in runs:
                write_report(run, run.finish({"error": message}, status="failed"))
        raise
    finally:
        for data in (train, val, source):
            if data is not None:
                data.close()
    summaries = _close_records(students, None, None, wall0, source)
    return summaries


def _make_students(cfgs, kind, device, steps, runs, sweep, source, fingerprints,
                   resume: bool) -> list[Student]:
    students = []
    for k, cfg in enumerate(cfgs):
        run = runs[k] if runs else None
        if run is None and D.is_main():
            run = Run.create(cfg.runs_dir, kind, cfg)
        label = sweep.labels[k] if sweep else ""
        s = Student(cfg, kind, device, steps, run if D.is_main() else None, label)
        s.wall_before = 0.0
        if resume:
            done = run.summary.get("status")
            if done in ("finished", "failed") and sweep is not None:
                s.status, s.kept = done, run.summary  # a sweep resume leaves it as it ended
                students.append(s)
                continue
            s.load_last(_load_last(run))
            s.wall_before = float(run.summary.get("wall_time_s") or 0.0)
            if D.is_main():
                run.truncate_epochs(s.start_epoch - 1)  # epochs logged but never checkpointed
        if s.run is not None:
            s.run.update_summary({
                "fingerprints": fingerprints, "teacher": source.describe() if s.recipe.uses_teacher
                or getattr(cfg, "cache", None) else None,
                "remarks": source.remarks(cfg.epochs), "device": device_name(device),
                **({"sweep": sweep.id} if sweep else {})})
            info(f"run {s.run.path}" + (f"  ({label})" if label else ""))
        students.append(s)
    return students


def _load_last(run) -> dict:
    path = run.path / "last.pt"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state["epoch"], state["state_dict"]  # noqa: B018 (a checkpoint has both)
    except FileNotFoundError:
        raise UserError(f"{run.path} has no last.pt to resume from (no epoch finished)") from None
    except Exception as e:
        raise UserError(f"{path} is not a checkpoint ({type(e).__name__}); the run cannot be "
                        f"resumed, start a new one") from None
    return state


def _loop(students, base, source, train, val, steps, wall0) -> None:
    first = min(s.start_epoch for s in students)
    n = len(train)
    epoch_seconds: list[float] = []
    for epoch in range(first, base.epochs + 1):
        active = [s for s in students if s.active and s.start_epoch <= epoch]
        if not active:
            if not any(s.active for s in students):
                break
            continue
        t_epoch = time.perf_counter()
        params = source.views(epoch)
        order = D.rank_part(epoch_order(n, base.seed, epoch - 1))
        for s in active:
            s.begin_epoch(epoch)
        t0 = time.perf_counter()
        with bar(f"epoch {epoch}/{base.epochs}", steps * base.batch_size) as advance:
            for x, y, idx in train.batches(order[:steps * base.batch_size], params, base.batch_size):
                z_t = source.logits(epoch, idx, params) if source.needs_teacher else None
                x = x.contiguous(memory_format=torch.channels_last)
                for s in active:
                    s.step(x, y, z_t)
                advance(len(y))
        if train.renderer.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        images = steps * base.batch_size * D.world_size()
        losses = [s.epoch_losses() for s in active]
        settle_bn([s.model for s in active], train, order, params, base.batch_size,
                  [s.cfg.bn_settle for s in active])
        metrics = evaluate_many([s.model for s in active], val, base.batch_size * 2,
                                base.val_center_crop, outputs=True)
        digest = views_digest(params)
        epoch_seconds.append(time.perf_counter() - t_epoch)
        eta = (base.epochs - epoch) * float(np.mean(epoch_seconds[-3:]))
        # compilation (every student's first step) is reported apart, not as training time
        compiling = sum(s.compile_s for s in active if epoch == s.start_epoch)
        train_s = max(seconds - compiling, 1e-9)
        for s, loss, m in zip(active, losses, metrics):
            s.train_s += train_s
            s.images += images
            record = {"epoch": epoch, **loss, "lr": s.scheduler.get_last_lr()[0],
                      "val_acc": m["acc"], "recall_0": m["recall_0"], "recall_1": m["recall_1"],
                      "confusion": m["confusion"], "img_per_s": images / train_s,
                      "time_s": seconds, "views_sha256": digest, **source.epoch_note(epoch)}
            s.end_epoch(epoch, record, m)
            if s.run is not None:
                s.run.update_summary({"epochs_done": epoch, "wall_time_s": s.wall_before + (
                    time.perf_counter() - wall0)})
                info(epoch_line(epoch, base.epochs, record, eta if s.active else None, s.label))
                if s.stopped_early:
                    info(f"{s.label + ': ' if s.label else ''}early stop: no better val accuracy "
                         f"for {s.cfg.patience} epochs")
                if s.status == "failed":
                    warn(f"{s.label + ': ' if s.label else ''}{s.error}; this student stops")


def _close_records(students, status, error, wall0, source) -> list[dict]:
    """Write every student's summary, card and curves; status None = each student's own."""
    summaries = []
    for s in students:
        if getattr(s, "kept", None) is not None:
            summaries.append({**s.kept, "run_dir": str(s.run.path) if s.run else None})
            continue
        own = status or ("finished" if s.status in ("running", "finished") else s.status)
        if status == "failed" and s.status == "finished":
            own = "finished"  # it was done before another part failed
        summary = {**s.summary(), "train_wall_s": s.train_s,
                   "wall_time_s": s.wall_before + (time.perf_counter() - wall0)}
        if own == "failed":
            summary["error"] = s.error or error
        if own == "interrupted":
            summary["resume_command"] = f"vwwfast {'distill' if s.kind == 'student' else 'train-teacher'} " \
                                        f"--resume {s.run.path if s.run else ''}"
        if s.run is not None:
            merged = s.run.finish(summary, status=own)
            write_report(s.run, merged)
            summary = {**merged, "run_dir": str(s.run.path)}
        summaries.append(summary)
    return summaries


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
