"""The race's decision rule: pure functions on 0/1 correctness matrices of the selection split.

At a rung every setting still racing (an arm) holds one row of correctness per init seed,
all on the same selection images:

    leader  = the arm with the best mean accuracy over its seeds
    floor   = the largest gap between two seeds of one setting, over every arm: how far
              apart training chaos alone put same-setting students in this pass
    arm g is worse when its gap to the leader exceeds the floor AND the exact one-sided
              McNemar test on its seed-matched discordant images (seed k against the
              leader's seed k, counts summed) rejects at level/rungs after Holm across arms
    budget: of the arms not worse, at most ceil(entered / eta) go on (the control always
            does); the rest stop as "not resolved", never as worse.

A per-image test alone would call seed noise real: two seeds of one setting disagree on
hundreds of images. The floor is measured in the same pass, so it grows with the chaos.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from vwwfast.errors import UserError
from vwwfast.records.stats import binomial_half_tail

GO_ON, WORSE, NOT_RESOLVED = "go on", "worse", "not resolved"
CONTROL = "control"  # the supervised control's key: never cut, the report pairs on it


@dataclass
class Arm:
    """One setting at a rung: `right` bool [seeds, images], row k its init seed k."""
    key: str
    right: np.ndarray
    control: bool = False

    @property
    def accs(self) -> np.ndarray:
        return self.right.mean(axis=1)

    @property
    def mean(self) -> float:
        return float(self.accs.mean())


@dataclass
class Verdict:
    key: str
    verdict: str                  # GO_ON | WORSE | NOT_RESOLVED
    mean: float                   # mean selection accuracy over its seeds
    gap: float = 0.0              # leader's mean - this arm's mean
    b: int = 0                    # images the leader's seeds get right and this arm's do not
    c: int = 0                    # the other way round
    p: float = 1.0                # exact one-sided McNemar p (leader better)
    p_holm: float = 1.0           # Holm-adjusted across the arms of this rung
    reason: str = ""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"setting": self.key, "verdict": self.verdict, "mean": self.mean, "gap": self.gap,
                "b": self.b, "c": self.c, "p": self.p, "p_holm": self.p_holm, "reason": self.reason}


def one_sided_p(b: int, c: int) -> float:
    """P[X >= b] for X ~ Binomial(b + c, 1/2): how often chance alone gives the leader b or
    more of the b + c discordant images. 1 when there are none."""
    n = b + c
    return 1.0 if n == 0 else binomial_half_tail(n, c)


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given): reject where <= level."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def noise_floor(arms: list[Arm]) -> Optional[float]:
    """The largest accuracy gap between two seeds of one setting; None without replicates."""
    spreads = [float(a.accs.max() - a.accs.min()) for a in arms if a.right.shape[0] >= 2]
    return max(spreads) if spreads else None


def seed_matched_counts(leader: Arm, arm: Arm) -> tuple[int, int]:
    """(b, c) summed over seed pairs k = 0..min(seeds)-1: b where the leader's seed k is right
    and the arm's seed k wrong, c the other way round."""
    k = min(leader.right.shape[0], arm.right.shape[0])
    lead, other = leader.right[:k].astype(bool), arm.right[:k].astype(bool)
    return int((lead & ~other).sum()), int((~lead & other).sum())


def decide(arms: list[Arm], *, eta: float, level: float = 0.05, rungs: int = 1,
           epoch: Optional[int] = None) -> list[Verdict]:
    """Every arm's verdict at one rung (same order as `arms`); `rungs`: how many rungs share
    the family error rate `level` (each tests at level / rungs); `epoch`: the rung's, for
    the reasons (a verdict is about that epoch, not the end)."""
    at = "" if epoch is None else f" at epoch {epoch}"
    if not arms:
        return []
    shapes = {a.right.shape[1] for a in arms}
    if len(shapes) != 1:
        raise ValueError(f"every arm must be scored on the same images, got sizes {sorted(shapes)}")
    lead = max(range(len(arms)), key=lambda i: arms[i].mean)
    leader, floor = arms[lead], noise_floor(arms)
    out: list[Verdict] = []
    for a in arms:
        b, c = seed_matched_counts(leader, a)
        out.append(Verdict(a.key, GO_ON, a.mean, leader.mean - a.mean, b, c, one_sided_p(b, c)))
    others = [i for i in range(len(arms)) if i != lead]
    adjusted = holm([out[i].p for i in others])
    per_rung = level / rungs
    for i, p_adj in zip(others, adjusted):
        v = out[i]
        v.p_holm = p_adj
        if floor is not None and v.gap > floor and p_adj <= per_rung:
            v.verdict = WORSE
            v.reason = (f"{v.gap * 100:.1f} pt under {leader.key}{at}, beyond the {floor * 100:.1f} pt "
                        f"seeds alone give; Holm p {p_adj:.2g} <= {per_rung:.3g}")
        if arms[i].control and v.verdict == WORSE:
            v.verdict, v.reason = GO_ON, v.reason + " (the control goes on: the report pairs on it)"
    _budget(arms, out, eta, leader.key + at)
    for v in out:
        v.extra = {"leader": leader.key, "floor": floor, "level": per_rung}
    return out


def _budget(arms: list[Arm], out: list[Verdict], eta: float, leader: str) -> None:
    """At most ceil(entered / eta) searched arms go on; the lowest of the rest stop unresolved."""
    searched = [i for i, a in enumerate(arms) if not a.control]
    keep = max(1, math.ceil(len(searched) / eta))
    going = sorted((i for i in searched if out[i].verdict == GO_ON), key=lambda i: -out[i].mean)
    for i in going[keep:]:
        v = out[i]
        v.verdict = NOT_RESOLVED
        v.reason = (f"budget ({keep} of {len(searched)} go on, eta {eta:g}); {v.gap * 100:.1f} pt "
                    f"under {leader}, not shown worse (Holm p {v.p_holm:.2g})")


def stopped(decisions: list[dict]) -> dict[str, dict]:
    """Each setting that recorded decisions ({"epoch", "verdicts", "floor"}, as tune.json keeps
    them) stopped, with the first decision that did: {"rung", "floor", **its verdict}."""
    out: dict[str, dict] = {}
    for d in decisions:
        for v in d["verdicts"]:
            if v["verdict"] != GO_ON and v["setting"] not in out:
                out[v["setting"]] = {"rung": d["epoch"], **v, "floor": d.get("floor")}
    return out


def parse_rungs(given: Optional[list], epochs: int) -> list[int]:
    if given is None:
        rungs = sorted({max(1, round(epochs / 9)), max(1, round(epochs / 3))} - {epochs})
        if not rungs or epochs < 3:
            raise UserError(f"--epochs {epochs} leaves no epoch to decide at; give at least 3 "
                            f"epochs (or --rungs)")
        return rungs
    try:
        rungs = sorted({int(str(r)) for r in given})
    except ValueError:
        raise UserError(f"--rungs takes epochs (whole numbers), got {' '.join(map(str, given))}") from None
    bad = [r for r in rungs if not 1 <= r < epochs]
    if bad:
        raise UserError(f"--rungs {' '.join(map(str, bad))}: a rung must be an epoch from 1 to "
                        f"{epochs - 1} (--epochs {epochs} ends the race)")
    return rungs
