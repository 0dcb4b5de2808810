"""One view rendered with torchvision from its parameter row (views.py's PARAM_COLUMNS), for
trainers with their own data pipeline (`vwwfast.wds_dataset`): the crop box, flip, colour and
erasing box the renderers apply, as torchvision transforms.

The geometry is the renderers': the stored crop box in whole pixels (boxes are drawn in
pixels, so the relative row times the image size gives them back), resized with antialiased
bilinear filtering, then mirrored. Colour follows torchvision's own functions, which clamp
after every step and shift hue in HSV; vwwfast's renderers apply one affine map and rotate
hue in YIQ (render/color.py), so colours agree closely, not bit for bit. A mixed view
(partner >= 0) blends in another sample's view: it needs that sample, and is refused here.
"""

from __future__ import annotations

from io import BytesIO

import numpy as np
import torch

from vwwfast.constants import IMAGENET_MEAN, IMAGENET_STD
from vwwfast.data.views import COL, PARAM_COLUMNS


def render_view(image, params, size: int, *, color: bool = True,
                normalize: bool = False) -> torch.Tensor:
    """float32 [3, size, size]: `image` (JPEG bytes, a PIL image or a uint8 [3, H, W] tensor)
    seen through one view. params: a row of view parameters ([len(PARAM_COLUMNS)], e.g. a
    `wds_dataset` sample's "params"), or None for the validation view (the whole image).
    Values in 0..1, or ImageNet-normalised with normalize=True (what vwwfast's renderers give).
    color=False leaves colour and erasing out (geometry only)."""
    from torchvision.transforms.v2 import functional as F
    x = _uint8_chw(image)
    H, W = x.shape[-2:]
    p = _whole_image() if params is None else np.asarray(params, dtype=np.float64).reshape(-1)
    if len(p) != len(PARAM_COLUMNS):
        raise ValueError(f"a view's parameters have {len(PARAM_COLUMNS)} columns, got {len(p)}")
    if p[COL["partner"]] >= 0:
        raise ValueError("a mixed view blends in its partner sample's view: render it with "
                         "vwwfast.KDData, or use a store without mixup / cutmix")
    top, left = round(p[COL["y0"]] * H), round(p[COL["x0"]] * W)
    h, w = max(1, round(p[COL["h"]] * H)), max(1, round(p[COL["w"]] * W))
    x = F.resized_crop(x, top, left, h, w, [size, size], antialias=True)
    if p[COL["flip"]] >= 0.5:
        x = F.horizontal_flip(x)
    x = F.to_dtype(x, torch.float32, scale=True)
    if color:
        x = F.adjust_brightness(x, float(p[COL["brightness"]]))
        x = F.adjust_contrast(x, float(p[COL["contrast"]]))
        x = F.adjust_saturation(x, float(p[COL["saturation"]]))
        if p[COL["hue"]]:  # torchvision's HSV shift turns the other way from the YIQ rotation
            x = F.adjust_hue(x, -float(p[COL["hue"]]))
        x = _erase(x, p)
    if normalize:
        x = F.normalize(x, list(IMAGENET_MEAN), list(IMAGENET_STD))
    return x


def _whole_image() -> np.ndarray:
    from vwwfast.data.views import val_params
    return val_params([1], [1])[0].astype(np.float64)


def _uint8_chw(image) -> torch.Tensor:
    if isinstance(image, (bytes, bytearray, memoryview)):
        from PIL import Image
        with Image.open(BytesIO(bytes(image))) as im:
            image = im.convert("RGB")
    if isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
            raise ValueError("an image tensor should be uint8 [3, H, W]")
        return image
    from torchvision.transforms.v2 import functional as F
    return F.pil_to_tensor(image.convert("RGB"))


def _erase(x: torch.Tensor, p: np.ndarray) -> torch.Tensor:
    """The erasing box (relative to the output square, pixel centres inside it) filled with
    the ImageNet mean colour: 0 once normalised, as the renderers fill it."""
    if p[COL["erase_h"]] <= 0:
        return x
    S_h, S_w = x.shape[-2:]
    ys = (torch.arange(S_h, dtype=torch.float32) + 0.5) / S_h
    xs = (torch.arange(S_w, dtype=torch.float32) + 0.5) / S_w
    rows = (ys >= p[COL["erase_y0"]]) & (ys < p[COL["erase_y0"]] + p[COL["erase_h"]])
    cols = (xs >= p[COL["erase_x0"]]) & (xs < p[COL["erase_x0"]] + p[COL["erase_w"]])
    mask = rows[:, None] & cols[None, :]
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype)[:, None, None]
    return torch.where(mask, mean, x)
