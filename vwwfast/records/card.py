"""card.md: what a person used to write by hand for each run, from the run's own files
(config.yaml, summary.json, metrics.jsonl, export/export.json).

Goal, status, result with the confusion matrix, change vs the previous run of its kind
(settings and what they did to the result), the teacher by its run, remarks, export,
config in the `kd:` / `teacher:` shape, the code that ran, and the person's own notes:
whatever is between the notes markers survives every rewrite.
"""

from __future__ import annotations

import re
from typing import Optional

import yaml

from vwwfast.fmt import fmt_bytes, fmt_count, fmt_delta, fmt_duration, fmt_metric, fmt_rate, fmt_value
from vwwfast.records import stats
from vwwfast.records.rows import selected_on
from vwwfast.teach.description import TeacherDescription, TeacherModel
from vwwfast.records.compare import REPLICATE_KEY, pair_runs, replicate_groups
from vwwfast.records.runs import (
    Run,
    SweepRecord,
    config_changes,
    previous_run,
    read_json,
    short_id,
)

NOTES_BEGIN = "<!-- notes: your conclusions go below; vwwfast keeps them when it rewrites this card -->"
NOTES_END = "<!-- /notes -->"
_BEGIN = re.compile(r"^<!-- notes\b.*?-->[ \t]*$", re.M)


def _sha(v) -> str:
    return f"{v[:12]}" if v else "-"


# ---------------------------------------------------------------------------------------
# Notes

def kept_notes(old_card: str) -> str:
    """The person's notes in an existing card: the text between the markers (to the end
    when the closing marker was deleted), else what follows a `## Notes` heading."""
    m = _BEGIN.search(old_card)
    if m:
        end = old_card.find(NOTES_END, m.end())
        body = old_card[m.end():] if end < 0 else old_card[m.end():end]
    else:
        h = re.search(r"^## Notes[ \t]*$", old_card, re.M)
        body = old_card[h.end():] if h else ""
    return body.strip("\n")


# ---------------------------------------------------------------------------------------
# Sections

def _status_line(run: Run, summary: dict, config: dict) -> str:
    status = summary.get("status") or "unknown"
    done, total = summary.get("epochs_done"), config.get("epochs")
    if done is None:
        done = len(run.epochs())
    of = f"{done} of {total} epochs" if total else f"{done} epochs"
    wall = fmt_duration(summary.get("wall_time_s"))
    if status == "finished":
        line = f"finished: {of} in {wall}"
        if summary.get("stopped_early"):
            line += (f" (stopped early: no better {selected_on(summary)} accuracy for "
                     f"{config.get('patience')} epochs)")
        return line
    if status == "interrupted":
        cmd = summary.get("resume_command")
        return f"interrupted after {of} ({wall})" + (f"; continue with `{cmd}`" if cmd else "")
    if status == "failed":
        return f"failed after {of}: {summary.get('error') or 'no error recorded'}"
    if status == "pruned":
        why = (summary.get("pruned") or {}).get("reason") or "no reason recorded"
        return f"pruned by its tune's race after {of} ({wall}): {why}"
    return f"{status}: {of} so far"


def _chosen_on(summary: dict) -> str:
    """Which split chose the best epoch, and what that makes of the val figure."""
    if selected_on(summary) == "holdout":
        held = summary.get("best_holdout_acc")
        return (f"Best epoch chosen on the --holdout samples (accuracy "
                f"{fmt_metric(held)} there), never on val: the val acc is only reported.")
    return ("Best epoch chosen on val itself: the val acc is optimistic (the best of the "
            "epochs' val figures); `--holdout N` chooses on training samples set apart.")


