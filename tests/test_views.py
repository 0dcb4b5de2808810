import math

import numpy as np
import pytest

from vwwfast.errors import UserError
from vwwfast.data.views import COL, PARAM_COLUMNS, in_layout, sample_keys, uniforms, val_params, view_params
from vwwfast.viewspec import FIELDS, ViewSpec, spec_conflicts, view_spec

N = 20000
H = np.full(N, 224)
W = np.full(N, 299)


@pytest.fixture(scope="module")
def train():
    return view_params(ViewSpec(), 0, 0, np.arange(N), H, W)


def test_shape_and_columns(train):
    assert train.shape == (N, len(PARAM_COLUMNS)) and train.dtype == np.float32
    assert PARAM_COLUMNS[:4] == ("y0", "x0", "h", "w")


def test_boxes_inside_image_on_whole_pixels(train):
    y0, x0, h, w = (train[:, COL[c]].astype(np.float64) for c in ("y0", "x0", "h", "w"))
    assert (y0 >= 0).all() and (x0 >= 0).all() and (h > 0).all() and (w > 0).all()
    assert (y0 + h <= 1 + 1e-6).all() and (x0 + w <= 1 + 1e-6).all()
    for rel, size in ((y0, 224), (x0, 299), (h, 224), (w, 299)):
        px = rel * size
        assert np.abs(px - np.round(px)).max() < 1e-3  # whole pixels of the stored image


def test_distribution_matches_spec(train):
    spec = ViewSpec()
    hp, wp = train[:, COL["h"]] * 224, train[:, COL["w"]] * 299
    area = hp * wp / (224 * 299)
    ratio = wp / hp
    # integer rounding of w, h widens the ranges slightly
    assert area.min() >= spec.scale[0] * 0.95 and area.max() <= 1.0 + 1e-6
    assert ratio.min() >= spec.ratio[0] * 0.97 and ratio.max() <= spec.ratio[1] * 1.03
    assert area.min() < 0.27 and area.max() > 0.95 and ratio.min() < 0.8 and ratio.max() > 1.25
    assert train[:, COL["flip"]].mean() == pytest.approx(0.5, abs=0.02)
    assert set(np.unique(train[:, COL["flip"]])) == {0.0, 1.0}
    for name in ("brightness", "contrast", "saturation"):
        v = train[:, COL[name]]
        assert v.min() >= 0.8 - 1e-6 and v.max() <= 1.2 + 1e-6 and abs(v.mean() - 1) < 0.01
    hue = train[:, COL["hue"]]
    assert hue.min() >= -0.02 - 1e-7 and hue.max() <= 0.02 + 1e-7 and abs(hue.mean()) < 1e-3
    assert (train[:, COL["erase_y0"]:COL["erase_w"] + 1] == 0).all()  # erasing off by default
    assert (train[:, COL["partner"]] == -1).all() and (train[:, COL["mix_lam"]] == 1).all()
    assert (train[:, COL["mix_y0"]:] == 0).all()  # not mixed by default


def test_subset_and_chunking_invariance(train):
    rng = np.random.default_rng(1)
    sub = rng.choice(N, 500, replace=False)
    np.testing.assert_array_equal(view_params(ViewSpec(), 0, 0, sub, H[sub], W[sub]), train[sub])
    chunks = [view_params(ViewSpec(), 0, 0, np.arange(a, min(a + 777, N)), H[a:a + 777],
                          W[a:a + 777]) for a in range(0, N, 777)]
    np.testing.assert_array_equal(np.concatenate(chunks), train)


def test_views_and_seeds_differ(train):
    other_view = view_params(ViewSpec(), 0, 1, np.arange(N), H, W)
    other_seed = view_params(ViewSpec(), 1, 0, np.arange(N), H, W)
    assert (other_view != train).any(axis=1).mean() > 0.99
    assert (other_seed != train).any(axis=1).mean() > 0.99


