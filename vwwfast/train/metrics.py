"""Binary confusion matrix and its summary. Class 1 (person) is the positive class."""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch


def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[[TN, FP], [FN, TP]] as a LongTensor on the inputs' device.

    Counts 2 * label + pred with scatter_add_, not torch.bincount: on CUDA bincount reads
    the max back to the host even with minlength (seen with set_sync_debug_mode on an H200),
    and the batch loop must never wait on the host. The caller sums matrices across batches
    (and ranks) and summarises once at the end.
    """
    preds = preds.reshape(-1).long()
    labels = labels.reshape(-1).long().to(preds.device)
    if preds.shape != labels.shape:
        raise ValueError(f"confusion_matrix: {preds.numel()} predictions for {labels.numel()} labels")
    cell = 2 * labels + preds
    counts = torch.zeros(4, dtype=torch.long, device=cell.device)
    return counts.scatter_add_(0, cell, torch.ones_like(cell)).reshape(2, 2)


def _ratio(num: int, den: int) -> Optional[float]:
    return num / den if den else None


def summarize(cm: Union[torch.Tensor, Sequence[Sequence[int]]]) -> dict:
    """{"acc", "recall_0", "recall_1", "confusion", "n"}; a metric with no samples is None."""
    rows = cm.tolist() if isinstance(cm, torch.Tensor) else cm
    (tn, fp), (fn, tp) = [[int(v) for v in row] for row in rows]
    n = tn + fp + fn + tp
    return {"acc": _ratio(tn + tp, n),
            "recall_0": _ratio(tn, tn + fp),   # no-person images called no-person
            "recall_1": _ratio(tp, fn + tp),   # person images called person
            "confusion": [[tn, fp], [fn, tp]],
            "n": n}
