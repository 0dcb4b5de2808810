"""The renderer interface: (sample indices, view parameters, output size) -> normalised batch.

Three implementations agree on geometry and colour (tests/test_render.py holds them to one
stated bound against the reference, at the student's, the teacher's and the val size):
  reference  PIL, sample by sample: slow and simple, the one to trust (reference.py)
  decoded    every image decoded once into uint8 [N, S, S, 3]; a batch is resampled from
             memory with the reference's antialiased bilinear filter (decoded.py)
  dali       JPEG bytes from the shards through a DALI pipeline, GPU decode on CUDA (dali.py)
`factory.make_renderer` picks one; `prefetch.iterate` renders batches ahead in a thread.
A renderer holds files / pipelines / memory: call `close()` (or use it as a context
manager) when done.
"""

from __future__ import annotations

import numpy as np
import torch

from vwwfast.data.shards import JpegReader

# What a rendered view is, for fingerprints of stores that hold logits of rendered views:
# change it whenever a renderer's output for the same parameters changes.
RENDERING = "pil-bilinear-antialiased/colour-affine-yiq-hue/2"


class Renderer:
    """Base class. `render(indices, params, size, dtype=None)` returns (x, y): x normalised
    [B, 3, size, size] in `dtype` (default float32) on `self.device`, NCHW on the CPU and
    channels_last on CUDA; y int64 [B] on the device.
    A renderer is used by one thread at a time (`iterate` runs it in its own thread)."""

    name = "base"

    def __init__(self, split, device):
        self.split = split
        self.device = torch.device(device)
        self._labels = torch.from_numpy(np.asarray(split.labels, dtype=np.int64))
        self.reader = JpegReader(split)

    def render(self, indices: np.ndarray, params, size: int, dtype=None):
        raise NotImplementedError

    def _empty(self, size: int, dtype):
        fmt = torch.channels_last if self.device.type == "cuda" else torch.contiguous_format
        return torch.empty(0, 3, size, size, dtype=dtype or torch.float32, device=self.device,
                           memory_format=fmt)

    def labels(self, indices: np.ndarray) -> torch.Tensor:
        y = self._labels[torch.from_numpy(np.asarray(indices, dtype=np.int64))]
        return to_device(y, self.device)

    def close(self) -> None:
        self.reader.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """CPU tensor -> device; through pinned memory with a non-blocking copy on CUDA."""
    if device.type != "cuda" or x.is_cuda:
        return x
    return x.pin_memory().to(device, non_blocking=True)


def dali_available() -> bool:
    try:
        import nvidia.dali  # noqa: F401
        return True
    except ImportError:
        return False
