"""An image folder with person/ and non_person/ subfolders (the MLPerf Tiny vw_coco2014_96 layout)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vwwfast.data.shards import SourceItem
from vwwfast.errors import UserError

CLASS_FOLDERS = (("non_person", 0), ("person", 1))
LABEL_RULE = "folder name: person/ -> 1, non_person/ -> 0"


def folder_items(root: Path) -> list[SourceItem]:
    """Every non-hidden file under person/ and non_person/, sorted by relative path."""
    items = []
    for name, label in CLASS_FOLDERS:
        sub = root / name
        if not sub.is_dir():
            raise UserError(f"{root} needs both person/ and non_person/ subfolders ({name}/ is missing)")
        files = sorted(p for p in sub.rglob("*") if p.is_file() and not p.name.startswith("."))
        if not files:
            raise UserError(f"{sub} holds no files: both classes need images")
        for p in files:
            rel = p.relative_to(root).as_posix()
            items.append(SourceItem(str(p), label, {"file": rel}))
    return items


def folder_splits(root, val_fraction: float = 0.1, val_folder=None, seed: int = 0,
                  limit: int | None = None):
    """-> ({"train": [...], "val": [...]}, source description)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"image folder not found: {root}")
    items = folder_items(root)
    if val_folder is not None:
        val_root = Path(val_folder)
        if not val_root.is_dir():
            raise UserError(f"val folder not found: {val_root}")
        train, val = items, folder_items(val_root)
    else:
        if not 0.0 < val_fraction < 1.0:
            raise UserError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
        rng = np.random.default_rng(seed)
        is_val = np.zeros(len(items), bool)
        is_val[rng.permutation(len(items))[: max(1, round(val_fraction * len(items)))]] = True
        train = [it for it, v in zip(items, is_val) if not v]
        val = [it for it, v in zip(items, is_val) if v]
    if limit is not None:
        train, val = train[:limit], val[:limit]
    source = {"kind": "image_folder", "root": str(root), "val_folder": val_folder,
              "val_fraction": None if val_folder else val_fraction, "seed": seed, "limit": limit}
    return {"train": train, "val": val}, source