def test_golden_row():
    """Fixed values: a change of the generator changes every cached view, so it is caught."""
    p = view_params(ViewSpec(erase=0.5), 7, 3, [0, 12345], [224, 300], [299, 224])
    # row 0: crop of 146 x 186 px at (28, 6) in a 299 x 224 image, no flip, no erasing
    np.testing.assert_allclose(p[0, :4], [6 / 224, 28 / 299, 186 / 224, 146 / 299], atol=1e-7)
    np.testing.assert_allclose(p[0, 4:13], [0, 0.8751970529556274, 0.8695448637008667,
                                          1.0660070180892944, -0.010706407949328423, 0, 0, 0, 0],
                               atol=1e-7)
    np.testing.assert_allclose(p[1, :13], [0.07666666805744171, 0.0, 0.8666666746139526,
                                      0.8794642686843872, 0.0, 0.8452690839767456,
                                      1.0981290340423584, 0.8326717019081116,
                                      0.010476549156010151, 0.041944511234760284,
                                      0.036143284291028976, 0.392842173576355,
                                      0.22871240973472595], atol=1e-7)


def _torchvision_crop(u, height, width, scale, ratio):
    """torchvision's RandomResizedCrop.get_params, line by line, on given uniforms."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for k in range(10):
        target_area = area * (scale[0] + (scale[1] - scale[0]) * u[4 * k])
        aspect_ratio = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u[4 * k + 1])
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            i = int(u[4 * k + 2] * (height - h + 1))
            j = int(u[4 * k + 3] * (width - w + 1))
            return i, j, h, w
    in_ratio = float(width) / float(height)
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def test_crop_is_torchvisions_algorithm():
    rng = np.random.default_rng(0)
    n = 400
    heights = rng.integers(8, 400, n)
    widths = rng.integers(8, 400, n)
    widths[:40] = heights[:40] * 9  # very wide: no attempt fits, the fallback runs
    spec = ViewSpec(scale=(0.5, 1.0))
    p = view_params(spec, 5, 2, np.arange(n), heights, widths).astype(np.float64)
    u = uniforms(sample_keys(5, 2, np.arange(n)), 40)
    for k in range(n):
        i, j, h, w = _torchvision_crop(u[k], int(heights[k]), int(widths[k]), spec.scale, spec.ratio)
        got = np.round(p[k, :4] * [heights[k], widths[k], heights[k], widths[k]])
        assert tuple(got) == (i, j, h, w), k


def test_plain_and_val():
    plain = view_params(ViewSpec.plain(), 3, 9, np.arange(100), np.full(100, 50), np.full(100, 80))
    ident = np.array([0, 0, 1, 1, 0, 1, 1, 1, 0, 0, 0, 0, 0, -1, 1, 0, 0, 0, 0], dtype=np.float32)
    assert (plain == ident).all()
    assert (val_params([50, 80], [80, 50]) == ident).all()
    c = val_params([50, 80], [81, 50], center_crop=True)
    np.testing.assert_allclose(c[0, :4], [0, 15 / 81, 1, 50 / 81], atol=1e-7)
    np.testing.assert_allclose(c[1, :4], [15 / 80, 0, 50 / 80, 1], atol=1e-7)
    assert (c[:, 4:] == ident[4:]).all()


def test_erase_boxes():
    spec = ViewSpec(erase=0.5)
    p = view_params(spec, 0, 0, np.arange(N), H, W)
    eh, ew = p[:, COL["erase_h"]], p[:, COL["erase_w"]]
    on = eh > 0
    assert on.mean() == pytest.approx(0.5, abs=0.02)
    y0, x0 = p[on, COL["erase_y0"]], p[on, COL["erase_x0"]]
    assert (y0 >= 0).all() and (x0 >= 0).all()
    assert (y0 + eh[on] <= 1 + 1e-6).all() and (x0 + ew[on] <= 1 + 1e-6).all()
    area = eh[on] * ew[on]
    assert area.min() >= 0.02 - 1e-6 and area.max() <= 0.2 + 1e-6
    assert (p[~on, COL["erase_y0"]:COL["erase_w"] + 1] == 0).all()
    # the crop and colour columns do not depend on whether erasing is on
    base = view_params(ViewSpec(), 0, 0, np.arange(N), H, W)
    np.testing.assert_array_equal(p[:, :COL["erase_y0"]], base[:, :COL["erase_y0"]])


def test_view_spec_names():
    assert view_spec("default") == ViewSpec()
    assert view_spec("plain") == ViewSpec.plain()
    assert view_spec("plain").to_dict()["crop"] is False
    assert ViewSpec().to_dict()["scale"] == [0.25, 1.0]
    with pytest.raises(UserError):
        view_spec("strong")


def test_length_mismatch_refused():
    with pytest.raises(ValueError):
        view_params(ViewSpec(), 0, 0, np.arange(3), [10, 10], [10, 10, 10])
    assert view_params(ViewSpec(), 0, 0, [], [], []).shape == (0, len(PARAM_COLUMNS))


# ---------------------------------------------------------------------------------------
# Every field is a setting: each changes the parameters as its meaning says

def _params(**overrides):
    return view_params(view_spec("default", overrides), 0, 0, np.arange(N), H, W).astype(np.float64)


def _crop_area_ratio(p):
    hp, wp = p[:, COL["h"]] * 224, p[:, COL["w"]] * 299
    return hp * wp / (224 * 299), wp / hp


def test_erase_setting_erases_a_quarter_within_its_box_ranges():
    p = _params(erase=0.25, erase_scale=[0.1, 0.3], erase_ratio=[0.5, 2.0])
    eh, ew = p[:, COL["erase_h"]], p[:, COL["erase_w"]]
    on = eh > 0
    assert on.mean() == pytest.approx(0.25, abs=0.015)
    area, ratio = eh[on] * ew[on], eh[on] / ew[on]
    assert area.min() >= 0.1 - 1e-6 and area.max() <= 0.3 + 1e-6
    assert area.min() < 0.11 and area.max() > 0.29
    assert ratio.min() >= 0.5 - 1e-4 and ratio.max() <= 2.0 + 1e-4
    assert ratio.min() < 0.55 and ratio.max() > 1.8
    assert not _params(erase=0.0)[:, COL["erase_y0"]:COL["erase_w"] + 1].any()
    assert (_params(erase=1.0)[:, COL["erase_h"]] > 0).all()


@pytest.mark.parametrize("scale", [(0.08, 1.0), (0.5, 0.6), (0.3, 0.3)])
def test_scale_bounds_the_crop_area(scale):
    area, _ = _crop_area_ratio(_params(scale=list(scale)))
    # whole-pixel rounding of h and w moves the area by a few per cent at most
    assert area.min() >= scale[0] * 0.97 and area.max() <= scale[1] * 1.03 + 1e-9
    assert area.min() < scale[0] * 1.03 and area.max() > scale[1] * 0.97


@pytest.mark.parametrize("ratio", [(1.0, 1.0), (0.5, 0.7), (1.5, 2.0)])
def test_ratio_bounds_the_crop_shape(ratio):
    _, r = _crop_area_ratio(_params(ratio=list(ratio), scale=[0.1, 0.5]))
    assert r.min() >= ratio[0] * 0.95 and r.max() <= ratio[1] * 1.05
    assert r.min() < ratio[0] * 1.05 and r.max() > ratio[1] * 0.95


@pytest.mark.parametrize("flip", [0.0, 0.2, 1.0])
def test_flip_probability(flip):
    assert _params(flip=flip)[:, COL["flip"]].mean() == pytest.approx(flip, abs=0.015)


@pytest.mark.parametrize("name", ["brightness", "contrast", "saturation"])
@pytest.mark.parametrize("amount", [0.0, 0.5, 1.5])
def test_colour_strength_bounds_its_factor_alone(name, amount):
    p = _params(**{name: amount})
    v = p[:, COL[name]]
    lo, hi = max(0.0, 1 - amount), 1 + amount
    assert v.min() >= lo - 1e-6 and v.max() <= hi + 1e-6
    assert v.min() <= lo + 0.01 * (hi - lo) + 1e-9 and v.max() >= hi - 0.01 * (hi - lo) - 1e-9
    base = _params()
    others = [c for c in PARAM_COLUMNS if c != name]
    np.testing.assert_array_equal(p[:, [COL[c] for c in others]], base[:, [COL[c] for c in others]])


@pytest.mark.parametrize("hue", [0.0, 0.1, 0.5])
def test_hue_range(hue):
    v = _params(hue=hue)[:, COL["hue"]]
    assert v.min() >= -hue - 1e-7 and v.max() <= hue + 1e-7
    assert v.min() <= -0.99 * hue and v.max() >= 0.99 * hue


def test_crop_false_gives_the_whole_image():
    p = _params(crop=False, scale=[0.1, 0.2])
    assert (p[:, :4] == [0, 0, 1, 1]).all()
    assert p[:, COL["flip"]].mean() == pytest.approx(0.5, abs=0.02)  # the rest still applies


def test_plain_base_with_settings():
    spec = view_spec("plain", {"flip": 0.5, "erase": 0.25})
    assert not spec.crop and spec.brightness == 0 and spec.flip == 0.5 and spec.erase == 0.25
    assert not spec.is_plain and view_spec("plain").is_plain and not ViewSpec().is_plain
    assert view_spec("plain", {"scale": [0.1, 0.2]}).is_plain  # inert without crop


def test_values_are_normalised():
    spec = view_spec("default", {"scale": [0.08, 1], "erase": "1e-3", "flip": 1, "erase-ratio": [1, 2]})
    assert spec.scale == (0.08, 1.0) and isinstance(spec.scale[1], float)
    assert spec.erase == 0.001 and spec.flip == 1.0 and spec.erase_ratio == (1.0, 2.0)
    assert spec == ViewSpec(scale=(0.08, 1.0), erase=0.001, flip=1.0, erase_ratio=(1.0, 2.0))
    assert hash(spec) == hash(ViewSpec.from_dict(spec.to_dict()))


@pytest.mark.parametrize("overrides, message", [
    ({"erase": 1.5}, "erase must be a probability within [0, 1], got 1.5"),
    ({"erase": -0.1}, "erase must be a probability"),
    ({"flip": 2}, "flip must be a probability"),
    ({"scale": [0.5, 0.2]}, "scale must be 0 < lo <= hi <= 1"),
    ({"scale": [0.0, 1.0]}, "scale must be 0 < lo <= hi <= 1"),
    ({"scale": [0.5, 1.5]}, "scale must be 0 < lo <= hi <= 1"),
    ({"scale": 0.5}, "scale takes two numbers lo, hi"),
    ({"scale": [0.1, 0.5, 1.0]}, "scale takes two numbers lo, hi"),
    ({"ratio": [0.0, 1.0]}, "ratio must be 0 < lo <= hi"),
    ({"ratio": [2.0, 1.0]}, "ratio must be 0 < lo <= hi"),
    ({"brightness": -0.1}, "brightness must be a strength >= 0"),
    ({"contrast": -1}, "contrast must be a strength >= 0"),
    ({"saturation": float("nan")}, "saturation takes a number"),
    ({"hue": 0.6}, "hue must be within [0, 0.5]"),
    ({"hue": -0.01}, "hue must be within [0, 0.5]"),
    ({"erase_scale": [-0.1, 0.2]}, "erase_scale must be 0 <= lo <= hi <= 1"),
    ({"erase_scale": [0.2, 1.1]}, "erase_scale must be 0 <= lo <= hi <= 1"),
    ({"erase_scale": [0.0, 0.0]}, "hi > 0"),
    ({"erase_ratio": [0.0, 3.0]}, "erase_ratio must be 0 < lo <= hi"),
    ({"erase_ratio": [3.0, 0.3]}, "erase_ratio must be 0 < lo <= hi"),
    ({"crop": 0}, "crop must be true or false"),
    ({"crop": "no"}, "crop must be true or false"),
    ({"flip": True}, "flip takes a number"),
    ({"erase": "lots"}, "erase takes a number"),
    ({"erase": None}, "erase takes a number"),
    ({"mixup": -0.1}, "mixup must be a Beta(a, a) concentration within [0, 100]"),
    ({"cutmix": 1000}, "cutmix must be a Beta(a, a) concentration"),
    ({"mix_prob": 1.5}, "mix_prob must be a probability within [0, 1]"),
    ({"switch_prob": -0.5}, "switch_prob must be a probability"),
    ({"mixup": "strong"}, "mixup takes a number"),
])
@pytest.mark.parametrize("base", ["default", "fm"])
def test_out_of_range_refused(base, overrides, message):
    with pytest.raises(UserError) as e:
        view_spec(base, overrides)
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("key, hint", [("erasing", "erase"), ("random_erasing", "erase"),
                                       ("brightnes", "brightness"), ("hflip", "flip"),
                                       ("erase_scal", "erase_scale")])
def test_unknown_setting_refused_with_a_hint(key, hint):
    with pytest.raises(UserError, match=f"unknown setting '{key}'; did you mean '{hint}'"):
        view_spec("default", {key: 0.1})
    with pytest.raises(UserError, match="unknown setting 'zoom' \\(settings: crop, scale"):
        view_spec("plain", {"zoom": 2})
    with pytest.raises(UserError, match="did you mean 'default'"):
        view_spec("defualt")


def test_direct_construction_is_checked_too():
    with pytest.raises(UserError):
        ViewSpec(erase=2.0)
    with pytest.raises(UserError, match="newer vwwfast"):
        ViewSpec.from_dict({**ViewSpec().to_dict(), "posterize": 4})
    old = ViewSpec().to_dict()
    del old["erase_ratio"]  # a record made before a field existed reads with its default
    assert ViewSpec.from_dict(old) == ViewSpec()


def test_seed_run_1_setting_in_yaml():
    """The seed's first run trains with random erasing on; its second removes it (p=0)."""
    import yaml
    from vwwfast.config import DistillConfig, resolve
    text = """
views:
  erase: 0.25
  erase_scale: [0.02, 0.33]
  scale: [0.08, 1.0]
"""
    cfg = resolve(DistillConfig, yaml.safe_load(text))
    spec = view_spec(cfg.view_spec or "default", cfg.view)
    assert spec == ViewSpec(erase=0.25, erase_scale=(0.02, 0.33), scale=(0.08, 1.0))
    assert spec.non_default() == {"scale": [0.08, 1.0], "erase": 0.25, "erase_scale": [0.02, 0.33]}
    run2 = resolve(DistillConfig, yaml.safe_load(text.replace("erase: 0.25", "erase: 0")))
    assert view_spec(run2.view_spec or "default", run2.view).erase == 0.0
    # a wrong view setting is refused when the config resolves, before any work
    with pytest.raises(UserError, match="did you mean 'erase'"):
        resolve(DistillConfig, yaml.safe_load("views:\n  random_erasing: 0.25\n"))
    with pytest.raises(UserError, match="unknown view spec 'fmm'; did you mean 'fm'"):
        resolve(DistillConfig, {"view_spec": "fmm"})


