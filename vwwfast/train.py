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

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from vwwfast import config as C
from vwwfast import distributed as D
from vwwfast.data import SplitData
from vwwfast.epochs import epoch_order, steps_per_rank
from vwwfast.errors import UserError
from vwwfast.evaluate import evaluate, fmt_metric, model_predictor
from vwwfast.losses import KDRecipe
from vwwfast.metrics import confusion_matrix, summarize
from vwwfast.mixing import unmixed
from vwwfast.models import autocast
from vwwfast.progress import bar, info, result, warn
from vwwfast.render import resolve_device
from vwwfast.runs import Run
from vwwfast.shards import ShardSet
from vwwfast.student import Student, views_digest
from vwwfast import teacher as TS

__all__ = ["train_teacher", "distill", "fit", "evaluate", "settle_bn"]


# ---------------------------------------------------------------------------------------
# BatchNorm and evaluation, for every student over the same batches

@torch.no_grad()
def settle_bn(models: list, data: SplitData, order: np.ndarray, params: np.ndarray,
              batch_size: int, images: list[int]) -> None:
    """Recompute BatchNorm running statistics with the current weights: a cumulative average
    over images[k] training views for model k, the batches rendered once for all. Running
    averages that trail fast-moving weights otherwise leave short runs evaluating at the
    majority-class rate. Mixed views settle unmixed: evaluation (and deployment) sees single
    images, and a blend of two has other statistics (less contrast)."""
    todo = []
    for model, n in zip(models, images):
        bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        if bns and n > 0:
            todo.append((model, n, bns, [m.momentum for m in bns]))
            for m in bns:
                m.reset_running_stats()
                m.momentum = None
            model.train()
    if not todo:
        return
    start = 0
    for x, _, _ in data.batches(order[:max(n for _, n, _, _ in todo)], unmixed(params), batch_size):
        for model, n, _, _ in todo:
            if start < n:  # a model that settles on fewer images sees a prefix of the same batches
                with autocast(x.device):
                    model(x[:n - start].contiguous(memory_format=torch.channels_last))
        start += len(x)
    for _, _, bns, momenta in todo:
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum
            if D.active():  # every rank saw a different part: evaluate with their average
                for buf in (m.running_mean, m.running_var):
                    buf.copy_(D.all_reduce_sum(buf) / D.world_size())


@torch.no_grad()
def evaluate_many(models: list, data: SplitData, batch_size: int, center_crop: bool) -> list[dict]:
    """`evaluate` for several models over the same rendered batches."""
    if len(models) == 1:
        return [evaluate(models[0], data, batch_size, center_crop)]
    from vwwfast.data import val_params
    predictors = [model_predictor(m) for m in models]
    order = D.rank_part(np.arange(len(data)))
    cms = [torch.zeros(2, 2, dtype=torch.long, device=data.renderer.device) for _ in models]
    start = time.perf_counter()
    for x, y, _ in data.batches(order, val_params(data.split, center_crop), batch_size):
        for k, predict in enumerate(predictors):
            cms[k] += confusion_matrix(predict(x).argmax(1), y)
    seconds = time.perf_counter() - start
    out = []
    for cm in cms:
        m = summarize(D.all_reduce_sum(cm))
        m["img_per_s"] = m["n"] * len(models) / max(seconds, 1e-9)
        out.append(m)
    return out


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
        line += f"  ETA {_duration(eta_s)}"
    return f"{label}  {line}" if label else line


def _duration(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


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
                run.finish({"error": message}, status="failed")
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
                "remarks": source.remarks(cfg.epochs), "device": _device_name(device),
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
                                base.val_center_crop)
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
            summary = {**merged, "run_dir": str(s.run.path)}
        summaries.append(summary)
    return summaries


