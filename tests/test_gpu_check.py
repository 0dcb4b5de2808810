"""tools/gpu_check.sh, run small on the CPU (ALLOW_CPU=1 TINY=1 SKIP_VWW=1): every JSON it
promises is written, with the keys a GPU run's figures are read from."""

import json
import subprocess

import pytest
from conftest import REPO, vwwfast_env


@pytest.mark.slow
def test_gpu_check_writes_every_json(tmp_path):
    out = tmp_path / "gpu"
    env = vwwfast_env(ALLOW_CPU="1", TINY="1", SKIP_VWW="1", WORK=str(tmp_path / "work"),
                      PYTHON=__import__("sys").executable,
                      TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor"))
    run = subprocess.run(["bash", str(REPO / "tools" / "gpu_check.sh"), str(out)], env=env,
                         capture_output=True, text=True, timeout=1500)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    loader = json.loads((out / "bench_loader.json").read_text())
    assert loader  # one entry per renderer
    for renderer in ("decoded", "dali"):
        kd = json.loads((out / f"bench_kd_{renderer}.json").read_text())
        for key in ("cached", "cached_compiled", "online_compiled", "conventional_compiled",
                    "student_bound_compiled", "teacher_bound", "teacher_cache",
                    "lone_student_compiled", "sweep_student_compiled", "sweep_stacked_student_compiled"):
            assert kd[f"{key}_img_per_s"] > 0, (renderer, key)
        assert {"cached compiled/bound compiled", "cached compiled/conventional compiled",
                "sweep2 stacked/separate compiled", "cache-teacher/teacher-bound"} <= set(kd["ratios"])
        assert kd["teacher_input_size"] == 224
    large = json.loads((out / "bench_kd_b16.json").read_text())
    assert large["batch_size"] == 16 and large["cached_compiled_img_per_s"] > 0
    assert "cache-teacher" in (out / "cache_teacher.log").read_text() or (out / "cache_teacher.log").stat().st_size
    assert not (out / "vww_epoch_summary.json").exists()  # SKIP_VWW
