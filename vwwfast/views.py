"""Deterministic view parameters: a pure function of (seed, view, sample index, image size).

Every random number is a counter-based hash (splitmix64) of (seed, view, index, draw
number), so any subset, chunking or order of samples gives the same rows on every machine,
and a whole split is generated at once with numpy. Coordinates are relative to the image
(0..1), so the same view renders at 96 for a student and at 224 for a teacher.

Columns (PARAM_COLUMNS):
  y0, x0, h, w       crop box, relative (a torchvision RandomResizedCrop box in pixels of
                     the stored image, divided by its height / width)
  flip               1.0 = mirror horizontally
  brightness, contrast, saturation   multiplicative factors, 1 = identity
  hue                shift in turns, within [-spec.hue, spec.hue]
  erase_y0, erase_x0, erase_h, erase_w   random-erasing box relative to the rendered
                     output square; erase_h = 0 means no erasing
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from vwwfast.errors import UserError

PARAM_COLUMNS = ("y0", "x0", "h", "w", "flip", "brightness", "contrast", "saturation", "hue",
                 "erase_y0", "erase_x0", "erase_h", "erase_w")
COL = {name: i for i, name in enumerate(PARAM_COLUMNS)}
ATTEMPTS = 10  # RandomResizedCrop / RandomErasing tries before their fallback


@dataclass(frozen=True)
class ViewSpec:
    """What a training view may do. Defaults: the usual ImageNet-style recipe, mild colour."""
    crop: bool = True                         # False = the whole image
    scale: tuple = (0.25, 1.0)                # crop area / image area
    ratio: tuple = (3 / 4, 4 / 3)             # crop width / height (in pixels)
    flip: float = 0.5                         # probability of a horizontal flip
    brightness: float = 0.2                   # factor within [1 - b, 1 + b]
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.02                         # shift within [-hue, hue] turns
    erase: float = 0.0                        # probability of random erasing
    erase_scale: tuple = (0.02, 0.2)          # erased area / output area
    erase_ratio: tuple = (0.3, 3.3)           # erased box height / width

    @classmethod
    def plain(cls) -> "ViewSpec":
        """No augmentation: whole image, no flip, identity colour, no erasing."""
        return cls(crop=False, flip=0.0, brightness=0.0, contrast=0.0, saturation=0.0,
                   hue=0.0, erase=0.0)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}


def view_spec(name: str, overrides: dict | None = None) -> ViewSpec:
    """The base spec `name` with the fields in `overrides` (the `views:` settings) replaced."""
    specs = {"default": ViewSpec, "plain": ViewSpec.plain}
    if name not in specs:
        raise UserError(f"unknown view spec '{name}': use 'default' or 'plain'")
    spec = specs[name]()
    if overrides:
        names = {f.name for f in dataclasses.fields(ViewSpec)}
        for key in overrides:
            if key not in names:
                raise UserError(f"unknown view setting '{key}' (one of {', '.join(sorted(names))})")
        spec = dataclasses.replace(spec, **{k: tuple(v) if isinstance(v, list) else v
                                            for k, v in overrides.items()})
    return spec


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
#   45 erase or not;  46..85 erase attempts (area, log-ratio, top, left) x 10
_D_CROP, _D_FLIP, _D_COLOR, _D_ERASE, _D_ERASE_BOX = 0, 40, 41, 45, 46


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


def view_params(spec: ViewSpec, seed: int, view: int, indices, heights, widths) -> np.ndarray:
    """float32 [N, len(PARAM_COLUMNS)] for samples `indices` of stored size heights x widths
    (one entry per index, same length). Row i depends only on (spec, seed, view,
    indices[i], heights[i], widths[i])."""
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    H = np.asarray(heights, dtype=np.int64).reshape(-1)
    W = np.asarray(widths, dtype=np.int64).reshape(-1)
    if not (len(idx) == len(H) == len(W)):
        raise ValueError("view_params: indices, heights and widths need one entry each per sample")
    n = len(idx)
    out = np.zeros((n, len(PARAM_COLUMNS)), dtype=np.float64)
    if n == 0:
        return out.astype(np.float32)
    keys = sample_keys(seed, view, idx)
    if spec.crop:
        top, left, h, w = _random_resized_crop(uniforms(keys, 40, _D_CROP), H, W,
                                               spec.scale, spec.ratio)
        out[:, 0], out[:, 1], out[:, 2], out[:, 3] = top / H, left / W, h / H, w / W
    else:
        out[:, 2] = out[:, 3] = 1.0
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
    return out.astype(np.float32)


def val_params(heights, widths, center_crop: bool = False) -> np.ndarray:
    """Validation view: the whole image, or its centred square (whole pixels), no
    flip, identity colour, no erasing."""
    H = np.asarray(heights, dtype=np.float64).reshape(-1)
    W = np.asarray(widths, dtype=np.float64).reshape(-1)
    out = np.zeros((len(H), len(PARAM_COLUMNS)), dtype=np.float64)
    out[:, COL["brightness"]:COL["saturation"] + 1] = 1.0
    if center_crop:
        s = np.minimum(H, W)
        out[:, 0], out[:, 1] = np.floor((H - s) / 2) / H, np.floor((W - s) / 2) / W
        out[:, 2], out[:, 3] = s / H, s / W
    else:
        out[:, 2] = out[:, 3] = 1.0
    return out.astype(np.float32)
