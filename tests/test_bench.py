import json

import numpy as np
import pytest
from PIL import Image

import torch

from vwwfast.bench import loader as bench
from vwwfast.bench.loader import bench_loader
from vwwfast.config import BenchLoaderConfig
from vwwfast.errors import UserError
from vwwfast.data.render.base import dali_available
from vwwfast.data.shards import SourceItem, write_shards


@pytest.fixture
def one_thread(monkeypatch):
    """Tiny batches on a busy 2-core machine: OpenMP threads that spin while waiting
    make each small op slow when other processes compete for the cores."""
    monkeypatch.setattr(bench, "STUDENT_MIN_SECONDS", 0.0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_bench_loader_figures(tmp_path, one_thread):
    rng = np.random.default_rng(0)
    items = []
    for i in range(10):
        p = tmp_path / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(p)
        items.append(SourceItem(str(p), i % 2, {}))
    write_shards(tmp_path / "shards", {"train": items}, source={"kind": "test"}, size=64,
                 show_progress=False)
    out = tmp_path / "bench.json"
    cfg = BenchLoaderConfig(shards=str(tmp_path / "shards"), size=32, batch_size=4, batches=2,
                            decoded_size=48, json=str(out), device="cpu")
    res = bench_loader(cfg)
    assert json.loads(out.read_text()) == res
    expect = {"reference", "decoded"} | ({"dali"} if dali_available() else set())
    assert set(res["renderers"]) == expect
    for entry in res["renderers"].values():
        assert entry["img_per_s"] > 0
        # random-noise images: the bound that matters is test_render's, on real scenes
        assert 0 <= entry["vs_reference"]["mean"] <= entry["vs_reference"]["p99"] < 1.5
    assert res["renderers"]["reference"]["vs_reference"] == {"mean": 0.0, "p99": 0.0}
    assert res["renderers"]["decoded"]["first_pass_img_per_s"] > 0
    assert res["student_step_img_per_s"] > 0 and res["device"].startswith("cpu")


def test_bench_loader_needs_shards(tmp_path):
    with pytest.raises(UserError):
        bench_loader(BenchLoaderConfig(shards=""))
    with pytest.raises(UserError):
        bench_loader(BenchLoaderConfig(shards=str(tmp_path / "missing")))
