"""Shared fixtures and helpers: tiny hand-made COCO trees, image folders and shard sets, a
small teacher, its cache and one trained student (each made once per session), the CLI
helpers, and builders of run records.

The device is pinned to the CPU. `device` and `compile` default to 'auto' (CUDA and a
compiled step when a GPU is there), so on a CUDA machine a test that leaves them alone would
otherwise train on the GPU with compilation on, and `make test` would mean something else
there than here. So, for the whole session, before any fixture runs:
- `torch.cuda.is_available()` answers False in this process: 'auto' resolves to the CPU, and
  with it compile 'auto' to off (a compiled step is the CUDA default only);
- CUDA_VISIBLE_DEVICES is "" in the environment, so subprocesses (the CLI, torchrun) see no
  GPU either. The real answer is asked once, in pytest_configure, before the variable is set,
  so the CUDA driver of this process is not started without its GPUs.
Tests about the GPU are marked `gpu`: they see the real device and environment, and are
skipped where there is no CUDA. A test may still ask for `compile="on"` explicitly: that runs
compiled, on the CPU.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vwwfast

HAS_CUDA = False                                   # the real answer, set in pytest_configure
REAL_CUDA_VISIBLE = os.environ.get("CUDA_VISIBLE_DEVICES")
_real_is_available = torch.cuda.is_available
REPO = Path(vwwfast.__file__).resolve().parents[1]  # the vwwfast these tests import


# ---------------------------------------------------------------------------------------
# The device pin

def pytest_configure(config):
    global HAS_CUDA
    HAS_CUDA = _real_is_available()


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def cpu_only():
    """Every fixture and test of the session on the CPU (see the module docstring)."""
    mp = pytest.MonkeyPatch()
    mp.setattr(torch.cuda, "is_available", lambda: False)
    mp.setenv("CUDA_VISIBLE_DEVICES", "")
    yield
    mp.undo()


@pytest.fixture(autouse=True)
def real_device_for_gpu_tests(request):
    """A test marked `gpu` sees the real CUDA device and environment."""
    if request.node.get_closest_marker("gpu") is None:
        yield
        return
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.cuda, "is_available", _real_is_available)
        if REAL_CUDA_VISIBLE is None:
            mp.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        else:
            mp.setenv("CUDA_VISIBLE_DEVICES", REAL_CUDA_VISIBLE)
        yield


# ---------------------------------------------------------------------------------------
# The command line, in this process and in a subprocess

def cli(capsys, *argv) -> tuple[int, str, str]:
    """`vwwfast ARGV` in this process: (exit code, stderr stripped, stdout)."""
    from vwwfast.cli import main
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.err.strip(), captured.out


def one_line_error(capsys, *argv) -> str:
    """`vwwfast ARGV` refused as a user error: exit 2, no traceback, the error in one line
    (the last on stderr, after any log lines of the work before it). The line."""
    rc, err, _ = cli(capsys, *argv)
    assert rc == 2, err
    lines = err.splitlines()
    assert "Traceback" not in err and lines, err
    assert [line for line in lines if ": error: " in line] == lines[-1:], err
    return lines[-1]


def vwwfast_env(**extra) -> dict:
    """The environment of a vwwfast subprocess: this one (the device pin included), with the
    vwwfast under test first on the path."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", **extra}


def vwwfast_cmd(*argv) -> list[str]:
    return [sys.executable, "-m", "vwwfast", *[str(a) for a in argv]]


def run_vwwfast(*argv, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """`vwwfast ARGV` in a subprocess, to its end; text output captured."""
    return subprocess.run(vwwfast_cmd(*argv), check=False, capture_output=True, text=True, env=vwwfast_env(),
                          timeout=timeout, **kw)


# ---------------------------------------------------------------------------------------
# Images and data sets

def write_jpeg(path: Path, w: int, h: int, seed: int = 0, mode: str = "RGB", fmt: str = "JPEG"):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    im = Image.fromarray(arr)
    if mode != "RGB":
        im = im.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, format=fmt, quality=90)


def make_coco(root: Path, images: dict[str, list[dict]]) -> Path:
    """images: subset -> [{id, w, h, anns: [(category, area, iscrowd)]}]; writes files + JSON."""
    ann_id = 1
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for subset in ("train2014", "val2014"):
        js = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "person"},
                                                               {"id": 3, "name": "car"}]}
        for im in images.get(subset, []):
            name = f"COCO_{subset}_{im['id']:012d}.jpg"
            js["images"].append({"id": im["id"], "file_name": name,
                                 "height": im["h"], "width": im["w"]})
            if not im.get("missing"):
                write_jpeg(root / subset / name, im["w"], im["h"], seed=im["id"])
            for cat, area, crowd in im.get("anns", []):
                js["annotations"].append({"id": ann_id, "image_id": im["id"], "category_id": cat,
                                          "area": area, "iscrowd": crowd, "bbox": [0, 0, 1, 1]})
                ann_id += 1
        (root / "annotations" / f"instances_{subset}.json").write_text(json.dumps(js))
    return root


