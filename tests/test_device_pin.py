"""The test session itself: every test not marked `gpu` computes on the CPU with compile off,
in this process and in the subprocesses it starts, whatever the machine has (conftest.py);
and a misspelt marker fails the run instead of moving a test into the fast set."""

import json
import subprocess
import sys

import pytest

from conftest import vwwfast_env
from vwwfast import config as C
from vwwfast.devices import resolve_device
from vwwfast.train.student import compile_wanted


def test_auto_means_the_cpu_and_no_compile():
    for cls in (C.TrainConfig, C.DistillConfig, C.CacheTeacherConfig, C.EvalConfig, C.ExportConfig,
                C.BenchKDConfig):
        assert resolve_device(cls().device).type == "cpu", cls.__name__
    for cls in (C.TrainConfig, C.DistillConfig):
        assert not compile_wanted(cls().compile, resolve_device(cls().device)), cls.__name__


def test_subprocesses_see_no_gpu():
    code = "import os; print(repr(os.environ.get('CUDA_VISIBLE_DEVICES')))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=vwwfast_env(),
                       check=True)
    assert r.stdout.strip() == "''"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "''"  # inherited as it is, too (torchrun, a plain subprocess.run)


def test_the_shared_student_trained_on_the_cpu_without_compiling(student):
    """A session fixture is made before any test's own fixtures: it is pinned too."""
    summary = json.loads((student / "summary.json").read_text())
    assert summary["device"].startswith("cpu") and summary["compile_s"] == 0


def test_markers_are_strict(pytestconfig):
    """With --strict-markers (pyproject's addopts) a misspelt `@pytest.mark.slwo` is a
    collection error, not a test silently in the fast set."""
    assert pytestconfig.option.strict_markers
    assert {m.split(":")[0] for m in pytestconfig.getini("markers")} >= {"slow", "gpu"}


@pytest.mark.gpu
def test_gpu_tests_see_the_real_device():
    import torch
    assert torch.cuda.is_available() and resolve_device("auto").type == "cuda"
    assert compile_wanted(C.DistillConfig().compile, resolve_device("auto"))
