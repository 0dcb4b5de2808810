"""Checks that need CUDA (tools/gpu_check.sh runs them); skipped elsewhere. Marked `gpu`, so
they see the real device (conftest pins every other test to the CPU)."""

import json

import numpy as np
import pytest
import torch

from vwwfast import config as C

pytestmark = pytest.mark.gpu


def test_bf16_training_steps(synth_shards, tmp_path):
    from vwwfast.train.commands import distill
    cfg = C.resolve(C.DistillConfig, dict(shards=str(synth_shards), alpha=0.0, epochs=2, input_size=64,
                                          batch_size=32, runs_dir=str(tmp_path), device="cuda"))
    s = distill(cfg)
    lines = [json.loads(l) for l in open(s["run_dir"] + "/metrics.jsonl")]
    assert all(np.isfinite(l["loss"]) for l in lines)
    assert s["device"] == torch.cuda.get_device_name()
    ck = torch.load(s["run_dir"] + "/model.pt", weights_only=True)
    assert all(v.dtype in (torch.float32, torch.int64) for v in ck["state_dict"].values())


def test_cached_logits_match_online_on_gpu(synth_shards, tmp_path):
    from vwwfast.models import model_from_checkpoint
    from vwwfast.data.render.factory import make_renderer
    from vwwfast.data.shards import ShardSet
    from vwwfast.teach.build import cache_teacher
    from vwwfast.teach.cache import TeacherCache
    from vwwfast.train.commands import train_teacher
    t = train_teacher(C.resolve(C.TrainConfig, dict(
        shards=str(synth_shards), arch="mobilenet_v3_small", input_size=64, epochs=1,
        batch_size=32, runs_dir=str(tmp_path / "runs"), device="cuda")))
    ckpt = t["run_dir"] + "/model.pt"
    out = cache_teacher(C.resolve(C.CacheTeacherConfig, dict(
        shards=str(synth_shards), teacher=ckpt, views=2, out=str(tmp_path / "t.zarr"),
        batch_size=32, device="cuda", renderer="decoded", decoded_size=64)))
    store = TeacherCache(out)
    model, _ = model_from_checkpoint(ckpt, device="cuda")
    model = model.to(memory_format=torch.channels_last)
    split = ShardSet.open(synth_shards).split("train")
    r = make_renderer("decoded", split, device="cuda", decoded_size=64, out_size=64)
    idx = np.arange(32)  # the cache's first batch of view 1, rendered the same way
    x, _ = r.render(idx, store.params()[1][idx], 64)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        online = model(x).float().half().float().cpu().numpy()
    cached = store.logits()[1][idx].astype(np.float32)
    np.testing.assert_allclose(cached, online, rtol=1e-2, atol=1e-2)