def test_non_default():
    assert ViewSpec().non_default() == {}
    assert view_spec("default", {"erase": 0.25, "hue": 0.0}).non_default() == {"hue": 0.0, "erase": 0.25}
    plain = ViewSpec.plain()
    assert plain.non_default() == {"crop": False, "flip": 0.0, "brightness": 0.0, "contrast": 0.0,
                                   "saturation": 0.0, "hue": 0.0}
    assert plain.non_default("plain") == {}
    for spec in (ViewSpec(erase=0.5, scale=(0.1, 0.9)), plain, view_spec("plain", {"flip": 1})):
        for base in ("default", "plain"):  # the settings over a base rebuild the spec
            assert view_spec(base, spec.non_default(base)) == spec


def test_describe():
    assert ViewSpec().describe() == "default"
    assert view_spec("default", {"erase": 0.25, "crop": False}).describe() == "default, crop=false, erase=0.25"
    assert view_spec("plain", {"flip": 0.5}).describe("plain") == "plain, flip=0.5"
    # rounded for show unless rounding would hide a difference
    assert view_spec("default", {"ratio": [0.5, 4 / 3]}).describe() == "default, ratio=[0.5, 1.3333333333333333]"
    assert view_spec("default", {"hue": 0.1234567}).describe() == "default, hue=0.1234567"


