"""Run folders and their records: the run log people used to keep by hand.

runs/<YYYY-MM-DD_HH-MM-SS>_<kind>_<arch>_vww<size>[_<tag>]/
    config.yaml    resolved config, written when the run starts
    metrics.jsonl  one JSON line per epoch
    summary.json   status ("running" -> "finished" / "unfinished"), best result, versions
    card.md        goal, change vs the previous run of its kind, config, result, confusion
    curves.png     loss terms and val accuracy per epoch
Epochs are stored 0-based (as the trainer counts) and shown 1-based (as the trainer prints).
"""

from __future__ import annotations

import json
import os
import platform
import re
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Optional

import yaml

from vwwfast.errors import UserError

KINDS = ("student", "teacher")
SHORT_ARCH = {"mobilenet_v3_small": "mbv3s", "mobilenet_v3_large": "mbv3l"}
# Settings that differ between almost every pair of runs without changing the result.
NOISE = {"note", "tag", "resume", "runs_dir"}
RESULT_KEYS = ("best_val_acc", "best_epoch", "recall_0", "recall_1", "confusion",
               "wall_time_s", "img_per_s", "device")


def arch_short(arch: str) -> str:
    return SHORT_ARCH.get(arch, arch.replace("_", ""))


def run_dir_name(kind: str, arch: str, input_size: int, tag: Optional[str], now: datetime) -> str:
    name = f"{now:%Y-%m-%d_%H-%M-%S}_{kind}_{arch_short(arch)}_vww{input_size}"
    tag = re.sub(r"[^A-Za-z0-9_-]+", "-", tag or "").strip("-_")
    return f"{name}_{tag}" if tag else name


def _write_atomic(path: Path, data, binary: bool = False) -> None:
    """Temp file in the same folder + os.replace: a crash never leaves half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_default(x):
    # numpy scalars/arrays and tensors that slip into a record
    for attr in ("tolist", "item"):
        if hasattr(x, attr):
            return getattr(x, attr)()
    return str(x)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def versions() -> dict:
    from importlib import metadata
    import vwwfast
    out = {"python": platform.python_version(), "vwwfast": vwwfast.__version__}
    for name in ("torch", "torchvision", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


class Run:
    """One run folder. Create with Run.create (new run) or Run.open (resume, inspect)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.id = self.path.name

    @classmethod
    def create(cls, runs_dir, kind: str, cfg, now: Optional[datetime] = None) -> "Run":
        from vwwfast.config import to_dict
        if kind not in KINDS:
            raise ValueError(f"run kind must be one of {KINDS}, got {kind!r}")
        config = dict(cfg) if isinstance(cfg, dict) else to_dict(cfg)
        now = now or datetime.now()
        root = Path(runs_dir)
        root.mkdir(parents=True, exist_ok=True)
        base = run_dir_name(kind, config.get("arch", "model"), config.get("input_size", 0),
                            config.get("tag"), now)
        for i in range(1, 1000):  # two runs started in the same second get -2, -3, ...
            path = root / (base if i == 1 else f"{base}-{i}")
            try:
                path.mkdir()
                break
            except FileExistsError:
                continue
        else:
            raise UserError(f"{root}: too many runs named {base}*")
        run = cls(path)
        _write_atomic(path / "config.yaml", yaml.safe_dump(config, sort_keys=False))
        run._write_summary({"id": run.id, "kind": kind, "status": "running",
                            "started": now.isoformat(), "created_ns": time.time_ns()})
        return run

    @classmethod
    def open(cls, path) -> "Run":
        p = Path(path)
        if not (p / "config.yaml").is_file():
            raise UserError(f"{p} is not a run folder (no config.yaml); pass a folder under "
                            f"runs/ made by train-teacher or distill")
        return cls(p)

    # -- records -------------------------------------------------------------------------
    @property
    def config(self) -> dict:
        return yaml.safe_load((self.path / "config.yaml").read_text()) or {}

    @property
    def summary(self) -> dict:
        return _read_json(self.path / "summary.json")

    @property
    def kind(self) -> Optional[str]:
        kind = self.summary.get("kind")
        if kind in KINDS:
            return kind
        return next((k for k in KINDS if f"_{k}_" in self.id), None)

    def _write_summary(self, data: dict) -> None:
        _write_atomic(self.path / "summary.json", json.dumps(data, indent=1, default=_json_default))

    def log_epoch(self, record: dict) -> None:
        line = json.dumps(record, default=_json_default)
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(line + "\n")
            f.flush()

    def epochs(self) -> list[dict]:
        """Epoch records in epoch order; an epoch logged twice (a resume replayed it) keeps
        its last record; a torn last line (a crash mid-write) is skipped."""
        path = self.path / "metrics.jsonl"
        if not path.is_file():
            return []
        by_epoch: dict = {}
        for n, line in enumerate(path.read_text().splitlines()):
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                by_epoch[rec.get("epoch", f"line{n}")] = rec
        return sorted(by_epoch.values(), key=lambda r: (r.get("epoch") is None, r.get("epoch") or 0))

    def finish(self, summary: dict, finished: bool = True,
               card_extra: Optional[list[str]] = None) -> dict:
        """Write summary.json, then card.md and curves.png. Returns the merged summary."""
        merged = {**self.summary, **summary}
        merged["status"] = "finished" if finished else "unfinished"
        merged["ended"] = datetime.now().isoformat()
        for key in RESULT_KEYS:
            merged.setdefault(key, None)
        # The trainer's "no epoch yet" sentinel (-1) would sort as a real result.
        if merged["best_epoch"] is not None and merged["best_epoch"] < 0:
            merged["best_epoch"] = merged["best_val_acc"] = None
        merged["versions"] = versions()
        self._write_summary(merged)
        _write_atomic(self.path / "card.md", card_text(self, merged, card_extra or []))
        write_curves(self)
        return merged


