"""Run folders and sweep records: the run log people used to keep by hand.

runs/<YYYY-MM-DD_HH-MM-SS>_<kind>_<arch>[-<width>]_vww<size>[_<tag>]/
    config.yaml    the flat resolved config, written when the run starts
    metrics.jsonl  one JSON line per epoch, epochs numbered from 1
    summary.json   status (running -> finished | interrupted | failed), best result, teacher,
                   fingerprints, versions
    card.md        goal, result, change vs the previous run of its kind, teacher, config, notes
                   (card.py, written by report.py when the run ends)
    curves.png     loss terms, validation, schedules per epoch (plots.py, likewise)
    events.out.tfevents.*  the same scalars for TensorBoard, when it is installed
runs/<YYYY-MM-DD_HH-MM-SS>_sweep[_<tag>]/sweep.json   the students of one `distill` pass

A run is named by its folder, its id (the folder name) or its short id: the date-time
without the year and the tag, e.g. `10-27_15-06-43_kd_a`, or any part of either that only
one run has. This module reads and writes the folders; table.py, card.py, plots.py and
report.py present them.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Optional

import yaml

from vwwfast.errors import UserError
from vwwfast.files import write_atomic
from vwwfast.provenance import model_short, versions
from vwwfast.records import selection, tensorboard

KINDS = ("student", "teacher")
ENDED = ("finished", "interrupted", "failed", "pruned")
# a run that ended on its own (a resume leaves it as it is); pruned: a tune's race stopped it
ENDED_BY_ITSELF = ("finished", "failed", "pruned")
# Settings that differ between almost every pair of runs without changing what they learn.
NOISE = {"note", "tag", "resume", "runs_dir"}
RESULT_KEYS = ("best_val_acc", "best_epoch", "recall_0", "recall_1", "confusion",
               "wall_time_s", "img_per_s", "device")
SWEEP_FILE = "sweep.json"


def clean_tag(tag: Optional[str]) -> str:
    """Letters, digits, '_', '-' and single dots (a sweep label such as 'a0.5-T4')."""
    tag = re.sub(r"[^A-Za-z0-9_.-]+|\.{2,}", "-", tag or "")
    return re.sub(r"-{2,}", "-", tag).strip("-_.")


def run_dir_name(kind: str, arch: str, input_size: int, tag: Optional[str], now: datetime,
                 width: Optional[float] = None) -> str:
    """The arch in short with its width multiplier when not 1: ..._student_mbv3s-0.35_vww96."""
    name = f"{now:%Y-%m-%d_%H-%M-%S}_{kind}_{model_short(arch, width)}_vww{input_size}"
    tag = clean_tag(tag)
    return f"{name}_{tag}" if tag else name


_RUN_ID = re.compile(r"^\d{4}-(\d\d-\d\d_\d\d-\d\d-\d\d)_(?:student|teacher)_[^_]+_vww\d+(.*)$")
_SWEEP_ID = re.compile(r"^\d{4}-(\d\d-\d\d_\d\d-\d\d-\d\d_sweep.*)$")


def short_id(run_id: str) -> str:
    """'2025-10-27_15-06-43_student_mbv3s_vww96_kd_a' -> '10-27_15-06-43_kd_a' (date-time
    without the year, then the tag); a sweep keeps its '_sweep'; other names stay whole."""
    m = _RUN_ID.match(run_id)
    if m:
        return m.group(1) + m.group(2)
    m = _SWEEP_ID.match(run_id)
    return m.group(1) if m else run_id


# ---------------------------------------------------------------------------------------
# Files

def _json_default(x):
    # numpy scalars/arrays and tensors that slip into a record
    for attr in ("tolist", "item"):
        if hasattr(x, attr):
            return getattr(x, attr)()
    return str(x)


def to_json(data) -> str:
    return json.dumps(data, indent=1, default=_json_default) + "\n"


def read_json(path: Path) -> dict:
    """A JSON object from a file, {} when it is missing or unreadable (a record being written)."""
    try:
        data = json.loads(Path(path).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


# ---------------------------------------------------------------------------------------
# A run

def new_folder(root: Path, base: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(1, 1000):  # two records started in the same second get -2, -3, ...
        path = root / (base if i == 1 else f"{base}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise UserError(f"{root}: too many folders named {base}*; choose another --tag")


class Run:
    """One run folder. Create with Run.create (new run) or Run.open (resume, inspect)."""

    def __init__(self, path):
        self.path = Path(path)
        self.id = self.path.name
        self._tb = None  # TensorBoard writer, opened by the first log_epoch

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @property
    def short_id(self) -> str:
        return short_id(self.id)

    @classmethod
    def create(cls, runs_dir, kind: str, cfg, now: Optional[datetime] = None) -> "Run":
        from vwwfast.config import to_dict
        if kind not in KINDS:
            raise ValueError(f"run kind must be one of {KINDS}, got {kind!r}")
        config = dict(cfg) if isinstance(cfg, dict) else to_dict(cfg)
        now = now or datetime.now()
        base = run_dir_name(kind, config.get("arch", "model"), config.get("input_size", 0),
                            config.get("tag"), now, config.get("width"))
        run = cls(new_folder(Path(runs_dir), base))
        write_atomic(run.path / "config.yaml", yaml.safe_dump(config, sort_keys=False))
        run._write_summary({"id": run.id, "kind": kind, "status": "running",
                            "started": now.isoformat(timespec="seconds"),
                            "created_ns": time.time_ns(), "versions": versions()})
        return run

    @classmethod
    def open(cls, path) -> "Run":
        p = Path(path)
        if (p / SWEEP_FILE).is_file():
            raise UserError(f"{p} is a sweep record, not a run: `vwwfast runs --sweep {p}` lists its "
                            f"runs; name one of them")
        if not (p / "config.yaml").is_file():
            raise UserError(f"{p} is not a run folder (no config.yaml); pass a folder under "
                            f"runs/ made by train-teacher or distill, or its short id")
        return cls(p)

    # -- records -------------------------------------------------------------------------
    @property
    def config(self) -> dict:
        try:
            data = yaml.safe_load((self.path / "config.yaml").read_text())
        except (OSError, yaml.YAMLError):
            return {}
        return data if isinstance(data, dict) else {}

    @property
    def summary(self) -> dict:
        return read_json(self.path / "summary.json")

    @property
    def kind(self) -> Optional[str]:
        kind = self.summary.get("kind")
        if kind in KINDS:
            return kind
        return next((k for k in KINDS if f"_{k}_" in self.id), None)

    def _write_summary(self, data: dict) -> None:
        write_atomic(self.path / "summary.json", to_json(data))

    def update_summary(self, fields: dict) -> dict:
        """Merge fields into summary.json (atomically); returns the merged summary."""
        merged = {**self.summary, **fields}
        self._write_summary(merged)
        return merged

    def log_epoch(self, record: dict) -> None:
        """Append one epoch's record to metrics.jsonl (and TensorBoard, when installed)."""
        line = json.dumps(record, default=_json_default)
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(line + "\n")
            f.flush()
        if self._tb is None:
            epoch = record.get("epoch")
            self._tb = tensorboard.writer(self.path, epoch if isinstance(epoch, int) else 1)
        if self._tb:
            tensorboard.log_epoch(self._tb, record)

    def _close_tb(self) -> None:
        if self._tb:
            self._tb.close()
        self._tb = None

    def epochs(self) -> list[dict]:
        """Epoch records in epoch order; an epoch logged twice (a resume replayed it) keeps
        its last record; a torn last line (a crash mid-write) is skipped."""
        by_epoch: dict = {}
        for n, rec in enumerate(self._records()):
            by_epoch[rec.get("epoch", f"line{n}")] = rec
        return sorted(by_epoch.values(),
                      key=lambda r: (not isinstance(r.get("epoch"), int), r.get("epoch") or 0))

    def _records(self) -> list[dict]:
        path = self.path / "metrics.jsonl"
        if not path.is_file():
            return []
        out = []
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
        return out

    def truncate_epochs(self, last_epoch: int) -> None:
        """Keep only the records of epochs 1..last_epoch: a resume from the checkpoint of
        last_epoch drops what was logged after it (it trains those epochs again)."""
        keep = [r for r in self._records()
                if isinstance(r.get("epoch"), int) and r["epoch"] <= last_epoch]
        write_atomic(self.path / "metrics.jsonl",
                     "".join(json.dumps(r, default=_json_default) + "\n" for r in keep))
        selection.truncate(self.path, last_epoch)

    def finish(self, summary: dict, status: str) -> dict:
        """The run ended (status finished | interrupted | failed): merge `summary` into
        summary.json. Returns the merged summary (report.write_report draws card and curves)."""
        if status not in ENDED:
            raise ValueError(f"status must be one of {ENDED}, got {status!r}")
        merged = {**self.summary, **summary, "status": status,
                  "ended": datetime.now().isoformat(timespec="seconds")}
        for key in RESULT_KEYS:
            merged.setdefault(key, None)
        if merged["best_epoch"] is not None and merged["best_epoch"] < 1:  # "no epoch yet"
            merged["best_epoch"] = merged["best_val_acc"] = None
        if status != "failed":
            merged.pop("error", None)           # a failed run that was resumed and finished
        if status != "interrupted":
            merged.pop("resume_command", None)
        merged["versions"] = versions()
        self._write_summary(merged)
        self._close_tb()
        return merged


