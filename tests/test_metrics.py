"""Confusion matrix [[TN, FP], [FN, TP]] (class 1 = person) and its summary, by hand."""

from __future__ import annotations

import pytest
import torch

from vwwfast.train.metrics import confusion_matrix, summarize


def test_confusion_matrix_by_hand():
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 1, 0])
    preds = torch.tensor([0, 1, 0, 1, 0, 1, 1, 0])
    # label 0: preds 0,1,0,0 -> TN 3, FP 1; label 1: preds 1,0,1,1 -> FN 1, TP 3
    cm = confusion_matrix(preds, labels)
    assert cm.dtype == torch.long
    assert cm.tolist() == [[3, 1], [1, 3]]


def test_confusion_matrix_accumulates_and_keeps_device():
    cm = torch.zeros(2, 2, dtype=torch.long)
    cm += confusion_matrix(torch.tensor([1, 1]), torch.tensor([0, 1]))   # FP, TP
    cm += confusion_matrix(torch.tensor([0]), torch.tensor([1]))         # FN
    assert cm.tolist() == [[0, 1], [1, 1]]
    assert confusion_matrix(torch.tensor([0]), torch.tensor([0])).device == torch.tensor(0).device


def test_confusion_matrix_from_logits_argmax():
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.5]])
    cm = confusion_matrix(logits.argmax(1), torch.tensor([1, 1, 0]))
    assert cm.tolist() == [[1, 0], [1, 1]]


def test_confusion_matrix_length_mismatch():
    with pytest.raises(ValueError):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0]))


def test_summarize_by_hand():
    s = summarize(torch.tensor([[50, 10], [5, 35]]))
    assert s["n"] == 100
    assert s["acc"] == pytest.approx(0.85)          # (50 + 35) / 100
    assert s["recall_0"] == pytest.approx(50 / 60)  # TN / (TN + FP)
    assert s["recall_1"] == pytest.approx(35 / 40)  # TP / (FN + TP)
    assert s["confusion"] == [[50, 10], [5, 35]]
    assert all(type(v) is int for row in s["confusion"] for v in row)


def test_summarize_absent_class():
    s = summarize([[0, 0], [2, 6]])  # no no-person images
    assert s["recall_0"] is None
    assert s["recall_1"] == pytest.approx(0.75)
    assert s["acc"] == pytest.approx(0.75)
    empty = summarize(torch.zeros(2, 2, dtype=torch.long))
    assert empty == {"acc": None, "recall_0": None, "recall_1": None,
                     "confusion": [[0, 0], [0, 0]], "n": 0}


def test_confusion_matrix_matches_counting():
    g = torch.Generator().manual_seed(0)
    preds, labels = torch.randint(0, 2, (500,), generator=g), torch.randint(0, 2, (500,), generator=g)
    counted = [[0, 0], [0, 0]]
    for p, y in zip(preds.tolist(), labels.tolist()):
        counted[y][p] += 1
    assert confusion_matrix(preds, labels).tolist() == counted
