"""The public data API: KDData gives the batches `distill` trains on, wds_dataset the shard
samples with an epoch's view parameters and logits, render_view such a view with torchvision."""

import json
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from conftest import vwwfast_env
from vwwfast import KDData, render_view, wds_dataset
from vwwfast import config as C
from vwwfast.data.epochs import subset_order
from vwwfast.data.shards import ShardSet
from vwwfast.errors import UserError
from vwwfast.teach.cache import TeacherCache

DATA = dict(input_size=32, renderer="decoded", decoded_size=48, device="cpu")


def _batches(data, epoch, batch_size=32):
    return [(x.clone(), y.clone(), None if z is None else z.clone(), idx.copy())
            for x, y, z, idx in data.train_batches(epoch, batch_size)]


@pytest.fixture(scope="module")
def other_shards(synth_coco, tmp_path_factory):
    """synth_coco sharded once more, 50 samples a shard: the same images, another shard set."""
    from vwwfast.data.shards import write_shards
    from vwwfast.data.sources.coco import LABEL_RULE, coco_items
    splits, source = coco_items(synth_coco, "minival")
    out = tmp_path_factory.mktemp("other") / "shards"
    write_shards(out, splits, source=source, size=64, samples_per_shard=50, label_rule=LABEL_RULE,
                 show_progress=False)
    return out


# ---------------------------------------------------------------------------------------
# KDData

def test_train_batches_are_what_distill_trains_on(synth_shards, small_store, tmp_path, monkeypatch,
                                                  quick_curves):
    from vwwfast.train.commands import distill
    from vwwfast.train.student import Student
    seen = []
    real = Student.step

    def step(self, x, y, z_t):
        seen.append((x.clone(), y.clone(), z_t.clone()))
        return real(self, x, y, z_t)
    monkeypatch.setattr(Student, "step", step)
    distill(C.resolve(C.DistillConfig, dict(shards=str(synth_shards), cache=small_store, epochs=1,
                                            batch_size=32, runs_dir=str(tmp_path / "runs"),
                                            bn_settle=0, **{k: v for k, v in DATA.items() if k != "device"})))
    with KDData(synth_shards, small_store, **DATA) as data:
        mine = _batches(data, 1)
    assert len(mine) == len(seen) == 3  # 96 samples, batch 32: three full batches
    for (x, y, z, _), (x_d, y_d, z_d) in zip(mine, seen):
        assert torch.equal(x, x_d) and torch.equal(y, y_d) and torch.equal(z, z_d)


def test_train_batches_hold_the_stores_logits_and_the_shards_labels(synth_shards, small_store):
    store = TeacherCache(small_store)
    logits, E = store.logits().astype(np.float32), store.num_views
    labels = ShardSet.open(synth_shards).split("train").labels
    with KDData(synth_shards, small_store, **DATA) as data:
        assert data.num_views == E == 2 and data.num_train == 96 and data.num_val == 48
        for epoch in (1, 2, 3):  # epoch 3 replays view 0
            batches = _batches(data, epoch)
            idx = np.concatenate([b[3] for b in batches])
            # distill's order for seed 0, each sample at most once
            np.testing.assert_array_equal(idx, subset_order(np.arange(96), 0, epoch - 1))
            assert data.view_of(epoch) == (epoch - 1) % E
            for x, y, z, i in batches:
                assert x.shape == (32, 3, 32, 32) and x.dtype == torch.float32
                assert y.dtype == torch.int64 and torch.equal(y, torch.from_numpy(labels[i]))
                assert z.dtype == torch.float32
                np.testing.assert_array_equal(z.numpy(), logits[(epoch - 1) % E][i])
            again = _batches(data, epoch)
            assert all(torch.equal(a[0], b[0]) and np.array_equal(a[3], b[3])
                       for a, b in zip(batches, again))


def test_without_a_cache_labels_only_and_other_seeds_other_orders(synth_shards):
    with KDData(synth_shards, **DATA) as data, KDData(synth_shards, seed=3, **DATA) as other:
        assert data.num_views is None and data.view_of(1) is None
        batches = _batches(data, 1, 40)  # two full batches of 40, the last 16 left out
        assert [len(b[3]) for b in batches] == [40, 40] and all(b[2] is None for b in batches)
        idx = np.concatenate([b[3] for b in batches])
        assert len(set(idx)) == 80
        assert not np.array_equal(idx, np.concatenate([b[3] for b in _batches(other, 1, 40)]))


