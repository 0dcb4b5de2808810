import json

import numpy as np
import pytest
import torch

from vwwfast import config as C
from vwwfast.errors import UserError
from vwwfast.teacher_cache import TeacherCache, cache_teacher
from vwwfast.train import distill, train_teacher


@pytest.fixture(scope="module")
def teacher_ckpt(synth_shards, tmp_path_factory):
    runs = tmp_path_factory.mktemp("teacher_runs")
    cfg = C.resolve(C.TrainConfig, dict(shards=str(synth_shards), arch="mobilenet_v3_small",
                                        input_size=48, epochs=1, batch_size=32, renderer="decoded",
                                        decoded_size=48, runs_dir=str(runs)))
    s = train_teacher(cfg)
    return s["run_dir"] + "/model.pt"


def _cache(shards, teacher, out, **kw):
    base = dict(shards=str(shards), teacher=teacher, views=3, out=str(out), batch_size=32,
                renderer="decoded", decoded_size=48)
    base.update(kw)
    return cache_teacher(C.resolve(C.CacheTeacherConfig, base))


def test_store_layout_and_attributes(synth_shards, teacher_ckpt, tmp_path):
    out = _cache(synth_shards, teacher_ckpt, tmp_path / "t.zarr")
    store = TeacherCache(out)
    store.check_complete()
    assert store.params().shape == (3, 96, 13) and store.params().dtype == np.float32
    assert store.logits().shape == (3, 96, 2) and store.logits().dtype == np.float16
    assert store.val_logits().shape == (48, 2)
    assert store.group["train/logits"].chunks == (1, 40, 2)
    assert store.attrs["param_columns"][:4] == ["y0", "x0", "h", "w"]
    fp = store.fingerprint
    assert fp["teacher_arch"] == "mobilenet_v3_small" and fp["teacher_input_size"] == 48
    assert 0 <= store.attrs["val_acc"] <= 1 and len(store.attrs["train_view_acc"]) == 3


def test_cached_logits_equal_online_logits(synth_shards, teacher_ckpt, tmp_path):
    from vwwfast.models import model_from_checkpoint
    from vwwfast.render import make_renderer
    from vwwfast.shards import ShardSet
    out = _cache(synth_shards, teacher_ckpt, tmp_path / "t.zarr", views=2)
    store = TeacherCache(out)
    model, _ = model_from_checkpoint(teacher_ckpt)
    split = ShardSet.open(synth_shards).split("train")
    r = make_renderer("decoded", split, device="cpu", decoded_size=48, out_size=48)
    idx = np.array([3, 50, 7, 95])
    params = store.params()[1][idx]
    x, _ = r.render(idx, params, 48)
    with torch.no_grad():
        online = model(x).numpy()
    np.testing.assert_allclose(store.logits()[1][idx].astype(np.float32), online, rtol=2e-3, atol=2e-3)


def test_resume_and_extend_equal_one_go(synth_shards, teacher_ckpt, tmp_path, monkeypatch):
    import vwwfast.teacher_cache as TC
    one = TeacherCache(_cache(synth_shards, teacher_ckpt, tmp_path / "one.zarr", views=3))
    real, calls = TC._teacher_logits, {"n": 0}

    def stop_in_second_view(*a, **kw):  # 3 shards a view: call 4 is view 2's first shard
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*a, **kw)
    monkeypatch.setattr(TC, "_teacher_logits", stop_in_second_view)
    with pytest.raises(KeyboardInterrupt):
        _cache(synth_shards, teacher_ckpt, tmp_path / "two.zarr", views=2)
    monkeypatch.setattr(TC, "_teacher_logits", real)
    partial = TeacherCache(tmp_path / "two.zarr")
    assert partial.views_completed == 1
    with pytest.raises(UserError, match="incomplete"):
        partial.check_complete()
    _cache(synth_shards, teacher_ckpt, tmp_path / "two.zarr", views=2)  # resume
    two = TeacherCache(_cache(synth_shards, teacher_ckpt, tmp_path / "two.zarr", views=3))  # extend
    np.testing.assert_array_equal(one.params(), two.params())
    np.testing.assert_array_equal(one.logits(), two.logits())
    np.testing.assert_array_equal(one.val_logits(), two.val_logits())


def test_stale_store_is_refused(synth_shards, teacher_ckpt, tmp_path):
    out = _cache(synth_shards, teacher_ckpt, tmp_path / "t.zarr", views=1)
    with pytest.raises(UserError, match="view seed"):
        _cache(synth_shards, teacher_ckpt, out, views=1, seed=5)
    with pytest.raises(UserError, match="view spec"):
        _cache(synth_shards, teacher_ckpt, out, view_spec="plain")
    with pytest.raises(UserError, match="teacher input size"):
        _cache(synth_shards, teacher_ckpt, out, views=1, input_size=32)
    # a distill run against other shards is refused
    other = json.loads((synth_shards / "manifest.json").read_text())
    store = TeacherCache(out)
    store.fingerprint = {**store.fingerprint, "shards_content_hash": "0" * 64}
    from vwwfast.shards import ShardSet
    with pytest.raises(UserError, match="other shards"):
        store.check_shards(ShardSet.open(synth_shards))
    assert other["content_hash"] != "0" * 64


def test_changed_teacher_is_refused(synth_shards, teacher_ckpt, tmp_path):
    from vwwfast.models import load_checkpoint, save_checkpoint, build_model
    out = _cache(synth_shards, teacher_ckpt, tmp_path / "t.zarr", views=1)
    ck = load_checkpoint(teacher_ckpt)
    other = tmp_path / "other.pt"
    save_checkpoint(other, build_model("mobilenet_v3_small"), arch=ck["arch"], input_size=48,
                    config={}, epoch=0, metrics={})
    with pytest.raises(UserError, match="teacher checkpoint"):
        _cache(synth_shards, str(other), out, views=1)


@pytest.mark.slow
def test_cached_and_online_distill_see_the_same_views(synth_shards, teacher_ckpt, tmp_path):
    out = _cache(synth_shards, teacher_ckpt, tmp_path / "t.zarr", views=2, seed=0)
    base = dict(shards=str(synth_shards), input_size=32, epochs=2, batch_size=32,
                renderer="decoded", decoded_size=48, seed=0)
    cached = distill(C.resolve(C.DistillConfig, {**base, "cache": str(out), "runs_dir": str(tmp_path / "a")}))
    online = distill(C.resolve(C.DistillConfig, {**base, "teacher_mode": "online", "teacher": teacher_ckpt,
                                                 "runs_dir": str(tmp_path / "b")}))
    read = lambda s: [json.loads(l) for l in open(s["run_dir"] + "/metrics.jsonl")]  # noqa: E731
    a, b = read(cached), read(online)
    assert [r["views_sha256"] for r in a] == [r["views_sha256"] for r in b]
    assert a[0]["views_sha256"] != a[1]["views_sha256"]
    assert all(r["loss_kl"] > 0 for r in a + b)
    card = open(cached["run_dir"] + "/card.md").read()
    assert "fingerprint" in card and str(out) in card


def test_plain_store_uses_students_views(synth_shards, teacher_ckpt, tmp_path):
    out = _cache(synth_shards, teacher_ckpt, tmp_path / "p.zarr", view_spec="plain")
    store = TeacherCache(out)
    assert store.num_views == 1 and store.plain
    p = store.params()[0]
    assert np.all(p[:, 2:4] == 1.0) and np.all(p[:, 4] == 0)
