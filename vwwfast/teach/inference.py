"""Batch teacher inference for the store: logits of one model, several, or an ensemble.

cache-teacher (build.py) runs it under bf16 autocast to fill a store; --verify (verify.py)
runs it in full fp32 (`exact`) to check one. Every model that shares an input size is run
on the same rendered batch.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from vwwfast.data.split import SplitData
from vwwfast.devices import autocast

# [(data, [models])]: the models of a group share its rendering (one input size)
Groups = Sequence[tuple[SplitData, list[torch.nn.Module]]]
OnChunk = Callable[[int], object] | None


@torch.no_grad()
def member_logits(models: Sequence[torch.nn.Module], data: SplitData, order: np.ndarray,
                  params: np.ndarray, batch_size: int, on_chunk: OnChunk = None,
                  exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """float32 logits [len(models), len(order), C] of models that share `data`'s rendering
    (each batch rendered once, every model run on it), and the labels [len(order)] (a mixed
    view's soft label counts as its larger weight's class).
    exact: no bf16 autocast (what --verify compares against)."""
    device = next(models[0].parameters()).device
    out = np.zeros((len(models), len(order), 2), np.float32)
    labels = np.zeros(len(order), np.int64)
    pos = 0
    for x, y, idx in data.batches(order, params, batch_size):
        x = (x.float() if exact else x).contiguous(memory_format=torch.channels_last)
        for k, model in enumerate(models):
            if exact:  # full fp32: no bf16 autocast, no TF32 convolutions
                with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
                    z = model(x).float()
            else:
                with autocast(device):
                    z = model(x).float()
            out[k, pos:pos + len(y)] = z.cpu().numpy()
        labels[pos:pos + len(y)] = (y.argmax(1) if y.ndim == 2 else y).cpu().numpy()
        pos += len(y)
        if on_chunk:
            on_chunk(len(y))
    return out, labels


def teacher_logits(model: torch.nn.Module, data: SplitData, order: np.ndarray, params: np.ndarray,
                   batch_size: int, on_chunk: OnChunk = None,
                   exact: bool = False) -> tuple[np.ndarray, int]:
    """float32 logits [len(order), C] of one model for `order` (in order), plus how many
    were right."""
    z, labels = member_logits([model], data, order, params, batch_size, on_chunk, exact)
    return z[0], int((z[0].argmax(1) == labels).sum())


def log_mean_probability(z: np.ndarray) -> np.ndarray:
    """[K, N, C] member logits -> float32 [N, C]: the log of the members' mean probability
    (softmax of it is that mean), computed in float64."""
    t = torch.from_numpy(np.asarray(z, np.float64))
    return (torch.logsumexp(torch.log_softmax(t, dim=2), dim=0) - np.log(len(z))).float().numpy()


def ensemble_logits(groups: Groups, order: np.ndarray, params: np.ndarray, batch_size: int,
                    on_chunk: OnChunk = None, exact: bool = False) -> tuple[np.ndarray, int]:
    """The logits a store keeps for `order`, and how many are right. groups: [(data,
    [models])], the models of a group sharing its rendering (one input size). One model:
    its own logits; several: `log_mean_probability` of them."""
    zs, labels = [], None
    for data, models in groups:
        z, labels = member_logits(models, data, order, params, batch_size, on_chunk, exact)
        zs.append(z)
    z = np.concatenate(zs)
    out = z[0] if len(z) == 1 else log_mean_probability(z)
    return out, int((out.argmax(1) == labels).sum())