# ---------------------------------------------------------------------------------------
# Finding runs

def find_runs(runs_dir) -> list[Run]:
    """Every run folder in runs_dir, oldest first (by start time, then creation order)."""
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    runs = [Run(p) for p in root.iterdir() if p.is_dir() and (p / "config.yaml").is_file()]
    return sorted(runs, key=_start_key)


def _start_key(run: Run):
    s = run.summary
    return (str(s.get("started", "")), s.get("created_ns", 0), run.id)


def previous_run(run: Run) -> Optional[Run]:
    """The most recent run of the same kind that started before `run` in the same folder."""
    key, kind = _start_key(run), run.kind
    earlier = [r for r in find_runs(run.path.parent)
               if r.id != run.id and r.kind == kind and _start_key(r) < key]
    return earlier[-1] if earlier else None


def config_changes(a: dict, b: dict, skip=NOISE) -> list[tuple[str, object, object]]:
    """(setting, value in a, value in b) for each setting that differs, in config order."""
    keys = list(a) + [k for k in b if k not in a]
    return [(k, a.get(k), b.get(k)) for k in keys if k not in skip and a.get(k) != b.get(k)]


def resolve_run(ref: str, runs_dir) -> Run:
    """A run by folder path, by id inside runs_dir, or by a unique part of its id."""
    p = Path(ref)
    if p.is_dir():
        return Run.open(p)
    if (Path(runs_dir) / ref).is_dir():
        return Run.open(Path(runs_dir) / ref)
    matches = [r for r in find_runs(runs_dir) if ref in r.id]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UserError(f"'{ref}' matches {len(matches)} runs in {runs_dir}; give more of the id")
    raise UserError(f"no run '{ref}' in {runs_dir}; `vwwfast runs --runs-dir {runs_dir}` lists them")


# ---------------------------------------------------------------------------------------
# Formatting

def _fmt_value(v) -> str:
    return "unset" if v is None else str(v)


