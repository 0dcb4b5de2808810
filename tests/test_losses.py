"""kd_loss against values worked out with plain math (two classes: softmax = sigmoid of the
difference), and the alpha / margin schedules."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vwwfast.train.losses import KDRecipe, alpha_at, kd_loss, linear, margin_at

Z_S = [[1.0, 0.0], [0.0, 2.0]]
Z_T = [[2.0, 0.0], [0.0, 1.0]]
Y = [0, 1]
OFF = dict(alpha=0.0, temperature=1.0, confidence_gamma=0.0, margin_weight=0.0, label_smoothing=0.0)


def t(x, **kw):
    return torch.tensor(x, **kw)


def sig(x):
    return 1.0 / (1.0 + math.exp(-x))


def kl2(zt, zs, T):
    """KL(p_t || p_s) for one two-class sample, softmax written as sigmoids."""
    pt = [sig((zt[0] - zt[1]) / T), sig((zt[1] - zt[0]) / T)]
    ps = [sig((zs[0] - zs[1]) / T), sig((zs[1] - zs[0]) / T)]
    return sum(pt[c] * (math.log(pt[c]) - math.log(ps[c])) for c in range(2))


def run(**kw):
    args = {**OFF, **kw}
    return kd_loss(t(Z_S), t(Z_T), t(Y), **args)


# ---------------------------------------------------------------------------------------
# Each term alone

def test_ce_alone():
    # sample 0: -log sigmoid(1); sample 1: -log sigmoid(2)
    expected = (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(-2))) / 2
    assert expected == pytest.approx(0.2200948, abs=1e-6)
    loss, terms = run()
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert terms["ce"].item() == pytest.approx(expected, abs=1e-6)


def test_ce_with_label_smoothing():
    # target (1 - eps) on the label + eps / C on each class, C = 2, eps = 0.1
    nll = [[math.log(1 + math.exp(-1)), math.log(1 + math.exp(1))],   # -log p, sample 0
           [math.log(1 + math.exp(2)), math.log(1 + math.exp(-2))]]   # sample 1
    per = [0.9 * nll[i][Y[i]] + 0.05 * (nll[i][0] + nll[i][1]) for i in range(2)]
    expected = sum(per) / 2
    assert expected == pytest.approx(0.2950948, abs=1e-6)
    loss, terms = run(label_smoothing=0.1)
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_kl_t1():
    expected = (kl2(Z_T[0], Z_S[0], 1) + kl2(Z_T[1], Z_S[1], 1)) / 2
    # sample 0: p_t = (.8808, .1192), p_s = (.7311, .2689):
    #   .8808 ln(.8808/.7311) + .1192 ln(.1192/.2689) = .16409 - .09698 = .06711
    # sample 1: p_t = (.2689, .7311), p_s = (.1192, .8808):
    #   .2689 ln(.2689/.1192) + .7311 ln(.7311/.8808) = .21877 - .13620 = .08257
    assert kl2(Z_T[0], Z_S[0], 1) == pytest.approx(0.06711, abs=1e-4)
    assert kl2(Z_T[1], Z_S[1], 1) == pytest.approx(0.08257, abs=1e-4)
    assert expected == pytest.approx(0.07484, abs=1e-4)
    loss, terms = run(alpha=1.0)
    assert terms["kl"].item() == pytest.approx(expected, abs=1e-6)
    assert loss.item() == pytest.approx(expected, abs=1e-6)  # T**2 = 1, no CE at alpha 1


def test_kl_t2_scales_by_t_squared():
    kl_t2 = (kl2(Z_T[0], Z_S[0], 2) + kl2(Z_T[1], Z_S[1], 2)) / 2
    loss, terms = run(alpha=1.0, temperature=2.0)
    assert terms["kl"].item() == pytest.approx(kl_t2, abs=1e-6)
    assert loss.item() == pytest.approx(4 * kl_t2, abs=1e-6)
    assert kl_t2 < (kl2(Z_T[0], Z_S[0], 1) + kl2(Z_T[1], Z_S[1], 1)) / 2  # softer targets


def test_confidence_weighting():
    kl = [kl2(Z_T[i], Z_S[i], 1) for i in range(2)]
    _, off = run(alpha=1.0, confidence_gamma=0.0)
    assert off["kl"].item() == pytest.approx((kl[0] + kl[1]) / 2, abs=1e-6)
    # teacher confidence at T = 1: sigmoid(2) for sample 0, sigmoid(1) for sample 1
    w = [sig(2) ** 2, sig(1) ** 2]
    _, on = run(alpha=1.0, confidence_gamma=2.0)
    assert on["kl"].item() == pytest.approx((w[0] * kl[0] + w[1] * kl[1]) / 2, abs=1e-6)
    # confidence uses T = 1 even when the KL runs at T = 2
    kl_t2 = [kl2(Z_T[i], Z_S[i], 2) for i in range(2)]
    _, on2 = run(alpha=1.0, confidence_gamma=2.0, temperature=2.0)
    assert on2["kl"].item() == pytest.approx((w[0] * kl_t2[0] + w[1] * kl_t2[1]) / 2, abs=1e-6)


def test_margin():
    # centred z_s: (.5, -.5), (-1, 1); centred z_t: (1, -1), (-.5, .5); difference +-0.5 everywhere
    loss, terms = run(margin_weight=0.1)
    assert terms["margin"].item() == pytest.approx(0.25, abs=1e-7)
    ce = terms["ce"].item()
    assert loss.item() == pytest.approx(ce + 0.1 * 0.25, abs=1e-6)


def test_margin_three_classes():
    # z_s (1, 2, 3) centred (-1, 0, 1); z_t (0, 0, 3) centred (-1, -1, 2); diff (0, 1, -1)
    _, terms = kd_loss(t([[1.0, 2.0, 3.0]]), t([[0.0, 0.0, 3.0]]), t([2]), **OFF)
    assert terms["margin"].item() == pytest.approx(2 / 3, abs=1e-6)


def test_all_terms_together():
    alpha, T, gamma, mw, eps = 0.3, 2.0, 2.0, 0.05, 0.1
    nll = [[math.log(1 + math.exp(-1)), math.log(1 + math.exp(1))],
           [math.log(1 + math.exp(2)), math.log(1 + math.exp(-2))]]
    ce = sum(0.9 * nll[i][Y[i]] + 0.05 * (nll[i][0] + nll[i][1]) for i in range(2)) / 2
    w = [sig(2) ** gamma, sig(1) ** gamma]
    kl = sum(w[i] * kl2(Z_T[i], Z_S[i], T) for i in range(2)) / 2
    expected = (1 - alpha) * ce + alpha * T * T * kl + mw * 0.25
    loss, terms = run(alpha=alpha, temperature=T, confidence_gamma=gamma, margin_weight=mw,
                      label_smoothing=eps)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert {k: v.item() for k, v in terms.items()} == pytest.approx(
        {"ce": ce, "kl": kl, "margin": 0.25}, abs=1e-6)


# ---------------------------------------------------------------------------------------
# Equivalences and plumbing

def test_alpha_zero_is_cross_entropy():
    g = torch.Generator().manual_seed(0)
    z_s, z_t = torch.randn(16, 2, generator=g), torch.randn(16, 2, generator=g)
    y = torch.randint(0, 2, (16,), generator=g)
    loss, _ = kd_loss(z_s, z_t, y, alpha=0.0, temperature=3.0, confidence_gamma=2.0,
                      margin_weight=0.0, label_smoothing=0.1)
    assert torch.equal(loss, F.cross_entropy(z_s, y, label_smoothing=0.1))


def test_no_teacher_is_cross_entropy():
    z_s, y = t(Z_S), t(Y)
    loss, terms = kd_loss(z_s, None, y, alpha=0.0, temperature=2.0, confidence_gamma=2.0,
                          margin_weight=0.0, label_smoothing=0.0)
    assert torch.equal(loss, F.cross_entropy(z_s, y))
    assert terms["kl"].item() == 0 and terms["margin"].item() == 0


def test_gamma_zero_is_unweighted_kl():
    g = torch.Generator().manual_seed(1)
    z_s, z_t = torch.randn(8, 2, generator=g), torch.randn(8, 2, generator=g)
    y = torch.randint(0, 2, (8,), generator=g)
    _, terms = kd_loss(z_s, z_t, y, alpha=1.0, temperature=2.0, confidence_gamma=0.0,
                       margin_weight=0.0, label_smoothing=0.0)
    ref = F.kl_div(F.log_softmax(z_s / 2, 1), F.log_softmax(z_t / 2, 1), log_target=True,
                   reduction="batchmean")
    assert terms["kl"].item() == pytest.approx(ref.item(), abs=1e-6)


def test_gradient_reaches_student_only():
    z_s = t(Z_S, requires_grad=True)
    z_t = t(Z_T, requires_grad=True)
    loss, terms = kd_loss(z_s, z_t, t(Y), alpha=0.5, temperature=2.0, confidence_gamma=2.0,
                          margin_weight=0.1, label_smoothing=0.1)
    loss.backward()
    assert z_s.grad is not None and z_s.grad.abs().sum() > 0
    assert z_t.grad is None
    assert all(not v.requires_grad and v.dim() == 0 for v in terms.values())


def test_half_precision_logits_computed_in_float32():
    loss, terms = kd_loss(t(Z_S).bfloat16(), t(Z_T).half(), t(Y), alpha=0.5, temperature=2.0,
                          confidence_gamma=2.0, margin_weight=0.1, label_smoothing=0.0)
    assert loss.dtype == torch.float32
    assert all(v.dtype == torch.float32 for v in terms.values())
    ref, _ = run(alpha=0.5, temperature=2.0, confidence_gamma=2.0, margin_weight=0.1)
    assert loss.item() == pytest.approx(ref.item(), abs=1e-6)  # these logits are exact in bf16


# ---------------------------------------------------------------------------------------
# Schedules

def test_linear():
    assert linear(1.0, 0.0, 0.0) == 1.0
    assert linear(1.0, 0.0, 0.25) == 0.75
    assert linear(1.0, 0.0, 1.0) == 0.0
    assert linear(1.0, 0.0, 2.0) == 0.0  # clamped


def test_alpha_schedule():
    # 5 epochs numbered 1..5: the start at epoch 1, the end reached at epoch 5
    assert alpha_at(0.8, 0.0, 1, 5) == pytest.approx(0.8)
    assert alpha_at(0.8, 0.0, 3, 5) == pytest.approx(0.4)
    assert alpha_at(0.8, 0.0, 5, 5) == pytest.approx(0.0)
    assert alpha_at(0.55, None, 3, 5) == 0.55
    assert alpha_at(0.8, 0.0, 1, 1) == 0.8


def test_margin_schedule():
    # margin_weight_decay_end_epoch 5: 0.1 at epoch 1 -> 0.0 at epoch 5 (the 5th), then 0.0
    assert margin_at(0.1, 0.0, 5, 1) == pytest.approx(0.1)
    assert margin_at(0.1, 0.0, 5, 3) == pytest.approx(0.05)
    assert margin_at(0.1, 0.0, 5, 5) == pytest.approx(0.0)
    assert margin_at(0.1, 0.02, 5, 9) == pytest.approx(0.02)
    assert margin_at(0.1, None, 5, 2) == 0.1
    assert margin_at(0.1, 0.0, None, 2) == 0.1
    assert margin_at(0.1, 0.0, 0, 1) == 0.0


def test_seed_run16_schedule_reaches_its_end_at_the_named_epoch():
    # margin_weight_decay_end_epoch: 20 of a 25-epoch run: the end value at epoch 20, not 21
    r = KDRecipe(alpha=0.55, margin_weight=0.04, margin_weight_end=0.0, margin_decay_end_epoch=20)
    weights = [r.at(e, 25)["margin_weight"] for e in range(1, 26)]
    assert weights[0] == pytest.approx(0.04) and weights[18] > 0
    assert weights[19] == 0.0 and weights[24] == 0.0


def test_recipe_weights_and_record():
    r = KDRecipe(alpha=0.8, alpha_end=0.2, temperature=2.0, confidence_gamma=1.0,
                 margin_weight=0.03, label_smoothing=0.1)
    w = r.at(1, 4)
    assert (w["alpha"], w["margin_weight"], w["temperature"], w["label_smoothing"]) == (0.8, 0.03, 2.0, 0.1)
    assert r.at(4, 4)["alpha"] == pytest.approx(0.2)
    record = r.record(0.5, {"ce": 0.5, "kl": 0.1, "margin": 2.0}, w)
    assert record == pytest.approx({"loss": 0.5, "loss_ce": 0.5, "loss_kl": 0.1, "loss_margin": 2.0,
                                    "term_ce": 0.1, "term_kl": 0.32, "term_margin": 0.06,
                                    "alpha": 0.8, "margin_weight": 0.03, "temperature": 2.0})
    loss, means = r.loss(t(Z_S), t(Z_T), t(Y), w)
    record = r.record(loss.item(), {k: v.item() for k, v in means.items()}, w)
    assert loss.item() == pytest.approx(sum(v for k, v in record.items() if k.startswith("term_")),
                                        rel=1e-6)
    with pytest.raises(TypeError, match="no setting alpah"):
        KDRecipe(alpah=0.5)


def test_supervised_recipe_has_no_teacher_terms():
    r = KDRecipe(alpha=0.0, margin_weight=0.03, label_smoothing=0.01)
    assert not r.uses_teacher and r.at(3, 5)["margin_weight"] == 0.0
    loss, terms = r.loss(t(Z_S), t(Z_T), t(Y), r.at(1, 5))
    assert terms["kl"].item() == 0 and terms["margin"].item() == 0
    assert loss.item() == pytest.approx(F.cross_entropy(t(Z_S), t(Y), label_smoothing=0.01).item())


def test_tensor_weights_give_the_float_loss():
    # a compiled step takes the scheduled weights as tensors; the value must not change
    for alpha, mw in ((0.55, 0.03), (0.0, 0.0), (1.0, 0.1)):
        a, _ = run(alpha=alpha, margin_weight=mw, temperature=2.0, confidence_gamma=2.0)
        b, _ = run(alpha=torch.tensor(alpha), margin_weight=torch.tensor(mw), temperature=2.0,
                   confidence_gamma=2.0)
        assert b.item() == pytest.approx(a.item(), rel=1e-6)
    r = KDRecipe(alpha=0.55, alpha_end=0.1, margin_weight=0.03)
    assert r.scheduled == ["alpha", "margin_weight"]  # the temperature is constant: no tensor


def test_a_new_term_is_one_entry(monkeypatch):
    """A term registered through TERMS / WEIGHTS / SETTINGS enters the loss, its mean and its
    weight, with nothing else changed."""
    from vwwfast.train import losses
    base, _ = run(alpha=0.5, temperature=2.0)
    toy = losses.Term("toy", "toy", lambda z_s, z_t, y, w: z_s.pow(2).mean(),
                      lambda w: w["toy_weight"], teacher=False)
    monkeypatch.setattr(losses, "TERMS", losses.TERMS + (toy,))
    monkeypatch.setattr(losses, "WEIGHTS", losses.WEIGHTS + (
        losses.Weight("toy_weight", lambda s, epoch, epochs: s["toy_weight"], teacher=False),))
    monkeypatch.setitem(losses.SETTINGS, "toy_weight", 0.0)
    r = KDRecipe(alpha=0.5, temperature=2.0, toy_weight=0.25)
    w = r.at(1, 3)
    loss, means = r.loss(t(Z_S), t(Z_T), t(Y), w)
    assert means["toy"].item() == pytest.approx(1.25)  # (1 + 0 + 0 + 4) / 4
    assert loss.item() == pytest.approx(base.item() + 0.25 * 1.25, rel=1e-6)
    assert r.record(0.0, {k: v.item() for k, v in means.items()}, w)["term_toy"] == \
        pytest.approx(0.3125)
