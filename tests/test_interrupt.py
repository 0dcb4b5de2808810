"""Ctrl-C: SIGINT to the process group, as a terminal sends it, at named points of a small
`distill` sweep, of `train-teacher` and of `cache-teacher` (VWWFAST_TEST_INTERRUPT, see
train/lifecycle.py: the point is reached, not timed, so a loaded machine changes nothing).
Each cut run is followed by the command its console prints; the records then equal an
uninterrupted run's (CPU runs are deterministic). A Ctrl-C that finds every run ended changes
nothing and the command exits 0."""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from conftest import SMALL_STORE, run_vwwfast, vwwfast_cmd, vwwfast_env

pytestmark = pytest.mark.slow

TIMING = ("img_per_s", "time_s")
COMMON = ["--input-size", "32", "--epochs", "2", "--batch-size", "32", "--renderer", "decoded",
          "--decoded-size", "48", "--bn-settle", "64", "--lr", "3e-3"]


def cut(point: str, *argv) -> subprocess.CompletedProcess:
    """`vwwfast ARGV` as the leader of its own process group, Ctrl-C'd at `point`. SIGINT is
    set back to its default first: a non-interactive shell starts background jobs with SIGINT
    ignored, so pytest started as one would pass that on to the command."""
    return subprocess.run(vwwfast_cmd(*argv), env=vwwfast_env(VWWFAST_TEST_INTERRUPT=point),
                          capture_output=True, text=True, timeout=600, start_new_session=True,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def continue_command(r: subprocess.CompletedProcess) -> list[str]:
    """The argv of the `Continue with: vwwfast ...` line a cut run printed."""
    assert r.returncode == 130, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    (line,) = re.findall(r"Continue with: vwwfast (.+)$", r.stderr, re.M)
    return shlex.split(line)


def finish(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """Run the command that `r` printed, to its end."""
    again = run_vwwfast(*continue_command(r), timeout=600)
    assert again.returncode == 0, again.stderr
    return again


# ---------------------------------------------------------------------------------------
# What a run leaves, without times

def metrics(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def record(run: Path) -> dict:
    """What must not depend on an interruption: metrics, predictions, result, weights."""
    s = json.loads((run / "summary.json").read_text())
    weights = torch.load(run / "model.pt", weights_only=True)
    return {"metrics": metrics(run), "predictions": (run / "predictions.csv").read_text(),
            "summary": {k: s.get(k) for k in ("status", "best_val_acc", "best_epoch", "recall_0",
                                              "recall_1", "confusion", "epochs_done",
                                              "optimizer_steps")},
            "model": {k: v.flatten()[:64].tolist() for k, v in weights["state_dict"].items()},
            "card": (run / "card.md").is_file()}


def sweep_records(runs: Path) -> dict:
    """The one sweep in `runs`: its status and each member's record, by its settings."""
    (sweep,) = [p for p in runs.iterdir() if (p / "sweep.json").is_file()]
    data = json.loads((sweep / "sweep.json").read_text())
    members = {json.dumps(m["settings"]): record(runs / m["run"]) for m in data["members"]}
    return {"status": data["status"], "members": members}


# ---------------------------------------------------------------------------------------
# distill: a sweep of a supervised and a KD student

@pytest.fixture(scope="module")
def sweep_argv(synth_shards, small_store) -> list[str]:
    return ["distill", "--shards", str(synth_shards), "--cache", small_store, "--alpha", "0,0.55",
            *COMMON]


@pytest.fixture(scope="module")
def whole_sweep(sweep_argv, tmp_path_factory) -> dict:
    runs = tmp_path_factory.mktemp("whole") / "runs"
    r = run_vwwfast(*sweep_argv, "--runs-dir", runs, timeout=600)
    assert r.returncode == 0, r.stderr
    return sweep_records(runs)


# A point NAME:N is the N-th time NAME is reached. The sweep trains members a0 then a0.55 on each
# batch, 2 epochs; "epoch-logged" is reached when a member's epoch is in its metrics.jsonl (and,
# but for the first member's, on the console) and its checkpoint is not yet written.
#   runs-made       folders made, no epoch begun: no last.pt anywhere
#   epoch-logged:1  a0 logged epoch 1, no checkpoint; a0.55 nothing
#   epoch-logged:2  after a0's epoch-1 line on the console: a0.55 logged epoch 1, no checkpoint
#   epoch-logged:4  a0 finished; a0.55 logged epoch 2, its last.pt still epoch 1's
# Each case: the points of the first run, then of each resume, then a resume to the end.
CUTS = [["runs-made", "epoch-logged:2"], ["epoch-logged:1"], ["epoch-logged:4"]]


@pytest.mark.parametrize("points", CUTS, ids="+".join)
def test_a_sweep_cut_anywhere_resumes_to_the_uninterrupted_records(points, sweep_argv, whole_sweep,
                                                                   tmp_path):
    runs = tmp_path / "runs"
    r = cut(points[0], *sweep_argv, "--runs-dir", runs)
    args = continue_command(r)
    assert args[:2] == ["distill", "--resume"] and (Path(args[2]) / "sweep.json").is_file()
    for point in points[1:]:  # a resume cut in turn prints the same command
        r = cut(point, *args)
        assert continue_command(r) == args
    statuses = [json.loads(p.read_text())["status"] for p in runs.glob("*/summary.json")]
    assert len(statuses) == 2 and "running" not in statuses and "interrupted" in statuses
    again = finish(r)
    if points == ["epoch-logged:4"]:  # only the epoch that was cut is trained again
        assert "epoch   1/2" not in again.stderr and again.stderr.count("epoch   2/2") == 1
    assert sweep_records(runs) == whole_sweep


# Ctrl-C once every member finished: after the last epoch, before the records are closed; while
# they are closed and the cards drawn; while the sweep's table prints.
@pytest.mark.parametrize("points,said", [
    ("epoch-ended:2", ["Ctrl-C arrived as the runs ended"]),
    ("closing,report", ["Ctrl-C arrived as the runs ended", "Ctrl-C while the report printed"]),
])
def test_a_ctrl_c_after_every_member_finished_changes_nothing(points, said, sweep_argv, whole_sweep,
                                                              tmp_path):
    runs = tmp_path / "runs"
    r = cut(points, *sweep_argv, "--runs-dir", runs)
    assert r.returncode == 0, r.stderr
    assert all(x in r.stderr for x in said), r.stderr
    assert "Continue with" not in r.stderr and "Traceback" not in r.stderr
    assert sweep_records(runs) == whole_sweep
    sweep = next(p for p in runs.iterdir() if (p / "sweep.json").is_file())
    again = run_vwwfast("distill", "--resume", sweep)
    assert again.returncode == 2 and "nothing to resume" in again.stderr


# ---------------------------------------------------------------------------------------
# train-teacher: a lone run cut before its first checkpoint

def test_a_lone_run_cut_before_its_first_checkpoint_resumes_in_its_folder(synth_shards, small_teacher,
                                                                          tmp_path):
    """small_teacher (conftest) is the uninterrupted run: the same settings, cut once its only
    epoch is logged and before its checkpoint."""
    argv = ["train-teacher", "--shards", synth_shards, "--arch", "mobilenet_v3_small", "--input-size",
            "48", "--epochs", "1", "--batch-size", "32", "--renderer", "decoded", "--decoded-size", "48",
            "--bn-settle", "64"]
    runs = tmp_path / "runs"
    r = cut("epoch-logged:1", *argv, "--runs-dir", runs)
    (run,) = runs.iterdir()
    assert continue_command(r) == ["train-teacher", "--resume", str(run)]
    assert not (run / "last.pt").exists() and len(metrics(run)) == 1  # logged, never checkpointed
    finish(r)
    assert list(runs.iterdir()) == [run] and record(run) == record(Path(small_teacher).parent)


# ---------------------------------------------------------------------------------------
# cache-teacher: cut after its first view, continued by the same command

def test_cache_teacher_cut_after_a_view_is_continued_by_the_same_command(synth_shards, small_teacher,
                                                                         small_store, tmp_path):
    import numpy as np

    from vwwfast.teach.cache import TeacherCache
    out = tmp_path / "t.zarr"
    argv = ["cache-teacher", "--shards", synth_shards, "--teacher", small_teacher, "--out", out,
            *[x for k, v in SMALL_STORE.items() for x in (f"--{k.replace('_', '-')}", str(v))]]
    r = cut("view-done:1", *argv)
    assert r.returncode == 130 and "Traceback" not in r.stderr, r.stderr
    assert f"{out} holds 1 of 2 views" in r.stderr and "the same command" in r.stderr
    again = run_vwwfast(*argv, timeout=600)
    assert again.returncode == 0, again.stderr
    got, want = TeacherCache(out), TeacherCache(small_store)
    np.testing.assert_array_equal(got.logits(), want.logits())
    np.testing.assert_array_equal(got.val_logits(), want.val_logits())
    assert got.complete()
