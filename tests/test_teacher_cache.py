import json
import re

import numpy as np
import pytest
import torch

from conftest import cli
from vwwfast import config as C
from vwwfast.errors import UserError
from vwwfast.teach.build import cache_teacher
from vwwfast.teach.cache import TeacherCache
from vwwfast.train.commands import distill
from vwwfast.data.views import PARAM_COLUMNS


@pytest.fixture
def teacher_ckpt(small_teacher):
    return small_teacher


def _cache(shards, teacher, out, **kw):
    base = dict(shards=str(shards), teacher=teacher, views=3, out=str(out), batch_size=32,
                renderer="decoded", decoded_size=48)
    base.update(kw)
    return cache_teacher(C.resolve(C.CacheTeacherConfig, base))


def test_store_layout_and_attributes(synth_shards, teacher_ckpt, tmp_path):
    out = _cache(synth_shards, teacher_ckpt, tmp_path / "t.zarr")
    store = TeacherCache(out)
    store.check_complete()
    assert store.params().shape == (3, 96, len(PARAM_COLUMNS)) and store.params().dtype == np.float32
    assert store.logits().shape == (3, 96, 2) and store.logits().dtype == np.float16
    assert store.val_logits().shape == (48, 2)
    assert store.group["train/logits"].chunks == (1, 40, 2)
    assert store.attrs["param_columns"][:4] == ["y0", "x0", "h", "w"]
    fp = store.fingerprint
    assert fp["teacher_arch"] == "mobilenet_v3_small" and fp["teacher_input_size"] == 48
    assert 0 <= store.attrs["val_acc"] <= 1 and len(store.attrs["train_view_acc"]) == 3


def test_cached_logits_equal_online_logits(synth_shards, teacher_ckpt, tmp_path):
    from vwwfast.models import model_from_checkpoint
    from vwwfast.data.render.factory import make_renderer
    from vwwfast.data.shards import ShardSet
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


@pytest.mark.slow
def test_resume_and_extend_equal_one_go(synth_shards, teacher_ckpt, tmp_path, monkeypatch):
    import vwwfast.teach.build as TC
    one = TeacherCache(_cache(synth_shards, teacher_ckpt, tmp_path / "one.zarr", views=3))
    real, calls = TC.ensemble_logits, {"n": 0}

    def stop_in_second_view(*a, **kw):  # 3 shards a view: call 4 is view 2's first shard
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*a, **kw)
    monkeypatch.setattr(TC, "ensemble_logits", stop_in_second_view)
    with pytest.raises(KeyboardInterrupt):
        _cache(synth_shards, teacher_ckpt, tmp_path / "two.zarr", views=2)
    monkeypatch.setattr(TC, "ensemble_logits", real)
    partial = TeacherCache(tmp_path / "two.zarr")
    assert partial.views_completed == 1
    with pytest.raises(UserError, match="incomplete"):
        partial.check_complete()
    with pytest.raises(UserError, match="holds 1 of 2 views"):  # not "nothing to do"
        _cache(synth_shards, teacher_ckpt, tmp_path / "two.zarr", views=1)
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
    from vwwfast.data.shards import ShardSet
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
    out = _cache(synth_shards, teacher_ckpt, tmp_path / "p.zarr", view_spec="plain", views=1)
    store = TeacherCache(out)
    assert store.num_views == 1 and store.plain
    p = store.params()[0]
    assert np.all(p[:, 2:4] == 1.0) and np.all(p[:, 4] == 0)


# ---------------------------------------------------------------------------------------
# A damaged store is refused with one line, never read as numbers

def _copy(store, tmp_path):
    import shutil
    out = tmp_path / "copy.zarr"
    shutil.copytree(store, out)
    return out


def test_store_records_its_teacher_and_spec(small_store, small_teacher):
    from vwwfast.viewspec import ViewSpec
    store = TeacherCache(small_store)
    who = store.teacher
    assert who["checkpoint"] == small_teacher and who["role"] == "teacher"
    assert who["run"] and who["run"] in small_teacher and who["input_size"] == 48
    assert who["sha256"] == store.fingerprint["teacher_sha256"]
    assert store.spec == ViewSpec() and store.seed == 0 and not store.plain
    assert store.attrs["renderer"]["train"] == "decoded"


