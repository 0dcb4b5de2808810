"""Deterministic view parameters: a pure function of (seed, view, sample index, image size).

Every random number is a counter-based hash (splitmix64) of (seed, view, index, draw
number), so any subset, chunking or order of samples gives the same rows on every machine,
and a whole split is generated at once with numpy. Coordinates are relative to the image
(0..1), so the same view renders at 96 for a student and at 224 for a teacher.

Every ViewSpec field is a user setting (YAML `views:`, flag `--view KEY=VALUE`) over a base
spec ('default', 'plain' or 'fm'): `view_spec(name, overrides)` checks and applies them, and
`spec_conflicts` says where they contradict a teacher store's spec.

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

import dataclasses
import difflib
import math
from dataclasses import dataclass

import numpy as np

from vwwfast.errors import UserError

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


@dataclass(frozen=True)
class ViewSpec:
    """What a training view may do. Defaults: the usual ImageNet-style recipe, mild colour,
    no mixing.
    Every field is a `views:` setting (`--view KEY=VALUE`); values are checked and
    normalised (floats, (lo, hi) tuples) when a spec is made, so an out-of-range spec
    cannot exist."""
    crop: bool = True                         # False = the whole image
    scale: tuple = (0.25, 1.0)                # crop area / image area
    ratio: tuple = (3 / 4, 4 / 3)             # crop width / height (in pixels)
    flip: float = 0.5                         # probability of a horizontal flip
    brightness: float = 0.2                   # factor within [1 - b, 1 + b] (floored at 0)
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.02                         # shift within [-hue, hue] turns
    erase: float = 0.0                        # probability of random erasing
    erase_scale: tuple = (0.02, 0.2)          # erased area / output area
    erase_ratio: tuple = (0.3, 3.3)           # erased box height / width
    mixup: float = 0.0                        # Beta(a, a) concentration of mixup's weight; 0 = off
    cutmix: float = 0.0                       # Beta(a, a) concentration of cutmix's kept area; 0 = off
    mix_prob: float = 1.0                     # share of views mixed (when mixup or cutmix is on)
    switch_prob: float = 0.5                  # cutmix instead of mixup, when both are on
    region: str = "image"                     # where views are drawn: 'image' or 'center' (its
                                              # centred square, the val view's centre crop)

    def __post_init__(self):
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _checked(f.name, getattr(self, f.name)))

    @classmethod
    def plain(cls) -> "ViewSpec":
        """No augmentation: whole image, no flip, identity colour, no erasing."""
        return cls(crop=False, flip=0.0, brightness=0.0, contrast=0.0, saturation=0.0,
                   hue=0.0, erase=0.0)

    @classmethod
    def fm(cls) -> "ViewSpec":
        """Function matching (Beyer et al. 2022, "A good teacher is patient and consistent"):
        the default views, each blended with another sample's view by mixup with a weight
        drawn from Beta(1, 1), i.e. uniform, as their distillation configs do (big_vision
        `mixup=dict(p=1.0)`): aggressive mixing, on every view."""
        return cls(mixup=1.0)

    @classmethod
    def from_dict(cls, data: dict, where: str = "view spec") -> "ViewSpec":
        """A spec from `to_dict()` output (a store's fingerprint, a run's record). Fields it
        lacks take their defaults, so records made before a field existed (e.g. a mixing
        setting, off by default) still read; a field this version does not know is refused."""
        unknown = sorted(set(data) - set(FIELDS))
        if unknown:
            raise UserError(f"{where} has view settings this vwwfast does not know "
                            f"({', '.join(unknown)}): made by a newer vwwfast? upgrade to read it")
        return cls(**data)

    def to_dict(self, full: bool = False) -> dict:
        """Every field as plain data (tuples as lists). Unless `full`, the fields added
        after the first stores (mixing, region) are left out while at their defaults: a spec
        that does not use them gives the dict it gave before they existed, so the
        fingerprints (and default names) of stores made then stay the same and such a store
        can still be resumed and extended; `from_dict` fills them back in."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()
                if full or k not in _LATER_DEFAULTS or v != _LATER_DEFAULTS[k]}

    def non_default(self, base: str = "default") -> dict:
        """The fields that differ from the spec named `base` (as in `to_dict`), in field
        order: what a run card or `runs --diff` shows, and the `views:` settings that
        rebuild this spec over `base` (view_spec(base, spec.non_default(base)) == spec)."""
        ref = view_spec(base).to_dict(full=True)
        return {k: v for k, v in self.to_dict(full=True).items() if v != ref[k]}

    def describe(self, base: str = "default") -> str:
        """One line: `base` and the settings over it, e.g. 'default, erase=0.25, scale=[0.08, 1.0]'."""
        return base + "".join(f", {k}={_show(v)}" for k, v in self.non_default(base).items())

    @property
    def is_plain(self) -> bool:
        """True when every view is the un-augmented whole image, or its centred square with
        region 'center' (whatever the inert fields such as scale or erase_ratio say)."""
        return (not self.crop and self.flip == 0 and self.erase == 0 and self.hue == 0
                and self.brightness == 0 and self.contrast == 0 and self.saturation == 0
                and not self.mixes)

    @property
    def mixes(self) -> bool:
        """Some views blend two samples (mixup or cutmix on, with a share above 0)."""
        return (self.mixup > 0 or self.cutmix > 0) and self.mix_prob > 0


