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


@pytest.mark.slow
def test_bench_kd_compiled_student_paths(synth_shards, small_teacher, small_store, monkeypatch):
    """--compile on times the student paths with the trainer's compiled step beside the eager
    ones; --paths student leaves out the teacher and the conventional pipeline. Dynamo only
    (backend 'eager'): the keys and the plumbing, not the speed, are checked on a CPU."""
    import torch._dynamo
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real(fn, backend="eager", dynamic=kw.get("dynamic")))
    torch._dynamo.reset()
    res = bench_kd(C.resolve(C.BenchKDConfig, dict(
        shards=str(synth_shards), teacher=small_teacher, cache=small_store, renderer="decoded",
        batch_size=8, batches=1, workers=0, decoded_size=48, device="cpu", compile="on",
        paths="student", students=2, stack_students="on")))
    torch._dynamo.reset()
    for key in ("cached", "cached_compiled", "student_bound", "student_bound_compiled",
                "lone_student_compiled", "sweep_student_compiled", "sweep_stacked_student_compiled"):
        assert res[f"{key}_img_per_s"] > 0, key
    assert not any(k.startswith(("online", "conventional", "teacher")) for k in res if k.endswith("_img_per_s"))
    assert set(res["ratios"]) == {"cached/bound", "cached compiled/bound compiled", "compiled/eager bound",
                                  "cached compiled/cached eager", "sweep2/separate compiled",
                                  "sweep2 stacked/separate compiled"}


def test_bench_kd_refuses_stacking_one_student(capsys, synth_shards, small_teacher, small_store):
    from conftest import one_line_error
    line = one_line_error(capsys, "bench", "kd", "--shards", synth_shards, "--teacher", small_teacher,
                          "--cache", small_store, "--stack-students", "on", "--device", "cpu")
    assert "--students 2" in line
