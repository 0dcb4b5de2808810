"""The KD loss (DESIGN.md, "KD loss") and the linear schedules of its weights. Pure functions.

loss = (1 - alpha) * CE(z_s, y, label_smoothing)
     + alpha * T**2 * mean_i(w_i * KL_i)          w_i = (max_c softmax(z_t)[i, c]) ** gamma
     + margin_weight * mean_i mean_c (centred z_s - centred z_t) ** 2
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def kd_loss(z_s: torch.Tensor, z_t: Optional[torch.Tensor], y: torch.Tensor, *, alpha: float,
            temperature: float, confidence_gamma: float, margin_weight: float,
            label_smoothing: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Returns (loss, terms); terms = detached 0-dim tensors {"ce", "kl", "margin"}.

    "kl" is the confidence-weighted mean KL before alpha * T**2, "margin" the margin term
    before its weight. With z_t None the loss is the cross-entropy alone and kl = margin = 0.
    Nothing here calls .item(): on a GPU the step stays free of host syncs.
    """
    # Logits may arrive in bf16/fp16 from autocast; softmax and logs want float32.
    z_s = z_s.float()
    ce = F.cross_entropy(z_s, y, label_smoothing=label_smoothing)
    zero = z_s.new_zeros(())
    if z_t is None:
        return ce, {"ce": ce.detach(), "kl": zero, "margin": zero}

    # The teacher is a fixed target: no gradient through its logits, probabilities or weights.
    z_t = z_t.detach().float()
    T = float(temperature)
    log_p_s = F.log_softmax(z_s / T, dim=1)
    log_p_t = F.log_softmax(z_t / T, dim=1)
    kl_i = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1)
    if confidence_gamma:
        w = F.softmax(z_t, dim=1).amax(dim=1).pow(confidence_gamma)  # confidence at T = 1
        kl = (w * kl_i).mean()
    else:
        kl = kl_i.mean()
    centred = (z_s - z_s.mean(dim=1, keepdim=True)) - (z_t - z_t.mean(dim=1, keepdim=True))
    margin = centred.pow(2).mean()

    # The terms are always computed (cheap) so their curves stay meaningful while a schedule
    # drives a weight to 0; a zero weight leaves its term out of the sum (and the graph).
    loss = (1.0 - alpha) * ce if alpha != 1 else zero
    if alpha:
        loss = loss + alpha * T * T * kl
    if margin_weight:
        loss = loss + margin_weight * margin
    return loss, {"ce": ce.detach(), "kl": kl.detach(), "margin": margin.detach()}


# ---------------------------------------------------------------------------------------
# Schedules (epochs are 0-based, as the trainer counts them)

def linear(start: float, end: float, progress: float) -> float:
    """start at progress 0, end at progress 1; progress outside [0, 1] is clamped."""
    progress = min(max(float(progress), 0.0), 1.0)
    return start + (end - start) * progress


def alpha_at(alpha: float, alpha_end: Optional[float], epoch: int, epochs: int) -> float:
    """alpha at epoch 0 -> alpha_end at the last epoch (epochs - 1); constant when alpha_end is None.

    A one-epoch run uses the start value (its only epoch is also its first).
    """
    if alpha_end is None or epochs <= 1:
        return float(alpha)
    return linear(alpha, alpha_end, epoch / (epochs - 1))


def margin_at(margin_weight: float, margin_weight_end: Optional[float],
              decay_end_epoch: Optional[int], epoch: int) -> float:
    """margin_weight at epoch 0 -> margin_weight_end at decay_end_epoch, then margin_weight_end.

    Constant when either end setting is None; decay_end_epoch <= 0 means the end value throughout.
    """
    if margin_weight_end is None or decay_end_epoch is None:
        return float(margin_weight)
    if decay_end_epoch <= 0:
        return float(margin_weight_end)
    return linear(margin_weight, margin_weight_end, epoch / decay_end_epoch)