FIELDS = tuple(f.name for f in dataclasses.fields(ViewSpec))
SPECS = {"default": ViewSpec, "plain": ViewSpec.plain, "fm": ViewSpec.fm}
_LATER_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ViewSpec)
                   if f.name in ("mixup", "cutmix", "mix_prob", "switch_prob", "region")}
REGIONS = ("image", "center")

# Names people reach for that difflib does not connect to the field.
_ALIASES = {"random_erasing": "erase", "random_erase": "erase", "erasing": "erase",
            "erase_p": "erase", "p_erase": "erase", "hflip": "flip", "horizontal_flip": "flip",
            "crop_scale": "scale", "crop_ratio": "ratio", "aspect_ratio": "ratio",
            "random_resized_crop": "crop", "color_jitter": "brightness",
            "colour_jitter": "brightness", "mix": "mixup", "mixup_alpha": "mixup",
            "cutmix_alpha": "cutmix", "mixup_prob": "mix_prob", "prob": "mix_prob",
            "mixup_switch_prob": "switch_prob", "cut_mix": "cutmix", "mix_up": "mixup",
            "crop_region": "region", "center_crop": "region", "centre_crop": "region"}

# (lo, hi) fields: (rule as text, check, an example for the message)
_RANGES = {
    "scale": ("0 < lo <= hi <= 1 (crop area / image area)",
              lambda lo, hi: 0 < lo <= hi <= 1, "[0.08, 1.0]"),
    "ratio": ("0 < lo <= hi (crop width / height)",
              lambda lo, hi: 0 < lo <= hi, "[0.75, 1.333]"),
    # torchvision's RandomErasing: scale within [0, 1], (min, max) order; a box of area 0
    # erases nothing, so hi must be above 0 (erase: 0 is the way to turn erasing off).
    "erase_scale": ("0 <= lo <= hi <= 1, hi > 0 (erased area / view area)",
                    lambda lo, hi: 0 <= lo <= hi <= 1 and hi > 0, "[0.02, 0.33]"),
    "erase_ratio": ("0 < lo <= hi (erased box height / width)",
                    lambda lo, hi: 0 < lo <= hi, "[0.3, 3.3]"),
}
# scalar fields: (rule as text, check)
_SCALARS = {
    "flip": ("a probability within [0, 1]", lambda v: 0 <= v <= 1),
    "erase": ("a probability within [0, 1]", lambda v: 0 <= v <= 1),
    "brightness": ("a strength >= 0 (factor within [max(0, 1 - b), 1 + b])", lambda v: v >= 0),
    "contrast": ("a strength >= 0 (factor within [max(0, 1 - c), 1 + c])", lambda v: v >= 0),
    "saturation": ("a strength >= 0 (factor within [max(0, 1 - s), 1 + s])", lambda v: v >= 0),
    "hue": ("within [0, 0.5] turns (shift within [-hue, hue])", lambda v: 0 <= v <= 0.5),
    # A Beta concentration: 0 turns mixing off. At 100 the weight is already 0.5 +- 0.1 on
    # 99.5% of views (standard deviation 0.035): larger values are refused as a likely typo.
    "mixup": ("a Beta(a, a) concentration within [0, 100] (0 = off; 1 = uniform weight)",
              lambda v: 0 <= v <= 100),
    "cutmix": ("a Beta(a, a) concentration within [0, 100] (0 = off; 1 = uniform kept area)",
               lambda v: 0 <= v <= 100),
    "mix_prob": ("a probability within [0, 1] (share of views mixed)", lambda v: 0 <= v <= 1),
    "switch_prob": ("a probability within [0, 1] (cutmix instead of mixup when both are on)",
                    lambda v: 0 <= v <= 1),
}


