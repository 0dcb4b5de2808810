"""tune's decision rule (vwwfast/tune/race.py) on hand-made correctness matrices, its space
(--space) and the statistics it reports (smallest resolvable difference, Kendall's tau)."""

from __future__ import annotations

import numpy as np
import pytest

from vwwfast.errors import UserError
from vwwfast.records.stats import kendall_tau, mcnemar_p, smallest_resolvable
from vwwfast.tune import race as R
from vwwfast.tune.space import distributions, parse_space

N = 400


def seeds(p: float, n_seeds: int = 3, rng_seed: int = 0, flip: float = 0.03) -> np.ndarray:
    """n_seeds correctness rows of a model right on a fraction p of N images: one base row,
    each seed flipping a few images (training chaos)."""
    rng = np.random.default_rng(rng_seed)
    base = np.zeros(N, bool)
    base[: int(p * N)] = True
    rows = []
    for _ in range(n_seeds):
        row = base.copy()
        flips = rng.random(N) < flip
        row[flips] = ~row[flips]
        rows.append(row)
    return np.stack(rows)


def verdicts(arms, **kw):
    return {v.key: v for v in R.decide(arms, **{"eta": 1.0, **kw})}  # eta 1: no budget cut


def test_a_clearly_worse_setting_is_cut_at_the_first_rung():
    good, bad = R.Arm("good", seeds(0.85, rng_seed=1)), R.Arm("bad", seeds(0.60, rng_seed=2))
    v = verdicts([good, bad], rungs=2)
    assert v["good"].verdict == R.GO_ON
    assert v["bad"].verdict == R.WORSE
    assert v["bad"].p_holm < 0.025 and v["bad"].gap > v["bad"].extra["floor"]
    assert "under good" in v["bad"].reason


def test_replicates_of_one_setting_are_rarely_called_worse():
    """Arms whose seeds all come from one setting (one base, independent chaos on 8% of the
    images per seed): over 200 races of 6 arms, 'worse' in under 1% of the 1,000 verdicts
    (7 here), where the per-image test alone, without the floor, says so 3 times as often."""
    rng = np.random.default_rng(7)
    per_image_alone = worse = 0
    for race in range(200):
        base = rng.random(N) < 0.75
        arms = []
        for k in range(6):
            rows = np.stack([np.where(rng.random(N) < 0.08, ~base, base) for _ in range(3)])
            arms.append(R.Arm(f"s{k}", rows))
        out = R.decide(arms, eta=1.0, rungs=2)
        worse += sum(v.verdict == R.WORSE for v in out)
        per_image_alone += sum(v.p_holm <= 0.025 for v in out)
    assert worse <= 10
    assert per_image_alone >= 3 * worse


def test_the_same_seeds_in_another_order_are_never_cut():
    rows = seeds(0.8, rng_seed=4)
    arms = [R.Arm(f"s{k}", np.roll(rows, k, axis=0)) for k in range(3)]
    assert all(v.verdict == R.GO_ON for v in R.decide(arms, eta=1.0))


def test_holm_adjusts_across_the_settings_of_a_rung():
    assert R.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert R.holm([0.5]) == [0.5]
    # a p between level/2 and level: cut when it is the only other arm, not when two are
    # tested (Holm: the smallest of two must be <= level / 2)
    lead = np.zeros((2, N), bool)
    lead[:, :300] = True

    def arm(name: str, b: int, c: int) -> R.Arm:
        rows = lead.copy()
        rows[:, :b] = False                  # b images only the leader gets right
        rows[:, 300:300 + c] = True          # c images only this arm gets right
        return R.Arm(name, rows)
    p = R.one_sided_p(2 * 16, 2 * 9)
    assert 0.025 < p < 0.05
    alone = verdicts([R.Arm("lead", lead), arm("x", 16, 9)])
    assert alone["x"].verdict == R.WORSE
    both = verdicts([R.Arm("lead", lead), arm("x", 16, 9), arm("y", 16, 9)])
    assert both["x"].verdict == both["y"].verdict == R.GO_ON
    assert both["x"].p_holm == pytest.approx(2 * p)


def test_the_error_rate_is_split_over_the_rungs():
    lead = np.zeros((2, N), bool)
    lead[:, :300] = True
    x = lead.copy()
    x[:, :16] = False
    x[:, 300:309] = True
    arms = [R.Arm("lead", lead), R.Arm("x", x)]
    assert verdicts(arms, rungs=1)["x"].verdict == R.WORSE
    assert verdicts(arms, rungs=2)["x"].verdict == R.GO_ON  # tested at 0.025


def test_budget_cuts_are_not_resolved_never_worse_and_the_control_goes_on():
    same = seeds(0.8, rng_seed=3)
    arms = [R.Arm(f"s{k}", same.copy()) for k in range(6)] + [R.Arm("control", same.copy(), True)]
    out = R.decide(arms, eta=3.0)
    kinds = [v.verdict for v in out]
    assert kinds.count(R.GO_ON) == 3 and kinds.count(R.NOT_RESOLVED) == 4 and R.WORSE not in kinds
    assert out[-1].verdict == R.GO_ON  # the control is never cut, nor counted in the budget
    assert all("budget" in v.reason for v in out if v.verdict == R.NOT_RESOLVED)


def test_the_control_is_never_cut_even_when_worse():
    v = verdicts([R.Arm("kd", seeds(0.85, rng_seed=1)), R.Arm("control", seeds(0.6, rng_seed=2), True)])
    assert v["control"].verdict == R.GO_ON and "the control goes on" in v["control"].reason


