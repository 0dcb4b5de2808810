"""Evaluation: accuracy, recall per class and confusion matrix of a model over a split's
validation view, and `vwwfast eval`.

`vwwfast eval` takes a run folder or short id (its model.pt), a checkpoint, or a file
written by `vwwfast export` (.onnx, .tflite): every kind is scored by the same `evaluate`
on the same view, so a file's accuracy compares with its checkpoint's. With
--predictions it writes one CSV line per sample, with --errors a contact sheet of the
most confident mistakes of each kind.

Wake Vision: the figures are those of the main set (the test split's distance-only rows are
left out of them); --benchmark adds the 16 subsets (n and accuracy each) and the main set's
precision, recall and F1 (vwwfast.data.sources.wake_vision says what each subset holds).
"""

from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from vwwfast import config as C
from vwwfast import distributed as D
from vwwfast.data.shards import view_defaults
from vwwfast.data.sources.wake_vision import (
    DISTANCE_ONLY,
    SUBSETS,
    main_mask,
    subset_masks,
)
from vwwfast.data.split import SplitData, val_params
from vwwfast.deploy.predictors import EXPORTED, load_model
from vwwfast.errors import UserError
from vwwfast.fmt import fmt_metric
from vwwfast.train.evaluate import evaluate
from vwwfast.train.metrics import confusion_matrix, summarize

if TYPE_CHECKING:
    from vwwfast.records.runs import Run

SHEET_COLUMNS = 8  # mistakes shown per kind


# ---------------------------------------------------------------------------------------
# What to evaluate: a run, a checkpoint or an exported file

@dataclass
class ModelRef:
    path: Path           # the file to load
    kind: str            # "checkpoint", "onnx" or "tflite"
    run: Run | None = None  # the runs.Run it belongs to, when named by run


def resolve_model_ref(ref: str, runs_dir) -> ModelRef:
    """A run folder or short id (-> its model.pt), a checkpoint, or an exported file."""
    from vwwfast.records.runs import resolve_run
    p = Path(ref)
    if p.suffix.lower() in EXPORTED:
        if not p.is_file():
            raise UserError(f"model file not found: {p}")
        return ModelRef(p, EXPORTED[p.suffix.lower()], _run_above(p))
    if p.is_file():
        return ModelRef(p, "checkpoint", _run_above(p))
    if p.suffix.lower() in (".pt", ".pth"):
        raise UserError(f"checkpoint not found: {p}")
    run = resolve_run(ref, runs_dir)
    model = run.path / "model.pt"
    if not model.is_file():
        raise UserError(f"run {run.path} has no model.pt (it saved no checkpoint yet); wait for "
                        f"its first epoch or pass a checkpoint")
    return ModelRef(model, "checkpoint", run)


def _run_above(path: Path) -> Run | None:
    """The run a file sits in: RUN/model.pt or RUN/export/model.onnx."""
    from vwwfast.records.runs import Run
    for folder in (path.resolve().parent, path.resolve().parent.parent):
        if (folder / "config.yaml").is_file() and (folder / "summary.json").is_file():
            return Run(folder)
    return None


def open_shards(path, *, given: bool, what: str):
    """The shard set to score on: the one given, else the one the model was trained on."""
    from vwwfast.data.shards import ShardSet
    if not path:
        raise UserError(f"no shards to evaluate on: {what} does not record its shards; pass --shards")
    if not given and not Path(path).is_dir():
        raise UserError(f"the shards {what} was trained on ({path}) are not there; pass --shards")
    return ShardSet.open(path)


# ---------------------------------------------------------------------------------------
# The command

