"""Reference renderer: PIL, one sample at a time. Slow and simple: the one to trust.

Geometry (`view_pil`): decode, then `Image.resize((S, S), BILINEAR, box=crop box in
pixels)` (PIL samples pixel centres, align_corners=False, and filters with a support widened
when shrinking, i.e. antialiased), then mirror when the flip flag is set. On the CPU the
decoded renderer does the same to its cached pixels (a test holds the two equal).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO

import numpy as np
import torch
from PIL import Image

from vwwfast.data.render.base import Renderer, to_device
from vwwfast.data.render.color import finish
from vwwfast.data.views import COL


def view_pil(img: Image.Image, p: np.ndarray, size: int) -> Image.Image:
    """The geometry of one view: p's crop box (relative) of `img`, resized to size x size
    (bilinear, antialiased when it shrinks), mirrored when p's flip is set."""
    W, H = img.size
    y0, x0, h, w = (float(p[COL[c]]) for c in ("y0", "x0", "h", "w"))
    box = (x0 * W, y0 * H, (x0 + w) * W, (y0 + h) * H)
    out = img.resize((size, size), Image.Resampling.BILINEAR, box=box)
    if p[COL["flip"]] >= 0.5:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return out


def render_pil(jpeg: bytes, p: np.ndarray, size: int) -> np.ndarray:
    """One view as uint8 [size, size, 3]."""
    with Image.open(BytesIO(jpeg)) as im:
        img = im.convert("RGB")
    return np.asarray(view_pil(img, p, size))


def decode_whole(reader, n: int, size: int, device, batch: int):
    """For the decoded cache without DALI: yield (start, uint8 [b, size, size, 3]) of whole
    images resized to size x size (antialiased), samples 0..n-1 in order, a thread per core."""
    def whole(jpeg: bytes) -> np.ndarray:
        with Image.open(BytesIO(jpeg)) as im:
            return np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        for start in range(0, n, batch):
            idx = np.arange(start, min(start + batch, n))
            yield start, np.stack(list(pool.map(whole, reader.read(idx))))


def hwc_float(hwc_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> float [B, 3, H, W] with values 0..255, channels_last strides:
    the conversion runs over contiguous memory, no transpose copy; `finish` scales."""
    return hwc_uint8.permute(0, 3, 1, 2).float()


class ReferenceRenderer(Renderer):
    name = "reference"

    def __init__(self, split, device, threads: int | None = 0):
        """threads: 0 = in the calling thread (the plain reference); None = one per core
        (PIL releases the GIL while decoding and resizing), used as DALI's fallback."""
        super().__init__(split, device)
        if threads is None:
            threads = min(8, os.cpu_count() or 1)
        self._pool = ThreadPoolExecutor(threads) if threads > 1 else None

    def render(self, indices, params, size, dtype=None):
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) == 0:
            return self._empty(size, dtype), self.labels(indices)
        p = params.cpu().numpy() if isinstance(params, torch.Tensor) else np.asarray(params)
        jpegs = self.reader.read(indices)
        jobs = zip(jpegs, p, [size] * len(p))
        mapper = self._pool.map if self._pool else map
        arrays = list(mapper(lambda a: render_pil(*a), jobs))
        x = hwc_float(to_device(torch.from_numpy(np.stack(arrays)), self.device))
        return finish(x, p, dtype, scale=255.0), self.labels(indices)

    def close(self) -> None:
        if self._pool:
            self._pool.shutdown()
            self._pool = None
        super().close()
