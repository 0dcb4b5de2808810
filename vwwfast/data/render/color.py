"""Batch operations every renderer shares after its geometry: colour, normalise, erase.

Renderers differ only in how they crop, resize and flip; they all hand a float RGB batch
[N, 3, S, S] (values 0..`scale`, any memory layout) to `finish`, so colour and erasing are
identical by construction.

Colour, in this fixed order (torchvision's ColorJitter draws a random order per image):
- brightness b: x * b                                  (torchvision's adjust_brightness)
- contrast c: blend with the image's mean grey, c x + (1 - c) mean(grey(x))
                                                        (torchvision's adjust_contrast)
- saturation s: blend with the pixel's grey, s x + (1 - s) grey(x)
                                                        (torchvision's adjust_saturation)
  with grey = 0.2989 R + 0.587 G + 0.114 B, torchvision's rgb_to_grayscale weights;
- hue h (turns): a rotation of the chroma plane (I, Q) of YIQ by h * 360 degrees about the
  luma axis Y (I towards Q), as TensorFlow Addons' adjust_hsv_in_yiq does. It is NOT
  torchvision's adjust_hue, which shifts H in HSV: that keeps each pixel's largest and
  smallest channel and moves the middle one, a map that is not linear (and so would not
  fold into the one affine map below). The rotation keeps luma (0.299 R + 0.587 G + 0.114 B)
  and turns the colour wheel the other way from torchvision for the same h (a positive h
  takes red towards magenta, torchvision's towards yellow); views draw h evenly from
  [-hue, hue], so the spread of views is the same. On random colours at h = 0.02 (the
  default bound) the two differ by 0.046 on average in 0..1 units (0.022 against
  torchvision's -h), where leaving the image alone differs from adjust_hue by 0.020.
Each step is a linear map of the RGB vector, so the four steps and ImageNet normalisation
compose into ONE affine map per image (y = A x + t, a single batched matmul) followed by one
clamp to the normalised image of [0, 1]. torchvision clamps after every step instead; the
two differ only where an intermediate value leaves [0, 1], which is rare and small at the
default jitter strengths. On a 2-core CPU this is several times faster than the
step-by-step version, whose passes and large temporaries dominated rendering.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from vwwfast.constants import IMAGENET_MEAN, IMAGENET_STD
from vwwfast.data.views import COL

GREY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights

_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)  # once, on the host (no solver call per batch)


def _params(params, device) -> torch.Tensor:
    """Parameters as float64 on `device` (tiny: N x 13), from numpy or torch."""
    if isinstance(params, np.ndarray):
        params = torch.from_numpy(np.ascontiguousarray(params))
    return params.to(device=device, dtype=torch.float64)


def hue_matrices(hue: torch.Tensor) -> torch.Tensor:
    """[N, 3, 3] RGB -> RGB rotating the YIQ chroma plane (I, Q) by `hue` turns, I towards
    Q (see the module docstring for how this differs from torchvision's hue)."""
    yiq = torch.tensor(_RGB_TO_YIQ, dtype=torch.float64, device=hue.device)
    rgb = torch.tensor(_YIQ_TO_RGB, dtype=torch.float64, device=hue.device)
    theta = hue.to(torch.float64) * (2 * math.pi)
    c, s = torch.cos(theta), torch.sin(theta)
    rot = torch.zeros(len(hue), 3, 3, dtype=torch.float64, device=hue.device)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = c, -s, s, c
    return rgb @ rot @ yiq


def color_affine(params, mean_rgb: torch.Tensor, scale: float = 1.0):
    """(A [N, 3, 3], t [N, 3]) with normalise(colour(x / scale)) = A x + t (before the
    clamp). mean_rgb [N, 3]: per-image channel means of x, for the contrast term."""
    dev = mean_rgb.device
    p = _params(params, dev)
    n = len(p)
    b, c, s = p[:, COL["brightness"]], p[:, COL["contrast"]], p[:, COL["saturation"]]
    w = torch.tensor(GREY, dtype=torch.float64, device=dev)
    eye = torch.eye(3, dtype=torch.float64, device=dev).expand(n, 3, 3)
    # saturation: s I + (1 - s) 1 w^T ; then hue: M
    sat = s[:, None, None] * eye + (1 - s)[:, None, None] * w.expand(n, 3, 3)
    ms = hue_matrices(p[:, COL["hue"]]) @ sat
    grey_mean = (mean_rgb.to(torch.float64) / scale) @ w                     # [N]
    lin = (c * b)[:, None, None] * ms / scale
    off = ((1 - c) * b * grey_mean)[:, None] * ms.sum(dim=2)               # ms @ 1
    inv_std = 1 / torch.tensor(IMAGENET_STD, dtype=torch.float64, device=dev)
    mu = torch.tensor(IMAGENET_MEAN, dtype=torch.float64, device=dev)
    A = inv_std[None, :, None] * lin
    t = inv_std[None, :] * (off - mu[None, :])
    return A.to(torch.float32), t.to(torch.float32)


def normalized_bounds() -> list[tuple[float, float]]:
    """Per-channel (lo, hi) of normalise([0, 1])."""
    return [((0 - m) / sd, (1 - m) / sd) for m, sd in zip(IMAGENET_MEAN, IMAGENET_STD)]


def has_color(params) -> bool:
    """False when every colour factor is the identity (host arrays only: on a GPU tensor
    the check would synchronise, so the clamp simply runs)."""
    if isinstance(params, torch.Tensor):
        if params.is_cuda:
            return True
        params = params.numpy()
    cols = [COL[k] for k in ("brightness", "contrast", "saturation")]
    return bool(np.any(params[:, cols] != 1) or np.any(params[:, COL["hue"]] != 0))


def apply_erase(x: torch.Tensor, params, value: float = 0.0) -> torch.Tensor:
    """Fill each image's erase box (relative to the output square; pixel centres inside
    the box) with `value`, in place. After normalisation 0 is the ImageNet mean colour, as
    with torchvision's RandomErasing on a normalised tensor."""
    if isinstance(params, np.ndarray) and not np.any(params[:, COL["erase_h"]] > 0):
        return x
    p = _params(params, x.device).to(torch.float32)
    h, w = x.shape[-2:]
    ys = (torch.arange(h, device=x.device, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, device=x.device, dtype=torch.float32) + 0.5) / w
    y0, x0 = p[:, COL["erase_y0"], None], p[:, COL["erase_x0"], None]
    eh, ew = p[:, COL["erase_h"], None], p[:, COL["erase_w"], None]
    rows = (ys >= y0) & (ys < y0 + eh)          # [N, H]
    cols = (xs >= x0) & (xs < x0 + ew)          # [N, W]
    mask = (rows[:, :, None] & cols[:, None, :]).unsqueeze(1)
    return x.masked_fill_(mask, value)


def finish(x: torch.Tensor, params, dtype=None, scale: float = 1.0) -> torch.Tensor:
    """The shared tail: colour + normalise (one affine map, one clamp), erase, cast.
    x: float [N, 3, H, W] with values in 0..scale, NCHW or channels_last. Returns `dtype`
    (default float32), NCHW on the CPU, channels_last on CUDA."""
    n, _, h, w = x.shape
    dtype = dtype or torch.float32
    if n == 0:
        return torch.empty(0, 3, h, w, dtype=dtype, device=x.device)
    A, t = color_affine(params, x.mean(dim=(2, 3)), scale)
    clamp = has_color(params)
    if x.is_cuda:  # compute as [N, HW, 3]: the result is channels_last
        flat = x.permute(0, 2, 3, 1).reshape(n, h * w, 3)
        y = torch.baddbmm(t[:, None, :], flat, A.transpose(1, 2))
        if clamp:
            lo, hi = torch.tensor(normalized_bounds(), device=x.device).T
            y = torch.clamp_(y, lo.view(1, 1, 3), hi.view(1, 1, 3))
        y = y.view(n, h, w, 3).permute(0, 3, 1, 2)
    else:  # compute as [N, 3, HW]: the result is NCHW-contiguous
        flat = x.permute(0, 2, 3, 1).reshape(n, h * w, 3).transpose(1, 2)  # a view either way
        y = torch.bmm(A, flat).add_(t[:, :, None])
        if clamp:  # scalar bounds per channel: several times faster than tensor bounds here
            for ch, (lo, hi) in enumerate(normalized_bounds()):
                y[:, ch].clamp_(lo, hi)
        y = y.view(n, 3, h, w)
    y = apply_erase(y, params)
    return y if y.dtype == dtype else y.to(dtype)