def test_without_replicates_there_is_no_floor_and_no_worse():
    v = verdicts([R.Arm("good", seeds(0.9, 1)), R.Arm("bad", seeds(0.5, 1))])
    assert v["bad"].extra["floor"] is None and v["bad"].verdict == R.GO_ON


def test_arms_on_other_images_are_refused():
    with pytest.raises(ValueError, match="same images"):
        R.decide([R.Arm("a", np.ones((2, 10), bool)), R.Arm("b", np.ones((2, 11), bool))], eta=3)


def test_one_sided_p_is_the_binomial_tail():
    assert R.one_sided_p(0, 0) == 1.0
    assert R.one_sided_p(5, 0) == pytest.approx(1 / 32)
    assert R.one_sided_p(0, 5) == 1.0
    assert R.one_sided_p(3, 2) == pytest.approx(16 / 32)


# ---------------------------------------------------------------------------------------
# Statistics the report gives

def test_smallest_resolvable_difference():
    # 200 discordant images of 1,500: 115 / 85 is p 0.040, 114 / 86 p 0.056: 30 images, 2.0 pt
    assert mcnemar_p(115, 85) < 0.05 < mcnemar_p(114, 86)
    assert smallest_resolvable(200, 1500) == pytest.approx(30 / 1500)
    assert smallest_resolvable(5, 100) is None  # 5-0 is p 0.0625: nothing resolves
    assert smallest_resolvable(6, 100) == pytest.approx(6 / 100)
    assert smallest_resolvable(0, 100) is None


def test_kendall_tau():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    assert kendall_tau([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / np.sqrt(2 * 3))  # tau-b
    assert kendall_tau([1, 1], [1, 2]) is None


# ---------------------------------------------------------------------------------------
# --space and --rungs

def test_a_space_becomes_optuna_distributions():
    import optuna.distributions as od
    dims = parse_space(["alpha=0.3:0.9", "temperature=1:6", "lr=1e-4:1e-2:log",
                        "confidence_gamma=0,1,2", "optimizer=adamw,sgd", "bn_settle=0:512"])
    d = distributions(dims)
    assert d["alpha"] == od.FloatDistribution(0.3, 0.9, step=0.001)
    assert d["temperature"] == od.FloatDistribution(1.0, 6.0, step=0.01)
    assert d["lr"] == od.FloatDistribution(1e-4, 1e-2, log=True)
    assert d["confidence_gamma"] == od.CategoricalDistribution([0.0, 1.0, 2.0])
    assert d["optimizer"] == od.CategoricalDistribution(["adamw", "sgd"])
    assert d["bn_settle"] == od.IntDistribution(0, 512)
    assert [x.text() for x in dims][:3] == ["alpha=0.3:0.9", "temperature=1:6", "lr=0.0001:0.01:log"]


@pytest.mark.parametrize("space,message", [
    ([], "give at least one setting to search"),
    (["epochs=1:9"], "'epochs' is not a sweepable setting"),
    (["alpa=0.3:0.9"], "'alpa' is not a setting; did you mean 'alpha'?"),
    (["init_seed=0:4"], "'init_seed' is set by tune itself"),
    (["alpha=0.3:1.5"], "alpha (range 0.3:1.5) must be within the setting's range [0, 1]"),
    (["temperature=0:4"], "temperature (range 0:4) must be within the setting's range (0, inf)"),
    (["alpha=0.9:0.3"], "low end must be below its high end"),
    (["alpha"], "write KEY=LO:HI"),
    (["alpha=0.1,x"], "'x' is not a number"),
    (["optimizer=adamw:sgd"], "a range needs a number setting"),
    (["optimizer=adamw,sdg"], "must be one of 'adamw', 'sgd'"),
    (["alpha=0.1:0.5", "alpha=0.2"], "alpha given twice"),
    (["weight_decay=0:0.1:log"], "a log range must start above 0"),
])
def test_a_bad_space_is_refused(space, message):
    with pytest.raises(UserError) as e:
        parse_space(space)
    assert message in str(e.value)


def test_rungs():
    assert R.parse_rungs(None, 30) == [3, 10]
    assert R.parse_rungs(None, 12) == [1, 4]
    assert R.parse_rungs(["4", "2", "2"], 12) == [2, 4]
    for given, message in ((["12"], "a rung must be an epoch from 1 to 11"),
                           (["0"], "from 1 to 11"), (["x"], "whole numbers")):
        with pytest.raises(UserError, match=message):
            R.parse_rungs(given, 12)
    with pytest.raises(UserError, match="leaves no epoch to decide at"):
        R.parse_rungs(None, 2)


def test_the_rung_block_names_each_verdict(capsys):
    from vwwfast.tune.racing import say_rung
    lead = np.zeros((2, N), bool)
    lead[:, :300] = True
    bad = lead.copy()
    bad[:, :80] = False
    say_rung(3, R.decide([R.Arm("t0", lead), R.Arm("t1", bad), R.Arm("control", bad.copy(), True)],
                         eta=3.0, epoch=3))
    err = capsys.readouterr().err
    assert "rung at epoch 3: leader t0, noise floor 0.0 pt, Holm level 0.05" in err
    [t1] = [line for line in err.splitlines() if line.strip().startswith("t1")]
    [control] = [line for line in err.splitlines() if line.strip().startswith("control")]
    assert t1.rstrip().endswith("worse") and "-20.0 pt" in t1
    assert control.rstrip().endswith("go on (the control)")
    assert max(len(line) for line in err.splitlines()) <= 100
