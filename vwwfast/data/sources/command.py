"""`vwwfast shard`: pick the source, write the shards, print the summary."""
from __future__ import annotations

import time
from pathlib import Path

from vwwfast import config as C
from vwwfast.errors import UserError


def shard_command(cfg) -> dict:
    """`vwwfast shard`: pick the source, write the shards, print the summary; with
    --verify DIR, check an existing shard set instead (every file hashed)."""
    from vwwfast.data.shards import print_summary, verify_shards, write_shards
    if cfg.verify:
        given = [f for f in C.given_flags(cfg) if f != "--verify"]
        if given:
            raise UserError(f"--verify checks a shard folder as it is; drop {', '.join(given)}")
        return verify_shards(cfg.verify)
    if bool(cfg.coco_root) == bool(cfg.image_folder):
        raise UserError("give exactly one source: --coco-root DIR or --image-folder DIR")
    if cfg.workers < 1:
        raise UserError(f"--workers must be at least 1, got {cfg.workers}")
    if cfg.coco_root:
        from vwwfast.data.sources.coco import LABEL_RULE, coco_items
        splits, source = coco_items(cfg.coco_root, cfg.split, cfg.limit)
        input_path = Path(cfg.coco_root)
    else:
        from vwwfast.data.sources.folder import LABEL_RULE, folder_splits
        splits, source = folder_splits(cfg.image_folder, cfg.val_fraction, cfg.val_folder,
                                       cfg.seed, cfg.limit)
        input_path = Path(cfg.image_folder)
    out = Path(cfg.out) if cfg.out else Path("shards") / input_path.resolve().name
    start = time.perf_counter()
    manifest = write_shards(out, splits, source=source, size=cfg.size,
                            samples_per_shard=cfg.samples_per_shard, quality=cfg.quality,
                            workers=cfg.workers, overwrite=cfg.overwrite, label_rule=LABEL_RULE)
    print_summary(manifest, out, time.perf_counter() - start)
    for split, e in manifest["splits"].items():
        counts = e["class_counts"]
        if e["num_samples"] and (counts["0"] == 0 or counts["1"] == 0):
            from vwwfast.progress import warn
            warn(f"split '{split}' has only one class; training on it will be refused")
    return manifest
