"""torchrun with 2 processes and gloo on the CPU: the same commands, one record, same store."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import SMALL_STORE, vwwfast_env

pytestmark = pytest.mark.slow


def torchrun(*args, cwd=None):
    env = vwwfast_env(OMP_NUM_THREADS="1")  # no GPU either (conftest)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "vwwfast", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
    if r.returncode:  # the failing rank's own lines, not only torchrun's summary
        print(r.stderr)
    return r


def test_cache_teacher_two_processes_equals_one(synth_shards, small_teacher, small_store, tmp_path):
    from vwwfast.teach.cache import TeacherCache
    r = torchrun("cache-teacher", "--shards", str(synth_shards), "--teacher", small_teacher,
                 "--views", str(SMALL_STORE["views"]), "--out", str(tmp_path / "two.zarr"),
                 "--renderer", "decoded", "--decoded-size", str(SMALL_STORE["decoded_size"]))
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = TeacherCache(small_store), TeacherCache(tmp_path / "two.zarr")
    b.check_complete()
    np.testing.assert_array_equal(a.params(), b.params())
    np.testing.assert_allclose(a.logits().astype(np.float32), b.logits().astype(np.float32), atol=2e-3)
    np.testing.assert_allclose(a.val_logits().astype(np.float32), b.val_logits().astype(np.float32), atol=2e-3)
    assert a.attrs["val_acc"] == pytest.approx(b.attrs["val_acc"])


def test_train_teacher_and_distill_write_one_record(synth_shards, small_teacher, tmp_path):
    common = ["--shards", str(synth_shards), "--input-size", "32", "--epochs", "2",
              "--batch-size", "16", "--renderer", "decoded", "--decoded-size", "48",
              "--runs-dir", str(tmp_path / "runs")]
    r = torchrun("train-teacher", "--arch", "mobilenet_v3_small", *common)
    assert r.returncode == 0, r.stderr[-2000:]
    r = torchrun("distill", "--teacher-mode", "online", "--teacher", small_teacher, *common)
    assert r.returncode == 0, r.stderr[-2000:]
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 2
    for run in runs:
        lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
        assert [l["epoch"] for l in lines] == [1, 2]
        # val metrics are over the whole val set exactly once (summed across ranks)
        assert all(np.array(l["confusion"]).sum() == 48 for l in lines)


def test_error_on_a_rank_ends_the_job(tmp_path):
    r = torchrun("train-teacher", "--shards", str(tmp_path / "missing"))
    assert r.returncode != 0
    assert "shard folder not found" in r.stderr


def test_sweep_under_torchrun(synth_shards, small_teacher, tmp_path):
    r = torchrun("distill", "--shards", str(synth_shards), "--input-size", "32", "--epochs", "2",
                 "--batch-size", "16", "--renderer", "decoded", "--decoded-size", "48",
                 "--teacher-mode", "online", "--teacher", small_teacher, "--alpha", "0,0.5",
                 "--holdout", "16", "--runs-dir", str(tmp_path / "runs"))
    assert r.returncode == 0, r.stderr[-2000:]
    runs = [p for p in (tmp_path / "runs").iterdir() if (p / "config.yaml").is_file()]
    sweeps = [p for p in (tmp_path / "runs").iterdir() if (p / "sweep.json").is_file()]
    assert len(runs) == 2 and len(sweeps) == 1
    from vwwfast.records.predictions import read_predictions
    for run in runs:
        lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
        assert [l["epoch"] for l in lines] == [1, 2]
        assert all(np.array(l["confusion"]).sum() == 48 for l in lines)
        # the val predictions of model.pt, gathered from both ranks: every sample once
        preds = read_predictions(run / "predictions.csv")
        assert preds.keys.tolist() == [f"{i:09d}" for i in range(48)]
        assert preds.confusion() == json.loads((run / "summary.json").read_text())["confusion"]
        # the holdout's predictions gathered from both ranks, each epoch; no rank trained on
        # it (the 80 samples left give each rank 40: 2 full batches of 16 an epoch)
        from vwwfast.records.selection import read as read_selection
        sel = read_selection(run)
        assert len(sel.indices) == 16 and sel.epochs == [1, 2]
        assert [l["holdout_acc"] for l in lines] == pytest.approx(sel.accuracy().tolist())