def test_val_batches_cover_every_val_sample_once(synth_shards, small_store):
    labels = ShardSet.open(synth_shards).split("val").labels
    with KDData(synth_shards, small_store, **DATA) as data:
        batches = list(data.val_batches(20))
    assert [len(b[2]) for b in batches] == [20, 20, 8]
    np.testing.assert_array_equal(np.concatenate([b[2] for b in batches]), np.arange(48))
    np.testing.assert_array_equal(torch.cat([b[1] for b in batches]).numpy(), labels)


def test_bad_input_is_refused_as_distill_refuses_it(synth_shards, small_store, other_shards):
    with pytest.raises(UserError, match="was made from other shards"):
        KDData(other_shards, small_store, **DATA)
    with pytest.raises(UserError, match="other views than this run asks for"):
        KDData(synth_shards, small_store, view={"erase": 0.5}, **DATA)
    with pytest.raises(UserError, match="differs from the seed of"):
        KDData(synth_shards, small_store, view_seed=7, **DATA)
    with pytest.raises(UserError, match="renderer"):
        KDData(synth_shards, small_store, **{**DATA, "renderer": "magic"})
    with KDData(synth_shards, small_store, **DATA) as data:
        for epoch in (0, -1, 1.5):
            with pytest.raises(UserError, match="numbered from 1"):
                data.train_batches(epoch, 32)
        with pytest.raises(UserError, match="batch size"):
            data.train_batches(1, 0)


def test_a_batch_larger_than_the_split_is_said_once(synth_shards):
    with KDData(synth_shards, **DATA) as data:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert list(data.train_batches(1, 200)) == []
            assert list(data.train_batches(2, 200)) == []
    said = [w for w in caught if "larger than the 96 training samples" in str(w.message)]
    assert len(said) == 1


