import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from conftest import cli, write_jpeg
from vwwfast.errors import UserError
from vwwfast.data.shards import ShardSet, SourceItem, write_shards
from vwwfast.data.sources.coco import coco_items, vww_label
from vwwfast.data.sources.folder import folder_splits


def _shard(tmp_path, splits, name="out", **kw):
    kw.setdefault("show_progress", False)
    return write_shards(tmp_path / name, splits, source={"kind": "test"}, **kw)


def test_label_rule_edges(tiny_coco):
    splits, _ = coco_items(tiny_coco, "coco")
    labels = {it.meta["source_id"]: it.label for s in splits.values() for it in s}
    assert labels == {9: 0, 10: 1, 11: 1, 12: 0, 13: 0, 25096: 1, 14: 1, 251824: 0}
    assert vww_label(0.005) == 0 and vww_label(0.00500001) == 1


def test_minival_split(tiny_coco):
    splits, source = coco_items(tiny_coco, "minival")
    assert [it.meta["source_id"] for it in splits["val"]] == [25096, 251824]
    assert [it.meta["source_id"] for it in splits["train"]] == [9, 10, 11, 12, 13, 14]
    assert source["split"] == "minival"
    coco, _ = coco_items(tiny_coco, "coco")
    assert [it.meta["source_id"] for it in coco["val"]] == [14, 251824]


def test_round_trip_and_manifest(tiny_coco, tmp_path):
    splits, source = coco_items(tiny_coco, "minival")
    m = _shard(tmp_path, splits, size=64, samples_per_shard=4)
    tr = m["splits"]["train"]
    assert tr["num_samples"] == 6 and tr["class_counts"] == {"0": 3, "1": 3}
    assert [(s["first"], s["count"]) for s in tr["shards"]] == [(0, 4), (4, 2)]
    ss = ShardSet.open(tmp_path / "out")
    sp = ss.split("train")
    assert list(sp.labels) == [it.label for it in splits["train"]]
    for i in range(len(sp)):
        im = Image.open(io.BytesIO(sp.read_jpeg(i)))
        assert im.format == "JPEG" and im.mode == "RGB"
        assert (im.height, im.width) == (sp.heights[i], sp.widths[i])
        assert min(im.size) <= 64
    with tarfile.open(sp.tar_paths[0]) as tar:
        names = tar.getnames()
        assert names[:3] == ["000000000.jpg", "000000000.cls", "000000000.json"]
        meta = json.loads(tar.extractfile("000000001.json").read())
        assert meta["source_id"] == 10 and meta["orig_width"] == 100
        assert tar.extractfile("000000001.cls").read() == b"1"


def test_never_upscales(tmp_path):
    write_jpeg(tmp_path / "a.jpg", 40, 30)
    _shard(tmp_path, {"train": [SourceItem(str(tmp_path / "a.jpg"), 1)]}, size=224)
    sp = ShardSet.open(tmp_path / "out").split("train")
    assert (sp.widths[0], sp.heights[0]) == (40, 30)


def test_byte_identical_whatever_workers(tiny_coco, tmp_path):
    splits, _ = coco_items(tiny_coco, "minival")
    a = _shard(tmp_path, splits, "a", size=64, samples_per_shard=3, workers=1)
    b = _shard(tmp_path, splits, "b", size=64, samples_per_shard=3, workers=2)
    assert a["content_hash"] == b["content_hash"]
    for f in sorted((tmp_path / "a").iterdir()):
        assert f.read_bytes() == (tmp_path / "b" / f.name).read_bytes(), f.name


