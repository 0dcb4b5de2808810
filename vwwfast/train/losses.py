"""The KD loss (DESIGN.md, "KD loss") and the linear schedules of its weights. Pure functions.

loss = (1 - alpha) * CE(z_s, y, label_smoothing)
     + alpha * T**2 * mean_i(w_i * KL_i)          w_i = (max_c softmax(z_t)[i, c]) ** gamma
     + margin_weight * mean_i mean_c (centred z_s - centred z_t) ** 2

`KDRecipe` is the whole recipe as a value: its weights at an epoch (`at`) and the loss with
its terms (`loss`). Adding a loss term touches this file and config.py only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import torch
import torch.nn.functional as F

Weight = Union[float, torch.Tensor]


def kd_loss(z_s: torch.Tensor, z_t: Optional[torch.Tensor], y: torch.Tensor, *, alpha: Weight,
            temperature: float, confidence_gamma: float, margin_weight: Weight,
            label_smoothing: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Returns (loss, terms); terms = detached 0-dim tensors {"ce", "kl", "margin"}.

    "kl" is the confidence-weighted mean KL before alpha * T**2, "margin" the margin term
    before its weight. With z_t None the loss is the cross-entropy alone and kl = margin = 0.
    Nothing here calls .item(): on a GPU the step stays free of host syncs. alpha and
    margin_weight may be 0-dim tensors (a compiled step takes scheduled weights as inputs,
    so a new value does not recompile it): then every term enters the sum.
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
    if isinstance(alpha, torch.Tensor) or isinstance(margin_weight, torch.Tensor):
        loss = (1.0 - alpha) * ce + alpha * (T * T) * kl + margin_weight * margin
        return loss, {"ce": ce.detach(), "kl": kl.detach(), "margin": margin.detach()}
    loss = (1.0 - alpha) * ce if alpha != 1 else zero
    if alpha:
        loss = loss + alpha * T * T * kl
    if margin_weight:
        loss = loss + margin_weight * margin
    return loss, {"ce": ce.detach(), "kl": kl.detach(), "margin": margin.detach()}


# Schedules (epochs numbered from 1, as everywhere a person reads them)

def linear(start: float, end: float, progress: float) -> float:
    """start at progress 0, end at progress 1; progress outside [0, 1] is clamped."""
    progress = min(max(float(progress), 0.0), 1.0)
    return start + (end - start) * progress


def alpha_at(alpha: float, alpha_end: Optional[float], epoch: int, epochs: int) -> float:
    """alpha at epoch 1 -> alpha_end at the last epoch (`epochs`); constant when alpha_end is
    None. A one-epoch run uses the start value (its only epoch is also its first)."""
    if alpha_end is None or epochs <= 1:
        return float(alpha)
    return linear(alpha, alpha_end, (epoch - 1) / (epochs - 1))


def margin_at(margin_weight: float, margin_weight_end: Optional[float],
              decay_end_epoch: Optional[int], epoch: int) -> float:
    """margin_weight at epoch 1 -> margin_weight_end at epoch `decay_end_epoch`, then
    margin_weight_end. Constant when either end setting is None; decay_end_epoch <= 1 means
    the end value throughout."""
    if margin_weight_end is None or decay_end_epoch is None:
        return float(margin_weight)
    if decay_end_epoch <= 1:
        return float(margin_weight_end)
    return linear(margin_weight, margin_weight_end, (epoch - 1) / (decay_end_epoch - 1))


# ---------------------------------------------------------------------------------------
# The recipe

@dataclass(frozen=True)
class Weights:
    """The recipe in force during one epoch."""
    alpha: float
    margin_weight: float
    temperature: float
    confidence_gamma: float
    label_smoothing: float

    def terms(self, ce: float, kl: float, margin: float) -> dict:
        """Each term as it enters the loss (they sum to the loss)."""
        T2 = self.temperature ** 2
        return {"term_ce": (1 - self.alpha) * ce, "term_kl": self.alpha * T2 * kl,
                "term_margin": self.margin_weight * margin}


@dataclass(frozen=True)
class KDRecipe:
    alpha: float = 0.0
    alpha_end: Optional[float] = None
    temperature: float = 1.0
    confidence_gamma: float = 0.0
    margin_weight: float = 0.0
    margin_weight_end: Optional[float] = None
    margin_decay_end_epoch: Optional[int] = None
    label_smoothing: float = 0.0

    @classmethod
    def from_config(cls, cfg) -> "KDRecipe":
        """A distill config's recipe; a teacher run's config has only label smoothing."""
        names = [f for f in cls.__dataclass_fields__ if hasattr(cfg, f)]
        return cls(**{f: getattr(cfg, f) for f in names})

    @property
    def uses_teacher(self) -> bool:
        """alpha 0 throughout is plain supervised training: no teacher logits at all."""
        return self.alpha > 0 or bool(self.alpha_end)

    def at(self, epoch: int, epochs: int) -> Weights:
        teacher = self.uses_teacher
        return Weights(
            alpha=alpha_at(self.alpha, self.alpha_end, epoch, epochs) if teacher else 0.0,
            margin_weight=(margin_at(self.margin_weight, self.margin_weight_end,
                                     self.margin_decay_end_epoch, epoch) if teacher else 0.0),
            temperature=self.temperature, confidence_gamma=self.confidence_gamma,
            label_smoothing=self.label_smoothing)

    def loss(self, z_s, z_t, y, w: Weights, alpha: Weight = None, margin_weight: Weight = None):
        """(loss, terms) at weights `w`; alpha / margin_weight override w's as tensors."""
        return kd_loss(z_s, z_t if self.uses_teacher else None, y,
                       alpha=w.alpha if alpha is None else alpha,
                       temperature=w.temperature, confidence_gamma=w.confidence_gamma,
                       margin_weight=w.margin_weight if margin_weight is None else margin_weight,
                       label_smoothing=w.label_smoothing)