def test_spec_conflicts():
    store = view_spec("default", {"erase": 0.25})
    # nothing asked, or asked what the store holds: compatible
    assert spec_conflicts(store, None, {}) == []
    assert spec_conflicts(store, None, {"erase": 0.25}) == []
    assert spec_conflicts(store.to_dict(), "default", {"erase": 0.25}) == []
    # a setting that contradicts the store
    assert spec_conflicts(store, None, {"erase": 0}) == ["erase: store 0.25, asked 0.0"]
    assert spec_conflicts(store, None, {"erase": 0.25, "scale": [0.08, 1.0]}) == \
        ["scale: store [0.25, 1.0], asked [0.08, 1.0]"]
    # a named base fixes every field: 'default' alone means erase 0
    assert spec_conflicts(store, "default", {}) == ["erase: store 0.25, asked 0.0 (from --view-spec default)"]
    # names are not compared, values are: plain + settings that rebuild the store's spec
    assert spec_conflicts(store, "plain", store.non_default("plain")) == []
    assert len(spec_conflicts(store, "plain", {})) == 7
    # asked settings are checked like any others
    with pytest.raises(UserError, match="unknown setting 'erasing'"):
        spec_conflicts(store, None, {"erasing": 0})
    with pytest.raises(UserError, match="erase must be a probability"):
        spec_conflicts(store, None, {"erase": 2})


