"""Shared fixtures: tiny hand-made COCO trees and image folders, written to tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


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
def synth_shards(tmp_path_factory):
    """A tiny synthetic set through the real COCO path: 96 train / 48 val images at 64 px."""
    from vwwfast.data.shards import write_shards
    from vwwfast.data.sources.coco import LABEL_RULE, coco_items
    from vwwfast.data.sources.synthetic import write_synthetic
    root = tmp_path_factory.mktemp("synth")
    write_synthetic(root / "coco", train=96, val=48, seed=0, show_progress=False)
    splits, source = coco_items(root / "coco", "minival")
    write_shards(root / "shards", splits, source=source, size=64, samples_per_shard=40,
                 label_rule=LABEL_RULE, show_progress=False)
    return root / "shards"


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


@pytest.fixture(scope="session")
def small_store(synth_shards, small_teacher, tmp_path_factory):
    """small_teacher's cache: 2 augmented views."""
    from vwwfast import config as C
    from vwwfast.teach.build import cache_teacher
    out = tmp_path_factory.mktemp("small_store") / "t.zarr"
    return str(cache_teacher(C.resolve(C.CacheTeacherConfig, dict(
        shards=str(synth_shards), teacher=small_teacher, views=2, out=str(out), batch_size=32,
        renderer="decoded", decoded_size=48))))
