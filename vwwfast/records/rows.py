"""One row per run: a run's record flattened for the runs table, CSV and JSON, and the run list.

Also which settings tell the runs shown apart, and a setting's value as a table cell.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Union

from vwwfast import config as C
from vwwfast.errors import UserError
from vwwfast.fmt import fmt_value
from vwwfast.provenance import arch_short, model_short
from vwwfast.records.runs import KINDS, NOISE, Run, find_runs, read_json, short_id
from vwwfast.teach.description import TeacherDescription, TeacherModel

# Settings of how a run is executed, not of what it learns: --wide shows them, the table not.
EXECUTION = {"device", "compile", "renderer", "decoded_size", "decoded_budget_gb", "sweep_mode"}
PATHS = {"shards", "cache", "teacher", "init", "resume"}
SORTS = ("time", "val_acc")

Row = dict[str, Any]  # run_row's fields; --json writes them as they are


def teacher_short(teacher: Optional[dict[str, Any]]) -> str:
    """The teacher run in short: its short id, else its checkpoint's file (or run folder);
    an ensemble's members joined by '+'."""
    if not teacher:
        return "-"
    d = TeacherDescription.from_dict(teacher)
    return "+".join(_model_short(m) for m in d.members or [d.model or TeacherModel()])


def _model_short(m: TeacherModel) -> str:
    if m.run:
        return short_id(m.run)
    if not m.checkpoint:
        return "?"
    p = Path(str(m.checkpoint).replace("\\", "/"))
    return short_id(p.parent.name) if p.name in ("model.pt", "last.pt") and p.parent.name else p.stem


def selected_on(summary: dict[str, Any]) -> str:
    """The split that chose a run's best epoch: 'holdout' (--holdout) or 'val' (a run
    recorded before holdouts existed chose on val)."""
    return summary.get("selected_on") or "val"


def run_row(run: Run) -> Row:
    """The run's figures under the names the table, --csv and --json use."""
    s, c = run.summary, run.config
    t = s.get("teacher") or None
    return {"id": run.id, "short_id": run.short_id, "path": str(run.path), "kind": run.kind,
            "status": s.get("status", "unknown"), "goal": c.get("note") or "",
            "started": s.get("started"), "ended": s.get("ended"),
            "val_acc": s.get("best_val_acc"), "best_epoch": s.get("best_epoch"),
            # the split that chose best_epoch: val's figure is optimistic when val chose it
            "selected_on": selected_on(s), "holdout_acc": s.get("best_holdout_acc"),
            "recall_0": s.get("recall_0"), "recall_1": s.get("recall_1"),
            "confusion": s.get("confusion"), "epochs_done": s.get("epochs_done"),
            "epochs": c.get("epochs"), "wall_time_s": s.get("wall_time_s"),
            "img_per_s": s.get("img_per_s"), "device": s.get("device"), "sweep": s.get("sweep"),
            "teacher": teacher_short(t) if run.kind == "student" else "-",
            "teacher_run": _teacher_run(t), "teacher_val_acc": _teacher_val_acc(t),
            "model": model_short(c.get("arch") or "?", c.get("width")),
            "params": s.get("params"), "macs": s.get("macs"), **_exported(run),
            "config": c, "summary": s}


def _exported(run: Run) -> dict[str, Optional[int]]:
    """The deployed file's figures, when the run was exported: the int8 file's size (flash)
    and estimated activation peak (RAM), the smallest int8 file's when there are several."""
    files = (read_json(run.path / "export" / "export.json").get("files") or {}).values()
    int8 = [f for f in files if isinstance(f, dict) and f.get("precision") == "int8"
            and f.get("size_bytes") is not None]
    best: dict[str, Any] = min(int8, key=lambda f: f["size_bytes"], default={})
    return {"flash_bytes": best.get("size_bytes"), "ram_bytes": best.get("peak_activation_bytes")}


def _teacher_run(t: Optional[dict[str, Any]]) -> Optional[str]:
    if not t:
        return None
    d = TeacherDescription.from_dict(t)
    if d.members:
        return "+".join(m.run or "?" for m in d.members)
    return d.model.run if d.model else None


def _teacher_val_acc(t: Optional[dict[str, Any]]) -> Optional[float]:
    """The teacher run's val accuracy; an ensemble's own, on its store's val view."""
    if not t:
        return None
    d = TeacherDescription.from_dict(t)
    if d.members:
        return d.val_acc
    return d.model.run_val_acc if d.model else None


def by_val_acc(rows: list[Row]) -> list[Row]:
    """Best val acc first; runs without a result go last, in the order they came."""
    return sorted(rows, key=lambda r: (r["val_acc"] is None, -(r["val_acc"] or 0.0)))


def list_runs(runs_dir: Union[str, Path], kind: Optional[str] = None,
              sort: str = "time") -> list[Row]:
    """One row per run: oldest first (sort='time') or best val acc first (sort='val_acc')."""
    if kind is not None and kind not in KINDS:
        raise UserError(f"--kind must be 'teacher' or 'student', got '{kind}'")
    if sort not in SORTS:
        raise UserError(f"--sort must be 'time' or 'val_acc', got '{sort}'")
    rows = [run_row(r) for r in find_runs(runs_dir)]
    rows = [r for r in rows if kind is None or r["kind"] == kind]
    return by_val_acc(rows) if sort == "val_acc" else rows


def differing(configs: list[dict[str, Any]], wide: bool = False) -> list[str]:
    """Settings whose value differs among the runs that have them (a teacher has no alpha),
    the swept knobs first. The table leaves out execution settings (--wide keeps them)."""
    skip = NOISE if wide else NOISE | EXECUTION | {"teacher"}  # the teacher has its own column
    keys: list[str] = []
    for c in configs:
        keys += [k for k in c if k not in keys and k not in skip]
    keys = [k for k in keys
            if len({json.dumps(c[k], sort_keys=True, default=str) for c in configs if k in c}) > 1]
    first = C.kd_settings() + ["lr"]  # the knobs people sweep, in the order config.py has them
    return sorted(keys, key=lambda k: first.index(k) if k in first else len(first))


def setting_text(key: str, value: Any, short: bool = True) -> str:
    """A setting's value as a cell: in short (on/off, short arch and run names), or whole."""
    if value is None:
        return "-"
    if not short:
        return json.dumps(value) if isinstance(value, (dict, list)) else fmt_value(value)
    if isinstance(value, bool):
        return "on" if value else "off"
    if key in ("arch", "teacher_arch") and isinstance(value, str):
        return arch_short(value)
    if key in PATHS and isinstance(value, list):  # several teachers
        return "+".join(setting_text(key, v) for v in value) or "-"
    if key in PATHS and isinstance(value, str):
        p = Path(value.replace("\\", "/"))
        return short_id(p.parent.name) if p.name in ("model.pt", "last.pt") else p.stem or value
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "-"
    return fmt_value(value)
