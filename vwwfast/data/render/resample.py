"""Crop + resize + flip of a batch as two batched matrix products, antialiased like PIL.

The reference renders with PIL's `Image.resize(size, BILINEAR, box=...)`: along each axis,
output pixel j is a weighted mean of the source pixels around c_j = box start + (j + 0.5)
* scale (scale = box length / output length, in source pixels), weighted by a triangle of
half-width max(scale, 1). Enlarging is therefore plain bilinear interpolation, and
shrinking averages every source pixel an output pixel covers (antialiasing); taps that fall
outside the image are dropped and the rest renormalised. Per sample and axis that is a
weight matrix W [out, in] (a flip reverses its rows), and a view is Wy @ image @ Wx^T: for a
batch, two batched matmuls whatever the boxes, the shape of work a GPU does best. Same
maths as PIL in float32 (PIL rounds to uint8 after each pass: they differ by under 1/255).

The decoded renderer uses this on CUDA. On a CPU the dense products would spend most of
their time on zero weights (a row has about 2 * max(scale, 1) + 1 taps of S): there it
calls PIL itself, per image, on the cached pixels.
"""

from __future__ import annotations

import torch


def weights(start: torch.Tensor, length: torch.Tensor, in_size: int, out_size: int,
            flip: torch.Tensor | None = None) -> torch.Tensor:
    """[B, out_size, in_size] float32: PIL's bilinear weights for the boxes [start, start +
    length) (relative, 0..1) of an axis of `in_size` pixels; flip (bool [B]) mirrors."""
    scale = length.to(torch.float32) * (in_size / out_size)                   # [B]
    support = scale.clamp(min=1.0)[:, None, None]
    j = torch.arange(out_size, device=start.device, dtype=torch.float32).expand(len(start), -1)
    if flip is not None:
        j = torch.where(flip[:, None], (out_size - 1) - j, j)
    centre = start.to(torch.float32)[:, None] * in_size + (j + 0.5) * scale[:, None]
    x = torch.arange(in_size, device=start.device, dtype=torch.float32) + 0.5
    w = (x - centre[:, :, None]).abs_().div_(support).neg_().add_(1).clamp_(min=0)
    return w / w.sum(-1, keepdim=True).clamp_(min=1e-12)  # all-zero only for a box outside


def resample(images: torch.Tensor, wy: torch.Tensor, wx: torch.Tensor) -> torch.Tensor:
    """images [B, H, W, 3] (uint8 or float), wy [B, out_y, H], wx [B, out_x, W] ->
    float32 [B, out_y, out_x, 3] (NHWC), values in the images' range."""
    n, h, w, _ = images.shape
    oy, ox = wy.shape[1], wx.shape[1]
    x = images.to(torch.float32).view(n, h, w * 3)
    t = torch.bmm(wy, x)                                          # [B, oy, (W, 3)]: along y
    t = t.view(n, oy, w, 3).transpose(1, 2).reshape(n, w, oy * 3)  # rows by source column
    out = torch.bmm(wx, t)                                        # [B, ox, (oy, 3)]: along x
    return out.view(n, ox, oy, 3).transpose(1, 2).contiguous()
