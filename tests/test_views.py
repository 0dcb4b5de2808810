import math

import numpy as np
import pytest

from vwwfast.errors import UserError
from vwwfast.views import (COL, PARAM_COLUMNS, ViewSpec, sample_keys, uniforms, val_params,
                           view_params, view_spec)

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
    assert (train[:, COL["erase_y0"]:] == 0).all()  # erasing off by default


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
    np.testing.assert_allclose(p[0, 4:], [0, 0.8751970529556274, 0.8695448637008667,
                                          1.0660070180892944, -0.010706407949328423, 0, 0, 0, 0],
                               atol=1e-7)
    np.testing.assert_allclose(p[1], [0.07666666805744171, 0.0, 0.8666666746139526,
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
    ident = np.array([0, 0, 1, 1, 0, 1, 1, 1, 0, 0, 0, 0, 0], dtype=np.float32)
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
    assert (p[~on, COL["erase_y0"]:] == 0).all()
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
