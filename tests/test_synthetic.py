"""The built-in synthetic set: COCO 2014 layout, VWW-ready ids and labels, determinism."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from vwwfast.errors import UserError
from vwwfast.data.sources import synthetic
from vwwfast.data.sources.synthetic import write_synthetic

THRESHOLD = 0.005  # the VWW rule


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """300 images (200 train + 100 val), written once for the module."""
    root = tmp_path_factory.mktemp("synth")
    summary = write_synthetic(root, train=200, val=100, seed=0, show_progress=False)
    data = {subset: json.loads((root / "annotations" / f"instances_{subset}.json").read_text())
            for subset in ("train2014", "val2014")}
    return root, summary, data


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _person_fractions(data: dict) -> dict[int, float]:
    """image id -> largest person area fraction, as the VWW rule reads it."""
    sizes = {im["id"]: im["height"] * im["width"] for im in data["images"]}
    best = dict.fromkeys(sizes, 0.0)
    for a in data["annotations"]:
        if a["category_id"] == 1:
            best[a["image_id"]] = max(best[a["image_id"]], a["area"] / sizes[a["image_id"]])
    return best


def _minival() -> set[int]:
    text = (Path(synthetic.__file__).parent / "mscoco_minival_ids.txt").read_text()
    return {int(x) for x in text.split()}


def test_same_seed_gives_identical_files_and_another_seed_differs(tmp_path):
    a, b, c = (write_synthetic(tmp_path / n, train=12, val=6, seed=s, show_progress=False, workers=w)
               for n, s, w in (("a", 3, 1), ("b", 3, 2), ("c", 4, 1)))  # workers change nothing
    files_a, files_b, files_c = (_files(tmp_path / n) for n in "abc")
    assert len(files_a) == 12 + 6 + 2
    assert files_a == files_b
    assert files_a.keys() != files_c.keys() or files_a != files_c
    assert a["splits"] == b["splits"]


def test_coco_layout_and_json_structure(dataset):
    root, summary, data = dataset
    for subset, n in (("train2014", 200), ("val2014", 100)):
        d = data[subset]
        assert set(d) >= {"images", "annotations", "categories"}
        assert len(d["images"]) == n == summary["splits"][subset[:-4]]["images"]
        cats = {c["id"]: c["name"] for c in d["categories"]}
        assert (cats[1], cats[3], cats[13], cats[18]) == ("person", "car", "stop sign", "dog")
        assert all(set(c) == {"id", "name", "supercategory"} for c in d["categories"])
        sizes = {}
        for im in d["images"]:
            assert set(im) >= {"id", "file_name", "height", "width"}
            assert re.fullmatch(rf"COCO_{subset}_\d{{12}}\.jpg", im["file_name"])
            assert int(im["file_name"][-16:-4]) == im["id"]
            assert (root / subset / im["file_name"]).is_file()
            sizes[im["id"]] = (im["width"], im["height"])
        assert len(list((root / subset).iterdir())) == n
        ann_ids = [a["id"] for a in d["annotations"]]
        assert len(set(ann_ids)) == len(ann_ids)
        for a in d["annotations"]:
            assert set(a) >= {"id", "image_id", "category_id", "area", "bbox", "iscrowd",
                              "segmentation"}
            assert a["category_id"] in cats and a["iscrowd"] in (0, 1)
            w, h = sizes[a["image_id"]]
            x, y, bw, bh = a["bbox"]
            assert 0 <= x and 0 <= y and x + bw <= w and y + bh <= h
            assert 0 < a["area"] <= bw * bh  # visible pixels inside their own box
    all_ann = [a["id"] for d in data.values() for a in d["annotations"]]
    assert len(set(all_ann)) == len(all_ann)  # unique across both files, as in COCO


def test_ids_follow_the_minival_split(dataset):
    _, _, data = dataset
    minival = _minival()
    val_ids = [im["id"] for im in data["val2014"]["images"]]
    train_ids = [im["id"] for im in data["train2014"]["images"]]
    assert set(val_ids) <= minival and len(set(val_ids)) == 100
    assert not set(train_ids) & minival and len(set(train_ids)) == 200
    assert all(1 <= i <= 581929 for i in train_ids)


def test_the_default_coco_reader_splits_it_back(dataset):
    coco = pytest.importorskip("vwwfast.data.sources.coco")
    root, summary, _ = dataset
    splits, _ = coco.coco_items(root)
    for split in ("train", "val"):
        assert len(splits[split]) == summary["splits"][split]["images"]
        assert sum(item.label for item in splits[split]) == summary["splits"][split]["person"]


def test_distractors_crowds_and_person_share(dataset):
    _, summary, data = dataset
    anns = [a for d in data.values() for a in d["annotations"]]
    supercats = {c["id"]: c["supercategory"] for c in data["val2014"]["categories"]}
    distractors = {a["category_id"] for a in anns} - {1}
    assert len(distractors) >= 3
    assert {supercats[c] for c in distractors} >= {"animal", "vehicle", "outdoor"}
    persons = [a for a in anns if a["category_id"] == 1]
    assert any(a["iscrowd"] == 1 for a in persons)
    assert sum(a["iscrowd"] for a in persons) < 0.2 * len(persons)  # crowds are occasional
    fractions = {k: v for d in data.values() for k, v in _person_fractions(d).items()}
    labels = [f > THRESHOLD for f in fractions.values()]
    assert 0.4 <= np.mean(labels) <= 0.6
    assert sum(labels) == summary["splits"]["train"]["person"] + summary["splits"]["val"]["person"]
    # some images hold only persons too small for the rule: hard negatives
    assert any(0 < f <= THRESHOLD for f in fractions.values())
    per_image = {im["id"]: im["height"] * im["width"] for d in data.values() for im in d["images"]}
    person_fracs = np.array([a["area"] / per_image[a["image_id"]] for a in persons])
    assert (person_fracs < THRESHOLD).sum() >= 10 and (person_fracs > THRESHOLD).sum() >= 10
    assert person_fracs.max() > 0.2  # large close-ups as well as tiny figures


def test_image_sizes_vary(dataset):
    _, _, data = dataset
    sizes = [(im["width"], im["height"]) for d in data.values() for im in d["images"]]
    assert len(set(sizes)) > 100
    assert any(w > h for w, h in sizes) and any(h > w for w, h in sizes)
    assert all(160 <= s <= 400 for wh in sizes for s in wh)


def test_refuses_a_non_empty_folder_unless_overwrite(tmp_path):
    (tmp_path / "old.txt").write_text("x")
    with pytest.raises(UserError) as err:
        write_synthetic(tmp_path, train=2, val=1, show_progress=False)
    assert "\n" not in str(err.value) and str(tmp_path) in str(err.value)
    summary = write_synthetic(tmp_path, train=2, val=1, overwrite=True, show_progress=False)
    assert summary["splits"]["train"]["images"] == 2
    assert len(list((tmp_path / "train2014").iterdir())) == 2
    with pytest.raises(UserError):
        write_synthetic(tmp_path / "new", train=1, val=8060, show_progress=False)


def test_an_interrupted_run_leaves_no_annotation_file(tmp_path, monkeypatch):
    real, calls = synthetic.draw_scene, []

    def failing(rng):
        calls.append(1)
        if len(calls) > 5:
            raise KeyboardInterrupt
        return real(rng)

    monkeypatch.setattr(synthetic, "draw_scene", failing)
    with pytest.raises(KeyboardInterrupt):
        write_synthetic(tmp_path, train=10, val=2, show_progress=False)
    assert not list(tmp_path.rglob("*.json"))


def test_area_counts_visible_pixels_after_occlusion():
    canvas = synthetic.Canvas(np.zeros((120, 100, 3), np.uint8))
    canvas.begin(1)
    canvas.poly([(10, 10), (40, 10), (40, 50), (10, 50)], (200, 150, 120))
    canvas.end()
    full = canvas.annotations()[0][2]
    canvas.poly([(10, 30), (40, 30), (40, 50), (10, 50)], (0, 0, 0))  # unannotated occluder
    (category, iscrowd, area, bbox), = canvas.annotations()
    labels = np.asarray(canvas.labels)
    assert (category, iscrowd) == (1, 0) and area == int((labels == 1).sum()) < full
    assert bbox[1] == 10 and bbox[1] + bbox[3] == 30