def test_in_layout():
    p = view_params(ViewSpec(erase=0.5), 0, 0, np.arange(10), H[:10], W[:10])
    assert in_layout(p, PARAM_COLUMNS) is p
    np.testing.assert_array_equal(in_layout(p[:, ::-1], list(reversed(PARAM_COLUMNS))), p)
    with pytest.raises(UserError, match="cannot render \\(mix_weight\\)"):
        in_layout(np.concatenate([p, p[:, :1]], axis=1), list(PARAM_COLUMNS) + ["mix_weight"])
    with pytest.raises(UserError, match="no view-parameter columns hue"):
        in_layout(p[:, [i for i in range(len(PARAM_COLUMNS)) if i != COL["hue"]]],
                  [c for c in PARAM_COLUMNS if c != "hue"])


def test_fields_are_the_settings():
    assert FIELDS == tuple(ViewSpec().to_dict(full=True))


# ---------------------------------------------------------------------------------------
# Mixing columns (rendering mixed views: tests/test_mixing.py)

from vwwfast.data.views import MIX_COLUMNS, beta_symmetric  # noqa: E402

OLD = COL["erase_w"] + 1  # the columns before mixing existed


def _mix(spec_name="fm", seed=0, view=0, **overrides):
    return view_params(view_spec(spec_name, overrides), seed, view, np.arange(N), H, W)