def evaluate_command(cfg: C.EvalConfig) -> dict:
    from vwwfast.devices import resolve_device
    from vwwfast.progress import print_table, warn
    C.require(cfg, "checkpoint")
    if D.active() and (cfg.predictions or cfg.errors):
        raise UserError("--predictions / --errors need every sample in one process: run eval "
                        "without torchrun")
    ref = resolve_model_ref(cfg.checkpoint, cfg.runs_dir)
    device = resolve_device(cfg.device)
    loaded = load_model(ref.path, device)
    run_shards = ref.run.config.get("shards") if ref.run else None
    shards_path = cfg.shards or loaded.shards or run_shards
    shards = open_shards(shards_path, given=bool(cfg.shards), what=str(ref.path))
    size = cfg.input_size or loaded.input_size
    if loaded.fixed_size and size != loaded.input_size:
        raise UserError(f"{ref.path} runs at {loaded.input_size} px only; --input-size works with "
                        f"a checkpoint (model.pt)")
    stored = (shards.manifest.get("options") or {}).get("size")
    if stored and size > stored:
        warn(f"evaluating at {size} px, larger than the stored images (short side at most "
             f"{stored} px): the model sees upscaled images")
    center_crop = cfg.center_crop
    if center_crop is None:  # the shard set's choice: the crop its labels were made on
        center_crop = view_defaults(shards.manifest)["val_center_crop"]
    shards.split(cfg.split)  # an unknown split is refused here, in one line
    columns = shards.columns(cfg.split)
    main = main_mask(columns) if columns and DISTANCE_ONLY in columns else None
    left_out = int((~main).sum()) if main is not None else 0
    if cfg.benchmark and (columns is None or any(c not in columns for c in SUBSETS + (DISTANCE_ONLY,))):
        raise UserError(f"--benchmark needs the Wake Vision benchmark columns, which split "
                        f"'{cfg.split}' of {shards.root} does not have (shards made by `vwwfast "
                        f"shard --wake-vision DIR` have them); drop --benchmark")
    want_outputs = bool(cfg.predictions or cfg.errors or cfg.benchmark or left_out)
    if D.active() and (cfg.benchmark or left_out):
        raise UserError("--benchmark and a split with distance-only samples need every sample in "
                        "one process: run eval without torchrun")
    data = SplitData(shards, cfg.split, cfg, device, size)
    try:
        m = evaluate(loaded.predict, data, cfg.batch_size, center_crop, outputs=want_outputs)
        if cfg.errors:
            write_error_sheet(Path(cfg.errors), data, m, center_crop,
                              title=f"{ref.path.name} on {shards.root.name}/{cfg.split}, {size} px")
    finally:
        data.close()
    if cfg.predictions:
        write_predictions(Path(cfg.predictions), data.split, m, columns)
    if left_out:  # the main set's figures: the distance-only samples are the far subset's alone
        assert main is not None, "left_out counts the rows main_mask leaves out"
        keep = main[m["indices"]]
        m.update(summarize(confusion_matrix(torch.from_numpy(m["preds"][keep]),
                                            torch.from_numpy(m["labels"][keep]))))
    (tn, fp), (fn, tp) = m["confusion"]
    heads = ["accuracy", "recall no-person", "recall person", "TN", "FP", "FN", "TP", "img/s"]
    row = [fmt_metric(m["acc"], 4), fmt_metric(m["recall_0"]), fmt_metric(m["recall_1"]),
           tn, fp, fn, tp, f"{m['img_per_s']:,.0f}"]
    if cfg.benchmark:
        m.update(precision_recall_f1(m["confusion"]))
        heads[3:3] = ["precision", "F1"]
        row[3:3] = [fmt_metric(m["precision"]), fmt_metric(m["f1"])]
    note = f", main set: {m['n']:,} samples, {left_out:,} distance-only left out" if left_out else ""
    print_table(f"{ref.path} on {shards.root} ({cfg.split}, {size} px"
                f"{', centre crop' if center_crop else ''}{note})", heads, [row])
    subsets = benchmark_subsets(columns, data.split.labels, m) if cfg.benchmark else None
    if subsets:
        print_table(f"benchmark subsets ({cfg.split})", ["subset", "n", "accuracy"],
                    [(k, f"{v['n']:,}", fmt_metric(v["acc"], 4)) for k, v in subsets.items()])
    for name, path in (("predictions", cfg.predictions), ("mistakes", cfg.errors)):
        if path:
            print(f"{name}: {path}")
    result = {k: v for k, v in m.items() if not isinstance(v, np.ndarray)}
    result.update(model=str(ref.path), shards=str(shards.root), split=cfg.split, input_size=size,
                  center_crop=center_crop, distance_only_left_out=left_out)
    if subsets is not None:
        result["subsets"] = subsets
    if cfg.json:
        _write_text(Path(cfg.json), json.dumps(result, indent=1) + "\n")
    return result


