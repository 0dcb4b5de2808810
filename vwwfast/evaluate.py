"""Evaluation: accuracy, recall per class and confusion matrix of a model over a split's
validation view, and `vwwfast eval`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from vwwfast import config as C
from vwwfast import distributed as D
from vwwfast.data import SplitData, val_params
from vwwfast.metrics import confusion_matrix, summarize
from vwwfast.models import autocast

Predict = Callable[[torch.Tensor], torch.Tensor]  # normalised NCHW batch -> logits [B, 2]


def model_predictor(model: torch.nn.Module) -> Predict:
    """A torch model as a predictor: eval mode, channels_last, bf16 autocast on CUDA."""
    model.eval()

    def predict(x):
        with autocast(x.device):
            return model(x.contiguous(memory_format=torch.channels_last)).float()
    return predict


@torch.no_grad()
def evaluate(model, data: SplitData, batch_size: int, center_crop: bool = False,
             outputs: bool = False) -> dict:
    """Every sample of this rank's part once, on the validation view. `model` is a torch
    module or a predictor. Metrics are summed across ranks. With outputs=True the result
    also holds this rank's "indices" and "prob_person" (numpy, in evaluation order)."""
    predict = model_predictor(model) if isinstance(model, torch.nn.Module) else model
    params = val_params(data.split, center_crop)
    order = D.rank_part(np.arange(len(data)))
    cm, probs = None, []
    start = time.perf_counter()
    for x, y, idx in data.batches(order, params, batch_size):
        z = predict(x)
        part = confusion_matrix(z.argmax(1), y)
        cm = part if cm is None else cm + part
        if outputs:
            probs.append(torch.softmax(z.float(), dim=1)[:, 1].cpu().numpy())
    if cm is None:
        cm = torch.zeros(2, 2, dtype=torch.long, device=data.renderer.device)
    cm = D.all_reduce_sum(cm)
    seconds = time.perf_counter() - start
    out = summarize(cm)
    out["img_per_s"] = out["n"] / max(seconds, 1e-9)
    if outputs:
        out["indices"] = order
        out["prob_person"] = np.concatenate(probs) if probs else np.zeros(0, np.float32)
    return out


def fmt_metric(x, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def evaluate_command(cfg: C.EvalConfig) -> dict:
    from vwwfast.models import model_from_checkpoint
    from vwwfast.progress import print_table
    from vwwfast.render import resolve_device
    from vwwfast.shards import ShardSet
    C.require(cfg, "checkpoint", "shards")
    device = resolve_device(cfg.device)
    model, ckpt = model_from_checkpoint(cfg.checkpoint, device=device)
    model = model.to(memory_format=torch.channels_last)
    shards = ShardSet.open(cfg.shards)
    data = SplitData(shards, cfg.split, cfg, device, ckpt["input_size"])
    try:
        m = evaluate(model, data, cfg.batch_size, cfg.center_crop)
    finally:
        data.close()
    (tn, fp), (fn, tp) = m["confusion"]
    print_table(f"{cfg.checkpoint} on {cfg.shards} ({cfg.split}, {ckpt['input_size']} px)",
                ["accuracy", "recall no-person", "recall person", "TN", "FP", "FN", "TP", "img/s"],
                [(f"{m['acc']:.4f}", fmt_metric(m["recall_0"]), fmt_metric(m["recall_1"]),
                  tn, fp, fn, tp, f"{m['img_per_s']:,.0f}")])
    if cfg.json:
        Path(cfg.json).write_text(json.dumps(m, indent=1))
    return m