def _number(key: str, value) -> float:
    if isinstance(value, str):  # PyYAML reads 1e-3 (no dot) as text
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"views: {key} takes a number, got {value!r}")
    return float(value)


def _checked(key: str, value):
    """One view setting, checked against its range and normalised."""
    if key == "crop":
        if not isinstance(value, bool):
            raise UserError(f"views: crop must be true or false (false = the whole image), got {value!r}")
        return value
    if key == "region":
        if value not in REGIONS:
            raise UserError(f"views: region must be 'image' (crops drawn from the whole image) or "
                            f"'center' (from its centred square), got {value!r}")
        return value
    if key in _RANGES:
        rule, ok, example = _RANGES[key]
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise UserError(f"views: {key} takes two numbers lo, hi (YAML `{key}: {example}`, "
                            f"flag --view {key}={example[1:-1].replace(' ', '')}), got {value!r}")
        lo, hi = (_number(key, v) for v in value)
        if not ok(lo, hi):
            raise UserError(f"views: {key} must be {rule}, got [{lo:g}, {hi:g}]")
        return (lo, hi)
    rule, ok = _SCALARS[key]
    v = _number(key, value)
    if not ok(v):
        raise UserError(f"views: {key} must be {rule}, got {v:g}")
    return v


def _overrides(overrides: dict | None) -> dict:
    """`views:` settings with their names checked (a dash may stand for an underscore)."""
    out: dict = {}
    for key, value in (overrides or {}).items():
        name = str(key).strip().replace("-", "_")
        if name not in FIELDS:
            hint = _ALIASES.get(name) or next(iter(difflib.get_close_matches(name, FIELDS, 1, 0.6)), None)
            raise UserError(f"views: unknown setting '{key}'" + (f"; did you mean '{hint}'?" if hint else "")
                            + f" (settings: {', '.join(FIELDS)})")
        if name in out:
            raise UserError(f"views: '{name}' is given twice")
        out[name] = value
    return out


def view_spec(name: str, overrides: dict | None = None) -> ViewSpec:
    """The base spec `name` ('default', 'plain' or 'fm') with the fields in `overrides` (the
    `views:` settings, e.g. {'erase': 0.25, 'scale': [0.08, 1.0]}) replaced. Unknown
    names and fields and out-of-range values are refused with one line."""
    if name not in SPECS:
        close = difflib.get_close_matches(str(name), SPECS, 1, 0.6)
        raise UserError(f"unknown view spec '{name}'" + (f"; did you mean '{close[0]}'?" if close else "")
                        + f" (use {', '.join(repr(k) for k in SPECS)}, and `views:` settings "
                        f"over it)")
    spec = SPECS[name]()
    fields = _overrides(overrides)
    return dataclasses.replace(spec, **fields) if fields else spec


def spec_conflicts(store_spec, base_name: str | None, overrides: dict | None) -> list[str]:
    """Where a run's view settings contradict a teacher store's spec: one line per field
    ('erase: store 0.25, asked 0.0'); empty = compatible (the run then takes the store's spec).

    The rule: every field the user fixed must equal the store's value. The fields in
    `overrides` are fixed; a base name (not None) fixes every field, so the base plus the
    overrides must equal the store's spec as a whole. Names are not compared, values are:
    'plain' with settings that rebuild the store's spec matches it. base_name None (no
    --view-spec given) checks the overrides alone. `store_spec`: a ViewSpec or its dict."""
    store = store_spec if isinstance(store_spec, ViewSpec) else ViewSpec.from_dict(store_spec, "the store")
    fields = _overrides(overrides)
    if base_name is None:
        want, keys = dataclasses.replace(store, **fields), list(fields)
    else:
        want, keys = view_spec(base_name, fields), list(FIELDS)
    have_d, want_d = store.to_dict(full=True), want.to_dict(full=True)
    return [f"{k}: store {_show(have_d[k])}, asked {_show(want_d[k])}"
            + ("" if k in fields else f" (from --view-spec {base_name})")
            for k in keys if have_d[k] != want_d[k]]


def _show(v) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(_show(x) for x in v) + "]"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        short = repr(round(v, 6))
        return short if float(short) == v else repr(v)
    return str(v)


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
