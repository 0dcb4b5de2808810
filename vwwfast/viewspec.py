"""The view settings: what a training view may do (ViewSpec), checked and named.

Every ViewSpec field is a user setting (YAML `views:`, flag `--view KEY=VALUE`) over a base
spec ('default', 'plain' or 'fm'): `view_spec(name, overrides)` checks and applies them, and
`spec_conflicts` says where they contradict a teacher store's spec. A settings schema like
config.py's, below the stages: data/views.py draws the parameters of a spec's views.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from vwwfast.checks import check_range, did_you_mean, parse_scalar_text
from vwwfast.errors import UserError

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
# scalar fields: (rule in words, bounds as in checks.check_range)
_PROBABILITY: tuple[str, dict[str, float]] = ("a probability within [0, 1]", {"lo": 0, "hi": 1})
_SCALARS: dict[str, tuple[str, dict[str, float]]] = {
    "flip": _PROBABILITY,
    "erase": _PROBABILITY,
    "brightness": ("a strength >= 0 (factor within [max(0, 1 - b), 1 + b])", {"lo": 0}),
    "contrast": ("a strength >= 0 (factor within [max(0, 1 - c), 1 + c])", {"lo": 0}),
    "saturation": ("a strength >= 0 (factor within [max(0, 1 - s), 1 + s])", {"lo": 0}),
    "hue": ("within [0, 0.5] turns (shift within [-hue, hue])", {"lo": 0, "hi": 0.5}),
    # A Beta concentration: 0 turns mixing off. At 100 the weight is already 0.5 +- 0.1 on
    # 99.5% of views (standard deviation 0.035): larger values are refused as a likely typo.
    "mixup": ("a Beta(a, a) concentration within [0, 100] (0 = off; 1 = uniform weight)",
              {"lo": 0, "hi": 100}),
    "cutmix": ("a Beta(a, a) concentration within [0, 100] (0 = off; 1 = uniform kept area)",
               {"lo": 0, "hi": 100}),
    "mix_prob": ("a probability within [0, 1] (share of views mixed)", {"lo": 0, "hi": 1}),
    "switch_prob": ("a probability within [0, 1] (cutmix instead of mixup when both are on)",
                    {"lo": 0, "hi": 1}),
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
    rule, bounds = _SCALARS[key]
    v = _number(key, value)
    check_range(key, v, "views", bounds, rule)
    return v


def _overrides(overrides: dict | None) -> dict:
    """`views:` settings with their names checked (a dash may stand for an underscore)."""
    out: dict = {}
    for key, value in (overrides or {}).items():
        name = str(key).strip().replace("-", "_")
        if name not in FIELDS:
            raise UserError(f"views: unknown setting '{key}'{did_you_mean(name, FIELDS, _ALIASES)}"
                            f" (settings: {', '.join(FIELDS)})")
        if name in out:
            raise UserError(f"views: '{name}' is given twice")
        out[name] = value
    return out


def view_spec(name: str, overrides: dict | None = None) -> ViewSpec:
    """The base spec `name` ('default', 'plain' or 'fm') with the fields in `overrides` (the
    `views:` settings, e.g. {'erase': 0.25, 'scale': [0.08, 1.0]}) replaced. Unknown
    names and fields and out-of-range values are refused with one line."""
    if name not in SPECS:
        raise UserError(f"unknown view spec '{name}'{did_you_mean(str(name), SPECS)}"
                        f" (use {', '.join(repr(k) for k in SPECS)}, and `views:` settings "
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


def view_settings(value, where: str) -> dict:
    """`views:` mapping or ['erase=0.25', 'scale=0.08,1.0'] -> {field: value}."""
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, str):
        value = [value]
    if isinstance(value, (list, tuple)):
        out = {}
        for item in value:
            if isinstance(item, dict):
                out.update(item)
                continue
            key, sep, text = str(item).partition("=")
            if not sep or not key.strip():
                raise UserError(f"{where}: --view takes KEY=VALUE (e.g. erase=0.25), got '{item}'")
            parts = [parse_scalar_text(t) for t in text.split(",")] if "," in text else \
                parse_scalar_text(text)
            out[key.strip()] = parts
        return out
    raise UserError(f"{where}: 'views' should be a mapping of view settings, got {value!r}")