def _result(summary: dict) -> list[str]:
    if summary.get("best_val_acc") is None:
        return ["No epoch was evaluated."]
    lines = ["| val acc | best epoch | recall no-person | recall person | img/s (train) | wall time |",
             "|---|---|---|---|---|---|",
             f"| **{fmt_metric(summary['best_val_acc'])}** | {summary.get('best_epoch') or '-'} | "
             f"{fmt_metric(summary.get('recall_0'))} | {fmt_metric(summary.get('recall_1'))} | "
             f"{fmt_rate(summary.get('img_per_s'))} | {fmt_duration(summary.get('wall_time_s'))} |"]
    cm = summary.get("confusion")
    n = sum(sum(row) for row in cm) if cm else None
    lines += ["", _chosen_on(summary)]
    se = stats.binomial_se(summary["best_val_acc"], n)
    if se is not None:
        lines += ["", f"Val acc {fmt_metric(summary['best_val_acc'])} ± {se:.4f}: one binomial "
                      f"standard error on {n:,} val images. Whether another run differs by more "
                      f"than this val set can resolve: `vwwfast runs --diff` (paired test)."]
    if cm:
        (tn, fp), (fn, tp) = cm
        lines += ["", f"Confusion matrix (val, epoch {summary.get('best_epoch') or '-'}):", "",
                  "| | predicted no-person | predicted person |", "|---|---|---|",
                  f"| **no-person** | TN {tn} | FP {fp} |",
                  f"| **person** | FN {fn} | TP {tp} |"]
    return lines


def _change(run: Run, config: dict, summary: dict) -> list[str]:
    prev = previous_run(run)
    if prev is None:
        return ["First run of its kind."]
    ps = prev.summary
    state = ps.get("status") or "unknown"
    lines = [f"Previous: `{prev.short_id}` ({prev.id}, {state})", ""]
    rows = [("val acc", "best_val_acc", 4), ("recall no-person", "recall_0", 4),
            ("recall person", "recall_1", 4), ("best epoch", "best_epoch", 0)]
    lines += ["| | this run | previous | change |", "|---|---|---|---|"]
    for name, key, digits in rows:
        a, b = summary.get(key), ps.get(key)
        fmt = (lambda v: "-" if v is None else str(v)) if digits == 0 else fmt_metric
        delta = a - b if a is not None and b is not None else None
        shown = "-" if delta is None else (f"{int(delta):+d}" if digits == 0 else fmt_delta(delta))
        lines.append(f"| {name} | {fmt(a)} | {fmt(b)} | {shown} |")
    pairing = pair_runs(prev, run, name_a="the previous run", name_b="this run")
    if pairing.result is not None:
        lines += ["", f"Paired on the val images: {stats.in_words(pairing.result, 'this run')}."]
        lines += [f"- note: {w}" for w in pairing.warnings]
    else:
        reason = pairing.reason or "no paired test"
        lines += ["", reason[:1].upper() + reason[1:] + "."]
    changes = config_changes(prev.config, config)
    lines += ["", "Settings changed:" if changes else "No setting changed.", ""]
    lines += [f"- {k}: {fmt_value(a)} -> {fmt_value(b)}" for k, a, b in changes]
    return lines


def _replicates(run: Run, summary: dict) -> list[str]:
    """A sweep over init_seed: the group of members that differ from this run only in it."""
    if not summary.get("sweep"):
        return []
    record = SweepRecord(run.path.parent / summary["sweep"])
    if REPLICATE_KEY not in record.swept:
        return []
    members = record.members
    own = next((m for m in members if m["run"] == run.id), None)
    if own is None:
        return []
    group = next(g for g in replicate_groups(
        [{**m, "val_acc": 0.0} for m in members]) if run.id in g["members"])  # membership only
    where = ", ".join(f"{k} {fmt_value(v)}" for k, v in group["settings"].items()) or "the same settings"
    names = [f"`{short_id(m)}`" + (" (this run)" if m == run.id else "") for m in group["members"]]
    seeds = ", ".join(fmt_value(x) for x in group["init_seeds"])
    return [f"**Replicate group:** {len(names)} runs at {where}, init seeds {seeds}: "
            f"{', '.join(names)}. Their mean ± sd: `vwwfast runs --sweep "
            f"{short_id(summary['sweep'])}`.", ""]


