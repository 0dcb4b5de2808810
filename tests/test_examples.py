"""The examples run as users run them (a subprocess) on tiny shards and a tiny teacher cache,
and end with their one JSON line."""

import json
import subprocess
import sys

import pytest

from conftest import REPO, vwwfast_env

ARGS = ["--epochs", "1", "--batch-size", "32", "--input-size", "32", "--device", "cpu"]


def _run(example: str, *argv) -> dict:
    out = subprocess.run([sys.executable, str(REPO / "examples" / example), *map(str, argv)],
                         capture_output=True, text=True, env=vwwfast_env(), timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    last = json.loads(out.stdout.strip().splitlines()[-1])
    assert last["epoch"] == 1 and 0 <= last["val_acc"] <= 1
    assert "epoch 1: loss" in out.stderr  # a real loss: the epoch trained on batches
    return last


def test_own_loop(synth_shards, small_store):
    _run("own_loop.py", "--shards", synth_shards, "--cache", small_store, *ARGS)


def test_webdataset_loop(synth_shards, small_store):
    _run("webdataset_loop.py", "--shards", synth_shards, "--cache", small_store, "--workers", "2", *ARGS)


@pytest.mark.parametrize("example", ["own_loop.py", "webdataset_loop.py"])
def test_examples_are_short(example):
    assert len((REPO / "examples" / example).read_text().splitlines()) < 80
