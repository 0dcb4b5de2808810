"""The formulas of records/stats.py against cases worked by hand: the paired difference, its
Wald interval, McNemar's exact p (b = c = 0, one-sided splits, a large n), the binomial
standard error, mean and sd of replicates, and the sentence that says it."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from vwwfast.records import stats


def correctness(n: int, both: int, b: int, c: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-image correctness of runs A and B on n images: `both` right in both, b only A
    right, c only B right, the rest wrong in both."""
    a = np.zeros(n, bool)
    bb = np.zeros(n, bool)
    a[:both] = bb[:both] = True
    a[both:both + b] = True
    bb[both + b:both + b + c] = True
    return a, bb


def test_no_discordant_image():
    """b = c = 0: the runs agree on every image; p is 1 and the interval is the point 0."""
    cmp = stats.paired_comparison(*correctness(100, 80, 0, 0))
    assert cmp == {"n": 100, "b": 0, "c": 0, "acc_a": 0.8, "acc_b": 0.8, "diff": 0.0,
                   "ci95": [0.0, 0.0], "mcnemar_p": 1.0}
    assert stats.mcnemar_p(0, 0) == 1.0


def test_one_sided_split():
    """b = 0, c = 10 on n = 100: P[X <= 0] = 2^-10, p = 2 / 1024; diff = 10/100 and
    sqrt(b + c - (b - c)^2 / n) = sqrt(10 - 1) = 3, so the interval is 0.1 +- 1.96 * 3 / 100."""
    cmp = stats.paired_comparison(*correctness(100, 70, 0, 10))
    assert (cmp["n"], cmp["b"], cmp["c"]) == (100, 0, 10)
    assert cmp["acc_a"] == pytest.approx(0.70) and cmp["acc_b"] == pytest.approx(0.80)
    assert cmp["diff"] == pytest.approx(0.10)
    assert cmp["mcnemar_p"] == 2 / 1024 == 0.001953125
    half = 1.959963984540054 * 3 / 100
    assert cmp["ci95"] == pytest.approx([0.1 - half, 0.1 + half], abs=1e-15)
    # the other side: A better; the same p, the mirrored interval
    rev = stats.paired_comparison(*correctness(100, 70, 10, 0))
    assert rev["mcnemar_p"] == cmp["mcnemar_p"] and rev["diff"] == pytest.approx(-0.10)
    assert rev["ci95"] == pytest.approx([-0.1 - half, -0.1 + half], abs=1e-15)


def test_small_splits_by_hand():
    # b 1, c 9: P[X <= 1] = (1 + 10) / 1024 -> p = 22 / 1024
    assert stats.mcnemar_p(1, 9) == 22 / 1024
    # b 5, c 5: P[X <= 5] = 638 / 1024 > 1/2 -> p capped at 1
    assert stats.mcnemar_p(5, 5) == 1.0
    # b 2, c 4: P[X <= 2] = (1 + 6 + 15) / 64 -> p = 44 / 64
    assert stats.mcnemar_p(4, 2) == 44 / 64
    # one discordant image: P[X <= 0] = 1/2 -> p = 1
    assert stats.mcnemar_p(0, 1) == 1.0


def test_large_n():
    """n = 8,059 (VWW minival), b = 120, c = 185. The tail is checked against the exact
    rational sum, the interval against the formula written out."""
    n, b, c = 8059, 120, 185
    cmp = stats.paired_comparison(*correctness(n, 6500, b, c))
    exact = 2 * sum(Fraction(math.comb(b + c, i)) for i in range(b + 1)) / 2 ** (b + c)
    assert cmp["mcnemar_p"] == float(exact)
    assert 2.3e-4 < cmp["mcnemar_p"] < 2.4e-4
    assert cmp["diff"] == pytest.approx(65 / 8059)
    half = 1.959963984540054 * math.sqrt(305 - 65 ** 2 / 8059) / 8059
    assert cmp["ci95"] == pytest.approx([65 / 8059 - half, 65 / 8059 + half], rel=1e-12)
    assert cmp["acc_b"] - cmp["acc_a"] == pytest.approx(cmp["diff"])


def test_tail_is_exact_and_stable_for_many_discordant_images():
    # P[X <= m/2] = 1/2 + C(m, m/2) / 2^(m+1) for even m: exact, far beyond float range
    m = 4000
    want = Fraction(1, 2) + Fraction(math.comb(m, m // 2), 2 ** (m + 1))
    assert stats.binomial_half_tail(m, m // 2) == float(want)
    # a tail far below the smallest float: 0.0, not an error or a NaN
    assert stats.mcnemar_p(0, 3000) == 0.0
    assert stats.mcnemar_p(3, 5000) == 0.0
    # near-even splits of many images stay capped at 1, never above
    assert stats.mcnemar_p(10_000, 10_000) == 1.0
    p = stats.mcnemar_p(9_900, 10_100)
    assert 0.0 < p < 1.0 and math.isfinite(p)
    assert stats.binomial_half_tail(10, -1) == 0.0 and stats.binomial_half_tail(10, 10) == 1.0
    with pytest.raises(ValueError):
        stats.mcnemar_p(-1, 3)


def test_agrees_with_scipy_when_installed():
    scipy_stats = pytest.importorskip("scipy.stats")
    for b, c in ((0, 0), (0, 7), (20, 34), (120, 185), (431, 517), (2_000, 2_150)):
        want = 1.0 if b + c == 0 else scipy_stats.binomtest(b, b + c, 0.5).pvalue
        assert stats.mcnemar_p(b, c) == pytest.approx(want, rel=1e-9), (b, c)


def test_binomial_se_and_replicate_spread():
    assert stats.binomial_se(0.8, 100) == pytest.approx(0.04)           # sqrt(.16 / 100)
    assert stats.binomial_se(0.836, 500) == pytest.approx(math.sqrt(0.836 * 0.164 / 500))
    assert stats.binomial_se(None, 100) is None and stats.binomial_se(0.8, 0) is None
    mean, sd = stats.mean_sd([0.80, 0.82, 0.84])
    assert mean == pytest.approx(0.82) and sd == pytest.approx(0.02)    # sample sd (n - 1)
    assert stats.mean_sd([0.8]) == (0.8, None)                          # a group of one: no sd
    assert stats.mean_sd([]) == (None, None)


def test_in_words():
    a, b = correctness(8059, 6500, 120, 185)
    text = stats.in_words(stats.paired_comparison(a, b))
    assert text == "B +0.8 pt (95% CI +0.4..+1.2), McNemar p 2.4e-04: distinguishable on these 8,059 images"
    a, b = correctness(500, 400, 20, 34)  # the demo's pair of runs (NOTES: p 0.076)
    text = stats.in_words(stats.paired_comparison(a, b), "KD")
    assert text.startswith("KD +2.8 pt (95% CI -0.1..+5.7), McNemar p 0.076: not distinguishable")
    a, b = correctness(8059, 6500, 3, 4)  # a small difference keeps a second decimal
    assert "+0.01 pt" in stats.in_words(stats.paired_comparison(a, b))
    assert stats.fmt_p(0.16) == "0.16" and stats.fmt_p(0.0481) == "0.048" and stats.fmt_p(1.0) == "1.00"
