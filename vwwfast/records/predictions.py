"""Per-sample predictions: the one reader and writer of the CSV that `vwwfast eval
--predictions` writes and every run keeps as RUN/predictions.csv (its val predictions at the
checkpoint in model.pt).

    key,source_id,file,label,prob_person,prediction
    000000000,391895,COCO_val2014_000000391895.jpg,1,0.912345,1

One line per sample in key order; key = the sample's key in the shards (its zero-padded
index in the split), label 0 / 1, prob_person the softmax probability of class 1, prediction
the argmax. source_id and file name the image where the writer knew them (eval reads them
from the shards), else they are empty. Two runs' files are compared image by image
(records/compare.py).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from vwwfast.errors import UserError

FILE = "predictions.csv"
COLUMNS = ("key", "source_id", "file", "label", "prob_person", "prediction")
REQUIRED = ("key", "label", "prob_person", "prediction")


def sample_key(i: int) -> str:
    """The shards' key of sample i of a split: its index, zero-padded."""
    from vwwfast.data.shards import KEY_DIGITS
    return f"{int(i):0{KEY_DIGITS}d}"


@dataclass
class Predictions:
    keys: np.ndarray          # str, one per sample, in file order
    labels: np.ndarray        # int64 0 / 1
    prob_person: np.ndarray   # float64
    preds: np.ndarray         # int64 0 / 1
    names: np.ndarray         # str 'source_id/file' per sample, '' where the file does not say
    path: Optional[Path] = None

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def right(self) -> np.ndarray:
        return self.labels == self.preds

    @property
    def acc(self) -> Optional[float]:
        return float(np.mean(self.right)) if len(self) else None

    def confusion(self) -> list[list[int]]:
        """[[TN, FP], [FN, TP]], as the trainer records it."""
        cm = np.zeros((2, 2), np.int64)
        np.add.at(cm, (self.labels, self.preds), 1)
        return cm.tolist()


def predictions_text(indices, labels, prob_person, preds, meta: Optional[dict] = None,
                     columns: Optional[dict] = None) -> str:
    """The CSV text for per-sample outputs in any order (written in index order). meta: key
    -> the sample's `<key>.json` (source_id, file), when the writer has it; columns: name ->
    a per-sample integer array of the split (Wake Vision's CSV columns), appended after the
    fixed ones."""
    indices = np.asarray(indices)
    order = np.argsort(indices, kind="stable")
    meta, columns = meta or {}, columns or {}
    names = list(columns)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(list(COLUMNS) + names)
    for j in order:
        key = sample_key(indices[j])
        info = meta.get(key, {})
        w.writerow([key, info.get("source_id", ""), info.get("file", ""), int(labels[j]),
                    f"{float(prob_person[j]):.6f}", int(preds[j])]
                   + [int(columns[c][indices[j]]) for c in names])
    return buf.getvalue()


def write_predictions(path, indices, labels, prob_person, preds, meta: Optional[dict] = None,
                      columns: Optional[dict] = None) -> Path:
    """Write the CSV atomically (a reader never sees half a file)."""
    from vwwfast.files import write_atomic
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, predictions_text(indices, labels, prob_person, preds, meta, columns).encode())
    return path


def read_predictions(path) -> Predictions:
    """A predictions CSV; a file that is not one is refused in one line."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read predictions ({type(e).__name__}); remake them with "
                        f"`vwwfast eval RUN --predictions {path}`") from None
    rows = csv.reader(io.StringIO(text))
    header = next(rows, None) or []
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise UserError(f"{path}: not a predictions file (no column {', '.join(missing)}); "
                        f"`vwwfast eval RUN --predictions FILE.csv` writes one")
    col = {name: header.index(name) for name in COLUMNS if name in header}
    keys, labels, probs, preds, names = [], [], [], [], []
    for line, row in enumerate(rows, start=2):
        if not row:
            continue
        try:
            keys.append(row[col["key"]])
            label, pred = int(row[col["label"]]), int(row[col["prediction"]])
            prob = float(row[col["prob_person"]])
        except (IndexError, ValueError):
            raise UserError(f"{path}: line {line} is not key,...,label,prob_person,prediction; the "
                            f"file is damaged: remake it with `vwwfast eval RUN --predictions "
                            f"{path}`") from None
        if label not in (0, 1) or pred not in (0, 1):
            raise UserError(f"{path}: line {line}: label and prediction must be 0 or 1, got "
                            f"{label} and {pred}")
        labels.append(label)
        preds.append(pred)
        probs.append(prob)
        ident = [row[col[c]] if c in col and col[c] < len(row) else "" for c in ("source_id", "file")]
        names.append("/".join(ident) if any(ident) else "")
    keys_arr = np.asarray(keys, dtype=str)
    if len(np.unique(keys_arr)) != len(keys_arr):
        raise UserError(f"{path}: a key appears twice; one line per sample expected")
    return Predictions(keys_arr, np.asarray(labels, np.int64), np.asarray(probs, np.float64),
                       np.asarray(preds, np.int64), np.asarray(names, dtype=str), path)