def test_import_vwwfast_stays_light():
    code = ("import sys, vwwfast; light = 'torch' not in sys.modules; "
            "import vwwfast.api; print(light, vwwfast.KDData is vwwfast.api.KDData, "
            "vwwfast.losses.kd_loss.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=vwwfast_env())
    assert out.stdout.split() == ["True", "True", "vwwfast.train.losses"]


# ---------------------------------------------------------------------------------------
# wds_dataset

def _key(sample):
    return int(sample["__key__"])


def test_wds_dataset_yields_every_sample_with_its_epochs_view(synth_shards, small_store):
    import webdataset as wds
    store = TeacherCache(small_store)
    split = ShardSet.open(synth_shards).split("train")
    ds = wds_dataset(synth_shards, "train", small_store, epoch=2)
    assert isinstance(ds, wds.DataPipeline)
    samples = list(ds)
    assert sorted(_key(s) for s in samples) == list(range(96))
    params, logits = store.params(1), store.logits()[1].astype(np.float32)
    for s in samples:
        i = _key(s)
        assert s["jpg"] == split.read_jpeg(i) and s["cls"] == split.labels[i]
        assert s["logits"].dtype == np.float32
        np.testing.assert_array_equal(s["logits"], logits[i])
        np.testing.assert_array_equal(s["params"], params[i])
    # a list of tar URLs: the same samples, the store checked against the manifest beside them
    urls = [str(p) for p in split.tar_paths]
    again = {_key(s): s for s in wds_dataset(urls, "train", small_store, epoch=2)}
    assert all(np.array_equal(again[_key(s)]["logits"], s["logits"]) for s in samples)
    pattern = f"{synth_shards}/train-{{000000..{len(urls) - 1:06d}}}.tar"
    assert sorted(_key(s) for s in wds_dataset(pattern, "train", small_store, epoch=2)) == list(range(96))
    plain = list(wds_dataset(synth_shards, "val"))
    assert len(plain) == 48 and "logits" not in plain[0] and "params" not in plain[0]


def test_wds_dataset_in_a_dataloader_with_workers(synth_shards, small_store):
    ds = wds_dataset(synth_shards, "train", small_store, epoch=1)
    keys = [int(k) for batch in torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
            for k in [batch["__key__"]]]
    assert sorted(keys) == list(range(96))


def test_wds_dataset_refuses_what_distill_refuses(synth_shards, small_store, other_shards, tmp_path):
    with pytest.raises(UserError, match="was made from other shards"):
        wds_dataset(other_shards, "train", small_store)
    urls = [str(p) for p in ShardSet.open(other_shards).split("train").tar_paths]
    with pytest.raises(UserError, match="was made from other shards"):
        wds_dataset(urls, "train", small_store)
    lone = tmp_path / "lone"
    lone.mkdir()
    copies = [shutil.copy(p, lone) for p in ShardSet.open(synth_shards).split("train").tar_paths]
    with pytest.raises(UserError, match="manifest.json"):
        wds_dataset(copies, "train", small_store)
    assert len(list(wds_dataset(copies))) == 96  # no cache: nothing to check
    with pytest.raises(UserError, match="train split"):
        wds_dataset(synth_shards, "val", small_store)
    with pytest.raises(UserError, match="numbered from 1"):
        wds_dataset(synth_shards, "train", small_store, epoch=0)


# ---------------------------------------------------------------------------------------
# render_view

def test_render_view_renders_the_renderers_view(synth_shards, small_store):
    from vwwfast.data.render.reference import ReferenceRenderer
    from vwwfast.data.views import COL
    split = ShardSet.open(synth_shards).split("train")
    idx = np.arange(0, 96, 12)
    params = TeacherCache(small_store).params(0)[idx]
    geometry = params.copy()
    geometry[:, [COL["brightness"], COL["contrast"], COL["saturation"]]] = 1.0
    geometry[:, COL["hue"]] = 0.0
    with ReferenceRenderer(split, "cpu") as ref:
        want, _ = ref.render(idx, params, 40)
        want_geometry, _ = ref.render(idx, geometry, 40)
    got = torch.stack([render_view(split.read_jpeg(i), p, 40, normalize=True) for i, p in zip(idx, params)])
    got_geometry = torch.stack([render_view(split.read_jpeg(i), p, 40, color=False, normalize=True)
                                for i, p in zip(idx, params)])
    assert got.shape == (len(idx), 3, 40, 40)
    # normalised units (1 = about 0.23 of the 0..1 range): the same crop (a one-pixel shift
    # differs by 0.15 here), close colours (0.2 with colour left out, 0.04 with hue turned
    # the other way)
    assert (got_geometry - want_geometry).abs().mean() < 0.01
    assert (got - want).abs().mean() < 0.03
    flipped = params[0].copy()
    flipped[COL["flip"]] = 1 - flipped[COL["flip"]]
    assert (render_view(split.read_jpeg(0), flipped, 40, normalize=True) - want[0]).abs().mean() > 0.1
    whole = render_view(split.read_jpeg(0), None, 40)
    assert 0 <= whole.min() and whole.max() <= 1
    mixed = params[0].copy()
    mixed[COL["partner"]] = 3
    with pytest.raises(ValueError, match="mixed view"):
        render_view(split.read_jpeg(0), mixed, 40)


RANK_SCRIPT = """
import json, sys
import numpy as np
import torch.distributed as dist
from vwwfast import KDData
shards, cache, out = sys.argv[1:]
with KDData(shards, cache, input_size=32, renderer="decoded", decoded_size=48, device="cpu") as data:
    train = [b[3].tolist() for b in data.train_batches(1, 16)]
    val = np.concatenate([b[2] for b in data.val_batches(16)]).tolist()
    rank = dist.get_rank()
    json.dump({"train": train, "val": val}, open(f"{out}/rank{rank}.json", "w"))
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_under_torchrun_each_rank_gets_its_share(synth_shards, small_store, tmp_path):
    script = tmp_path / "ranks.py"
    script.write_text(RANK_SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), str(synth_shards), small_store, str(tmp_path)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=vwwfast_env(OMP_NUM_THREADS="1"),
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    parts = [json.loads((tmp_path / f"rank{k}.json").read_text()) for k in (0, 1)]
    order = subset_order(np.arange(96), 0, 0)  # contiguous blocks of distill's order
    assert [len(p["train"]) for p in parts] == [3, 3]  # 48 samples each, batches of 16
    assert sum(parts[0]["train"], []) == order[:48].tolist()
    assert sum(parts[1]["train"], []) == order[48:].tolist()
    assert parts[0]["val"] == list(range(24)) and parts[1]["val"] == list(range(24, 48))
