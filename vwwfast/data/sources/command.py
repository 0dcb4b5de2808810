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
    if sum(bool(x) for x in (cfg.coco_root, cfg.image_folder, cfg.wake_vision)) != 1:
        raise UserError("give exactly one source: --coco-root DIR, --image-folder DIR or "
                        "--wake-vision DIR")
    if cfg.workers < 1:
        raise UserError(f"--workers must be at least 1, got {cfg.workers}")
    own = {"coco_root": ("split",), "image_folder": ("val_fraction", "val_folder", "seed"),
           "wake_vision": ("wake_vision_train", "allow_damaged")}
    source_flag = next(k for k in own if getattr(cfg, k))
    foreign = C.given_flags(cfg, [n for k, names in own.items() if k != source_flag for n in names])
    if cfg.wake_vision and cfg.limit is not None:
        foreign.append("--limit")  # archives are read whole: a quick try takes fewer archives
    if foreign:
        raise UserError(f"{', '.join(foreign)} {'is' if len(foreign) == 1 else 'are'} not for "
                        f"--{source_flag.replace('_', '-')}; drop "
                        f"{'it' if len(foreign) == 1 else 'them'}"
                        + (" (for a quick try, put fewer train archives in the folder)"
                           if "--limit" in foreign else ""))
    if cfg.wake_vision:
        return _wake_vision(cfg)
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
    _warn_one_class(manifest)
    return manifest


def _wake_vision(cfg) -> dict:
    from vwwfast.data.shards import print_summary
    from vwwfast.data.sources.wake_vision import write_wake_vision
    root = Path(cfg.wake_vision)
    out = Path(cfg.out) if cfg.out else Path("shards") / f"wake-vision-{cfg.wake_vision_train}"
    start = time.perf_counter()
    manifest = write_wake_vision(root, out, train=cfg.wake_vision_train, size=cfg.size,
                                 samples_per_shard=cfg.samples_per_shard, quality=cfg.quality,
                                 workers=cfg.workers, overwrite=cfg.overwrite,
                                 allow_damaged=cfg.allow_damaged)
    print_summary(manifest, out, time.perf_counter() - start)
    _warn_one_class(manifest)
    return manifest


def _warn_one_class(manifest: dict) -> None:
    from vwwfast.progress import warn
    for split, e in manifest["splits"].items():
        counts = e["class_counts"]
        if e["num_samples"] and (counts["0"] == 0 or counts["1"] == 0):
            warn(f"split '{split}' has only one class; training on it will be refused")
        elif not e["num_samples"]:
            warn(f"split '{split}' is empty")