# ---------------------------------------------------------------------------------------
# A sweep: the students of one `distill` pass

class SweepRecord:
    """runs/<YYYY-MM-DD_HH-MM-SS>_sweep[_tag]/sweep.json: {"id", "started", "mode", "swept",
    "members": [{"run", "settings"}], "status"}. Each member is an ordinary run folder."""

    def __init__(self, path):
        self.path = Path(path)
        self.id = self.path.name

    def __repr__(self) -> str:
        return f"SweepRecord({str(self.path)!r})"

    @property
    def short_id(self) -> str:
        return short_id(self.id)

    @property
    def data(self) -> dict:
        return read_json(self.path / SWEEP_FILE)

    @property
    def members(self) -> list[dict]:
        return list(self.data.get("members") or [])

    @property
    def swept(self) -> dict:
        return dict(self.data.get("swept") or {})

    def _write(self, data: dict) -> None:
        write_atomic(self.path / SWEEP_FILE, to_json(data))

    @classmethod
    def create(cls, runs_dir, tag: Optional[str], mode: str, swept: dict,
               now: Optional[datetime] = None, continue_with: Optional[str] = None) -> "SweepRecord":
        """continue_with: the command that continues it when not `distill --resume` (a tune's)."""
        now = now or datetime.now()
        tag = clean_tag(tag)
        base = f"{now:%Y-%m-%d_%H-%M-%S}_sweep" + (f"_{tag}" if tag else "")
        record = cls(new_folder(Path(runs_dir), base))
        record._write({"id": record.id, "started": now.isoformat(timespec="seconds"),
                       "created_ns": time.time_ns(), "mode": mode,
                       "swept": {k: list(v) for k, v in swept.items()}, "members": [],
                       "status": "running", **({"continue_with": continue_with} if continue_with else {})})
        return record

    def add_member(self, run_id: str, settings: dict) -> None:
        data = self.data
        data.setdefault("members", []).append({"run": run_id, "settings": dict(settings)})
        self._write(data)

    def finish(self, status: str) -> None:
        if status not in ENDED:
            raise ValueError(f"status must be one of {ENDED}, got {status!r}")
        self._write({**self.data, "status": status,
                     "ended": datetime.now().isoformat(timespec="seconds")})

    def runs(self) -> list[Run]:
        """The member runs that still exist, in the order they were added."""
        return [Run(self.path.parent / m["run"]) for m in self.members
                if (self.path.parent / m["run"] / "config.yaml").is_file()]

    @classmethod
    def open(cls, ref, runs_dir) -> "SweepRecord":
        """A sweep by folder, id, short id (e.g. 10-27_15-06-43_sweep_kd) or unique part."""
        p = Path(str(ref))
        if p.is_dir():
            if not (p / SWEEP_FILE).is_file():
                raise UserError(f"{p} is not a sweep folder (no {SWEEP_FILE})")
            return cls(p)
        return _match(str(ref), find_sweeps(runs_dir), "sweep", Path(runs_dir))