def test_bad_images_are_skipped_and_listed(tmp_path):
    root = tmp_path / "in"
    write_jpeg(root / "good.jpg", 50, 40)
    (root / "trunc.jpg").write_bytes((root / "good.jpg").read_bytes()[:200])
    (root / "text.jpg").write_text("not an image")
    write_jpeg(root / "gray.jpg", 50, 40, mode="L")
    write_jpeg(root / "cmyk.jpg", 50, 40, mode="CMYK")
    write_jpeg(root / "png.jpg", 50, 40, fmt="PNG")
    names = ["good", "trunc", "text", "gray", "cmyk", "png", "missing"]
    items = [SourceItem(str(root / f"{n}.jpg"), i % 2) for i, n in enumerate(names)]
    m = _shard(tmp_path, {"train": items})
    reasons = {s["file"].rsplit("/", 1)[-1]: s["reason"] for s in m["skipped"]}
    assert set(reasons) == {"trunc.jpg", "text.jpg", "missing.jpg"}
    assert reasons["missing.jpg"] == "missing file" and reasons["text.jpg"] == "not an image"
    sp = ShardSet.open(tmp_path / "out").split("train")
    assert len(sp) == 4
    for i in range(4):
        assert Image.open(io.BytesIO(sp.read_jpeg(i))).mode == "RGB"