@pytest.mark.parametrize("overrides", [{}, {"cutmix": 1.0}, {"mixup": 0.2, "cutmix": 2.0, "mix_prob": 0.5}])
def test_mixing_leaves_the_other_columns_alone(train, overrides):
    """New draw numbers after the old ones: the crop, flip, colour and erase columns of a
    mixing spec are those of the same spec without mixing (so test_golden_row, recorded
    before mixing existed, still holds)."""
    np.testing.assert_array_equal(_mix(**overrides)[:, :OLD], train[:, :OLD])
    assert PARAM_COLUMNS[OLD:] == tuple(MIX_COLUMNS)


def test_fm_mixes_every_view_by_mixup_with_a_uniform_weight():
    p = _mix()
    partner, lam = p[:, COL["partner"]], p[:, COL["mix_lam"]].astype(np.float64)
    assert (partner == np.round(partner)).all() and partner.min() >= 0 and partner.max() < N
    assert (partner != np.arange(N)).all()                      # never oneself
    counts = np.bincount(partner.astype(int), minlength=N)      # uniform over the others
    assert counts.max() <= 12 and (counts == 0).mean() == pytest.approx(np.exp(-1), abs=0.02)
    assert (lam > 0).all() and (lam < 1).all()
    assert lam.mean() == pytest.approx(0.5, abs=0.01) and lam.var() == pytest.approx(1 / 12, rel=0.03)
    assert (p[:, COL["mix_y0"]:] == 0).all()                    # mixup: no box


def test_cutmix_box_and_weight():
    p = _mix("default", cutmix=1.0).astype(np.float64)
    y0, x0, h, w = (p[:, COL[c]] for c in ("mix_y0", "mix_x0", "mix_h", "mix_w"))
    lam = p[:, COL["mix_lam"]]
    assert (y0 >= 0).all() and (x0 >= 0).all() and (y0 + h <= 1 + 1e-6).all() and (x0 + w <= 1 + 1e-6).all()
    assert (h > 0).mean() > 0.999
    np.testing.assert_allclose(lam, 1 - h * w, atol=1e-6)        # the kept area share
    e = 1e-5
    inside = (y0 > e) & (x0 > e) & (y0 + h < 1 - e) & (x0 + w < 1 - e)  # unclipped: square
    np.testing.assert_allclose(h[inside], w[inside], atol=1e-6)
    assert inside.mean() > 0.05 and lam.mean() > 0.5            # clipping only shrinks boxes


