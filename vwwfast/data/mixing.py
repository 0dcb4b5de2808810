"""Mixed views: mixup and cutmix as pure batch functions on top of any renderer.

A mixed view of sample i blends i's view with the view of its partner j (the `partner`
column), each rendered from its own row of the same view table (crop, flip, colour,
erasing; j's own mixing is not applied), so a teacher at 224 and a student at 96 see the
same image, and the cache, the trainer and the online teacher too:

    mixup    x = lam * x_i + (1 - lam) * x_j                   (mix_h = 0)
    cutmix   x = x_i outside the box (mix_y0, mix_x0, mix_h, mix_w), x_j inside it;
             lam = 1 - mix_h * mix_w, the share of i's image kept
    labels   y = lam * onehot(y_i) + (1 - lam) * onehot(y_j)   (soft, [B, 2] float)

The box is relative to the output square. Its edge pixels are blended by the share of
their area inside the box, so the pasted area is mix_h * mix_w of the image at every output
size, exactly, and lam is the same for a 96 px student and a 224 px teacher.
Blending normalised images equals normalising the blend (the weights sum to 1).

    for x, y, idx in iterate(MixingRenderer(renderer, table), order, lambda i: table[i], ...)
    x, y = render_mixed(renderer, idx, table, size)       # one batch

`SplitData.batches` / `SplitData.render_batch` (split.py) take this path whenever the table
mixes, so callers need not know.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from vwwfast.constants import NUM_CLASSES
from vwwfast.data.views import COL, MIX_COLUMNS


def mixes(params) -> bool:
    """True when some row of `params` (a view table [N, P]) blends in a partner."""
    p = params.cpu().numpy() if isinstance(params, torch.Tensor) else np.asarray(params)
    return bool(p.ndim == 2 and p.shape[1] > COL["partner"] and (p[:, COL["partner"]] >= 0).any())


def unmixed(params: np.ndarray) -> np.ndarray:
    """A copy of a view table with every row's mixing off (each sample's own crop, flip,
    colour and erasing): e.g. to show a mixed store's crops apart, or to calibrate int8 on
    the images a deployed model sees rather than on blends."""
    out = np.array(params, copy=True)
    for name, value in MIX_COLUMNS.items():
        out[..., COL[name]] = value
    return out


def coverage(start: torch.Tensor, length: torch.Tensor, size: int) -> torch.Tensor:
    """[B, size]: the share of each pixel [k, k + 1) covered by [start, start + length) * size
    (relative start and length): 1 inside, 0 outside, the fraction on the box's edges."""
    k = torch.arange(size, device=start.device, dtype=torch.float32)
    lo, hi = (start * size)[:, None], ((start + length) * size)[:, None]
    return (torch.minimum(k + 1, hi) - torch.maximum(k, lo)).clamp_(0.0, 1.0)


def partner_weight(rows: np.ndarray, size: int, device) -> torch.Tensor:
    """[B, 1, size, size] float32: how much of each pixel comes from the partner; 1 - lam
    everywhere for mixup, the box's coverage for cutmix, 0 for a row that is not mixed."""
    p = torch.as_tensor(np.asarray(rows, dtype=np.float32), device=device)
    cut = p[:, COL["mix_h"]] > 0
    box = coverage(p[:, COL["mix_y0"]], p[:, COL["mix_h"]], size)[:, :, None] * \
        coverage(p[:, COL["mix_x0"]], p[:, COL["mix_w"]], size)[:, None, :]
    flat = (1.0 - p[:, COL["mix_lam"]])[:, None, None].expand(-1, size, size)
    return torch.where(cut[:, None, None], box, flat).unsqueeze(1)


def blend(x_own: torch.Tensor, x_partner: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
    """The mixed images (float32) of rows' own and partner renderings, [B, 3, S, S] each."""
    w = partner_weight(rows, x_own.shape[-1], x_own.device)
    a, b = x_own.float(), x_partner.float()
    return a + w * (b - a)


def soft_labels(y_own: torch.Tensor, y_partner: torch.Tensor, lam) -> torch.Tensor:
    """[B, 2] float: lam on the own label, 1 - lam on the partner's (which sum to 1)."""
    lam = torch.as_tensor(np.asarray(lam, dtype=np.float32), device=y_own.device)[:, None]
    return lam * F.one_hot(y_own, NUM_CLASSES).float() + \
        (1.0 - lam) * F.one_hot(y_partner, NUM_CLASSES).float()


def render_mixed(renderer, idx, params, size: int, dtype=None, rows=None):
    """(x, y) of samples `idx` under the view table `params` [N, P] (rows for every sample
    of the split: the partners' rows come from it): x the mixed images, y soft labels [B, 2].
    `rows` (params[idx]) may be given; dtype as Renderer.render."""
    idx = np.asarray(idx, dtype=np.int64)
    rows = np.asarray(params[idx] if rows is None else rows)
    x, y = renderer.render(idx, rows, size)        # float32: blended before any cast
    mixed = np.flatnonzero(rows[:, COL["partner"]] >= 0)
    y_partner = y.clone()          # an unmixed row's mix_lam is 1: its own label only
    if len(mixed):
        partners = rows[mixed, COL["partner"]].astype(np.int64)
        x_p, y_p = renderer.render(partners, np.asarray(params[partners]), size)
        sel = torch.as_tensor(mixed, device=x.device)
        x[sel] = blend(x[sel], x_p, rows[mixed]).to(x.dtype)
        y_partner[sel] = y_p
    y = soft_labels(y, y_partner, rows[:, COL["mix_lam"]])
    return (x if dtype is None or x.dtype == dtype else x.to(dtype)), y


class MixingRenderer:
    """A renderer for `vwwfast.data.render.prefetch.iterate` whose batches are mixed views: it
    wraps `renderer` and the whole view table `params` (the partners' rows). Only what
    `iterate` uses."""

    def __init__(self, renderer, params):
        self.renderer, self.params = renderer, params
        self.device, self.name = renderer.device, renderer.name

    def render(self, indices, rows, size: int, dtype=None):
        return render_mixed(self.renderer, indices, self.params, size, dtype=dtype, rows=rows)
