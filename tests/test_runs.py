"""Run folders and records: names, files, the card's change list, listing and diffing."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
import yaml

from vwwfast.config import DistillConfig, RunsConfig, TrainConfig
from vwwfast.errors import UserError
from vwwfast.runs import (Run, diff_runs, list_runs, print_diff, print_runs, run_dir_name,
                          runs_command)

T0 = datetime(2025, 10, 27, 15, 6, 43)
T1 = datetime(2025, 10, 27, 16, 0, 0)
T2 = datetime(2025, 10, 28, 9, 30, 5)


def epoch_record(epoch, acc):
    return {"epoch": epoch, "loss": 0.9 - 0.1 * epoch, "loss_ce": 0.5, "loss_kl": 0.3,
            "loss_margin": 0.1, "alpha": 0.55, "margin_weight": 0.03, "lr": 1e-3,
            "val_acc": acc, "recall_0": acc - 0.01, "recall_1": acc + 0.01,
            "confusion": [[40, 10], [5, 45]], "img_per_s": 1234.5, "time_s": 2.0}


def summary(acc, epoch=1):
    return {"best_val_acc": acc, "best_epoch": epoch, "recall_0": 0.8, "recall_1": 0.9,
            "confusion": [[40, 10], [5, 45]], "wall_time_s": 125.0, "img_per_s": 2000.0,
            "device": "cpu (4 threads)"}


def finished_run(runs_dir, cfg, now, acc, kind="student"):
    run = Run.create(runs_dir, kind, cfg, now=now)
    for e in range(2):
        run.log_epoch(epoch_record(e, acc - 0.05 + 0.05 * e))
    run.finish(summary(acc), card_extra=["teacher cache: t.zarr (fingerprint abc123)"])
    return run


def test_run_dir_name():
    assert run_dir_name("student", "mobilenet_v3_small", 96, "kd_a", T0) == \
        "2025-10-27_15-06-43_student_mbv3s_vww96_kd_a"
    assert run_dir_name("teacher", "mobilenet_v3_large", 224, None, T0) == \
        "2025-10-27_15-06-43_teacher_mbv3l_vww224"
    assert run_dir_name("student", "resnet_18", 96, "a b/../c!", T0) == \
        "2025-10-27_15-06-43_student_resnet18_vww96_a-b-c"
    assert run_dir_name("student", "mobilenet_v3_small", 96, "", T0).endswith("vww96")


def test_create_writes_config_and_running_status(tmp_path):
    cfg = DistillConfig(shards="s", tag="kd_a", lr=0.001)
    run = Run.create(tmp_path / "runs", "student", cfg, now=T0)
    assert run.path.name == "2025-10-27_15-06-43_student_mbv3s_vww96_kd_a"
    saved = yaml.safe_load((run.path / "config.yaml").read_text())
    assert saved["lr"] == 0.001 and saved["alpha"] == 0.55
    assert json.loads((run.path / "summary.json").read_text())["status"] == "running"
    assert Run.open(run.path).kind == "student"


def test_same_second_gets_unique_folder(tmp_path):
    cfg = DistillConfig(shards="s")
    a = Run.create(tmp_path, "student", cfg, now=T0)
    b = Run.create(tmp_path, "student", cfg, now=T0)
    assert a.path != b.path and b.path.name == a.path.name + "-2"


def test_records_after_finish(tmp_path):
    run = finished_run(tmp_path, DistillConfig(shards="s", note="try KD"), T0, 0.85)
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "card.md", "curves.png"):
        assert (run.path / name).is_file(), name
    assert not list(run.path.glob(".*.tmp"))
    lines = (run.path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[1])["epoch"] == 1
    assert [r["epoch"] for r in run.epochs()] == [0, 1]
    s = json.loads((run.path / "summary.json").read_text())
    for key in ("status", "best_val_acc", "best_epoch", "recall_0", "recall_1", "confusion",
                "wall_time_s", "img_per_s", "device", "versions"):
        assert key in s, key
    assert s["status"] == "finished" and s["best_val_acc"] == 0.85
    assert set(s["versions"]) == {"python", "torch", "torchvision", "numpy", "vwwfast"}
    assert (run.path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    card = (run.path / "card.md").read_text()
    assert card.startswith(f"# {run.id}\n")
    assert "try KD" in card and "First run of its kind." in card
    assert "| **no-person** | TN 40 | FP 10 |" in card and "| **person** | FN 5 | TP 45 |" in card
    assert "0.8500" in card and "2m05s" in card and "```yaml" in card
    assert "- teacher cache: t.zarr (fingerprint abc123)" in card


def test_epochs_keeps_last_record_and_skips_torn_line(tmp_path):
    run = Run.create(tmp_path, "teacher", TrainConfig(shards="s"), now=T0)
    run.log_epoch(epoch_record(0, 0.5))
    run.log_epoch(epoch_record(1, 0.6))
    run.log_epoch(epoch_record(1, 0.7))  # a resume replayed epoch 1
    with open(run.path / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "lo')
    assert [(r["epoch"], r["val_acc"]) for r in run.epochs()] == [(0, 0.5), (1, 0.7)]


def test_unfinished_status(tmp_path):
    run = Run.create(tmp_path, "student", DistillConfig(shards="s"), now=T0)
    run.finish({"best_val_acc": -1.0, "best_epoch": -1}, finished=False)
    s = json.loads((run.path / "summary.json").read_text())
    assert s["status"] == "unfinished"
    assert s["best_val_acc"] is None and s["confusion"] is None
    assert (run.path / "card.md").is_file() and (run.path / "curves.png").is_file()
    assert "No epoch was evaluated." in (run.path / "card.md").read_text()


def test_card_lists_changes_vs_previous_run_of_same_kind(tmp_path):
    finished_run(tmp_path, DistillConfig(shards="s", lr=0.002, alpha=0.55), T0, 0.80)
    finished_run(tmp_path, TrainConfig(shards="s", lr=0.5), T1, 0.90, kind="teacher")
    b = finished_run(tmp_path, DistillConfig(shards="s", lr=0.001, alpha=0.55,
                                             alpha_end=0.0, note="lower lr"), T2, 0.85)
    card = (b.path / "card.md").read_text()
    assert "## Change vs previous student run" in card
    assert "- lr: 0.002 -> 0.001" in card
    assert "- alpha_end: unset -> 0.0" in card
    assert "note:" not in card.split("## Config")[0]  # the goal is not a "change"
    assert "2025-10-27_15-06-43_student" in card       # names the previous student run


def test_list_and_print_runs(tmp_path, capsys):
    finished_run(tmp_path, DistillConfig(shards="s", lr=0.002, tag="a"), T0, 0.80)
    finished_run(tmp_path, DistillConfig(shards="s", lr=0.001, tag="b"), T2, 0.85)
    finished_run(tmp_path, TrainConfig(shards="s"), T1, 0.90, kind="teacher")
    rows = list_runs(tmp_path)
    assert [r["kind"] for r in rows] == ["student", "teacher", "student"]  # by time
    students = list_runs(tmp_path, kind="student", sort="val_acc")
    assert [r["val_acc"] for r in students] == [0.85, 0.80]
    assert students[0]["recall_1"] == 0.9 and students[0]["status"] == "finished"
    print_runs(tmp_path, "student", "time")
    out = capsys.readouterr().out
    assert "lr" in out and "0.002" in out and "0.001" in out
    assert "tag" not in out.split("\n", 3)[2]  # noise settings are no columns
    with pytest.raises(UserError):
        list_runs(tmp_path, sort="speed")


def test_empty_or_missing_runs_dir_is_friendly(tmp_path, capsys):
    assert print_runs(tmp_path / "nope") == []
    runs_command(RunsConfig(runs_dir=str(tmp_path)))
    assert "no runs" in capsys.readouterr().err


def test_diff_runs(tmp_path, capsys):
    a = finished_run(tmp_path, DistillConfig(shards="s", temperature=2.0), T0, 0.80)
    b = finished_run(tmp_path, DistillConfig(shards="s", temperature=4.0, note="x"), T2, 0.85)
    d = diff_runs(str(a.path), b.id, tmp_path)  # by path and by id
    assert d["changes"] == [("temperature", 2.0, 4.0)]
    assert d["delta"]["val_acc"] == pytest.approx(0.05)
    assert d["delta"]["recall_0"] == pytest.approx(0.0)
    runs_command(RunsConfig(runs_dir=str(tmp_path), diff=[a.id, b.id]))
    out = capsys.readouterr().out
    assert "temperature" in out and "+0.0500" in out
    with pytest.raises(UserError, match="no run"):
        print_diff(a.id, "2099-01-01_00-00-00_student_x", tmp_path)


def test_open_non_run_folder(tmp_path):
    (tmp_path / "junk").mkdir()
    with pytest.raises(UserError, match="not a run folder"):
        Run.open(tmp_path / "junk")
