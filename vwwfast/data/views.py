"""Deterministic view parameters: a pure function of (seed, view, sample index, image size).

Every random number is a counter-based hash (splitmix64) of (seed, view, index, draw
number), so any subset, chunking or order of samples gives the same rows on every machine,
and a whole split is generated at once with numpy. Coordinates are relative to the image
(0..1), so the same view renders at 96 for a student and at 224 for a teacher.

What a view may do is a ViewSpec (vwwfast/viewspec.py, the `views:` settings); this module
draws the parameters of a spec's views.

Columns (PARAM_COLUMNS):
  y0, x0, h, w       crop box, relative (a torchvision RandomResizedCrop box in pixels of
                     the stored image, divided by its height / width; with region 'center'
                     the box is drawn on the image's centred square and lies within it)
  flip               1.0 = mirror horizontally
  brightness, contrast, saturation   multiplicative factors, 1 = identity
  hue                shift in turns, within [-spec.hue, spec.hue]
  erase_y0, erase_x0, erase_h, erase_w   random-erasing box relative to the rendered
                     output square; erase_h = 0 means no erasing
  partner            index of the sample blended in (its own view of the same view number,
                     rendered with its own row); -1 = not mixed. float32 holds indices
                     exactly below 2**24 (larger splits are refused when mixing)
  mix_lam            weight of the sample's own image and label; 1 = not mixed
  mix_y0, mix_x0, mix_h, mix_w   cutmix box relative to the output square, filled with the
                     partner's view; mix_h = 0 for mixup (a blend of the whole images)
Mixed views are rendered by vwwfast.data.mixing (a batch function over any renderer).
"""

from __future__ import annotations

import math

import numpy as np

from vwwfast.errors import UserError
from vwwfast.viewspec import ViewSpec

# A store names its columns (attribute param_columns) and readers go through `in_layout`, so
# a layout that grows (e.g. mixing columns) is read by name, never by position.
PARAM_COLUMNS = ("y0", "x0", "h", "w", "flip", "brightness", "contrast", "saturation", "hue",
                 "erase_y0", "erase_x0", "erase_h", "erase_w",
                 "partner", "mix_lam", "mix_y0", "mix_x0", "mix_h", "mix_w")
COL = {name: i for i, name in enumerate(PARAM_COLUMNS)}
# Columns a store made before mixing existed lacks, and what they are there: not mixed.
MIX_COLUMNS = {"partner": -1.0, "mix_lam": 1.0, "mix_y0": 0.0, "mix_x0": 0.0, "mix_h": 0.0,
               "mix_w": 0.0}
ATTEMPTS = 10  # RandomResizedCrop / RandomErasing tries before their fallback
MAX_MIX_SAMPLES = 2**24  # partner indices are float32 columns: exact below 2**24


def in_layout(params: np.ndarray, columns, where: str = "store") -> np.ndarray:
    """Parameters [..., len(columns)] whose last axis is laid out as `columns` (a store's
    param_columns), as [..., len(PARAM_COLUMNS)] in this version's layout. The mixing
    columns of a store made before they existed read as "not mixed" (MIX_COLUMNS); any
    other column missing, or one this version cannot render, is an error, never a guess."""
    columns = list(columns)
    if columns == list(PARAM_COLUMNS):
        return params
    missing = [c for c in PARAM_COLUMNS if c not in columns and c not in MIX_COLUMNS]
    unknown = [c for c in columns if c not in PARAM_COLUMNS]
    if missing or unknown:
        what = (f"no view-parameter columns {', '.join(missing)}" if missing else
                f"view-parameter columns this vwwfast cannot render ({', '.join(unknown)})")
        raise UserError(f"{where} has {what}: made by another vwwfast version; use that "
                        f"version or make the store again with this one")
    out = np.empty(params.shape[:-1] + (len(PARAM_COLUMNS),), dtype=params.dtype)
    for i, c in enumerate(PARAM_COLUMNS):
        out[..., i] = params[..., columns.index(c)] if c in columns else MIX_COLUMNS[c]
    return out


