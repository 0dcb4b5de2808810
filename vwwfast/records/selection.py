"""A run's per-epoch predictions on its selection split (`--holdout`): selection.jsonl.

The split a run chooses its checkpoint on is kept whole, compactly, so a choice can be
replayed later without training (which epoch was best, where early stopping would have
stopped, what a search would have cut):

    {"split": "holdout", "indices": [...], "labels": "0110..."}     the first line
    {"epoch": 1, "preds": "0100..."}                                 one line per epoch

labels and preds are one character per sample, in the order of `indices` (sample indices
of the train split). A resume drops the lines of epochs it trains again (`truncate`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vwwfast.files import write_atomic

FILE = "selection.jsonl"


@dataclass
class Selection:
    """What selection.jsonl holds: the split's name, its sample indices and labels [N], and
    the predictions of every epoch logged [epochs, N] (row k: epoch epochs[k])."""
    split: str
    indices: np.ndarray
    labels: np.ndarray
    epochs: list[int]
    preds: np.ndarray

    def accuracy(self) -> np.ndarray:
        """float [epochs]: each epoch's accuracy on the split."""
        return (self.preds == self.labels[None, :]).mean(axis=1)


def _digits(values) -> str:
    return "".join(str(int(v)) for v in values)


def append_epoch(run_dir: Path, split: str, epoch: int, indices, labels, preds) -> None:
    """Add epoch `epoch`'s predictions (the split's header first, when the file is new)."""
    path = Path(run_dir) / FILE
    order = np.argsort(np.asarray(indices), kind="stable")  # gathered from ranks: sort
    lines = []
    if not path.exists():
        lines.append(json.dumps({"split": split, "indices": np.asarray(indices)[order].tolist(),
                                 "labels": _digits(np.asarray(labels)[order])}))
    lines.append(json.dumps({"epoch": epoch, "preds": _digits(np.asarray(preds)[order])}))
    with open(path, "a") as f:
        f.write("".join(line + "\n" for line in lines))


def read(run_dir: Path) -> Selection | None:
    """The run's selection predictions; None when it kept none (no --holdout)."""
    path = Path(run_dir) / FILE
    if not path.exists():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    head, epochs = rows[0], rows[1:]
    n = len(head["indices"])
    preds = np.array([[int(c) for c in r["preds"]] for r in epochs], np.int64).reshape(len(epochs), n)
    return Selection(head["split"], np.asarray(head["indices"], np.int64),
                     np.array([int(c) for c in head["labels"]], np.int64),
                     [int(r["epoch"]) for r in epochs], preds)


def truncate(run_dir: Path, last_epoch: int) -> None:
    """Keep the header and epochs 1..last_epoch (a resume trains the later ones again)."""
    path = Path(run_dir) / FILE
    if not path.exists():
        return
    lines = path.read_text().splitlines()
    keep = [line for line in lines[1:] if json.loads(line)["epoch"] <= last_epoch]
    write_atomic(path, "".join(line + "\n" for line in lines[:1] + keep))
