"""Evaluation as training does it: accuracy, recall per class and the confusion matrix of
one model or several over a split's validation view, and BatchNorm statistics settled before
it. `vwwfast eval` (deploy/evaluate.py) scores any model file through the same `evaluate`."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch

from vwwfast import distributed as D
from vwwfast.data.epochs import rank_slice
from vwwfast.data.mixing import unmixed
from vwwfast.data.split import SplitData, val_params
from vwwfast.devices import autocast
from vwwfast.train.metrics import confusion_matrix, summarize

Predict = Callable[[torch.Tensor], torch.Tensor]  # normalised NCHW batch -> logits [B, 2]


def model_predictor(model: torch.nn.Module) -> Predict:
    """A torch model as a predictor: eval mode, channels_last, bf16 autocast on CUDA."""
    model.eval()

    def predict(x):
        with autocast(x.device):
            return model(x.contiguous(memory_format=torch.channels_last)).float()
    return predict


def val_batches(data: SplitData, batch_size: int, center_crop: bool = False,
                indices: np.ndarray | None = None):
    """(x, y, idx) of this rank's part of the split (or of its samples `indices`, sorted),
    every sample once, in index order, on the validation view: the batches evaluation scores
    (the last one may be short)."""
    return data.batches(val_order(data, indices), val_params(data.split, center_crop), batch_size)


def val_order(data: SplitData, indices: np.ndarray | None = None) -> np.ndarray:
    """This rank's samples of an evaluated split (every one, or `indices`), in the order
    `val_batches` yields them."""
    every = np.arange(len(data)) if indices is None else np.asarray(indices, np.int64)
    return rank_slice(every, D.rank(), D.world_size())


@torch.no_grad()
def evaluate(model, data: SplitData, batch_size: int, center_crop: bool = False,
             outputs: bool = False, indices: np.ndarray | None = None) -> dict:
    """Every sample of this rank's part once, on the validation view. `model` is a torch
    module or a predictor. Metrics are summed across ranks. With outputs=True the result
    also holds this rank's "indices", "labels", "preds" and "prob_person" (numpy, in
    evaluation order). indices: only these samples of the split (a holdout)."""
    predict = model_predictor(model) if isinstance(model, torch.nn.Module) else model
    order = val_order(data, indices)
    cm, probs, preds = None, [], []
    start = time.perf_counter()
    for x, y, idx in val_batches(data, batch_size, center_crop, indices):
        z = predict(x)
        pred = z.argmax(1)
        part = confusion_matrix(pred, y)
        cm = part if cm is None else cm + part
        if outputs:
            probs.append(torch.softmax(z.float(), dim=1)[:, 1].cpu().numpy())
            preds.append(pred.cpu().numpy())
    if cm is None:
        cm = torch.zeros(2, 2, dtype=torch.long, device=data.renderer.device)
    cm = D.all_reduce_sum(cm)
    seconds = time.perf_counter() - start
    out = summarize(cm)
    out["img_per_s"] = out["n"] / max(seconds, 1e-9)
    if outputs:
        out["indices"] = order
        out["labels"] = np.asarray(data.split.labels)[order]
        out["preds"] = np.concatenate(preds) if preds else np.zeros(0, np.int64)
        out["prob_person"] = np.concatenate(probs) if probs else np.zeros(0, np.float32)
    return out


@torch.no_grad()
def settle_bn(models: list, data: SplitData, order: np.ndarray, params: np.ndarray,
              batch_size: int, images: list[int]) -> None:
    """Recompute BatchNorm running statistics with the current weights: a cumulative average
    over images[k] training views for model k, the batches rendered once for all. Running
    averages that trail fast-moving weights otherwise leave short runs evaluating at the
    majority-class rate. Mixed views settle unmixed: evaluation (and deployment) sees single
    images, and a blend of two has other statistics (less contrast)."""
    todo = []
    for model, n in zip(models, images):
        bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        if bns and n > 0:
            todo.append((model, n, bns, [m.momentum for m in bns]))
            for m in bns:
                m.reset_running_stats()
                m.momentum = None
            model.train()
    if not todo:
        return
    start = 0
    for x, _, _ in data.batches(order[:max(n for _, n, _, _ in todo)], unmixed(params), batch_size):
        for model, n, _, _ in todo:
            if start < n:  # a model that settles on fewer images sees a prefix of the same batches
                with autocast(x.device):
                    model(x[:n - start].contiguous(memory_format=torch.channels_last))
        start += len(x)
    for _, _, bns, momenta in todo:
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum
            if D.active():  # every rank saw a different part: evaluate with their average
                for buf in (m.running_mean, m.running_var):
                    if buf is not None:  # BatchNorm with track_running_stats keeps both
                        buf.copy_(D.all_reduce_sum(buf) / D.world_size())


OUTPUTS = ("indices", "labels", "preds", "prob_person")  # per-sample results, numpy


@torch.no_grad()
def evaluate_many(models: list, data: SplitData, batch_size: int, center_crop: bool,
                  outputs: bool = False, indices: np.ndarray | None = None) -> list[dict]:
    """`evaluate` for several models over the same rendered batches. With outputs=True each
    result also holds the per-sample OUTPUTS of the whole split (or of `indices`), gathered
    from every rank."""
    if len(models) == 1:
        out = [evaluate(models[0], data, batch_size, center_crop, outputs=outputs, indices=indices)]
        return [_gathered(m) for m in out] if outputs else out
    predictors = [model_predictor(m) for m in models]
    order = val_order(data, indices)
    cms = [torch.zeros(2, 2, dtype=torch.long, device=data.renderer.device) for _ in models]
    probs: list[list] = [[] for _ in models]
    preds: list[list] = [[] for _ in models]
    start = time.perf_counter()
    for x, y, _ in val_batches(data, batch_size, center_crop, indices):
        for k, predict in enumerate(predictors):
            z = predict(x)
            pred = z.argmax(1)
            cms[k] += confusion_matrix(pred, y)
            if outputs:
                probs[k].append(torch.softmax(z.float(), dim=1)[:, 1].cpu().numpy())
                preds[k].append(pred.cpu().numpy())
    seconds = time.perf_counter() - start
    out = []
    for k, cm in enumerate(cms):
        m = summarize(D.all_reduce_sum(cm))
        m["img_per_s"] = m["n"] * len(models) / max(seconds, 1e-9)
        if outputs:
            m.update(indices=order, labels=np.asarray(data.split.labels)[order],
                     preds=np.concatenate(preds[k]) if preds[k] else np.zeros(0, np.int64),
                     prob_person=np.concatenate(probs[k]) if probs[k] else np.zeros(0, np.float32))
            m = _gathered(m)
        out.append(m)
    return out


def _gathered(m: dict) -> dict:
    """m with its per-sample outputs joined over every rank (each rank scored its part)."""
    parts = D.all_gather_objects([np.asarray(m[k]) for k in OUTPUTS])
    return {**m, **{k: np.concatenate([p[i] for p in parts]) for i, k in enumerate(OUTPUTS)}}