def _teacher(summary: dict, config: dict, kind: Optional[str]) -> list[str]:
    t = summary.get("teacher")
    if kind != "student":
        return []
    if not t:
        return ["## Teacher", "", "None: a supervised student (alpha 0)." if not config.get("alpha")
                else "Not recorded.", ""]
    lines = ["## Teacher", ""]
    d = TeacherDescription.from_dict(t)
    if d.members:
        lines.append(f"An ensemble of {len(d.members)}: the log of their mean probability.")
        lines.append("")
        for k, m in enumerate(d.members, 1):
            lines.append(f"- member {k}: {_teacher_run(m)}")
            lines.append(f"  - {_teacher_checkpoint(m)}")
    else:
        model = d.model or TeacherModel()
        lines += [f"- run: {_teacher_run(model)}",
                  f"- {_teacher_checkpoint(model, d.trained_input_size)}"]
    if d.mode == "cached":
        store = f"`{d.store}` ({d.views} views, fingerprint {_sha(d.store_fingerprint)})"
        used = "" if d.logits_used else "; its logits were not used (alpha 0)"
        lines.append(f"- logits: cached in {store}{used}")
        if d.val_acc is not None:
            lines.append(f"- teacher val acc on the store's val view: {fmt_metric(d.val_acc)}")
    elif d.mode == "online":
        lines.append("- logits: online (the teacher ran on every training batch)")
    return lines + [""]


def _teacher_run(m: TeacherModel) -> str:
    if not m.run:
        return "not known (a checkpoint made outside a vwwfast run)"
    acc = m.run_val_acc
    return (f"[`{short_id(m.run)}`](../{m.run}/card.md)"
            + (f", val acc {fmt_metric(acc)}" if acc is not None else ""))


def _teacher_checkpoint(m: TeacherModel, trained: Optional[int] = None) -> str:
    size = m.input_size
    what = f"{m.arch or '?'}" + (f" at {size} px" if size else "")
    if trained and size and trained != size:
        what = f"{m.arch or '?'} trained at {trained} px, run at {size} px"
    if m.role == "student":
        what += " (a student's checkpoint: self-distillation)"
    return f"checkpoint: `{m.checkpoint or '?'}` (sha256 {_sha(m.sha256)}), {what}"


def _model(config: dict, summary: dict) -> list[str]:
    """What the model costs on a device (footprint.py), when the run recorded it."""
    if summary.get("params") is None:
        return []
    from vwwfast.provenance import model_short
    name = model_short(config.get("arch") or "?", config.get("width"))
    width = config.get("width") or 1.0
    return ["## Model", "",
            f"`{name}` ({config.get('arch')}, width {width:g}) at {config.get('input_size')} px: "
            f"{fmt_count(summary['params'])} params, {fmt_count(summary.get('macs'))} MACs per image; "
            f"int8 weights ~ {fmt_bytes(summary.get('int8_weight_bytes_est'))}, int8 activation "
            f"peak ~ {fmt_bytes(summary.get('peak_activation_bytes_est'))} (estimates; the "
            f"exported files' own figures are under Export).", ""]


def _export(run: Run) -> list[str]:
    report = read_json(run.path / "export" / "export.json")
    if not report:
        return []
    float_ = report.get("float") or {}
    base = float_.get("acc")
    lines = ["## Export", "", "| file | precision | size | peak RAM (est.) | val acc | vs float | "
             "recall no-person | recall person |", "|---|---|---|---|---|---|---|---|"]
    rows = ([("model.pt (float)", float_)] if float_ else []) + \
        list((report.get("files") or {}).items())
    for name, f in rows:
        if not isinstance(f, dict):
            continue
        acc = f.get("acc")
        drop = None if f is float_ or acc is None or base is None else acc - base
        size = fmt_bytes(f["bytes"]) if isinstance(f.get("bytes"), (int, float)) else "-"
        peak = f.get("peak_activation_bytes")
        lines.append(f"| {name} | {f.get('precision') or '-'} | {size} | {fmt_bytes(peak)} | "
                     f"{fmt_metric(acc)} | "
                     f"{'-' if drop is None else f'{100 * drop:+.2f} points'} | "
                     f"{fmt_metric(f.get('recall_0'))} | {fmt_metric(f.get('recall_1'))} |")
    lines += [""] + [f"- warning: {w}" for w in report.get("warnings") or []]
    if report.get("warnings"):
        lines.append("")
    return lines + ["Sizes in KB of 1000 bytes; peak RAM: the estimated int8 activation arena "
                    "(largest sum of live tensors over the graph, weights excluded). Details: "
                    "`export/export.json`.", ""]


