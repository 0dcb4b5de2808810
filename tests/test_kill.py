"""SIGKILL: `vwwfast shard`, `cache-teacher` and `distill` killed in a subprocess at a moment
read from their files. Nothing runs on the way out (no handler, no finally), so what is on
disk must already be safe: nothing a later stage takes for complete, and the rerun or resume
gives what an uninterrupted run gives."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SMALL_STORE, STUDENT, one_line_error, run_vwwfast, vwwfast_cmd, vwwfast_env
from vwwfast.errors import UserError

pytestmark = pytest.mark.slow


def start(log: Path, *argv) -> subprocess.Popen:
    """`vwwfast ARGV` started in the background, its output into `log`."""
    with open(log, "wb") as f:
        return subprocess.Popen(vwwfast_cmd(*argv), env=vwwfast_env(), stdout=f, stderr=subprocess.STDOUT)


def kill_when(proc: subprocess.Popen, ready, log: Path, timeout: float = 300) -> None:
    """SIGKILL `proc` as soon as ready() says so; fail if it ends first."""
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert proc.poll() is None, f"ended (exit {proc.returncode}) before the kill:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"never got there:\n{log.read_text()}"
            time.sleep(0.002)
    finally:
        proc.send_signal(signal.SIGKILL)
        rc = proc.wait(timeout=60)
    assert rc == -signal.SIGKILL, f"it ended (exit {rc}) before the kill landed:\n{log.read_text()}"


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def flags(settings: dict) -> list[str]:
    return [x for k, v in settings.items() for x in (f"--{k.replace('_', '-')}", str(v))]


# ---------------------------------------------------------------------------------------
# shard

def test_shard_killed_leaves_nothing_complete_and_reruns_byte_identical(synth_coco, tmp_path, capsys):
    """The kill lands while one input image is being read: a FIFO in its place that gives
    nothing. By then two tars of 8 are done and a third is half written."""
    from vwwfast.data.shards import ShardSet
    from vwwfast.data.sources.coco import coco_items
    coco = tmp_path / "coco"
    shutil.copytree(synth_coco, coco)
    args = ["--coco-root", coco, "--size", "64", "--samples-per-shard", "8"]
    r = run_vwwfast("shard", *args, "--out", tmp_path / "whole")
    assert r.returncode == 0, r.stderr
    whole = files(tmp_path / "whole")

    slow = Path(coco_items(coco, "minival")[0]["train"][20].path)  # the 21st train image
    image = slow.read_bytes()
    slow.unlink()
    os.mkfifo(slow)
    writer = []

    def reading_it() -> bool:  # the FIFO opens for writing once the shard process reads it
        try:
            writer.append(os.open(slow, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:  # ENXIO: nobody reads it yet
            return False
        return True

    try:
        for out, extra in (("cut", []), ("whole", ["--overwrite"])):
            log = tmp_path / f"{out}.log"
            kill_when(start(log, "shard", *args, "--out", tmp_path / out, *extra), reading_it, log)
            os.close(writer.pop())
            partial = tmp_path / f".{out}.partial"
            done = {"train-000000.tar", "train-000001.tar", "train-000002.tar.tmp"}  # the third: half
            assert done <= set(os.listdir(partial))
            with pytest.raises(UserError, match="no manifest.json"):
                ShardSet.open(partial)
    finally:
        for fd in writer:
            os.close(fd)
    # the cut run: no folder under its name; the overwriting one: the old set untouched
    assert not (tmp_path / "cut").exists()
    assert "shard folder not found" in one_line_error(capsys, "train-teacher", "--shards", tmp_path / "cut")
    assert files(tmp_path / "whole") == whole
    slow.unlink()
    slow.write_bytes(image)
    r = run_vwwfast("shard", *args, "--out", tmp_path / "cut")
    assert r.returncode == 0, r.stderr
    assert files(tmp_path / "cut") == whole
    assert not (tmp_path / ".cut.partial").exists()


# ---------------------------------------------------------------------------------------
# cache-teacher

@pytest.fixture(scope="module")
def fine_shards(synth_coco, tmp_path_factory):
    """synth_coco at 8 samples a shard: 12 chunks a view, so a kill can land inside one."""
    from vwwfast.data.shards import write_shards
    from vwwfast.data.sources.coco import LABEL_RULE, coco_items
    splits, source = coco_items(synth_coco, "minival")
    out = tmp_path_factory.mktemp("fine") / "shards"
    write_shards(out, splits, source=source, size=64, samples_per_shard=8, label_rule=LABEL_RULE,
                 show_progress=False)
    return out


def test_cache_teacher_killed_mid_view_resumes_to_the_same_store(fine_shards, small_teacher, tmp_path):
    import zarr

    from vwwfast import config as C
    from vwwfast.teach.build import cache_teacher
    from vwwfast.teach.cache import TeacherCache
    settings = {**SMALL_STORE, "batch_size": 8}  # 2 views
    whole = TeacherCache(cache_teacher(C.resolve(C.CacheTeacherConfig, dict(
        shards=str(fine_shards), teacher=small_teacher, out=str(tmp_path / "whole.zarr"), **settings))))
    argv = ["cache-teacher", "--shards", fine_shards, "--teacher", small_teacher, *flags(settings)]

    def chunks(out: Path, view: int) -> list[Path]:  # train/logits chunks of a view (0-based)
        return [p for p in (out / "train" / "logits" / "c" / str(view)).rglob("*") if p.is_file()]

    for attempt in range(3):  # a kill that lands after the last view is tried again
        out = tmp_path / f"cut{attempt}.zarr"
        log = tmp_path / f"cut{attempt}.log"
        kill_when(start(log, *argv, "--out", out), lambda: bool(chunks(out, 1)), log)
        cut = TeacherCache(out)  # opens: nothing half-written under the final name
        print(f"try {attempt + 1}: {cut.state()}, {len(chunks(out, 1))} of 12 chunks of view 2")
        if cut.views_completed == 1 and 0 < len(chunks(out, 1)) < 12:
            break
    else:
        pytest.fail("no kill landed inside the second view in three tries")
    assert not cut.complete()
    with pytest.raises(UserError, match="incomplete"):
        cut.check_complete()  # what distill asks of a store
    r = run_vwwfast(*argv, "--out", out)
    assert r.returncode == 0, r.stderr
    resumed = TeacherCache(out)
    np.testing.assert_array_equal(resumed.params(), whole.params())
    np.testing.assert_array_equal(resumed.logits(), whole.logits())
    np.testing.assert_array_equal(resumed.val_logits(), whole.val_logits())
    a, b = dict(zarr.open_group(str(out), mode="r").attrs), dict(whole.group.attrs)
    assert a == b


# ---------------------------------------------------------------------------------------
# distill

TIMING = ("img_per_s", "time_s")


def records(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_distill_killed_after_a_checkpoint_resumes_to_the_same_run(synth_shards, small_store, student,
                                                                   tmp_path):
    """`student` (conftest) is the uninterrupted run; the same settings through the CLI,
    killed once epoch 1's checkpoint is written, then `--resume`."""
    runs = tmp_path / "runs"
    argv = ["distill", "--shards", synth_shards, "--cache", small_store, "--runs-dir", runs,
            *flags(STUDENT)]
    log = tmp_path / "cut.log"
    kill_when(start(log, *argv), lambda: any(runs.glob("*/last.pt")), log)
    (run,) = runs.iterdir()
    assert json.loads((run / "summary.json").read_text())["status"] == "running"  # nobody closed it
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 1
    r = run_vwwfast("distill", "--resume", run)
    assert r.returncode == 0, r.stderr
    # it resumed: epoch 2 only was trained again
    assert "epoch   2/2" in r.stderr and "epoch   1/2" not in r.stderr
    assert records(run) == records(student)
    got, want = (json.loads((p / "summary.json").read_text()) for p in (run, student))
    assert got["status"] == "finished"
    for key in ("best_val_acc", "best_epoch", "recall_0", "recall_1", "confusion", "epochs_done"):
        assert got[key] == want[key], key
    for name in ("model.pt", "last.pt"):
        a, b = (torch.load(p / name, weights_only=True) for p in (run, student))
        assert a["epoch"] == b["epoch"] and a["state_dict"].keys() == b["state_dict"].keys()
        for key, tensor in a["state_dict"].items():
            assert torch.equal(tensor, b["state_dict"][key]), f"{name}: {key}"