def _fmt_metric(v, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _fmt_epoch(e) -> str:
    return "-" if e is None else str(int(e) + 1)


def _fmt_duration(s) -> str:
    if s is None:
        return "-"
    s = int(round(s))
    h, m, sec = s // 3600, s % 3600 // 60, s % 60
    return f"{h}h{m:02d}m" if h else f"{m}m{sec:02d}s" if m else f"{sec}s"


def _fmt_rate(v) -> str:
    return "-" if v is None else f"{v:,.0f}"


# ---------------------------------------------------------------------------------------
# Card and curves

def card_text(run: Run, summary: dict, extra: list[str]) -> str:
    kind = run.kind or "run"
    config = run.config
    lines = [f"# {run.id}", "", f"**Goal:** {config.get('note') or '(no note given)'}", "",
             f"## Change vs previous {kind} run", ""]
    prev = previous_run(run)
    if prev is None:
        lines.append("First run of its kind.")
    else:
        changes = config_changes(prev.config, config)
        lines.append(f"Previous: `{prev.id}`")
        lines.append("")
        lines += [f"- {k}: {_fmt_value(a)} -> {_fmt_value(b)}" for k, a, b in changes] \
            or ["- no setting changed"]
    lines += ["", "## Config", "", "```yaml", yaml.safe_dump(config, sort_keys=False).rstrip(),
              "```", "", "## Result", "", "| | |", "|---|---|",
              f"| status | {summary.get('status')} |",
              f"| best val acc | {_fmt_metric(summary.get('best_val_acc'))} |",
              f"| best epoch | {_fmt_epoch(summary.get('best_epoch'))} |",
              f"| recall no-person (0) | {_fmt_metric(summary.get('recall_0'))} |",
              f"| recall person (1) | {_fmt_metric(summary.get('recall_1'))} |",
              f"| wall time | {_fmt_duration(summary.get('wall_time_s'))} |",
              f"| images/s (train) | {_fmt_rate(summary.get('img_per_s'))} |",
              f"| device | {summary.get('device') or '-'} |", ""]
    cm = summary.get("confusion")
    lines += ["## Confusion matrix (val, best epoch)", ""]
    if cm:
        (tn, fp), (fn, tp) = cm
        lines += ["| | predicted no-person | predicted person |", "|---|---|---|",
                  f"| **no-person** | TN {tn} | FP {fp} |",
                  f"| **person** | FN {fn} | TP {tp} |"]
    else:
        lines.append("No epoch was evaluated.")
    if extra:
        lines += ["", "## Notes", ""] + [f"- {x}" for x in extra]
    return "\n".join(lines) + "\n"


def write_curves(run: Run) -> None:
    """curves.png: loss terms (left) and val accuracy / recall (right) per epoch."""
    import io
    import matplotlib
    matplotlib.use("Agg")  # no display on a training box
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    records = run.epochs()

    def series(key):
        pts = [(int(r.get("epoch", i)) + 1, r[key]) for i, r in enumerate(records)
               if isinstance(r.get(key), (int, float))]
        return [e for e, _ in pts], [v for _, v in pts]

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for key in sorted({k for r in records for k in r if k.startswith("loss")}):
        ax_loss.plot(*series(key), marker=".", label=key)
    for key, style in (("val_acc", "-"), ("recall_0", "--"), ("recall_1", "--")):
        ax_acc.plot(*series(key), style, marker=".", label=key)
    ax_loss.set(title="training loss", xlabel="epoch")
    ax_acc.set(title="validation", xlabel="epoch")
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend() if records else ax.text(0.5, 0.5, "no epochs recorded", ha="center",
                                            transform=ax.transAxes)
    fig.suptitle(run.id, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    _write_atomic(run.path / "curves.png", buf.getvalue(), binary=True)


# ---------------------------------------------------------------------------------------
# `vwwfast runs`

def _row(run: Run) -> dict:
    s = run.summary
    return {"id": run.id, "path": str(run.path), "kind": run.kind,
            "status": s.get("status", "unknown"), "val_acc": s.get("best_val_acc"),
            "recall_0": s.get("recall_0"), "recall_1": s.get("recall_1"),
            "best_epoch": s.get("best_epoch"), "wall_time_s": s.get("wall_time_s"),
            "started": s.get("started"), "config": run.config}


def list_runs(runs_dir, kind: Optional[str] = None, sort: str = "time") -> list[dict]:
    """One dict per run: oldest first (sort='time') or best val acc first (sort='val_acc')."""
    if kind is not None and kind not in KINDS:
        raise UserError(f"--kind must be 'teacher' or 'student', got '{kind}'")
    if sort not in ("time", "val_acc"):
        raise UserError(f"--sort must be 'time' or 'val_acc', got '{sort}'")
    rows = [_row(r) for r in find_runs(runs_dir)]
    rows = [r for r in rows if kind is None or r["kind"] == kind]
    if sort == "val_acc":  # runs without a result go last
        rows.sort(key=lambda r: (r["val_acc"] is None, -(r["val_acc"] or 0.0)))
    return rows


def varying_settings(configs: list[dict]) -> list[str]:
    """Settings whose value differs among the runs that have them (a teacher has no alpha)."""
    keys: list[str] = []
    for c in configs:
        keys += [k for k in c if k not in keys and k not in NOISE]
    return [k for k in keys
            if len({json.dumps(c[k], sort_keys=True, default=str) for c in configs if k in c}) > 1]


def _print_table(title: str, columns: list[str], rows: list[list], fixed: int = 0) -> None:
    """Like progress.print_table, but the first `fixed` columns (run id, metrics) never wrap and
    output that is not a terminal (a pipe, a file) is not squeezed to 80 columns."""
    from rich.console import Console
    from rich.measure import Measurement
    from vwwfast.progress import out, table
    t = table(title, columns, rows)
    for col in t.columns[:fixed]:
        col.no_wrap = True
    for col in t.columns[fixed:]:
        col.overflow = "fold"
    console = out
    if not out.is_terminal:
        wide = Console(highlight=False, width=100_000)
        need = Measurement.get(wide, wide.options, t).maximum
        console = Console(highlight=False, width=max(need, 80))
    console.print(t)


def print_runs(runs_dir, kind: Optional[str] = None, sort: str = "time") -> list[dict]:
    from vwwfast.progress import info
    rows = list_runs(runs_dir, kind, sort)
    if not rows:
        which = f"{kind} runs" if kind else "runs"
        info(f"no {which} in {runs_dir} yet; `vwwfast train-teacher` or `vwwfast distill` makes one")
        return rows
    settings = varying_settings([r["config"] for r in rows])
    columns = ["run", "kind", "val acc", "recall 0", "recall 1", "best ep", "status", "wall"]
    table = [[r["id"], r["kind"] or "?", _fmt_metric(r["val_acc"]), _fmt_metric(r["recall_0"], 3),
              _fmt_metric(r["recall_1"], 3), _fmt_epoch(r["best_epoch"]), r["status"],
              _fmt_duration(r["wall_time_s"])] + [_fmt_value(r["config"].get(k)) for k in settings]
             for r in rows]
    _print_table(f"{len(rows)} runs in {runs_dir}", columns + settings, table, fixed=len(columns))
    return rows


def diff_runs(a: str, b: str, runs_dir) -> dict:
    """Settings changed from run a to run b, and the result change (b - a)."""
    ra, rb = resolve_run(a, runs_dir), resolve_run(b, runs_dir)
    sa, sb = _row(ra), _row(rb)
    delta = {k: (sb[k] - sa[k] if sa[k] is not None and sb[k] is not None else None)
             for k in ("val_acc", "recall_0", "recall_1")}
    return {"a": sa, "b": sb, "changes": config_changes(sa["config"], sb["config"]), "delta": delta}


def print_diff(a: str, b: str, runs_dir) -> dict:
    from vwwfast.progress import out
    d = diff_runs(a, b, runs_dir)
    sa, sb = d["a"], d["b"]
    out.print(f"a = {sa['id']}\nb = {sb['id']}", soft_wrap=True)
    if d["changes"]:
        _print_table("settings changed (a -> b)", ["setting", "a", "b"],
                     [[k, _fmt_value(x), _fmt_value(y)] for k, x, y in d["changes"]], fixed=1)
    else:
        out.print("same settings (note, tag, resume and runs_dir aside)")
    rows = [[name, _fmt_metric(sa[k]), _fmt_metric(sb[k]),
             "-" if d["delta"][k] is None else f"{d['delta'][k]:+.4f}"]
            for k, name in (("val_acc", "val acc"), ("recall_0", "recall no-person"),
                            ("recall_1", "recall person"))]
    _print_table("result (best epoch)", ["metric", "a", "b", "b - a"], rows, fixed=4)
    return d


def runs_command(cfg) -> None:
    if cfg.diff:
        if len(cfg.diff) != 2:
            raise UserError("--diff takes two runs (folders or ids)")
        print_diff(cfg.diff[0], cfg.diff[1], cfg.runs_dir)
    else:
        print_runs(cfg.runs_dir, cfg.kind, cfg.sort)