def test_mix_prob_and_switch_prob():
    p = _mix("default", mixup=0.4, cutmix=1.0, mix_prob=0.3, switch_prob=0.25)
    mixed = p[:, COL["partner"]] >= 0
    assert mixed.mean() == pytest.approx(0.3, abs=0.015)
    assert (p[~mixed, COL["mix_lam"]] == 1).all() and (p[~mixed, COL["mix_y0"]:] == 0).all()
    cut = p[mixed, COL["mix_h"]] > 0
    assert cut.mean() == pytest.approx(0.25, abs=0.025)
    off = _mix("default", mixup=1.0, mix_prob=0.0)
    assert (off[:, COL["partner"]] == -1).all() and (off[:, COL["mix_lam"]] == 1).all()


def test_mixing_columns_per_seed_view_and_index():
    full = _mix("default", cutmix=1.0, mixup=0.5)
    rng = np.random.default_rng(2)
    sub = rng.choice(N, 300, replace=False)
    spec = view_spec("default", {"cutmix": 1.0, "mixup": 0.5})
    np.testing.assert_array_equal(view_params(spec, 0, 0, sub, H[sub], W[sub], num_samples=N), full[sub])
    chunks = [view_params(spec, 0, 0, np.arange(a, min(a + 999, N)), H[a:a + 999], W[a:a + 999],
                          num_samples=N) for a in range(0, N, 999)]
    np.testing.assert_array_equal(np.concatenate(chunks), full)
    other = _mix("default", view=1, cutmix=1.0, mixup=0.5)
    assert (other[:, OLD:] != full[:, OLD:]).any(axis=1).mean() > 0.99
    # a subset without the split's size would draw partners among too few samples
    with pytest.raises(ValueError, match="num_samples"):
        view_params(spec, 0, 0, sub, H[sub], W[sub])
    with pytest.raises(ValueError, match="num_samples"):
        view_params(spec, 0, 0, [5], [10], [10], num_samples=5)
    with pytest.raises(UserError, match="at least 2"):
        view_params(spec, 0, 0, [0], [10], [10])
    # a spec without mixing needs no split size
    assert view_params(ViewSpec(), 0, 0, sub, H[sub], W[sub]).shape == (300, len(PARAM_COLUMNS))


def test_golden_mix_rows():
    """Fixed values of the mixing draws (partner, weight, box)."""
    p = view_params(view_spec("default", {"mixup": 0.4, "cutmix": 1.0}), 7, 3, np.arange(6),
                    [224] * 6, [299] * 6)
    np.testing.assert_allclose(p[:, OLD:], [
        [1.0, 0.000938079901970923, 0.0, 0.0, 0.0, 0.0],
        [5.0, 0.6385850310325623, 0.5217815041542053, 0.0, 0.4782184958457947, 0.7557528614997864],
        [0.0, 0.043969642370939255, 0.0, 0.0, 0.0, 0.0],
        [4.0, 0.9404318928718567, 0.8170849084854126, 0.4687659740447998, 0.1829151213169098,
         0.32565972208976746],
        [5.0, 0.9593918323516846, 0.0, 0.0, 0.0, 0.0],
        [1.0, 0.9744561910629272, 0.0, 0.0, 0.0, 0.0]], atol=1e-7)


@pytest.mark.parametrize("a", [0.05, 0.2, 0.4, 0.5, 0.8, 1.0, 2.0, 8.0])
def test_beta_sampler_mean_and_variance(a):
    """Johnk (a <= 1/2) and Ulrich (a > 1/2) against Beta(a, a): mean 1/2, variance
    1 / (4 (2a + 1)), and the share of very uneven weights."""
    u = uniforms(sample_keys(11, 0, np.arange(200_000)), 32)
    x = beta_symmetric(u, a)
    assert np.isfinite(x).all() and (x >= 0).all() and (x <= 1).all()
    var = 1 / (4 * (2 * a + 1))
    assert x.mean() == pytest.approx(0.5, abs=3e-3)
    assert x.var() == pytest.approx(var, rel=0.02)
    assert (x < 0.25).mean() == pytest.approx((x > 0.75).mean(), abs=0.005)