# ---------------------------------------------------------------------------------------
# Finding runs

def _start_key(record) -> tuple:
    s = record.summary if isinstance(record, Run) else record.data
    return (str(s.get("started", "")), s.get("created_ns", 0), record.id)


def find_runs(runs_dir) -> list[Run]:
    """Every run folder in runs_dir (not sweep records), oldest first."""
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    runs = [Run(p) for p in root.iterdir() if p.is_dir() and (p / "config.yaml").is_file()]
    return sorted(runs, key=_start_key)


def find_sweeps(runs_dir) -> list[SweepRecord]:
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    found = [SweepRecord(p) for p in root.iterdir() if p.is_dir() and (p / SWEEP_FILE).is_file()]
    return sorted(found, key=_start_key)


def previous_run(run: Run) -> Optional[Run]:
    """The most recent run of the same kind that started before `run` in the same folder."""
    key, kind = _start_key(run), run.kind
    earlier = [r for r in find_runs(run.path.parent)
               if r.id != run.id and r.kind == kind and _start_key(r) < key]
    return earlier[-1] if earlier else None


def config_changes(a: dict, b: dict, skip=NOISE) -> list[tuple[str, object, object]]:
    """(setting, value in a, value in b) for each setting that differs, in config order.
    The `view` settings are compared field by field (`view.erase`), a field one side does
    not set being at its base spec's value."""
    fields = sorted(set(a.get("view") or {}) | set(b.get("view") or {}))
    a, b = _flat_view(a, fields), _flat_view(b, fields)
    keys = list(a) + [k for k in b if k not in a]
    return [(k, a.get(k), b.get(k)) for k in keys if k not in skip and a.get(k) != b.get(k)]