@pytest.fixture
def tiny_coco(tmp_path):
    """Label-rule edge cases at 100x100 (threshold area = 50 pixels)."""
    return make_coco(tmp_path / "coco", {
        "train2014": [
            {"id": 9, "w": 100, "h": 100, "anns": [(1, 50.0, 0)]},        # exactly at -> 0
            {"id": 10, "w": 100, "h": 100, "anns": [(1, 50.01, 0)]},      # just above -> 1
            {"id": 11, "w": 100, "h": 100, "anns": [(1, 900.0, 1)]},      # crowd person -> 1
            {"id": 12, "w": 100, "h": 100, "anns": [(3, 9000.0, 0)]},     # big car -> 0
            {"id": 13, "w": 100, "h": 100},                               # nothing -> 0
            {"id": 25096, "w": 120, "h": 80, "anns": [(1, 2000.0, 0)]},   # minival id -> val
        ],
        "val2014": [
            {"id": 14, "w": 90, "h": 130, "anns": [(1, 5000.0, 0)]},
            {"id": 251824, "w": 100, "h": 100},                           # minival id
        ],
    })


@pytest.fixture
def image_folder(tmp_path):
    root = tmp_path / "folder"
    for i in range(6):
        write_jpeg(root / "person" / f"p{i}.jpg", 64 + i, 48, seed=i)
        write_jpeg(root / "non_person" / f"n{i}.jpg", 48, 64 + i, seed=100 + i)
    return root


@pytest.fixture(scope="session")
def synth_coco(tmp_path_factory):
    """The built-in synthetic set in the COCO 2014 layout: 96 train / 48 val images."""
    from vwwfast.data.sources.synthetic import write_synthetic
    root = tmp_path_factory.mktemp("synth") / "coco"
    write_synthetic(root, train=96, val=48, seed=0, show_progress=False)
    return root


@pytest.fixture(scope="session")
def synth_shards(synth_coco):
    """synth_coco through the real COCO path at 64 px, 40 samples a shard."""
    from vwwfast.data.shards import write_shards
    from vwwfast.data.sources.coco import LABEL_RULE, coco_items
    splits, source = coco_items(synth_coco, "minival")
    out = synth_coco.parent / "shards"
    write_shards(out, splits, source=source, size=64, samples_per_shard=40,
                 label_rule=LABEL_RULE, show_progress=False)
    return out


@pytest.fixture(scope="session")
def small_teacher(synth_shards, tmp_path_factory):
    """A MobileNetV3-Small 'teacher' at 48 px, one epoch on synth_shards: its model.pt."""
    from vwwfast import config as C
    from vwwfast.train.commands import train_teacher
    runs = tmp_path_factory.mktemp("small_teacher")
    s = train_teacher(C.resolve(C.TrainConfig, dict(
        shards=str(synth_shards), arch="mobilenet_v3_small", input_size=48, epochs=1, batch_size=32,
        renderer="decoded", decoded_size=48, runs_dir=str(runs), bn_settle=64)))
    return s["run_dir"] + "/model.pt"


SMALL_STORE = dict(views=2, batch_size=32, renderer="decoded", decoded_size=48)


@pytest.fixture(scope="session")
def small_store(synth_shards, small_teacher, tmp_path_factory):
    """small_teacher's cache: 2 augmented views (settings: SMALL_STORE)."""
    from vwwfast import config as C
    from vwwfast.teach.build import cache_teacher
    out = tmp_path_factory.mktemp("small_store") / "t.zarr"
    return str(cache_teacher(C.resolve(C.CacheTeacherConfig, dict(
        shards=str(synth_shards), teacher=small_teacher, out=str(out), **SMALL_STORE))))


# The trained student's settings besides shards, cache and runs_dir (test_kill.py gives the
# same ones to `vwwfast distill` and compares).
STUDENT = dict(alpha=0.5, input_size=48, epochs=2, batch_size=32, renderer="decoded",
               decoded_size=48, bn_settle=64, tag="student")