# ---------------------------------------------------------------------------------------
# Counter-based random numbers

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser over uint64 arrays (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = z + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def sample_keys(seed: int, stream: int, indices) -> np.ndarray:
    """uint64 key per sample for (seed, stream, index); `stream` is the view (or epoch)."""
    idx = np.asarray(indices, dtype=np.int64).astype(np.uint64)
    k = _splitmix(np.full(1, seed & 0xFFFFFFFFFFFFFFFF, dtype=np.uint64))
    k = _splitmix(k ^ np.uint64(stream & 0xFFFFFFFFFFFFFFFF))
    return _splitmix(k ^ idx)


def uniforms(keys: np.ndarray, draws: int, first: int = 0) -> np.ndarray:
    """float64 [N, draws] in [0, 1): draw number d of sample i is a hash of (keys[i], d)."""
    d = np.arange(first, first + draws, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = _splitmix(keys[:, None] + d[None, :] * _GOLDEN)
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


# Draw numbers, fixed forever (changing them changes every cached view):
#   0..39  crop attempts (area, log-ratio, top, left) x 10;  40 flip;  41..44 colour;
#   45 erase or not;  46..85 erase attempts (area, log-ratio, top, left) x 10;
#   86 mixed or not;  87 cutmix or mixup;  88 partner;  89..120 the Beta weight (two
#   uniforms per attempt, BETA_ATTEMPTS attempts);  121, 122 cutmix box centre (y, x)
_D_CROP, _D_FLIP, _D_COLOR, _D_ERASE, _D_ERASE_BOX = 0, 40, 41, 45, 46
_D_MIX, _D_SWITCH, _D_PARTNER, _D_BETA, _D_MIX_BOX = 86, 87, 88, 89, 121
BETA_ATTEMPTS = 16


def _random_resized_crop(u: np.ndarray, H: np.ndarray, W: np.ndarray, scale, ratio):
    """torchvision RandomResizedCrop.get_params, vectorised; u: [N, 40] uniforms."""
    Hf, Wf = H.astype(np.float64)[:, None], W.astype(np.float64)[:, None]
    area = Hf * Wf
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    target = area * (scale[0] + (scale[1] - scale[0]) * u[:, 0:40:4])
    aspect = np.exp(lo + (hi - lo) * u[:, 1:40:4])
    w = np.round(np.sqrt(target * aspect))   # round half to even, like Python's round
    h = np.round(np.sqrt(target / aspect))
    ok = (w > 0) & (w <= Wf) & (h > 0) & (h <= Hf)
    # randint(0, H - h + 1) as floor(u * (H - h + 1))
    top = np.floor(u[:, 2:40:4] * (Hf - h + 1))
    left = np.floor(u[:, 3:40:4] * (Wf - w + 1))
    first = np.argmax(ok, axis=1)
    rows = np.arange(len(H))
    h, w, top, left = h[rows, first], w[rows, first], top[rows, first], left[rows, first]
    # Fallback when no attempt fits: centre crop clamped to the ratio range.
    fail = ~ok.any(axis=1)
    if fail.any():
        fh, fw = _clamped_centre(H[fail].astype(np.float64), W[fail].astype(np.float64), ratio)
        h[fail], w[fail] = fh, fw
        top[fail] = np.floor((H[fail] - fh) / 2)
        left[fail] = np.floor((W[fail] - fw) / 2)
    return top, left, h, w


def _clamped_centre(H, W, ratio):
    in_ratio = W / H
    h, w = H.copy(), W.copy()
    narrow, wide = in_ratio < min(ratio), in_ratio > max(ratio)
    h[narrow] = np.round(W[narrow] / min(ratio))
    w[wide] = np.round(H[wide] * max(ratio))
    return h, w


def _erase_boxes(u: np.ndarray, on: np.ndarray, scale, ratio):
    """torchvision RandomErasing on a unit square (continuous); u: [N, 40] uniforms."""
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    area = scale[0] + (scale[1] - scale[0]) * u[:, 0:40:4]
    aspect = np.exp(lo + (hi - lo) * u[:, 1:40:4])
    h, w = np.sqrt(area * aspect), np.sqrt(area / aspect)
    ok = (h < 1) & (w < 1)
    first = np.argmax(ok, axis=1)
    rows = np.arange(len(u))
    h, w = h[rows, first], w[rows, first]
    y0 = u[rows, 2 + 4 * first] * (1 - h)
    x0 = u[rows, 3 + 4 * first] * (1 - w)
    keep = on & ok.any(axis=1)
    return np.stack([y0, x0, h, w], axis=1) * keep[:, None]


def beta_symmetric(u: np.ndarray, a: float) -> np.ndarray:
    """Beta(a, a) variates [N] from counter-based uniforms u [N, 2 * BETA_ATTEMPTS]: a pure
    function of u, so a weight replays like every other view parameter.

    a > 1/2: Ulrich's exact transform (Ulrich 1984, "Computer generation of distributions
    on the m-sphere"), two uniforms and no rejection:
        X = 1/2 + 1/2 * sqrt(1 - U**(2 / (2a - 1))) * cos(2 pi V)
    a <= 1/2: Johnk's rejection (X = U**(1/a), Y = V**(1/a); accept X + Y <= 1; return
    X / (X + Y)), in logs since U**(1/a) underflows for small a. A try is accepted with
    probability Gamma(a+1)**2 / Gamma(2a+1) >= pi/4 here, so all BETA_ATTEMPTS tries fail
    with probability below (1 - pi/4)**16 < 3e-11; then the last try's ratio is taken,
    like the crop's fallback: a value in (0, 1), never an error."""
    u0, u1 = 1.0 - u[:, 0::2], 1.0 - u[:, 1::2]   # in (0, 1]: logs stay finite
    if a > 0.5:
        r = -np.expm1(np.log(u0[:, 0]) * (2.0 / (2.0 * a - 1.0)))   # 1 - U**(2/(2a-1))
        return 0.5 + 0.5 * np.sqrt(r) * np.cos(2.0 * np.pi * u1[:, 0])
    lx, ly = np.log(u0) / a, np.log(u1) / a
    ok = np.logaddexp(lx, ly) <= 0.0
    pick = np.where(ok.any(axis=1), np.argmax(ok, axis=1), u.shape[1] // 2 - 1)
    rows = np.arange(len(u))
    d = lx[rows, pick] - ly[rows, pick]
    return 0.5 * (1.0 + np.tanh(0.5 * d))          # X / (X + Y) = sigmoid(log X - log Y)


def _mix_columns(spec: ViewSpec, keys: np.ndarray, idx: np.ndarray, num_samples: int) -> np.ndarray:
    """[N, 6]: partner, mix_lam, mix_y0, mix_x0, mix_h, mix_w (see the module docstring).
    Cutmix as timm's: a square box of side sqrt(1 - w) (w ~ Beta) around a uniform centre,
    clipped to the output square; the label weight is then the area kept, 1 - h * w."""
    n = len(idx)
    mixed = uniforms(keys, 1, _D_MIX)[:, 0] < spec.mix_prob
    if spec.mixup > 0 and spec.cutmix > 0:
        cut = uniforms(keys, 1, _D_SWITCH)[:, 0] < spec.switch_prob
    else:
        cut = np.full(n, spec.cutmix > 0)
    # uniform over the other num_samples - 1 samples: draw among them, skip over oneself
    partner = np.floor(uniforms(keys, 1, _D_PARTNER)[:, 0] * (num_samples - 1))
    partner += partner >= idx
    u = uniforms(keys, 2 * BETA_ATTEMPTS, _D_BETA)
    lam = np.ones(n)
    for on, a in ((~cut, spec.mixup), (cut, spec.cutmix)):
        if a > 0 and on.any():
            lam[on] = beta_symmetric(u[on], a)
    box = np.zeros((n, 4))
    if cut.any():
        c = uniforms(keys[cut], 2, _D_MIX_BOX)
        side = np.sqrt(1.0 - lam[cut])[:, None]
        lo, hi = np.clip(c - side / 2, 0.0, 1.0), np.clip(c + side / 2, 0.0, 1.0)
        box[cut] = np.concatenate([lo, hi - lo], axis=1)   # y0, x0, h, w
        lam[cut] = 1.0 - box[cut, 2] * box[cut, 3]
    out = np.zeros((n, 6))
    out[:, 0] = np.where(mixed, partner, -1.0)
    out[:, 1] = np.where(mixed, lam, 1.0)
    out[:, 2:] = box * mixed[:, None]
    return out


def view_params(spec: ViewSpec, seed: int, view: int, indices, heights, widths,
                num_samples: int | None = None) -> np.ndarray:
    """float32 [N, len(PARAM_COLUMNS)] for samples `indices` of stored size heights x widths
    (one entry per index, same length). Row i depends only on (spec, seed, view,
    indices[i], heights[i], widths[i], num_samples).

    num_samples: the size of the split, among whose samples a mixing spec draws partners.
    Unset, `indices` must be the whole split (0..N-1) when the spec mixes: a subset would
    draw its partners among too few samples, so it is refused rather than guessed."""
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    H = np.asarray(heights, dtype=np.int64).reshape(-1)
    W = np.asarray(widths, dtype=np.int64).reshape(-1)
    if not (len(idx) == len(H) == len(W)):
        raise ValueError("view_params: indices, heights and widths need one entry each per sample")
    n = len(idx)
    if spec.mixes:
        num_samples = _mixing_split_size(idx, num_samples)
    out = np.zeros((n, len(PARAM_COLUMNS)), dtype=np.float64)
    out[:, COL["partner"]], out[:, COL["mix_lam"]] = -1.0, 1.0
    if n == 0:
        return out.astype(np.float32)
    keys = sample_keys(seed, view, idx)
    # the area views are drawn from: the image, or its centred square (as val_params' crop)
    top0: np.ndarray | int
    left0: np.ndarray | int
    if spec.region == "center":
        RH = RW = np.minimum(H, W)
        top0, left0 = (H - RH) // 2, (W - RW) // 2
    else:
        RH, RW, top0, left0 = H, W, 0, 0
    if spec.crop:
        top, left, h, w = _random_resized_crop(uniforms(keys, 40, _D_CROP), RH, RW,
                                               spec.scale, spec.ratio)
        top, left = top + top0, left + left0
    else:
        top, left, h, w = top0, left0, RH, RW
    out[:, 0], out[:, 1], out[:, 2], out[:, 3] = top / H, left / W, h / H, w / W
    out[:, COL["flip"]] = uniforms(keys, 1, _D_FLIP)[:, 0] < spec.flip
    c = uniforms(keys, 4, _D_COLOR)
    for j, name in enumerate(("brightness", "contrast", "saturation")):
        amount = getattr(spec, name)
        lo = max(0.0, 1.0 - amount)
        out[:, COL[name]] = lo + (1.0 + amount - lo) * c[:, j]
    out[:, COL["hue"]] = spec.hue * (2.0 * c[:, 3] - 1.0)
    if spec.erase > 0:
        on = uniforms(keys, 1, _D_ERASE)[:, 0] < spec.erase
        box = _erase_boxes(uniforms(keys, 40, _D_ERASE_BOX), on, spec.erase_scale,
                           spec.erase_ratio)
        out[:, COL["erase_y0"]:COL["erase_w"] + 1] = box
    if spec.mixes:
        assert num_samples is not None, "a mixing spec's split size is settled above"
        out[:, COL["partner"]:COL["mix_w"] + 1] = _mix_columns(spec, keys, idx, num_samples)
    return out.astype(np.float32)


def _mixing_split_size(idx: np.ndarray, num_samples: int | None) -> int:
    if num_samples is None:
        if not np.array_equal(idx, np.arange(len(idx))):
            raise ValueError("view_params: a mixing spec draws partners among the whole split: "
                             "pass num_samples (the split's size) for a subset of its samples")
        num_samples = len(idx)
    if len(idx) and (idx.min() < 0 or idx.max() >= num_samples):
        raise ValueError(f"view_params: sample indices must lie in [0, num_samples={num_samples})")
    if num_samples < 2 and len(idx):
        raise UserError("mixed views blend two samples: the split needs at least 2 (it has "
                        f"{num_samples}); use a view spec without mixup / cutmix")
    if num_samples > MAX_MIX_SAMPLES:
        raise UserError(f"mixed views name their partner in a float32 column, exact up to "
                        f"{MAX_MIX_SAMPLES:,} samples; the split has {num_samples:,}")
    return int(num_samples)


def val_params(heights, widths, center_crop: bool = False) -> np.ndarray:
    """Validation view: the whole image, or its centred square (whole pixels), no
    flip, identity colour, no erasing, not mixed."""
    H = np.asarray(heights, dtype=np.float64).reshape(-1)
    W = np.asarray(widths, dtype=np.float64).reshape(-1)
    out = np.zeros((len(H), len(PARAM_COLUMNS)), dtype=np.float64)
    out[:, COL["brightness"]:COL["saturation"] + 1] = 1.0
    out[:, COL["partner"]], out[:, COL["mix_lam"]] = -1.0, 1.0
    if center_crop:
        s = np.minimum(H, W)
        out[:, 0], out[:, 1] = np.floor((H - s) / 2) / H, np.floor((W - s) / 2) / W
        out[:, 2], out[:, 3] = s / H, s / W
    else:
        out[:, 2] = out[:, 3] = 1.0
    return out.astype(np.float32)