def test_missing_chunk_is_an_error_not_the_fill_value(small_store, tmp_path, capsys):
    out = _copy(small_store, tmp_path)
    (out / "train/logits/c/1/1/0").unlink()
    with pytest.raises(UserError, match=r"damaged: 1 chunk\(s\) of train/logits missing \(first: train/logits/c/1/1/0\)"):
        TeacherCache(out)
    (out / "val/logits/c/0/0").unlink()  # also once val is done
    rc, err, _ = cli(capsys, "cache-teacher", "--verify", str(out))
    assert rc == 2 and len(err.splitlines()) == 1 and "delete it" in err


@pytest.mark.parametrize("damage", ["flip", "truncate", "random"])
def test_damaged_chunk_fails_its_checksum(small_store, tmp_path, damage):
    out = _copy(small_store, tmp_path)
    chunk = out / "train/params/c/0/1/0"
    data = bytearray(chunk.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x10
    elif damage == "truncate":
        data = data[:len(data) // 2]
    else:
        data = bytearray(np.random.default_rng(0).bytes(len(data)))
    chunk.write_bytes(bytes(data))
    store = TeacherCache(out)  # opening reads no chunk
    with pytest.raises(UserError, match=r"damaged: 1 chunk\(s\) of train/params fail their checksum "
                                        r"\(first: train/params/c/0/1/0\); delete it"):
        store.params()
    np.testing.assert_array_equal(store.logits(), TeacherCache(small_store).logits())  # others read


def test_torn_metadata_says_damaged(small_store, small_teacher, synth_shards, tmp_path, capsys):
    out = _copy(small_store, tmp_path)
    text = (out / "zarr.json").read_text()
    (out / "zarr.json").write_text(text[:len(text) // 2])
    with pytest.raises(UserError, match="is damaged: its zarr.json is unreadable"):
        TeacherCache(out)
    # writing into it says the same, not "a different teacher, view spec, ..."
    with pytest.raises(UserError, match="is damaged") as e:
        _cache(synth_shards, small_teacher, out, views=2)
    assert "different" not in str(e.value)
    (out / "zarr.json").write_text(text)
    (out / "train/logits/zarr.json").unlink()
    rc, err, _ = cli(capsys, "cache-teacher", "--verify", str(out))
    assert rc == 2 and len(err.splitlines()) == 1
    assert "array train/logits is missing or its zarr.json is unreadable" in err


def test_store_of_an_older_format_is_refused(small_store, tmp_path):
    out = _copy(small_store, tmp_path)
    meta = json.loads((out / "zarr.json").read_text())
    meta["attributes"]["format_version"] = 1
    (out / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="format 1, not 2 .*without chunk checksums"):
        TeacherCache(out)


def test_partial_store_says_its_state(small_store, small_teacher, synth_shards, tmp_path):
    import zarr
    out = _copy(small_store, tmp_path)
    zarr.open_group(str(out), mode="r+").attrs.update({"views_completed": 1, "val_done": False})
    store = TeacherCache(out)
    with pytest.raises(UserError, match=r"holds 1 of 2 views, no val logits yet; finish it with "
                                        r"`vwwfast cache-teacher .*--views 2 --out"):
        store.check_complete()
    with pytest.raises(UserError, match="holds 1 of 2 views.*run with --views 2 to finish it"):
        _cache(synth_shards, small_teacher, out, views=1)


# ---------------------------------------------------------------------------------------
# --verify: recompute stored views with the teacher

def test_verify_a_good_store(small_store, capsys):
    r = cache_teacher(C.resolve(C.CacheTeacherConfig, dict(verify=small_store, samples=12)))
    assert r["ok"] and r["param_diff"] == 0
    train, val = r["rows"]
    assert train[1] == "12" and train[4] == "100.00%" and train[5] == "0"
    assert val[1] == "12"
    rc, err, out = cli(capsys, "cache-teacher", "--verify", small_store, "--samples", "4")
    assert rc == 0 and "OK" in out and "checksums OK" in out


def test_verify_finds_consistently_altered_logits(small_store, tmp_path, capsys):
    import zarr
    out = _copy(small_store, tmp_path)
    a = zarr.open_group(str(out), mode="r+")["train/logits"]
    a[...] = a[...] + np.float16(0.25)  # rewritten whole: every checksum is right
    rc, err, _ = cli(capsys, "cache-teacher", "--verify", str(out), "--samples", "6")
    assert rc == 2 and len(err.splitlines()) == 1
    assert re.search(r"train views logits differ from the teacher's by 0\.2\d* beyond float16 rounding "
                     r"in the median", err)


def test_verify_finds_one_chunk_of_another_teacher(small_store, tmp_path):
    import zarr
    out = _copy(small_store, tmp_path)
    a = zarr.open_group(str(out), mode="r+")["train/logits"]
    a[1, :40] = a[1, :40][:, ::-1] * 3  # one shard's logits from "another teacher"
    with pytest.raises(UserError, match=r"train views logits differ from the teacher's beyond rounding "
                                        r"\(fp32\) in \d+ of 48 samples"):
        cache_teacher(C.resolve(C.CacheTeacherConfig, dict(verify=str(out), samples=48)))


def test_verify_finds_altered_view_parameters(small_store, tmp_path):
    import zarr
    out = _copy(small_store, tmp_path)
    a = zarr.open_group(str(out), mode="r+")["train/params"]
    a[1, :, 4] = 1 - a[1, :, 4]  # every flip inverted
    with pytest.raises(UserError, match="stored view parameters differ from those regenerated"):
        cache_teacher(C.resolve(C.CacheTeacherConfig, dict(verify=str(out), samples=2)))


def test_verify_needs_the_stores_teacher(small_store, small_teacher, tmp_path):
    from vwwfast.models import build_model, load_checkpoint, save_checkpoint
    other = tmp_path / "other.pt"
    save_checkpoint(other, build_model("mobilenet_v3_small"), arch="mobilenet_v3_small", input_size=48,
                    config={}, epoch=0, metrics={}, role="teacher")
    with pytest.raises(UserError, match="is not the teacher of"):
        cache_teacher(C.resolve(C.CacheTeacherConfig, dict(verify=small_store, teacher=str(other))))
    with pytest.raises(UserError, match="drop --views"):
        cache_teacher(C.resolve(C.CacheTeacherConfig, dict(verify=small_store, views=3)))
    assert load_checkpoint(small_teacher)["role"] == "teacher"


# ---------------------------------------------------------------------------------------
# Which model teaches

def test_student_checkpoint_is_refused_as_teacher(small_teacher, synth_shards, tmp_path):
    from vwwfast.models import build_model, load_checkpoint, save_checkpoint
    ck = load_checkpoint(small_teacher)
    student = tmp_path / "student.pt"
    model = build_model(ck["arch"])
    model.load_state_dict(ck["state_dict"])
    save_checkpoint(student, model, arch=ck["arch"], input_size=48, config={"alpha": 0.5}, epoch=1,
                    metrics={}, role="student", run="2026-01-01_00-00-00_student_mbv3s_vww48")
    with pytest.raises(UserError, match="written by a student run \\(2026-01-01_00-00-00_student"):
        _cache(synth_shards, str(student), tmp_path / "s.zarr", views=1)
    assert not (tmp_path / "s.zarr").exists()
    out = _cache(synth_shards, str(student), tmp_path / "s.zarr", views=1, self_distill=True)
    assert TeacherCache(out).teacher["role"] == "student"


def test_teacher_at_another_size_warns_and_records_both(small_teacher, synth_shards, tmp_path, capsys):
    out = _cache(synth_shards, small_teacher, tmp_path / "t.zarr", views=1, input_size=32)
    assert "trained at 48 px and is cached at 32 px" in capsys.readouterr().err.replace("\n", " ")
    store = TeacherCache(out)
    assert store.fingerprint["teacher_input_size"] == 32 and store.teacher["input_size"] == 48
