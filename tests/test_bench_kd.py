import json

import pytest
import torch

from vwwfast import config as C
from vwwfast.bench.kd import bench_kd


@pytest.mark.slow
def test_bench_kd_with_a_sweep(synth_shards, small_teacher, small_store, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path / "kd.json"
        res = bench_kd(C.resolve(C.BenchKDConfig, dict(
            shards=str(synth_shards), teacher=small_teacher, cache=small_store, renderer="decoded",
            batch_size=8, batches=2, workers=0, students=2, decoded_size=48, json=str(out),
            device="cpu")))
    finally:
        torch.set_num_threads(threads)
    assert json.loads(out.read_text()) == json.loads(json.dumps(res))
    for key in ("cached", "online", "conventional", "student_bound", "teacher_bound",
                "lone_student", "sweep_student"):
        assert res[f"{key}_img_per_s"] > 0, key
    assert set(res["ratios"]) >= {"cached/conventional", "cached/bound", "sweep2/separate"}
