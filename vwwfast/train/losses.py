"""The KD loss (docs/TRAINING.md, "The KD recipe") as data: named terms, the factor each enters the loss
with, and the weights' schedules. Pure functions.

loss = (1 - alpha) * CE(z_s, y, label_smoothing)
     + alpha * T**2 * mean_i(w_i * KL_i)          w_i = (max_c softmax(z_t)[i, c]) ** gamma
     + margin_weight * mean_i mean_c (centred z_s - centred z_t) ** 2

Adding a term touches this file and config.py only: its settings in SETTINGS, a `Term` in
TERMS (and a `Weight` in WEIGHTS for a weight recorded per epoch or scheduled), and the config
fields (metadata kd=True). The trainer sums, records and prints every term by its name
(metrics.jsonl: loss_<name> its mean, term_<name> as it enters the loss; each weight under
its own name); curves, TensorBoard and the runs table learn the terms from those records.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Union

import torch
import torch.nn.functional as F

from vwwfast.config import RecipeSettings, TrainConfig

Number = Union[float, torch.Tensor]

# Every setting of the recipe, with its value in a recipe that leaves it out (a teacher run's
# has label smoothing only: KDRecipe.of).
SETTINGS: dict = {"alpha": 0.0, "alpha_end": None, "temperature": 1.0, "confidence_gamma": 0.0,
                  "margin_weight": 0.0, "margin_weight_end": None, "margin_decay_end_epoch": None,
                  "label_smoothing": 0.0}


@dataclass(frozen=True)
class Term:
    """One term of the loss. mean(z_s, z_t, y, w): its batch mean, a 0-dim float32 tensor
    (logits in float32; z_t is None for a term with teacher=False in a run without one).
    factor(w): what the mean is multiplied by in the loss. `w` holds every setting, with each
    weight at its value in force (floats; in a compiled step the scheduled weights are 0-dim
    tensors). label: the weighted term's name in curves.png."""
    name: str
    label: str
    mean: Callable
    factor: Callable[[Mapping], Number]
    teacher: bool = True  # needs the teacher's logits: 0, and out of the loss, without them


@dataclass(frozen=True)
class Weight:
    """A weight in force during one epoch, recorded per epoch under its name.
    at(settings, epoch, epochs) gives its value; teacher=True: 0 in a run without a teacher.
    scheduled: it may change between epochs, so a compiled step takes it as a tensor input
    (a new value is not a recompile)."""
    name: str
    at: Callable[[Mapping, int, int], float]
    teacher: bool = True
    scheduled: bool = True


# ---------------------------------------------------------------------------------------
# The terms

def _ce(z_s, z_t, y, w):
    return F.cross_entropy(z_s, y, label_smoothing=w["label_smoothing"])


def _kl(z_s, z_t, y, w):
    """The confidence-weighted mean KL(p_t || p_s) at temperature T, before alpha * T**2."""
    T = float(w["temperature"])
    log_p_s = F.log_softmax(z_s / T, dim=1)
    log_p_t = F.log_softmax(z_t / T, dim=1)
    kl_i = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1)
    if w["confidence_gamma"]:
        conf = F.softmax(z_t, dim=1).amax(dim=1).pow(w["confidence_gamma"])  # confidence at T = 1
        return (conf * kl_i).mean()
    return kl_i.mean()


def _margin(z_s, z_t, y, w):
    centred = (z_s - z_s.mean(dim=1, keepdim=True)) - (z_t - z_t.mean(dim=1, keepdim=True))
    return centred.pow(2).mean()


TERMS: tuple = (
    Term("ce", r"$(1-\alpha)\,$CE", _ce, lambda w: 1.0 - w["alpha"], teacher=False),
    Term("kl", r"$\alpha T^2\,$KL", _kl, lambda w: w["alpha"] * w["temperature"] ** 2),
    Term("margin", r"margin weight $\times$ margin", _margin, lambda w: w["margin_weight"]),
)


# ---------------------------------------------------------------------------------------
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


WEIGHTS: tuple = (
    Weight("alpha", lambda s, epoch, epochs: alpha_at(s["alpha"], s["alpha_end"], epoch, epochs)),
    Weight("margin_weight", lambda s, epoch, epochs: margin_at(
        s["margin_weight"], s["margin_weight_end"], s["margin_decay_end_epoch"], epoch)),
    Weight("temperature", lambda s, epoch, epochs: s["temperature"], teacher=False, scheduled=False),
)


# ---------------------------------------------------------------------------------------
# The loss