def _device_name(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


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


# ---------------------------------------------------------------------------------------
# Commands

class SweepInfo:
    """A sweep's id and each member's short label (its swept settings)."""

    def __init__(self, record, labels: list[str]):
        self.record, self.labels = record, labels
        self.id = record.id if record is not None else None


SHORT = {"alpha": "a", "alpha_end": "ae", "temperature": "T", "confidence_gamma": "g",
         "margin_weight": "m", "margin_weight_end": "me", "margin_decay_end_epoch": "mde",
         "label_smoothing": "ls", "lr": "lr", "weight_decay": "wd", "momentum": "mom",
         "optimizer": "", "pct_start": "pct", "div_factor": "div", "final_div_factor": "fdiv",
         "patience": "p", "lr_scaling": "lrs-", "bn_momentum": "bnm", "bn_settle": "bns", "init_seed": "s",
         "pretrained": "pre", "init": "init"}


def member_label(settings: dict) -> str:
    """alpha 0.5, gamma 2 -> 'a0.5-g2'."""
    parts = []
    for k, v in settings.items():
        text = Path(str(v)).stem if k == "init" and v else ("on" if v is True else "off" if v is False else f"{v:g}" if isinstance(v, float) else str(v))
        parts.append(f"{SHORT.get(k, k)}{text}")
    return "-".join(parts)


def _resolve_all(cfgs: list) -> list:
    base = cfgs[0]
    cached = getattr(base, "cache", None) and getattr(base, "teacher_mode", None) == "cached"
    if getattr(base, "teacher_mode", None) == "online" and base.cache:
        raise UserError("--cache is for --teacher-mode cached; drop it (or --teacher-mode online)")
    store = TS.open_store(base.cache) if cached else None
    needs = any(KDRecipe.from_config(c).uses_teacher for c in cfgs)
    TS.refuse_unused_teacher(base, needs)
    return [TS.resolve_settings(c, store) for c in cfgs]


def train_teacher(cfg: C.TrainConfig) -> dict:
    if cfg.resume:
        return _lone(_resume(cfg, C.TrainConfig, "teacher"))
    C.require(cfg, "shards")
    return _lone(fit(_resolve_all([cfg]), "teacher"))


def distill(cfg) -> dict | list[dict]:
    """`vwwfast distill`: a config, or a config.Sweep of several students."""
    if isinstance(cfg, C.Sweep):
        return _sweep(cfg)
    if cfg.resume:
        summaries = _resume(cfg, C.DistillConfig, "student")
        return summaries if len(summaries) > 1 else _lone(summaries)
    C.require(cfg, "shards")
    return _lone(fit(_resolve_all([cfg]), "student"))


def _lone(summaries: list[dict]) -> dict:
    """A lone run's summary; a run that failed (a loss that became NaN) exits non-zero."""
    s = summaries[0]
    if s.get("status") == "failed":
        raise UserError(f"run {Path(s.get('run_dir') or '?').name} failed: {s.get('error')}")
    if s.get("run_dir"):
        result(f"run {s['run_dir']}: best val acc {fmt_metric(s.get('best_val_acc'), 4)} "
               f"at epoch {s.get('best_epoch') or '-'}")
    return s


def _sweep(sweep: C.Sweep) -> list[dict]:
    from vwwfast.runs import SweepRecord
    base = sweep.configs[0]
    C.require(base, "shards")
    cfgs = _resolve_all(sweep.configs)
    settings = [{k: getattr(c, k) for k in sweep.swept} for c in sweep.configs]
    labels = [member_label(x) for x in settings]
    cfgs = [dataclasses.replace(c, tag="_".join(t for t in (c.tag, label) if t))
            for c, label in zip(cfgs, labels)]
    record = SweepRecord.create(base.runs_dir, base.tag, sweep.mode, sweep.swept) if D.is_main() else None
    info(f"sweep of {len(cfgs)} students sharing every batch" + (f": {record.path}" if record else ""))
    runs = []
    for c in cfgs:  # records first, so the sweep lists its members from the start
        run = Run.create(c.runs_dir, "student", c) if D.is_main() else None
        if record is not None:
            record.add_member(run.id, settings[len(runs)])
        runs.append(run)
    status = "failed"
    try:
        summaries = fit(cfgs, "student", runs=[r for r in runs] if D.is_main() else None,
                        sweep=SweepInfo(record, labels), fresh=True)
        status = "finished"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        if record is not None:
            record.finish(status)
    _report_sweep(summaries, SweepInfo(record, labels))
    return summaries


def _report_sweep(summaries: list[dict], sweep: SweepInfo) -> None:
    """The members side by side (stdout); a sweep where every student failed exits non-zero."""
    if sweep.record is not None:
        from vwwfast.runs_table import print_sweep
        print_sweep(str(sweep.record.path), sweep.record.path.parent)
    failed = [s for s in summaries if s.get("status") == "failed"]
    if failed and len(failed) == len(summaries):
        raise UserError(f"every student of the sweep failed ({failed[0].get('error')})")


def _resume(cfg, cls, kind: str) -> list[dict]:
    """Continue a run (or a whole sweep) with the settings it started with."""
    from vwwfast.runs import SweepRecord, resolve_run
    ref = cfg.resume
    sweep_dir = Path(ref) if (Path(ref) / "sweep.json").is_file() else None
    if sweep_dir is None and not Path(ref).is_dir():
        try:
            sweep_dir = SweepRecord.open(ref, cfg.runs_dir).path
        except UserError:
            sweep_dir = None
    if sweep_dir is not None:
        record = SweepRecord.open(str(sweep_dir), cfg.runs_dir)
        runs = [resolve_run(m["run"], record.path.parent) for m in record.members]
        labels = [member_label(m["settings"]) for m in record.members]
        sweep = SweepInfo(record, labels)
    else:
        runs, sweep = [resolve_run(ref, cfg.runs_dir)], None
        status = runs[0].summary.get("status")
        if status == "finished":
            raise UserError(f"{runs[0].id} already finished ({runs[0].summary.get('epochs_done')} "
                            f"epochs); to train longer start a new run from its weights: "
                            f"--init {runs[0].path}/model.pt")
    cfgs = []
    for run in runs:
        saved = C.load_yaml(run.path / "config.yaml")
        saved.pop("resume", None)
        cfgs.append(C.resolve(cls, saved, {}, where=str(run.path / "config.yaml")))
    if sweep is not None and all(r.summary.get("status") in ("finished", "failed") for r in runs):
        raise UserError(f"every member of sweep {sweep.id} already ended; nothing to resume")
    info(f"resuming {len(runs)} run{'s' if len(runs) > 1 else ''}" + (f" of sweep {sweep.id}" if sweep else ""))
    status = "failed"
    try:
        summaries = fit(cfgs, kind, runs=runs, sweep=sweep)
        status = "finished"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        if sweep is not None and sweep.record is not None:
            sweep.record.finish(status)
    if sweep is not None:
        _report_sweep(summaries, sweep)
    return summaries
