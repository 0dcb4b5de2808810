"""`vwwfast train-teacher` and `vwwfast distill`: one run, a sweep of several students, or the
resume of either. Each resolves its configs, makes the records and hands them to the loop."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from vwwfast import config as C
from vwwfast import distributed as D
from vwwfast.data.shards import read_manifest, view_defaults, with_shard_views
from vwwfast.errors import UserError
from vwwfast.fmt import fmt_metric
from vwwfast.models import check_width, ensure_imagenet_weights
from vwwfast.progress import info, result
from vwwfast.records.runs import SweepRecord, resolve_run
from vwwfast.records.table import print_sweep
from vwwfast.teach import teacher as TS
from vwwfast.train.loop import fit
from vwwfast.train.losses import KDRecipe


class SweepInfo:
    """A sweep's record (rank 0), and each member's swept settings and short label."""

    def __init__(self, record, settings: list[dict]):
        self.record, self.settings = record, settings
        self.labels = [member_label(x) for x in settings]
        self.id = record.id if record is not None else None


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


def _resolve_all(cfgs: list) -> list:
    base = cfgs[0]
    cached = getattr(base, "cache", None) and getattr(base, "teacher_mode", None) == "cached"
    if getattr(base, "teacher_mode", None) == "online" and base.cache:
        raise UserError("--cache is for --teacher-mode cached; drop it (or --teacher-mode online)")
    store = TS.open_store(base.cache) if cached else None
    needs = any(KDRecipe.from_config(c).uses_teacher for c in cfgs)
    TS.refuse_unused_teacher(base, needs)
    manifest = read_manifest(Path(base.shards))
    resolved = [TS.resolve_settings(_shard_views(c, manifest, store), store) for c in cfgs]
    if base.train_limit is not None:  # more than the shards hold: refused before any record
        from vwwfast.data.epochs import train_subset
        from vwwfast.data.shards import ShardSet
        train_subset(len(ShardSet.open(base.shards).split("train")), base.train_limit, 0)
    for c in resolved:
        check_width(c.arch, c.width, pretrained=c.pretrained)
    if getattr(base, "stack_students", "off") == "on":
        from vwwfast.train.stacked import check_configs
        check_configs(resolved)
    for arch in sorted({c.arch for c in resolved if c.pretrained}):
        ensure_imagenet_weights(arch)  # offline: one line, before any record is made
    for c in resolved:
        check_model_budgets(c)
    return resolved


def check_model_budgets(cfg) -> None:
    """--max-flash / --max-ram of distill, before any record: the int8 weights (about one
    byte per parameter) and the estimated int8 activation peak of the model the run would
    train (footprint.py), so that an oversized student is refused in one line."""
    flash, ram = getattr(cfg, "max_flash", None), getattr(cfg, "max_ram", None)
    if flash is None and ram is None:
        return
    from vwwfast.footprint import check_budget, count_params, torch_peak_bytes
    from vwwfast.models import new_model
    from vwwfast.provenance import model_short
    model = new_model(cfg.arch, cfg.width)
    who = f"{model_short(cfg.arch, cfg.width)} at {cfg.input_size} px"
    if flash is not None:
        check_budget("--max-flash", flash, count_params(model),
                     f"{who}: int8 weights (estimate: 1 byte per parameter)")
    if ram is not None:
        check_budget("--max-ram", ram, torch_peak_bytes(model, cfg.input_size),
                     f"{who}: int8 activation peak (estimate)")


def _shard_views(cfg, manifest: dict, store):
    """The views the shard set asks for where the run leaves them open (Wake Vision: the
    centre crop its labels were made on), so that the run's config records them: the val
    view, and the training views unless a store's are taken as they are."""
    updates = {}
    if cfg.val_center_crop is None:
        updates["val_center_crop"] = view_defaults(manifest)["val_center_crop"]
    if store is None or store.plain or cfg.view_spec is not None:
        updates["view"] = with_shard_views(manifest, cfg.view)
    return dataclasses.replace(cfg, **updates)


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
    base = sweep.configs[0]
    C.require(base, "shards")
    cfgs = _resolve_all(sweep.configs)
    # the record lists its members as the loop makes their runs
    record = SweepRecord.create(base.runs_dir, base.tag, sweep.mode, sweep.swept) if D.is_main() else None
    members = SweepInfo(record, [{k: getattr(c, k) for k in sweep.swept} for c in sweep.configs])
    cfgs = [dataclasses.replace(c, tag="_".join(t for t in (c.tag, label) if t))
            for c, label in zip(cfgs, members.labels)]
    info(f"sweep of {len(cfgs)} students sharing every batch" + (f": {record.path}" if record else ""))
    summaries = fit(cfgs, "student", sweep=members)
    _report_sweep(summaries, members)
    return summaries


def _report_sweep(summaries: list[dict], sweep: SweepInfo) -> None:
    """The members side by side (stdout); a sweep where every student failed exits non-zero."""
    if sweep.record is not None:
        print_sweep(str(sweep.record.path), sweep.record.path.parent)
    failed = [s for s in summaries if s.get("status") == "failed"]
    if failed and len(failed) == len(summaries):
        raise UserError(f"every student of the sweep failed ({failed[0].get('error')})")


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
        runs = [resolve_run(m["run"], record.path.parent) for m in record.members]
        sweep = SweepInfo(record, [m["settings"] for m in record.members])
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
    summaries = fit(cfgs, kind, sweep=sweep, resume=runs)
    if sweep is not None:
        _report_sweep(summaries, sweep)
    return summaries