def loss_and_means(terms, z_s: torch.Tensor, z_t: Optional[torch.Tensor], y: torch.Tensor,
                   w: Mapping) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(loss, means): means = {name: detached 0-dim tensor} for every term, 0 for a teacher
    term without z_t. Nothing here calls .item(): on a GPU the step stays free of host syncs.

    Every mean is computed (cheap), so its curve stays meaningful while a schedule drives its
    weight to 0; a zero factor leaves the term out of the sum (and the graph). When a weight
    is a tensor (a compiled step) every term enters the sum: a graph cannot branch on it."""
    # Logits may arrive in bf16/fp16 from autocast; softmax and logs want float32.
    z_s = z_s.float()
    # The teacher is a fixed target: no gradient through its logits, probabilities or weights.
    z_t = None if z_t is None else z_t.detach().float()
    zero = z_s.new_zeros(())
    as_tensors = any(isinstance(v, torch.Tensor) for v in w.values())
    loss, means = None, {}
    for term in terms:
        if term.teacher and z_t is None:
            means[term.name] = zero
            continue
        mean = term.mean(z_s, z_t, y, w)
        means[term.name] = mean.detach()
        factor = term.factor(w)
        if as_tensors or factor != 0:
            part = factor * mean
            loss = part if loss is None else loss + part
    return (zero if loss is None else loss), means


def kd_loss(z_s: torch.Tensor, z_t: Optional[torch.Tensor], y: torch.Tensor, *, alpha: Number,
            temperature: float, confidence_gamma: float, margin_weight: Number,
            label_smoothing: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of TERMS at these weights: (loss, {"ce", "kl", "margin"} means).

    "kl" is the confidence-weighted mean KL before alpha * T**2, "margin" the margin term
    before its weight. With z_t None the loss is the cross-entropy alone and kl = margin = 0.
    alpha and margin_weight may be 0-dim tensors (as in a compiled step)."""
    w = {**SETTINGS, "alpha": alpha, "temperature": temperature,
         "confidence_gamma": confidence_gamma, "margin_weight": margin_weight,
         "label_smoothing": label_smoothing}
    if z_t is None:  # the teacher's weights are 0 without its logits, as in KDRecipe.at
        w.update({x.name: 0.0 for x in WEIGHTS if x.teacher})
    return loss_and_means(TERMS, z_s, z_t, y, w)


# ---------------------------------------------------------------------------------------
# The recipe

class KDRecipe:
    """The loss of one run as a value: its settings (SETTINGS), terms (TERMS) and weights
    (WEIGHTS). `at(epoch, epochs)` the weights in force, `loss` the loss with its terms'
    means, `record` an epoch's loss record."""

    def __init__(self, **settings):
        unknown = sorted(set(settings) - set(SETTINGS))
        if unknown:
            raise TypeError(f"KDRecipe has no setting {', '.join(unknown)}")
        self.settings = {**SETTINGS, **settings}
        self.terms, self.weights = TERMS, WEIGHTS

    @classmethod
    def of(cls, recipe: Optional[RecipeSettings], label_smoothing: float = 0.0) -> "KDRecipe":
        """A distill run's recipe (config.RecipeSettings); None, a teacher run: the
        cross-entropy alone, with `label_smoothing`."""
        if recipe is None:
            return cls(label_smoothing=label_smoothing)
        return cls(**dataclasses.asdict(recipe))

    @classmethod
    def of_config(cls, cfg: TrainConfig) -> "KDRecipe":
        """The recipe of a training run's config (a teacher's or a student's)."""
        return cls.of(cfg.recipe_settings(), cfg.label_smoothing)

    @property
    def uses_teacher(self) -> bool:
        """alpha 0 throughout is plain supervised training: no teacher logits at all."""
        return self.settings["alpha"] > 0 or bool(self.settings["alpha_end"])

    @property
    def scheduled(self) -> list[str]:
        """The weights a compiled step takes as tensor inputs."""
        return [x.name for x in self.weights if x.scheduled]

    def at(self, epoch: int, epochs: int) -> dict:
        """Every setting, with each weight at its value in force during `epoch` of `epochs`."""
        teacher = self.uses_teacher
        return {**self.settings, **{x.name: x.at(self.settings, epoch, epochs)
                                    if teacher or not x.teacher else 0.0 for x in self.weights}}

    def loss(self, z_s, z_t, y, w: Mapping):
        """(loss, {name: mean}) at weights `w` (from `at`; scheduled ones may be tensors)."""
        return loss_and_means(self.terms, z_s, z_t if self.uses_teacher else None, y, w)

    def record(self, loss: float, means: Mapping[str, float], w: Mapping) -> dict:
        """An epoch's loss record: the loss; each term's mean (loss_<name>) and the term as
        it enters the loss (term_<name>; they sum to the loss); the weights in force."""
        return {"loss": loss, **{f"loss_{t.name}": means[t.name] for t in self.terms},
                **{f"term_{t.name}": t.factor(w) * means[t.name] for t in self.terms},
                **{x.name: w[x.name] for x in self.weights}}

    def labels(self) -> dict[str, str]:
        """Each term's name in the figures (term_<name> in the records)."""
        return {t.name: t.label for t in self.terms}