def precision_recall_f1(confusion) -> dict:
    """Of the person class (positive), from [[TN, FP], [FN, TP]]; None where undefined."""
    (_, fp), (fn, tp) = confusion
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = (2 * precision * recall / (precision + recall)
          if precision is not None and recall is not None and precision + recall else None)
    return {"precision": precision, "recall": recall, "f1": f1}


def benchmark_subsets(columns: dict, labels, m: dict) -> dict:
    """{subset: {"n", "acc"}} over the samples evaluated (m's indices, preds)."""
    masks = subset_masks(columns, labels)
    idx = m["indices"]
    right = m["preds"] == np.asarray(labels)[idx]
    out = {}
    for name, mask in masks.items():
        hit = mask[idx]
        n = int(hit.sum())
        out[name] = {"n": n, "acc": float(right[hit].mean()) if n else None}
    return out


# ---------------------------------------------------------------------------------------
# Per-sample outputs

def sample_meta(split) -> dict[str, dict]:
    """key -> the sample's `<key>.json` member (source id, file name, ...), read from the
    tars as bytes (never extracted)."""
    out = {}
    for tar_path in split.tar_paths:
        with tarfile.open(tar_path, "r:") as tar:
            for member in tar:
                if member.isfile() and member.name.endswith(".json"):
                    f = tar.extractfile(member)
                    assert f is not None, "extractfile gives a regular file's stream"
                    try:
                        out[member.name[:-5]] = json.loads(f.read())
                    except ValueError:
                        out[member.name[:-5]] = {}
    return out


def write_predictions(path: Path, split, m: dict, columns: dict | None = None) -> None:
    """One line per sample in key order: key, source id, file, label, prob person, prediction,
    then the split's per-sample columns when it has them (Wake Vision: every CSV column and
    distance_only); records/predictions.py reads and writes the format."""
    from vwwfast.records.predictions import write_predictions as write
    write(path, m["indices"], m["labels"], m["prob_person"], m["preds"], meta=sample_meta(split),
          columns=columns)


def confident_mistakes(m: dict, k: int = SHEET_COLUMNS) -> tuple[np.ndarray, np.ndarray]:
    """Positions (into m's arrays) of the k most confident false persons (no-person images
    with the highest prob of person) and missed persons (person images with the lowest)."""
    labels, preds, prob = m["labels"], m["preds"], m["prob_person"]
    fp = np.flatnonzero((labels == 0) & (preds == 1))
    fn = np.flatnonzero((labels == 1) & (preds == 0))
    return fp[np.argsort(-prob[fp], kind="stable")][:k], fn[np.argsort(prob[fn], kind="stable")][:k]


def write_error_sheet(path: Path, data: SplitData, m: dict, center_crop: bool, title: str) -> None:
    """Two rows (false person, missed person), the mistakes as the model saw them."""
    from vwwfast.records.sheets import grid_image, to_uint8, write_png
    rows = confident_mistakes(m)
    size = data.size
    tile = max(size, 96)
    tiles = np.full((2, SHEET_COLUMNS, tile, tile, 3), 235, np.uint8)
    captions = [[""] * SHEET_COLUMNS for _ in range(2)]
    params = val_params(data.split, center_crop)
    for r, pos in enumerate(rows):
        if not len(pos):
            captions[r][0] = "none"
            continue
        idx = m["indices"][pos]
        x, _ = data.renderer.render(idx, params[idx], size)
        if tile != size:
            x = torch.nn.functional.interpolate(x.float(), size=(tile, tile), mode="nearest")
        tiles[r, :len(pos)] = to_uint8(x)
        for c, j in enumerate(pos):
            captions[r][c] = f"p {m['prob_person'][j]:.2f} #{int(m['indices'][j])}"
    n_fp = int(m["confusion"][0][1])
    n_fn = int(m["confusion"][1][0])
    labels = [f"false\nperson\n{n_fp} in all", f"missed\nperson\n{n_fn} in all"]
    img = grid_image(tiles, title=f"most confident mistakes, {title}: no-person images called "
                                  f"person (top), person images missed (bottom); p = prob of "
                                  f"person, #sample index",
                     col_labels=[str(c + 1) for c in range(SHEET_COLUMNS)], row_labels=labels,
                     captions=captions)
    write_png(img, path)


def _write_text(path: Path, text: str) -> None:
    from vwwfast.files import write_atomic
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text.encode())
