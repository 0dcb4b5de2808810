"""Evaluation: accuracy, recall per class and confusion matrix of a model over a split's
validation view, and `vwwfast eval`.

`vwwfast eval` takes a run folder or short id (its model.pt), a checkpoint, or a file
written by `vwwfast export` (.onnx, .tflite): every kind is scored by the same `evaluate`
on the same view, so a file's accuracy compares with its checkpoint's. With
--predictions it writes one CSV line per sample, with --errors a contact sheet of the
most confident mistakes of each kind.
"""

from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vwwfast import config as C
from vwwfast import distributed as D
from vwwfast.data.split import SplitData, val_params
from vwwfast.deploy.predictors import EXPORTED, load_model
from vwwfast.errors import UserError
from vwwfast.fmt import fmt_metric
from vwwfast.train.evaluate import evaluate

SHEET_COLUMNS = 8  # mistakes shown per kind


# ---------------------------------------------------------------------------------------
# What to evaluate: a run, a checkpoint or an exported file

@dataclass
class ModelRef:
    path: Path           # the file to load
    kind: str            # "checkpoint", "onnx" or "tflite"
    run: object = None   # the runs.Run it belongs to, when named by run


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


def _run_above(path: Path):
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
    want_outputs = bool(cfg.predictions or cfg.errors)
    data = SplitData(shards, cfg.split, cfg, device, size)
    try:
        m = evaluate(loaded.predict, data, cfg.batch_size, cfg.center_crop, outputs=want_outputs)
        if cfg.errors:
            write_error_sheet(Path(cfg.errors), data, m, cfg.center_crop,
                              title=f"{ref.path.name} on {shards.root.name}/{cfg.split}, {size} px")
    finally:
        data.close()
    if cfg.predictions:
        write_predictions(Path(cfg.predictions), data.split, m)
    (tn, fp), (fn, tp) = m["confusion"]
    print_table(f"{ref.path} on {shards.root} ({cfg.split}, {size} px)",
                ["accuracy", "recall no-person", "recall person", "TN", "FP", "FN", "TP", "img/s"],
                [(fmt_metric(m["acc"], 4), fmt_metric(m["recall_0"]), fmt_metric(m["recall_1"]),
                  tn, fp, fn, tp, f"{m['img_per_s']:,.0f}")])
    for name, path in (("predictions", cfg.predictions), ("mistakes", cfg.errors)):
        if path:
            print(f"{name}: {path}")
    result = {k: v for k, v in m.items() if not isinstance(v, np.ndarray)}
    result.update(model=str(ref.path), shards=str(shards.root), split=cfg.split, input_size=size,
                  center_crop=cfg.center_crop)
    if cfg.json:
        _write_text(Path(cfg.json), json.dumps(result, indent=1) + "\n")
    return result


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
                    try:
                        out[member.name[:-5]] = json.loads(f.read())
                    except ValueError:
                        out[member.name[:-5]] = {}
    return out


def write_predictions(path: Path, split, m: dict) -> None:
    """One line per sample in key order: key, source id, file, label, prob person, prediction
    (records/predictions.py reads and writes the format)."""
    from vwwfast.records.predictions import write_predictions as write
    write(path, m["indices"], m["labels"], m["prob_person"], m["preds"], meta=sample_meta(split))


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
