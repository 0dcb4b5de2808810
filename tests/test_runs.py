"""Run folders and sweep records: names, files, permissions, short ids; the runs table,
--csv / --json / --wide / --diff / --sweep. (The builders of run records are in conftest.py.)"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import stat
from datetime import timedelta

import pytest
import yaml
from rich.console import Console

from conftest import T0, T1, T2, epoch_record, finished_run, stub_curves, summary, teacher_info
from vwwfast.config import DistillConfig, RunsConfig, TrainConfig
from vwwfast.errors import UserError
from vwwfast.records.report import write_report
from vwwfast.records.runs import Run, SweepRecord, find_runs, resolve_run, run_dir_name, short_id
from vwwfast.provenance import git_commit, versions
from vwwfast.records.diff import diff_runs
from vwwfast.records.rows import list_runs
from vwwfast.records.table import print_runs, runs_command

pytestmark = pytest.mark.usefixtures("quick_curves")  # conftest: curves.png as a placeholder


# ---------------------------------------------------------------------------------------
# Run folders

def test_run_dir_name_and_short_id():
    name = run_dir_name("student", "mobilenet_v3_small", 96, "kd_a", T0)
    assert name == "2025-10-27_15-06-43_student_mbv3s_vww96_kd_a"
    assert short_id(name) == "10-27_15-06-43_kd_a"
    teacher = run_dir_name("teacher", "mobilenet_v3_large", 224, None, T0)
    assert teacher == "2025-10-27_15-06-43_teacher_mbv3l_vww224" and short_id(teacher) == "10-27_15-06-43"
    assert run_dir_name("student", "resnet_18", 96, "a b/../c!", T0) == \
        "2025-10-27_15-06-43_student_resnet18_vww96_a-b-c"
    assert run_dir_name("student", "mobilenet_v3_small", 96, "kd_a0.5-g2", T0).endswith("_kd_a0.5-g2")
    assert short_id(name + "-2") == "10-27_15-06-43_kd_a-2"
    assert short_id("2025-10-27_15-06-43_sweep_grid") == "10-27_15-06-43_sweep_grid"
    assert short_id("my-own-folder") == "my-own-folder"


def test_create_writes_config_and_running_status(tmp_path):
    run = Run.create(tmp_path / "runs", "student", DistillConfig(shards="s", tag="kd_a", lr=0.001), now=T0)
    assert run.path.name == "2025-10-27_15-06-43_student_mbv3s_vww96_kd_a"
    saved = yaml.safe_load((run.path / "config.yaml").read_text())
    assert saved["lr"] == 0.001 and saved["alpha"] == 0.55  # flat, as resolved
    s = json.loads((run.path / "summary.json").read_text())
    assert s["status"] == "running" and s["id"] == run.id and s["versions"]["vwwfast"]
    assert Run.open(run.path).kind == "student" and run.short_id == "10-27_15-06-43_kd_a"


def test_same_second_gets_unique_folder(tmp_path):
    cfg = DistillConfig(shards="s")
    a = Run.create(tmp_path, "student", cfg, now=T0)
    b = Run.create(tmp_path, "student", cfg, now=T0)
    assert a.path != b.path and b.path.name == a.path.name + "-2"


def test_record_files_are_0644_under_umask_022(tmp_path, real_curves):
    old = os.umask(0o022)
    try:
        run = finished_run(tmp_path, DistillConfig(shards="s"), T0, 0.8)
        record = SweepRecord.create(tmp_path, "x", "grid", {"alpha": [0.1, 0.2]}, now=T0)
    finally:
        os.umask(old)
    for path in [run.path / n for n in ("config.yaml", "summary.json", "metrics.jsonl", "card.md",
                                        "curves.png")] + [record.path / "sweep.json"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path.name
    assert not list(run.path.glob(".*.tmp")) and not list(record.path.glob(".*.tmp"))


def test_records_after_finish(tmp_path, real_curves):
    run = finished_run(tmp_path, DistillConfig(shards="s", note="try KD"), T0, 0.85)
    assert [r["epoch"] for r in run.epochs()] == [1, 2]
    s = json.loads((run.path / "summary.json").read_text())
    assert s["status"] == "finished" and s["best_val_acc"] == 0.85 and s["best_epoch"] == 2
    assert s["ended"] and s["started"] == "2025-10-27T15:06:43"
    assert set(s["versions"]) == {"vwwfast", "git", "python", "torch", "torchvision", "numpy"}
    assert (run.path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (run.path / "card.md").read_text().startswith(f"# {run.id}\n")


def test_update_summary_merges(tmp_path):
    run = Run.create(tmp_path, "teacher", TrainConfig(shards="s"), now=T0)
    run.update_summary({"epochs_done": 1, "device": "cpu"})
    merged = run.update_summary({"epochs_done": 2})
    assert merged == run.summary
    assert run.summary["epochs_done"] == 2 and run.summary["device"] == "cpu"
    assert run.summary["status"] == "running"


def test_epochs_keeps_last_record_and_skips_torn_line(tmp_path):
    run = Run.create(tmp_path, "teacher", TrainConfig(shards="s"), now=T0)
    run.log_epoch(epoch_record(1, 0.5, kd=False))
    run.log_epoch(epoch_record(2, 0.6, kd=False))
    run.log_epoch(epoch_record(2, 0.7, kd=False))  # a resume replayed epoch 2
    with open(run.path / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 3, "lo')
    assert [(r["epoch"], r["val_acc"]) for r in run.epochs()] == [(1, 0.5), (2, 0.7)]


def test_truncate_epochs_drops_what_came_after_the_checkpoint(tmp_path):
    run = Run.create(tmp_path, "teacher", TrainConfig(shards="s"), now=T0)
    for e in (1, 2, 3):
        run.log_epoch(epoch_record(e, 0.5 + e / 10, kd=False))
    with open(run.path / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 4, "lo')  # torn by the crash
    run.truncate_epochs(2)
    lines = (run.path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["epoch"] for l in lines] == [1, 2]
    run.log_epoch(epoch_record(3, 0.9, kd=False))  # the resumed run goes on appending
    assert [r["val_acc"] for r in run.epochs()] == [0.6, 0.7, 0.9]
    run.truncate_epochs(0)
    assert run.epochs() == []


def test_finish_statuses(tmp_path):
    run = Run.create(tmp_path, "student", DistillConfig(shards="s"), now=T0)
    s = run.finish({"best_val_acc": None, "best_epoch": None,
                    "resume_command": f"vwwfast distill --resume {run.path}"}, "interrupted")
    assert s["status"] == "interrupted" and s["confusion"] is None and "--resume" in s["resume_command"]
    write_report(run, s)
    assert "No epoch was evaluated." in (run.path / "card.md").read_text()
    s = run.finish({"error": "the training loss became nan in epoch 3"}, "failed")
    assert s["status"] == "failed" and "nan" in s["error"] and "resume_command" not in s
    s = run.finish(summary(0.8), "finished")  # resumed and finished: the old error goes
    assert s["status"] == "finished" and "error" not in s and s["best_epoch"] == 2
    with pytest.raises(ValueError):
        run.finish({}, "unfinished")


def test_versions_git_commit(monkeypatch):
    v = versions()
    assert set(v) == {"vwwfast", "git", "python", "torch", "torchvision", "numpy"}
    assert v["git"] is None or re.fullmatch(r"[0-9a-f]{7,}(\+dirty)?", v["git"])
    git_commit.cache_clear()
    monkeypatch.setenv("PATH", "/nonexistent")  # no git on the machine: no commit, no error
    try:
        assert git_commit() is None
    finally:
        git_commit.cache_clear()


# ---------------------------------------------------------------------------------------
# Naming a run

def test_resolve_run_by_path_id_short_id_or_part(tmp_path):
    a = finished_run(tmp_path, DistillConfig(shards="s", tag="kd_a"), T0, 0.8)
    b = finished_run(tmp_path, DistillConfig(shards="s", tag="kd_ab"), T1, 0.8)
    t = finished_run(tmp_path, TrainConfig(shards="s", tag="base"), T2, 0.9, kind="teacher")
    assert resolve_run(str(a.path), "elsewhere").id == a.id
    assert resolve_run(a.id, tmp_path).id == a.id
    assert resolve_run("10-27_15-06-43_kd_a", tmp_path).id == a.id   # exact short id
    assert resolve_run("kd_ab", tmp_path).id == b.id                 # a unique part
    assert resolve_run("base", tmp_path).id == t.id
    assert resolve_run(f"somewhere/{b.id}", tmp_path).id == b.id    # a path under another root
    assert resolve_run("kd_a", tmp_path).id == a.id                  # an id's end: its whole tag
    with pytest.raises(UserError, match="matches 2 runs.*10-27_15-06-43_kd_a"):
        resolve_run("kd", tmp_path)         # a part of kd_a and kd_ab: refused
    c = finished_run(tmp_path, DistillConfig(shards="s", tag="kd_a"), T2.replace(hour=18), 0.8)
    with pytest.raises(UserError, match="matches 2 runs"):
        resolve_run("kd_a", tmp_path)       # two runs tagged kd_a (not kd_ab): refused
    assert resolve_run(c.short_id, tmp_path).id == c.id
    with pytest.raises(UserError, match="no run 'nope'"):
        resolve_run("nope", tmp_path)
    (tmp_path / "junk").mkdir()
    with pytest.raises(UserError, match="not a run folder"):
        resolve_run(str(tmp_path / "junk"), tmp_path)


def test_sweep_record_round_trip(tmp_path):
    rec = SweepRecord.create(tmp_path, "grid", "grid", {"alpha": [0.3, 0.8], "temperature": [2.0, 4.0]},
                             now=T0)
    assert rec.id == "2025-10-27_15-06-43_sweep_grid" and rec.data["status"] == "running"
    runs = []
    for a in (0.3, 0.8):
        run = finished_run(tmp_path, DistillConfig(shards="s", alpha=a, tag=f"grid_a{a}"), T0, 0.7 + a / 10,
                           sweep=rec.id)
        rec.add_member(run.id, {"alpha": a, "temperature": 2.0})
        runs.append(run)
    rec.finish("finished")
    data = json.loads((rec.path / "sweep.json").read_text())
    assert set(data) >= {"id", "started", "mode", "swept", "members", "status"}
    assert data["status"] == "finished" and data["mode"] == "grid"
    assert data["members"] == [{"run": r.id, "settings": {"alpha": a, "temperature": 2.0}}
                               for r, a in zip(runs, (0.3, 0.8))]
    for ref in (str(rec.path), rec.id, "10-27_15-06-43_sweep_grid", "sweep_grid"):
        assert SweepRecord.open(ref, tmp_path).id == rec.id
    assert [r.id for r in SweepRecord.open("sweep", tmp_path).runs()] == [r.id for r in runs]
    assert rec.id not in [r.id for r in find_runs(tmp_path)]  # a sweep is no run
    with pytest.raises(UserError, match="names a sweep"):
        resolve_run("sweep_grid", tmp_path)
    with pytest.raises(UserError, match="sweep record, not a run"):
        resolve_run(str(rec.path), tmp_path)


# ---------------------------------------------------------------------------------------
# The runs table

def twelve_runs(root):
    """A teacher, then 12 students differing in alpha, temperature and confidence gamma."""
    teacher = finished_run(root, TrainConfig(shards="shards/vww", tag="base", note="the teacher"),
                           T0, 0.94, kind="teacher")
    t = teacher_info(teacher)
    rec = SweepRecord.create(root, "grid", "grid", {"alpha": [0.3, 0.55, 0.8], "temperature": [2.0, 4.0],
                                                    "confidence_gamma": [0.0, 2.0]}, now=T1)
    k = 0
    for a in (0.3, 0.55, 0.8):
        for temp in (2.0, 4.0):
            for g in (0.0, 2.0):
                label = f"a{a:g}-T{temp:g}-g{g:g}"
                cfg = DistillConfig(shards="shards/vww", cache="shards/vww/teacher-mbv3l224.zarr",
                                    alpha=a, temperature=temp, confidence_gamma=g, tag=f"grid_{label}",
                                    note="which alpha, T and gamma suit the cached mbv3l teacher best")
                run = finished_run(root, cfg, T1 + timedelta(seconds=k), 0.78 + 0.005 * k, teacher=t,
                                   sweep=rec.id)
                rec.add_member(run.id, {"alpha": a, "temperature": temp, "confidence_gamma": g})
                k += 1
    rec.finish("finished")
    return teacher, rec


@pytest.fixture(scope="module")
def twelve(tmp_path_factory):
    """twelve_runs made once for the tests that only read them."""
    root = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp:
        stub_curves(mp)
        twelve_runs(root)
    return root


def _table_text(cfg: RunsConfig, width=100) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    runs_command(cfg, console=console)
    return console.export_text()


def test_runs_table_fits_100_columns(twelve):
    text = _table_text(RunsConfig(runs_dir=str(twelve), kind="student"))
    lines = text.splitlines()
    assert max(len(l) for l in lines) <= 100
    header = next(l for l in lines if l.startswith("run "))
    for col in ("goal", "a", "T", "gamma"):  # only the differing settings, short names
        assert re.search(rf"\b{col}\b", header), col
    assert "lr" not in header.split() and "epochs" not in header
    body = [l for l in lines if l.startswith("10-27_16-00-")]
    assert len(body) == 12 and all("…" in l or "which alpha" in l for l in body)
    row = next(l for l in body if "_grid_a0.8-T4-g2" in l)
    assert row.split()[0] == "10-27_16-00-11_grid_a0.8-T4-g2"   # the short id, whole
    assert "0.8350" in row                                       # its val acc
    assert "teacher of every KD student: 10-27_15-06-43_base (val acc 0.9400)" in text
    assert "T = temperature" in text and "a = alpha" in text


def test_runs_table_leaves_out_what_does_not_fit_and_says_so(twelve):
    text = _table_text(RunsConfig(runs_dir=str(twelve)), width=80)  # teacher and students, 80 cols
    assert max(len(l) for l in text.splitlines()) <= 80
    assert "also differ:" in text and "--wide" in text


def test_runs_sorted_and_filtered(tmp_path, capsys):
    finished_run(tmp_path, DistillConfig(shards="s", lr=0.002, tag="a"), T0, 0.80)
    finished_run(tmp_path, DistillConfig(shards="s", lr=0.001, tag="b"), T2, 0.85)
    finished_run(tmp_path, TrainConfig(shards="s"), T1, 0.90, kind="teacher")
    assert [r["kind"] for r in list_runs(tmp_path)] == ["student", "teacher", "student"]  # by time
    students = list_runs(tmp_path, kind="student", sort="val_acc")
    assert [r["val_acc"] for r in students] == [0.85, 0.80]
    print_runs(tmp_path, "student", "time")
    out = capsys.readouterr().out
    assert "lr" in out and "0.002" in out and "0.001" in out and "10-27_15-06-43_a" in out
    with pytest.raises(UserError):
        list_runs(tmp_path, sort="speed")


def test_runs_csv_and_json_for_scripts(twelve, capsys):
    runs_command(RunsConfig(runs_dir=str(twelve), csv=True))
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 13
    student = next(r for r in rows if r["short_id"] == "10-27_16-00-11_grid_a0.8-T4-g2")
    assert float(student["val_acc"]) == pytest.approx(0.835) and student["temperature"] == "4.0"
    assert student["tn"] == "40" and student["teacher_short_id"] == "10-27_15-06-43_base"
    assert student["sweep"].endswith("_sweep_grid")
    runs_command(RunsConfig(runs_dir=str(twelve), json=True, kind="teacher"))
    data = json.loads(capsys.readouterr().out)
    assert len(data) == 1 and data[0]["kind"] == "teacher" and data[0]["config"]["tag"] == "base"
    assert data[0]["summary"]["status"] == "finished"


def test_runs_wide_shows_everything(twelve, capsys):
    runs_command(RunsConfig(runs_dir=str(twelve), wide=True))
    out = capsys.readouterr().out
    for text in ("2025-10-27_16-00-11_student_mbv3s_vww96_grid_a0.8-T4-g2", "confidence_gamma",
                 "temperature", "40 10 5 45", "finished", "student",
                 "which alpha, T and gamma suit the cached mbv3l teacher best"):
        assert text in out, text


def test_runs_sweep_lists_members_best_first(twelve):
    text = _table_text(RunsConfig(runs_dir=str(twelve), sweep="sweep_grid"))
    assert max(len(l) for l in text.splitlines()) <= 100
    body = [l for l in text.splitlines() if l.startswith("10-27_16-00-")]
    assert len(body) == 12
    accs = [float(re.findall(r"0\.\d{4}", l)[0]) for l in body]
    assert accs == sorted(accs, reverse=True)
    assert body[0].split()[0] == "10-27_16-00-11_grid_a0.8-T4-g2"
    assert "grid over alpha, temperature, confidence_gamma" in text


def test_diff_runs(tmp_path, capsys):
    a = finished_run(tmp_path, DistillConfig(shards="s", temperature=2.0), T0, 0.80)
    b = finished_run(tmp_path, DistillConfig(shards="s", temperature=4.0, note="x"), T2, 0.85, epochs=3)
    d = diff_runs(str(a.path), b.short_id, tmp_path)  # by path and by short id
    assert d["changes"] == [("temperature", 2.0, 4.0)]
    assert d["delta"]["val_acc"] == pytest.approx(0.05) and d["delta"]["best_epoch"] == 1
    runs_command(RunsConfig(runs_dir=str(tmp_path), diff=[a.id, b.id]))
    out = capsys.readouterr().out
    assert "temperature" in out and "+0.0500" in out and "+1" in out
    runs_command(RunsConfig(runs_dir=str(tmp_path), diff=[a.id, b.id], json=True))
    assert json.loads(capsys.readouterr().out)["changes"] == [{"setting": "temperature", "a": 2.0, "b": 4.0}]


def test_runs_flags_that_do_not_go_together_are_refused(tmp_path):
    finished_run(tmp_path, DistillConfig(shards="s"), T0, 0.8)
    for kw, words in (({"csv": True, "json": True}, "choose one"),
                      ({"out": "x.png"}, "--out"),
                      ({"diff": ["a", "b"], "wide": True}, "--diff does not take --wide"),
                      ({"plot": ["a"], "csv": True}, "--plot does not take --csv")):
        with pytest.raises(UserError, match=words):
            runs_command(RunsConfig(runs_dir=str(tmp_path), **kw))


def test_empty_or_missing_runs_dir_is_friendly(tmp_path, capsys):
    assert print_runs(tmp_path / "nope") == []
    runs_command(RunsConfig(runs_dir=str(tmp_path)))
    captured = capsys.readouterr()
    assert "no runs" in captured.err and captured.out == ""


# ---------------------------------------------------------------------------------------
# The console: results to stdout, logs to stderr

def test_synth_says_what_it_made(tmp_path, capsys):
    from vwwfast.cli import main
    assert main(["synth", "--out", str(tmp_path / "syn"), "--train", "4", "--val", "2"]) == 0
    captured = capsys.readouterr()
    assert "train2014/" in captured.out and "val2014/" in captured.out and "person" in captured.out
    assert "vwwfast shard --coco-root" in captured.err


def test_view_settings_are_compared_field_by_field():
    from vwwfast.records.runs import config_changes
    a = {"view_spec": "default", "view": {}, "lr": 1}
    b = {"view_spec": "default", "view": {"erase": 0.25}, "lr": 1}
    assert config_changes(a, b) == [("view.erase", 0.0, 0.25)]
    assert config_changes(b, {**b, "view": {"hue": 0.0}}) == [("view.erase", 0.25, 0.0),
                                                             ("view.hue", 0.02, 0.0)]
