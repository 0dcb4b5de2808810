"""`vwwfast tune`: rounds of races over KD settings; each round is one distill sweep.

    check every setting (nothing written on a refusal)
    for each round:
        ask Optuna for --trials settings of the --space           (tune/study.py)
        train each with --seeds init seeds, and the supervised control, in lock-step
        at each rung stop what the race cuts                        (tune/racing.py, race.py)
        tell every trial PRUNED or COMPLETE; report on val          (tune/report.py)

tune.json (tune/record.py) keeps the plan before anything trains, so `--resume` continues
the sweep of the round it was in and tells what was left untold.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

from vwwfast import config as C
from vwwfast import distributed as D
from vwwfast.data.epochs import training_samples
from vwwfast.data.shards import ShardSet
from vwwfast.errors import UserError
from vwwfast.progress import info, result
from vwwfast.records.runs import ENDED_BY_ITSELF, SweepRecord, read_json, resolve_run
from vwwfast.train.commands import SweepInfo, member_label, saved_config
from vwwfast.train.inputs import full_steps, resolve_configs
from vwwfast.train.loop import fit
from vwwfast.tune import race as R
from vwwfast.tune import study as S
from vwwfast.tune.racing import RoundRace
from vwwfast.tune.race import parse_rungs
from vwwfast.tune.record import STUDY_FILE, TuneRecord
from vwwfast.tune.replay import replay
from vwwfast.tune.report import group_of, lines, summarize
from vwwfast.tune.space import distributions, parse_space

DISTILL_FIELDS = tuple(f.name for f in dataclasses.fields(C.DistillConfig))


def tune(cfg: C.TuneConfig) -> dict:
    if D.world_size() > 1:
        raise UserError("tune runs in one process; to share the work start tune processes on "
                        "several machines with one --storage")
    if cfg.replay:
        return replay(cfg)
    if cfg.resume:
        record = TuneRecord.open(cfg.resume, cfg.runs_dir)
        return _run(record, _study(record))
    fields = plan(cfg)
    # a --storage that cannot be opened is refused here, before any folder is made
    study = S.open_study(S.storage_of(cfg.storage), cfg.study, cfg.seed) if cfg.storage else None
    record = TuneRecord.create(cfg.runs_dir, cfg.tag, fields)
    if study is None:
        record.data["storage"] = str(record.path / STUDY_FILE)
        record.save()
        study = _study(record)
    return _run(record, study)


def plan(cfg: C.TuneConfig) -> dict:
    """Every setting checked (one line and exit 2 on the first bad one); what tune.json keeps."""
    C.require(cfg, "shards")
    for name, why in (("init_seed", "tune gives every setting the init seeds 0..--seeds-1"),
                      ("sweep_mode", "tune searches with --space, not with lists")):
        if C.is_given(cfg, name):
            raise UserError(f"--{name.replace('_', '-')}: {why}; drop it")
    dims = parse_space(cfg.space)
    rungs = parse_rungs(cfg.rungs, cfg.epochs)
    holdout = cfg.holdout
    n = len(ShardSet.open(Path(cfg.shards)).split("train"))
    if holdout is None:  # a fifth of the train split chooses, unless told otherwise
        holdout = max(1, n // 5)
        info(f"--holdout {holdout}: a fifth of the {n:,} training samples choose (set it with --holdout)")
    base = {k: v for k, v in C.to_dict(cfg).items() if k in DISTILL_FIELDS}
    base.update(holdout=holdout, resume=None)
    probe = [_member_config(base, {d.name: (d.choices[0] if d.choices else d.lo) for d in dims}, 0, ""),
             _member_config(base, {"alpha": 0.0}, 0, "")]
    resolve_configs(probe)  # shards, store, holdout and budgets refused before anything is made
    # the loop refuses a batch larger than the training set only once tune.json exists
    subset, _ = training_samples(n, holdout=holdout, holdout_seed=0, limit=cfg.train_limit,
                                 limit_seed=0)
    full_steps(len(subset), cfg.batch_size)
    return {"config": C.to_dict(cfg), "base": base, "space": [d.text() for d in dims],
            "rungs": rungs, "trials": cfg.trials, "seeds": cfg.seeds, "eta": cfg.eta,
            "level": cfg.level, "rounds_wanted": cfg.rounds, "storage": cfg.storage,
            "study": cfg.study, "sampler_seed": cfg.seed}


def _member_config(base: dict, settings: dict, seed: int, tag: str) -> C.DistillConfig:
    values = {**base, **settings, "init_seed": seed, "tag": tag or None}
    return C.resolve(C.DistillConfig, values, {}, where="tune")


def _study(record: TuneRecord):
    d = record.data
    return S.open_study(S.storage_of(d["storage"]), d["study"], d["sampler_seed"])


# ---------------------------------------------------------------------------------------
# Rounds

def _run(record: TuneRecord, study) -> dict:
    d = record.data
    info(f"tune {record.path}: {d['trials']} settings x {d['seeds']} seeds and the control "
         f"(alpha 0) per round, rungs at epochs {', '.join(map(str, d['rungs']))} of "
         f"{d['base']['epochs']}; study '{d['study']}' in {d['storage']} "
         f"(optuna-dashboard opens it)")
    record.data["status"] = "running"
    record.save()
    try:
        while True:
            rounds = record.rounds
            if rounds and not rounds[-1].get("told"):
                _train_round(record, study, len(rounds) - 1)
                _end_round(record, study, len(rounds) - 1)
            elif len(rounds) < d["rounds_wanted"]:
                _new_round(record, study)
            else:
                break
    except KeyboardInterrupt:
        record.finish("interrupted")
        raise
    record.finish("finished")
    return record.data


def _new_round(record: TuneRecord, study) -> None:
    d = record.data
    dims = parse_space(d["space"])
    trials = S.ask(study, distributions(dims), d["trials"])
    plan = [(f"t{t.number}", dict(t.params)) for t in trials] + [(R.CONTROL, {"alpha": 0.0})]
    members = [{"key": key, "seed": s, "settings": {**params, "init_seed": s}, "run": None}
               for key, params in plan for s in range(d["seeds"])]
    record.rounds.append({"trials": [{"number": t.number, "trial_id": S.trial_id(t),
                                      "params": dict(t.params)} for t in trials],
                          "members": members, "sweep": None, "decisions": [], "told": False})
    record.save()


def _train_round(record: TuneRecord, study, k: int) -> None:
    rnd, d = record.rounds[k], record.data
    base = d["base"]
    info(f"round {k + 1} of {d['rounds_wanted']}: " + "; ".join(
        f"t{t['number']} {member_label(t['params'])}" for t in rnd["trials"]))
    continue_with = f"vwwfast tune --resume {record.path}"

    def race(sweep: SweepInfo) -> RoundRace:
        return RoundRace(record, k, d["rungs"], d["eta"], d["level"], sweep,
                         on_rung=lambda rung, verdicts: _report_rung(study, rnd, rung, verdicts))
    if rnd["sweep"] is None:
        settings = [m["settings"] for m in rnd["members"]]
        tags = ["_".join(t for t in (base.get("tag"), m["key"], member_label(m["settings"])) if t)
                for m in rnd["members"]]
        cfgs = resolve_configs([_member_config(base, m["settings"], m["seed"], tag)
                                for m, tag in zip(rnd["members"], tags)])
        swept = {n: sorted({s[n] for s in settings if n in s}) for n in dict.fromkeys(
            n for s in settings for n in s)}

        def make() -> SweepRecord:
            sweep = SweepRecord.create(base["runs_dir"], _round_tag(base, record, k), "tune", swept,
                                       continue_with=continue_with)
            rnd["sweep"] = sweep.id
            record.save()
            return sweep
        info_ = SweepInfo(None, settings, make, continue_with=continue_with)
        fit(cfgs, "student", sweep=info_, race=race(info_))
        return
    sweep = SweepRecord.open(Path(base["runs_dir"]) / rnd["sweep"], base["runs_dir"])
    runs = [resolve_run(m["run"], sweep.path.parent) for m in sweep.members]
    info_ = SweepInfo(sweep, [m["settings"] for m in sweep.members], continue_with=continue_with)
    if all(r.summary.get("status") in ENDED_BY_ITSELF for r in runs):
        return
    cfgs = [saved_config(r, C.DistillConfig) for r in runs]
    info(f"resuming round {k + 1}: sweep {sweep.id}")
    fit(cfgs, "student", sweep=info_, resume=runs, race=race(info_))


def _round_tag(base: dict, record: TuneRecord, k: int) -> str:
    return "_".join(t for t in (base.get("tag"), f"tune-r{k + 1}") if t)


def _report_rung(study, rnd: dict, rung: int, verdicts: list[R.Verdict]) -> None:
    by_key = {v.key: v for v in verdicts}
    for t in rnd["trials"]:
        v = by_key.get(f"t{t['number']}")
        if v is not None:
            S.report(study, t["number"], t["trial_id"], v.mean, rung,
                     {f"rung_{rung}": {"verdict": v.verdict, "p_holm": v.p_holm, "gap": v.gap}})


# ---------------------------------------------------------------------------------------
# A round's end

def _end_round(record: TuneRecord, study, k: int) -> None:
    rnd, d = record.rounds[k], record.data
    runs_dir = Path(d["base"]["runs_dir"])
    cut = R.stopped(rnd["decisions"])
    groups = []
    for key in dict.fromkeys(m["key"] for m in rnd["members"]):
        dirs = [runs_dir / m["run"] for m in rnd["members"] if m["key"] == key and m["run"]]
        g = group_of(key, member_label(_params(rnd, key)), dirs) if key not in cut else None
        if g is not None:
            groups.append(g)
    for t in rnd["trials"]:
        key = f"t{t['number']}"
        dirs = [str(runs_dir / m["run"]) for m in rnd["members"] if m["key"] == key and m["run"]]
        g = next((g for g in groups if g.key == key), None)
        attrs = {"runs": dirs, "tune": record.id}
        if key in cut:
            attrs.update(pruned_at=cut[key]["rung"], verdict=cut[key]["verdict"],
                         reason=cut[key]["reason"], p_holm=cut[key]["p_holm"])
        elif g is not None:
            attrs.update(report_accs=g.report, selection_accs=g.selection)
        S.tell(study, t["number"], t["trial_id"], pruned=key in cut or g is None,
               value=g.selection_mean if g is not None else None, attrs=attrs)
    rnd["report"] = summarize(groups)
    rnd["student_epochs"] = _spent(rnd, runs_dir)
    rnd["told"] = True
    record.save()
    _say_round(record, k)


def _params(rnd: dict, key: str) -> dict:
    if key == R.CONTROL:
        return {"alpha": 0.0}
    return next(t["params"] for t in rnd["trials"] if f"t{t['number']}" == key)


def _spent(rnd: dict, runs_dir: Path) -> int:
    return sum(int(read_json(runs_dir / m["run"] / "summary.json").get("epochs_done") or 0)
               for m in rnd["members"] if m["run"])


def _say_round(record: TuneRecord, k: int) -> None:
    rnd, d = record.rounds[k], record.data
    settings = len(rnd["trials"]) + 1
    grid = settings * d["seeds"] * d["base"]["epochs"]
    result(f"round {k + 1}: {rnd['student_epochs']} student-epochs, {rnd['student_epochs'] / grid:.2f} "
           f"of a grid of these {settings} settings x {d['seeds']} seeds ({grid}); "
           f"{rnd['student_epochs'] / (settings * d['base']['epochs']):.2f} of a one-seed grid")
    for line in lines(rnd["report"]):
        result(line)
    for verdict, said in ((R.WORSE, "worse at the epoch they stopped (a verdict is about its rung)"),
                          (R.NOT_RESOLVED, "not resolved (stopped for the budget, not shown worse)")):
        stopped = [f"{key} ({member_label(_params(rnd, key))}) at epoch {c['rung']}"
                   for key, c in R.stopped(rnd["decisions"]).items() if c["verdict"] == verdict]
        if stopped:
            result(f"{said}: {', '.join(stopped)}")