def test_beta_sampler_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    u = uniforms(sample_keys(3, 1, np.arange(50_000)), 32)
    for a in (0.3, 1.0, 3.0):
        assert stats.kstest(beta_symmetric(u, a), stats.beta(a, a).cdf).pvalue > 1e-3


def test_beta_fallback_after_every_try_fails():
    """Uniforms near 0 make X and Y near 1: every Johnk try is rejected; the last try's
    ratio is taken, a finite weight in [0, 1]."""
    u = np.full((4, 32), 1e-9)
    u[:, 1::2] = 2e-9
    x = beta_symmetric(u, 0.3)
    assert np.isfinite(x).all() and ((x >= 0) & (x <= 1)).all()


def test_mixing_spec_settings():
    fm = view_spec("fm")
    assert fm == ViewSpec(mixup=1.0) and fm.mixes and not fm.is_plain
    assert fm.non_default() == {"mixup": 1.0} and fm.describe() == "default, mixup=1.0"
    assert not ViewSpec().mixes and not view_spec("default", {"mix_prob": 0.5}).mixes
    assert not view_spec("plain", {"mixup": 0.2}).is_plain           # mixing is augmentation
    assert not view_spec("default", {"cutmix": 1.0, "mix_prob": 0.0}).mixes
    for base in ("default", "plain", "fm"):
        spec = view_spec(base, {"cutmix": 0.5, "switch_prob": 0.3})
        for over in ("default", "plain", "fm"):
            assert view_spec(over, spec.non_default(over)) == spec
    with pytest.raises(UserError, match="'default', 'plain', 'fm'"):
        view_spec("mixup")


def test_to_dict_of_a_spec_without_mixing_is_as_before():
    """Stores made before mixing existed keep their fingerprints (so they resume and
    extend): a spec that does not mix leaves its mixing fields at their defaults out."""
    before = ["crop", "scale", "ratio", "flip", "brightness", "contrast", "saturation", "hue",
              "erase", "erase_scale", "erase_ratio"]
    assert list(ViewSpec().to_dict()) == before
    assert list(ViewSpec(erase=0.5).to_dict()) == before
    fm = view_spec("fm", {"cutmix": 0.5})
    assert fm.to_dict() == {**ViewSpec().to_dict(), "mixup": 1.0, "cutmix": 0.5}
    assert list(ViewSpec().to_dict(full=True)) == list(FIELDS)
    for spec in (ViewSpec(), fm, view_spec("default", {"mix_prob": 0.5})):
        assert ViewSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize("key, hint", [("mixup_alpha", "mixup"), ("cutmix_alpha", "cutmix"),
                                       ("mixup_prob", "mix_prob"), ("cut_mix", "cutmix"),
                                       ("switch_pro", "switch_prob")])
def test_mixing_aliases(key, hint):
    with pytest.raises(UserError, match=f"did you mean '{hint}'"):
        view_spec("default", {key: 0.5})


def test_mixed_store_refused_by_another_spec():
    store = view_spec("fm")
    assert spec_conflicts(store, "default", {}) == \
        ["mixup: store 1.0, asked 0.0 (from --view-spec default)"]
    assert spec_conflicts(store, None, {"cutmix": 1.0}) == ["cutmix: store 0.0, asked 1.0"]
    assert spec_conflicts(store.to_dict(), "fm", {}) == []
    assert spec_conflicts(ViewSpec(), None, {"mixup": 0.4}) == ["mixup: store 0.0, asked 0.4"]


def test_old_store_layout_reads_as_not_mixed():
    p = view_params(ViewSpec(erase=0.5), 0, 0, np.arange(10), H[:10], W[:10])
    old = list(PARAM_COLUMNS[:OLD])
    stored = np.stack([p[:, :OLD], p[:, :OLD]])             # [E, N, 13] of an older store
    got = in_layout(stored, old)
    assert got.shape == (2, 10, len(PARAM_COLUMNS))
    np.testing.assert_array_equal(got[0], p)                 # the mixing columns: not mixed
    mixed = _mix()[:10]
    np.testing.assert_array_equal(in_layout(mixed[:, ::-1], list(reversed(PARAM_COLUMNS))), mixed)
    with pytest.raises(UserError, match="no view-parameter columns hue"):
        in_layout(np.delete(p, COL["hue"], axis=1), [c for c in PARAM_COLUMNS if c != "hue"])