def test_exif_orientation(tmp_path):
    im = Image.new("RGB", (60, 30), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    im.save(tmp_path / "r.jpg", exif=exif.tobytes())
    _shard(tmp_path, {"train": [SourceItem(str(tmp_path / "r.jpg"), 1)]})
    sp = ShardSet.open(tmp_path / "out").split("train")
    assert (sp.widths[0], sp.heights[0]) == (30, 60)


def test_output_exists_needs_overwrite(tmp_path):
    write_jpeg(tmp_path / "a.jpg", 40, 30)
    items = {"train": [SourceItem(str(tmp_path / "a.jpg"), 1)]}
    _shard(tmp_path, items)
    with pytest.raises(UserError, match="--overwrite"):
        _shard(tmp_path, items)
    _shard(tmp_path, items, overwrite=True)


def test_interrupted_run_leaves_no_manifest(tmp_path, monkeypatch):
    import vwwfast.data.shards as S
    write_jpeg(tmp_path / "a.jpg", 40, 30)
    items = [SourceItem(str(tmp_path / "a.jpg"), 1)] * 5
    calls = {"n": 0}
    real = S._encode_star

    def boom(args):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(args)
    monkeypatch.setattr(S, "_encode_star", boom)
    with pytest.raises(KeyboardInterrupt):
        _shard(tmp_path, {"train": items}, samples_per_shard=2)
    assert not (tmp_path / "out").exists()
    with pytest.raises(UserError, match="shard folder not found"):
        ShardSet.open(tmp_path / "out")
    assert not list(tmp_path.rglob("manifest.json"))


def test_incomplete_folder_is_refused(tmp_path):
    (tmp_path / "s").mkdir()
    with pytest.raises(UserError, match="no manifest.json"):
        ShardSet.open(tmp_path / "s")


def test_image_folder_split(image_folder):
    splits, source = folder_splits(image_folder, val_fraction=0.25, seed=1)
    assert len(splits["train"]) + len(splits["val"]) == 12 and len(splits["val"]) == 3
    again, _ = folder_splits(image_folder, val_fraction=0.25, seed=1)
    assert [i.path for i in again["val"]] == [i.path for i in splits["val"]]
    labels = {i.meta["file"].split("/")[0]: i.label for i in splits["train"] + splits["val"]}
    assert labels == {"person": 1, "non_person": 0}


def test_image_folder_needs_both_classes(tmp_path):
    write_jpeg(tmp_path / "f" / "person" / "a.jpg", 20, 20)
    with pytest.raises(UserError, match="non_person"):
        folder_splits(tmp_path / "f")


def test_webdataset_round_trip(tiny_coco, tmp_path):
    import webdataset as wds
    splits, _ = coco_items(tiny_coco, "minival")
    _shard(tmp_path, splits, size=64, samples_per_shard=4)
    sp = ShardSet.open(tmp_path / "out").split("train")
    ds = wds.WebDataset([str(p) for p in sp.tar_paths], shardshuffle=False)
    got = [(s["__key__"], int(s["cls"]), s["jpg"]) for s in ds]
    assert [k for k, _, _ in got] == [f"{i:09d}" for i in range(6)]
    assert [c for _, c, _ in got] == list(sp.labels)
    assert all(b == sp.read_jpeg(i) for i, (_, _, b) in enumerate(got))


def test_dali_reader_round_trip(tiny_coco, tmp_path):
    pytest.importorskip("nvidia.dali")
    from nvidia.dali import fn, pipeline_def
    splits, _ = coco_items(tiny_coco, "minival")
    _shard(tmp_path, splits, size=64, samples_per_shard=4)
    sp = ShardSet.open(tmp_path / "out").split("train")

    @pipeline_def(batch_size=6, num_threads=1, device_id=None)
    def pipe():
        jpg, cls = fn.readers.webdataset(paths=[str(p) for p in sp.tar_paths],
                                         index_paths=[str(p.with_suffix(".idx")) for p in sp.tar_paths],
                                         ext=["jpg", "cls"], random_shuffle=False)
        return fn.decoders.image(jpg, device="cpu"), cls
    p = pipe()
    p.build()
    images, cls = p.run()
    labels = [int(bytes(np.array(cls[i])).decode()) for i in range(6)]
    assert labels == list(sp.labels)
    assert [np.array(images[i]).shape[:2] for i in range(6)] == list(zip(sp.heights, sp.widths))


# ---------------------------------------------------------------------------------------
# Damaged shard sets: refused cheaply at open, found in full by `shard --verify`

@pytest.fixture
def shard_set(tiny_coco, tmp_path):
    splits, _ = coco_items(tiny_coco, "minival")
    _shard(tmp_path, splits, size=64, samples_per_shard=4)
    return tmp_path / "out"


@pytest.mark.parametrize("keep", [0.5, "records"])
def test_truncated_tar_is_refused_at_open(shard_set, keep):
    tar = shard_set / "train-000000.tar"
    data = tar.read_bytes()
    assert len(data) > tarfile.RECORDSIZE
    # half the file, or whole tar records only (cut where a copy by blocks would stop)
    n = len(data) // 2 if keep == 0.5 else len(data) - tarfile.RECORDSIZE
    tar.write_bytes(data[:n])
    with pytest.raises(UserError, match=r"train-000000.tar is truncated \(.* bytes; its samples need at "
                                        r"least .*\); the shard set is damaged.*shard --verify"):
        ShardSet.open(shard_set)


def test_missing_tar_or_damaged_table_is_refused_at_open(shard_set):
    table = shard_set / "val-samples.npy"
    data = bytearray(table.read_bytes())
    data[-3] ^= 1
    table.write_bytes(bytes(data))
    with pytest.raises(UserError, match="val-samples.npy does not match its sha256"):
        ShardSet.open(shard_set)
    data[-3] ^= 1
    table.write_bytes(bytes(data))
    (shard_set / "train-000000.tar").unlink()
    with pytest.raises(UserError, match="train-000000.tar is missing"):
        ShardSet.open(shard_set)


def test_shard_verify_finds_a_flipped_byte(shard_set, capsys):
    rc, err, out = cli(capsys, "shard", "--verify", str(shard_set))
    assert rc == 0 and "OK" in out and "3 tars" in out
    tar = shard_set / "train-000000.tar"
    data = bytearray(tar.read_bytes())
    sp = ShardSet.open(shard_set).split("train")
    data[int(sp.offsets[1]) + 10] ^= 0x01  # inside a JPEG: the size stays right
    tar.write_bytes(bytes(data))
    ShardSet.open(shard_set)  # the cheap check cannot see it
    (shard_set / "val-000000.idx").write_text("v1.2 0\n")
    rc, err, out = cli(capsys, "shard", "--verify", str(shard_set))
    assert rc == 2 and len(err.splitlines()) == 1
    assert "2 damaged file(s): train-000000.tar, val-000000.idx" in err
    assert "sha256 differs" in out and "does not index its tar" in out


def test_shard_verify_refuses_other_settings(shard_set, capsys):
    rc, err, _ = cli(capsys, "shard", "--verify", str(shard_set), "--size", "96")
    assert rc == 2 and "drop --size" in err