def _code(summary: dict) -> list[str]:
    v = summary.get("versions") or {}
    git = v.get("git")
    line = f"vwwfast {v.get('vwwfast') or '?'}" + (f" (git {git})" if git else " (not a git checkout)")
    line += "".join(f", {k} {v[k]}" for k in ("python", "torch", "torchvision", "numpy") if v.get(k))
    lines = ["## Code and inputs", "", f"- {line}"]
    if summary.get("device"):
        lines.append(f"- device: {summary['device']}")
    fp = summary.get("fingerprints") or {}
    names = (("shards_content_hash", "shards content hash"), ("store_fingerprint", "teacher store"),
             ("teacher_sha256", "teacher sha256"))
    given = [f"{name} {_sha(fp[k])}" for k, name in names if fp.get(k)]
    if given:
        lines.append("- " + ", ".join(given))
    return lines + [""]


def _config(config: dict, kind: Optional[str]) -> list[str]:
    """The `kd:` / `teacher:` blocks and the settings that differ from the defaults, then the
    rest folded away: together, a file that `--config` reads back."""
    from vwwfast import config as C
    try:
        data = C.sectioned(config)
        defaults = C.to_dict(C.DistillConfig() if kind == "student" else C.TrainConfig())
    except Exception:  # a hand-edited or older config: show it as it is
        data, defaults = config, {}
    given = {k: v for k, v in data.items()
             if k in ("kd", "teacher", "views") or k not in defaults or defaults[k] != v}
    rest = {k: v for k, v in data.items() if k not in given}
    lines = ["## Config", "", "```yaml", yaml.safe_dump(given, sort_keys=False).rstrip(), "```", ""]
    if rest:
        lines += [f"<details><summary>the other {len(rest)} settings, at their defaults</summary>", "",
                  "```yaml", yaml.safe_dump(rest, sort_keys=False).rstrip(), "```", "", "</details>", ""]
    return lines


def card_text(run: Run, summary: dict, notes: str = "") -> str:
    config = run.config
    kind = run.kind or "run"
    lines = [f"# {run.id}", "",
             f"**Goal:** {config.get('note') or '(no note given: --note says what a run is for)'}", "",
             f"**Status:** {_status_line(run, summary, config)}", "",
             f"Short id `{run.short_id}`, started {str(summary.get('started', '?')).replace('T', ' ')}"
             + (f", member of sweep `{short_id(summary['sweep'])}`" if summary.get("sweep") else ""), "",
             *_replicates(run, summary),
             "## Result (val, best epoch)", "", *_result(summary), "",
             f"## Change vs previous {kind} run", "", *_change(run, config, summary), "",
             *_teacher(summary, config, run.kind)]
    remarks = summary.get("remarks") or []
    if remarks:
        lines += ["## Remarks", "", *[f"- {r}" for r in remarks], ""]
    lines += _model(config, summary)
    lines += _export(run)
    lines += ["## Curves", "", "![loss terms, validation and schedules per epoch](curves.png)", ""]
    lines += _config(config, run.kind)
    lines += _code(summary)
    head = re.sub(r"\n{3,}", "\n\n", "\n".join(lines) + "\n")
    return head + "## Notes\n\n" + NOTES_BEGIN + "\n" + (notes + "\n" if notes else "") + NOTES_END + "\n"
