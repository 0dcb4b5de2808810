"""COCO 2014 with the official Visual Wake Words label rule and splits."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from vwwfast.data.shards import SourceItem
from vwwfast.errors import UserError

PERSON_CATEGORY = 1
AREA_THRESHOLD = 0.005
LABEL_RULE = ("person (1) when the image has a 'person' annotation (crowd included) whose COCO "
              f"segmentation area / (height x width) > {AREA_THRESHOLD}; otherwise no person (0)")
SUBSETS = ("train2014", "val2014")


def minival_ids() -> set[int]:
    text = resources.files("vwwfast.data.sources").joinpath("mscoco_minival_ids.txt").read_text()
    return {int(x) for x in text.split()}


def person_fractions(annotations: dict) -> dict[int, float]:
    """image id -> largest person area fraction (0.0 when it has no person annotation)."""
    sizes = {im["id"]: im["height"] * im["width"] for im in annotations["images"]}
    best = dict.fromkeys(sizes, 0.0)
    for ann in annotations["annotations"]:
        if ann["category_id"] == PERSON_CATEGORY and ann["image_id"] in sizes:
            frac = ann["area"] / sizes[ann["image_id"]]
            best[ann["image_id"]] = max(best[ann["image_id"]], frac)
    return best


def vww_label(fraction: float) -> int:
    return int(fraction > AREA_THRESHOLD)


def _load_annotations(root: Path, subset: str) -> dict:
    path = root / "annotations" / f"instances_{subset}.json"
    if not path.is_file():
        raise UserError(f"annotation file not found: {path}")
    try:
        data = json.loads(path.read_text())
        for key in ("images", "annotations"):
            if not isinstance(data[key], list):
                raise KeyError(key)
        for im in data["images"]:
            im["id"], im["file_name"], im["height"], im["width"]  # noqa: B018 (shape check)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: malformed JSON ({e.msg} at line {e.lineno})") from None
    except (KeyError, TypeError) as e:
        raise UserError(f"{path}: not a COCO instances file (missing {e})") from None
    return data


def coco_items(root, split: str = "minival", limit: int | None = None):
    """-> ({"train": [...], "val": [...]}, source description)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"COCO root not found: {root}")
    if split not in ("minival", "coco"):
        raise UserError(f"--split must be 'minival' or 'coco', got '{split}'")
    minival = minival_ids()
    splits: dict[str, list[SourceItem]] = {"train": [], "val": []}
    for subset in SUBSETS:
        data = _load_annotations(root, subset)
        fractions = person_fractions(data)
        for im in sorted(data["images"], key=lambda im: im["id"]):
            frac = fractions[im["id"]]
            if split == "minival":
                target = "val" if im["id"] in minival else "train"
            else:
                target = "train" if subset == "train2014" else "val"
            meta = {"source_id": im["id"], "file": f"{subset}/{im['file_name']}",
                    "person_area_fraction": round(frac, 6)}
            item = SourceItem(str(root / subset / im["file_name"]), vww_label(frac), meta)
            splits[target].append(item)
    if limit is not None:
        splits = {k: v[:limit] for k, v in splits.items()}
    source = {"kind": "coco2014", "root": str(root), "split": split, "limit": limit}
    return splits, source