@pytest.fixture(scope="session")
def student(synth_shards, small_store, tmp_path_factory) -> Path:
    """A MobileNetV3-Small distilled from small_store at 48 px, 2 epochs: its run folder.
    Shared: tests may add files beside its records (an export), never change them."""
    from vwwfast import config as C
    from vwwfast.train.commands import distill
    runs = tmp_path_factory.mktemp("student_runs")
    s = distill(C.resolve(C.DistillConfig, dict(
        shards=str(synth_shards), cache=small_store, runs_dir=str(runs), **STUDENT)))
    return Path(s["run_dir"])


# ---------------------------------------------------------------------------------------
# Run records made by hand (fixed times, figures that look like a trainer's)

PNG = b"\x89PNG\r\n\x1a\n"
T0 = datetime(2025, 10, 27, 15, 6, 43)
T1 = datetime(2025, 10, 27, 16, 0, 0)
T2 = datetime(2025, 10, 28, 9, 30, 5)


def stub_curves(monkeypatch):
    """curves.png as a placeholder: drawing it takes about a second (test_plots.py draws it)."""
    from vwwfast.files import write_atomic
    from vwwfast.records import plots
    monkeypatch.setattr(plots, "write_curves", lambda run: write_atomic(run.path / "curves.png", PNG))


@pytest.fixture
def quick_curves(request, monkeypatch):
    """stub_curves for a test, unless it asks for `real_curves` (use: a module's
    `pytestmark = pytest.mark.usefixtures("quick_curves")`)."""
    if "real_curves" not in request.fixturenames:
        stub_curves(monkeypatch)


@pytest.fixture
def real_curves():
    pass


def epoch_record(epoch, acc, kd=True, alpha=0.55, margin_weight=0.03, temperature=2.0):
    """One metrics.jsonl line as the trainer writes it (epochs from 1)."""
    ce, kl, margin = 0.5 + 0.2 / epoch, 0.05 + 0.1 / epoch, 0.4 + 0.5 / epoch
    if not kd:
        alpha = margin_weight = 0.0
    terms = {"term_ce": (1 - alpha) * ce, "term_kl": alpha * temperature ** 2 * kl,
             "term_margin": margin_weight * margin}
    rec = {"epoch": epoch, "loss": sum(terms.values()), "loss_ce": ce, "loss_kl": kl if kd else 0.0,
           "loss_margin": margin if kd else 0.0, **terms, "alpha": alpha,
           "margin_weight": margin_weight, "temperature": temperature,
           "lr": 1e-3 * math.sin(math.pi * epoch / 30), "val_acc": acc,
           "recall_0": acc + 0.02, "recall_1": acc - 0.02,
           "confusion": [[40, 10], [5, 45]], "img_per_s": 1234.5, "time_s": 2.0,
           "views_sha256": "ab" * 8}
    if not kd:
        for k in ("term_kl", "term_margin", "alpha", "margin_weight", "temperature"):
            rec.pop(k)
    return rec


def summary(acc, epoch=2, **extra):
    return {"best_val_acc": acc, "best_epoch": epoch, "recall_0": acc + 0.02, "recall_1": acc - 0.02,
            "confusion": [[40, 10], [5, 45]], "epochs_done": 2, "stopped_early": False,
            "wall_time_s": 125.0, "train_wall_s": 100.0, "compile_s": 0.0, "img_per_s": 2000.0,
            "device": "cpu (2 threads)", **extra}


def teacher_info(teacher_run=None, **over):
    info = {"mode": "cached", "store": "shards/s/teacher-mbv3l224.zarr",
            "store_fingerprint": "f" * 64, "checkpoint": "runs/t/model.pt", "sha256": "a" * 64,
            "arch": "mobilenet_v3_large", "input_size": 224, "role": "teacher",
            "run": teacher_run.id if teacher_run else None,
            "run_val_acc": teacher_run.summary.get("best_val_acc") if teacher_run else None,
            "views": 10}
    return {**info, **over}


def finished_run(runs_dir, cfg, now, acc, kind="student", epochs=2, status="finished",
                 teacher=None, **extra):
    """A run record as a finished run leaves it: config, metrics, summary, card."""
    from vwwfast.config import to_dict
    from vwwfast.records.report import write_report
    from vwwfast.records.runs import Run
    run = Run.create(runs_dir, kind, cfg, now=now)
    kd = kind == "student" and (to_dict(cfg) if not isinstance(cfg, dict) else cfg).get("alpha", 0) > 0
    for e in range(1, epochs + 1):
        run.log_epoch(epoch_record(e, acc - 0.05 * (epochs - e), kd=kd))
    run.update_summary({"teacher": teacher, "remarks": [], "fingerprints": {"shards_content_hash": "c" * 64}})
    write_report(run, run.finish(summary(acc, epoch=epochs, **extra), status))
    return run
