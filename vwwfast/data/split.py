"""A rendered split: a shard split, its renderer and the size it renders at.

Used alike by the trainer, the teacher cache, the online teacher, evaluation and export.
A view table that mixes (mixup / cutmix columns, see views.py) is rendered as mixed views
(vwwfast.data.mixing) by both `batches` and `render_batch`: y is then soft, float [B, 2].
"""

from __future__ import annotations

import numpy as np

from vwwfast import distributed as D
from vwwfast.config import RenderSettings
from vwwfast.data.mixing import MixingRenderer, mixes, render_mixed
from vwwfast.data.render.factory import make_renderer
from vwwfast.data.render.prefetch import iterate
from vwwfast.data.views import val_params as _val_params


class SplitData:
    """`batches(order, params, batch_size)` yields (x, y, idx) with x normalised
    [B, 3, size, size] on the renderer's device, y int64 [B] (soft float [B, 2] when the
    views mix); `render_batch` renders one batch the same way; `close()` frees the renderer."""

    def __init__(self, shards, name: str, render: RenderSettings, device, size: int):
        self.split = shards.split(name)
        self.size = size
        if not D.is_main():
            D.barrier()  # under torchrun rank 0 decodes and saves the decoded cache; others map it
        self.renderer = make_renderer(render.renderer, self.split, device=device,
                                      decoded_size=render.decoded_size,
                                      budget_bytes=budget_bytes(render), out_size=size,
                                      cache_dir=shards.root, content_hash=shards.content_hash)
        if D.is_main():
            D.barrier()

    def __len__(self):
        return len(self.split)

    def batches(self, order: np.ndarray, params: np.ndarray, batch_size: int):
        """`params` holds one row per sample of the split (indexed by sample index)."""
        renderer = MixingRenderer(self.renderer, params) if mixes(params) else self.renderer
        return iterate(renderer, order, lambda idx: params[idx], batch_size, self.size)

    def render_batch(self, idx: np.ndarray, params: np.ndarray, size: int | None = None,
                     dtype=None):
        """(x, y) of samples `idx`, as `batches` renders them: `params` is the whole view
        table (one row per sample of the split: a mixed view needs its partner's row).
        size: default this split's."""
        size = size or self.size
        if mixes(params):
            return render_mixed(self.renderer, idx, params, size, dtype=dtype)
        return self.renderer.render(np.asarray(idx, dtype=np.int64), params[idx], size, dtype=dtype)

    def close(self) -> None:
        self.renderer.close()


def budget_bytes(render: RenderSettings) -> int | None:
    """--decoded-budget-gb in bytes; None = the renderer's default (40% of free memory)."""
    gb = render.decoded_budget_gb
    return int(gb * 2**30) if gb else None


def val_params(split, center_crop: bool = False) -> np.ndarray:
    """The validation view of every sample of `split`."""
    return _val_params(split.heights, split.widths, center_crop=center_crop)