def _flat_view(config: dict, fields: list[str]) -> dict:
    if not isinstance(config.get("view"), dict):
        return config
    from vwwfast.viewspec import view_spec
    base = view_spec(config.get("view_spec") or "default").to_dict(full=True)
    out = {k: v for k, v in config.items() if k != "view"}
    out.update({f"view.{f}": config["view"].get(f, base.get(f)) for f in fields})
    return out


def _match(ref: str, items: list, what: str, root: Path):
    """The one item named by its id, its short id, or a part of either that no other has."""
    # whole ids first, then an id's end (a short id without its date: '07-24-26_sup_a0' is
    # not also '07-24-26_sup_a0.55'), then any part
    hits = []
    for named in (lambda x: x.id == ref, lambda x: x.short_id == ref,
                  lambda x: x.id.endswith(ref) or x.short_id.endswith(ref),
                  lambda x: ref in x.id or ref in x.short_id):
        hits = [x for x in items if named(x)]
        if hits:   # the first rule that names any: one, or say which
            break
    if len(hits) == 1:
        return hits[0]
    if hits:
        names = ", ".join(x.short_id for x in hits[:6]) + (", ..." if len(hits) > 6 else "")
        raise UserError(f"'{ref}' matches {len(hits)} {what}s in {root} ({names}); give more of "
                        f"the id")
    if what == "run" and any(ref in s.id or ref in s.short_id for s in find_sweeps(root)):
        raise UserError(f"'{ref}' names a sweep, not a run: `vwwfast runs --sweep {ref} "
                        f"--runs-dir {root}` lists its runs; name one of them")
    listing = "`vwwfast runs --runs-dir " + str(root) + "`" + (" lists them" if what == "run"
                                                              else " lists their runs")
    raise UserError(f"no {what} '{ref}' in {root}; {listing} (name one by folder, id, or short "
                    f"id such as 10-27_15-06-43_kd_a)")


def resolve_run(ref, runs_dir) -> Run:
    """A run by folder path, by id inside runs_dir, by short id, or by a unique part of
    either (e.g. its tag)."""
    ref = str(ref)
    p = Path(ref)
    if p.is_dir():
        return Run.open(p)
    root = Path(runs_dir)
    if len(p.parts) > 1:  # a path that is not there: perhaps runs_dir holds its folder
        if (root / p.name).is_dir():
            return Run.open(root / p.name)
        raise UserError(f"run folder not found: {p}")
    if ref and (root / ref).is_dir():
        return Run.open(root / ref)
    if not ref:
        raise UserError("no run given: name one by folder, id or short id")
    return _match(ref, find_runs(root), "run", root)
