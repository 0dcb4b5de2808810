"""Files made by someone else are data, never code: a checkpoint whose unpickling would run
code, and a YAML config with a Python tag, are refused by every command that reads them, in
one line, before anything runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from conftest import cli, one_line_error


class _Payload:
    """Unpickled, it opens `path` for writing: the file appearing is the code having run."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _armed_checkpoint(path: Path, marker: Path) -> Path:
    """A file shaped like a vwwfast checkpoint, its weights replaced by the payload."""
    torch.save({"format": "vwwfast-checkpoint", "arch": "mobilenet_v3_small", "input_size": 48,
                "state_dict": _Payload(marker), "config": {}, "epoch": 1}, path)
    return path


@pytest.fixture
def evil(tmp_path):
    marker = tmp_path / "code-ran"
    pt = _armed_checkpoint(tmp_path / "evil.pt", marker)
    yield pt, marker
    # the payload is real: an unsafe load runs it (so its absence above meant something)
    assert not marker.exists()
    torch.load(pt, weights_only=False)
    assert marker.exists()


def test_a_pickled_checkpoint_is_refused_by_every_command(evil, synth_shards, small_store, tmp_path,
                                                          capsys):
    pt, marker = evil
    runs = ["--runs-dir", tmp_path / "runs"]
    small = ["--shards", synth_shards, "--input-size", "32", "--epochs", "1", "--batch-size", "32",
             "--renderer", "decoded", "--decoded-size", "48", *runs]
    commands = [
        ("eval", pt),
        ("export", pt),
        ("distill", "--init", pt, "--alpha", "0", *small),
        ("train-teacher", "--init", pt, "--arch", "mobilenet_v3_small", *small),
        ("distill", "--teacher-mode", "online", "--teacher", pt, *small),
        ("distill", "--cache", small_store, "--teacher", pt, *small),
        ("cache-teacher", "--shards", synth_shards, "--teacher", pt, "--out", tmp_path / "t.zarr",
         "--renderer", "decoded", "--decoded-size", "48"),
    ]
    for argv in commands:
        err = one_line_error(capsys, *argv)
        assert "evil.pt" in err, argv[:2]
        assert not marker.exists(), f"{argv[:2]} ran the pickled code"
    assert not (tmp_path / "t.zarr").exists()


def test_a_pickled_last_checkpoint_is_refused_by_resume(evil, student, tmp_path, capsys):
    pt, marker = evil
    run = tmp_path / student.name
    shutil.copytree(student, run, ignore=shutil.ignore_patterns("export"))
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "status": "interrupted"}))
    shutil.copy(pt, run / "last.pt")
    err = one_line_error(capsys, "distill", "--resume", run)
    assert "last.pt is not a checkpoint" in err and not marker.exists()


def test_a_yaml_config_with_python_tags_is_refused(tmp_path, capsys):
    made = tmp_path / "made-by-yaml"
    text = f"lr: !!python/object/apply:os.mkdir [{str(made)!r}]\nepochs: 1\n"
    config = tmp_path / "config.yaml"
    config.write_text(text)
    for command in ("distill", "train-teacher", "cache-teacher", "eval", "export"):
        err = one_line_error(capsys, command, "--config", config)
        assert f"{config}: not valid YAML" in err and "python/object/apply" in err, command
        assert not made.exists()
    # a run folder's own config.yaml, read by --resume and by `vwwfast runs`
    run = tmp_path / "runs" / "2025-10-27_15-06-43_student_mbv3s_vww96"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(text)
    (run / "summary.json").write_text(json.dumps({"status": "interrupted", "kind": "student"}))
    err = one_line_error(capsys, "distill", "--resume", run)
    assert "not valid YAML" in err and not made.exists()
    rc, err, _ = cli(capsys, "runs", "--runs-dir", tmp_path / "runs")  # its config reads as empty
    assert rc == 0 and "Traceback" not in err and not made.exists()
    # the payload is real: an unsafe loader runs it
    yaml.unsafe_load(text)
    assert made.is_dir()
