"""The figures that say whether a difference between runs is real, as small pure functions.

Two runs scored on the same val images are compared per image (a paired test), which is far
more sensitive than comparing two accuracies: only the images where they disagree count.
    b = images run A gets right and run B wrong, c = A wrong and B right, n = images
    acc_b - acc_a = (c - b) / n
    95% interval (Wald, paired proportions): diff +- 1.96 * sqrt(b + c - (b - c)^2 / n) / n
    McNemar's exact two-sided p: min(1, 2 * P[X <= min(b, c)]), X ~ Binomial(b + c, 1/2);
                                 1 when b + c = 0
One accuracy's own noise is its binomial standard error sqrt(acc (1 - acc) / n).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile
ALPHA = 0.05             # p below this: the val set tells the two apart


def binomial_se(acc: Optional[float], n: Optional[int]) -> Optional[float]:
    """One standard error of an accuracy measured on n images: sqrt(acc (1 - acc) / n)."""
    if acc is None or not n:
        return None
    return math.sqrt(max(acc * (1.0 - acc), 0.0) / n)


def binomial_half_tail(m: int, k: int) -> float:
    """P[X <= k] for X ~ Binomial(m, 1/2), exactly: the sum of C(m, i) for i <= k as an
    integer, over 2^m, rounded once (Python divides integers of any size correctly
    rounded). Terms come from the recurrence C(m, i+1) = C(m, i) (m - i) / (i + 1), k + 1
    integer steps in all, and a tail too small for a float comes out as 0.0, never as a NaN
    or an overflow."""
    if m < 0:
        raise ValueError(f"m must be >= 0, got {m}")
    if k < 0:
        return 0.0
    if k >= m:
        return 1.0
    term, total = 1, 1
    for i in range(k):
        term = term * (m - i) // (i + 1)
        total += term
    return total / (1 << m)


def mcnemar_p(b: int, c: int) -> float:
    """McNemar's exact two-sided test on the discordant counts b and c:
    min(1, 2 P[X <= min(b, c)]) with X ~ Binomial(b + c, 1/2); 1 when b + c = 0."""
    if b < 0 or c < 0:
        raise ValueError(f"counts must be >= 0, got b {b}, c {c}")
    if b + c == 0:
        return 1.0
    return min(1.0, 2.0 * binomial_half_tail(b + c, min(b, c)))


def paired_ci95(b: int, c: int, n: int) -> tuple[float, float]:
    """The Wald 95% interval of acc_b - acc_a for paired proportions:
    diff +- 1.96 sqrt(b + c - (b - c)^2 / n) / n, with diff = (c - b) / n."""
    if n <= 0:
        raise ValueError(f"n must be > 0, got {n}")
    diff = (c - b) / n
    half = Z95 * math.sqrt(max(b + c - (b - c) ** 2 / n, 0.0)) / n
    return diff - half, diff + half


def discordant(right_a: Union[Sequence[bool], np.ndarray], right_b: Union[Sequence[bool], np.ndarray]) -> tuple[int, int, int]:
    """(n, b, c) from two runs' per-image correctness on the same images, in the same order:
    b = A right and B wrong, c = A wrong and B right."""
    a, bb = np.asarray(right_a, bool), np.asarray(right_b, bool)
    if a.shape != bb.shape or a.ndim != 1:
        raise ValueError(f"per-image correctness must be two equal 1-D arrays, got {a.shape}, {bb.shape}")
    return int(a.size), int(np.sum(a & ~bb)), int(np.sum(~a & bb))


def paired_comparison(right_a: Union[Sequence[bool], np.ndarray], right_b: Union[Sequence[bool], np.ndarray]) -> dict:
    """Everything the paired test says about run B against run A on the same n images:
    n, b, c, acc_a, acc_b, diff (acc_b - acc_a), ci95 [low, high], mcnemar_p."""
    n, b, c = discordant(right_a, right_b)
    if n == 0:
        raise ValueError("no image to compare")
    right = int(np.sum(np.asarray(right_a, bool)))
    low, high = paired_ci95(b, c, n)
    return {"n": n, "b": b, "c": c, "acc_a": right / n, "acc_b": (right - b + c) / n,
            "diff": (c - b) / n, "ci95": [low, high], "mcnemar_p": mcnemar_p(b, c)}


def distinguishable(p: Optional[float]) -> Optional[bool]:
    """Whether the val set tells two runs apart (paired p below 0.05); None without a p."""
    return None if p is None else p < ALPHA


def mean_sd(values: Sequence[float]) -> tuple[Optional[float], Optional[float]]:
    """Mean and sample standard deviation (n - 1 in the denominator) of replicate results;
    no sd for fewer than two (one run says nothing about the spread)."""
    xs = [float(v) for v in values]
    if not xs:
        return None, None
    mean = math.fsum(xs) / len(xs)
    if len(xs) < 2:
        return mean, None
    return mean, math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (len(xs) - 1))


def smallest_resolvable(discordant: int, n: int, level: float = ALPHA) -> Optional[float]:
    """The smallest accuracy difference two models that disagree on `discordant` of `n`
    images could show with McNemar p < level: the least |b - c| that the exact test resolves,
    over n. None when no split of so few discordant images would."""
    if n <= 0 or discordant <= 0:
        return None
    for k in range(discordant % 2, discordant + 1, 2):  # b - c has the parity of b + c
        b = (discordant + k) // 2
        if mcnemar_p(b, discordant - b) < level:
            return k / n
    return None


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> Optional[float]:
    """Kendall's tau-b between two scorings of the same items (ties counted as neither);
    None for fewer than two items or when either scoring is all ties."""
    n = len(a)
    if n != len(b):
        raise ValueError(f"two scorings of one set of items, got {n} and {len(b)}")
    concordant = discordant = ties_a = ties_b = 0
    for i in range(n):
        for j in range(i + 1, n):
            da, db = a[i] - a[j], b[i] - b[j]
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif (da > 0) == (db > 0):
                concordant += 1
            else:
                discordant += 1
    pairs_a = concordant + discordant + ties_b
    pairs_b = concordant + discordant + ties_a
    if pairs_a == 0 or pairs_b == 0:
        return None
    return (concordant - discordant) / math.sqrt(pairs_a * pairs_b)


# ---------------------------------------------------------------------------------------
# In words

def fmt_points(v: float, digits: int = 1) -> str:
    """A difference of accuracies in percentage points: +0.8."""
    return f"{100 * v:+.{digits}f}"


def fmt_p(p: float) -> str:
    """0.16, 0.048, 3.1e-05: two significant figures."""
    if p >= 0.01:
        return f"{p:.2f}" if p >= 0.1 else f"{p:.3f}"
    return f"{p:.1e}"


def in_words(cmp: dict, name_b: str = "B") -> str:
    """'B +0.8 pt (95% CI -0.3..+1.9), McNemar p 0.16: not distinguishable on these 8,059
    images'. Points get a second decimal when one would hide the difference."""
    n, diff, (low, high) = cmp["n"], cmp["diff"], cmp["ci95"]
    digits = 1 if all(abs(100 * v) >= 0.05 or v == 0 for v in (diff, low, high)) else 2
    verdict = ("distinguishable" if distinguishable(cmp["mcnemar_p"])
               else "not distinguishable")
    return (f"{name_b} {fmt_points(diff, digits)} pt (95% CI {fmt_points(low, digits)}.."
            f"{fmt_points(high, digits)}), McNemar p {fmt_p(cmp['mcnemar_p'])}: {verdict} on "
            f"these {n:,} images")
