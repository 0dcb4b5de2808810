"""DALI renderer: JPEG bytes from the shards -> DALI (decode the crop, resize, flip).

Per batch, the JPEG bytes (read by seek from the tars), the crop start / shape (relative,
WH order) and the flip flags are fed through `fn.external_source`; the decoder decodes only
the region of interest (`fn.decoders.image_slice`, on the GPU with device='mixed' when
CUDA is there), `fn.resize` resamples it to size x size (bilinear, antialiased like PIL),
`fn.flip` mirrors per sample. Colour, normalisation and erasing are the shared torch ops.
The decoder cuts whole pixels: view_params' boxes are whole pixels of the stored JPEG, so
rel_start * size lands exactly on them (checked against numpy slicing of a decoded image);
the other renderers sample sub-pixel boxes as given.

Pipelines are built once per (batch size, output size), run one batch per call
(exec_pipelined=False, prefetch_queue_depth=1: external_source is fed exactly one batch
ahead). A short last batch goes through the same pipeline (DALI accepts any batch up to
its batch_size).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from vwwfast.data.render.base import Renderer
from vwwfast.data.render.color import finish
from vwwfast.data.render.reference import hwc_float
from vwwfast.data.views import COL


def _pipeline(batch_size: int, device: torch.device, threads: int):
    """An empty pipeline fed one batch per run() (see the module docstring)."""
    from nvidia.dali import Pipeline
    cuda = device.type == "cuda"
    return Pipeline(batch_size=batch_size, num_threads=threads,
                    device_id=(device.index or 0) if cuda else None,
                    exec_pipelined=False, prefetch_queue_depth=1)


def _to_torch(out, n: int, size: int, device: torch.device) -> torch.Tensor:
    """A dense DALI batch of uint8 [size, size, 3] images -> torch uint8 [n, size, size, 3]
    on `device` (GPU batches copied on torch's current stream)."""
    if device.type != "cuda":
        return torch.from_numpy(out.as_array())
    from nvidia.dali.plugin.pytorch import feed_ndarray
    t = torch.empty((n, size, size, 3), dtype=torch.uint8, device=device)
    feed_ndarray(out.as_tensor(), t, cuda_stream=torch.cuda.current_stream(device))
    return t


def decode_whole(reader, n: int, size: int, device: torch.device, batch: int):
    """For the decoded cache: yield (start, uint8 [b, size, size, 3]) of whole images
    resized to size x size, samples 0..n-1 in order (GPU decode on CUDA)."""
    from nvidia.dali import fn, types
    pipe = _pipeline(batch, device, min(8, os.cpu_count() or 1))
    with pipe:
        enc = fn.external_source(name="enc", dtype=types.DALIDataType.UINT8, ndim=1)
        img = fn.decoders.image(enc, device="mixed" if device.type == "cuda" else "cpu",
                                output_type=types.DALIImageType.RGB)
        pipe.set_outputs(fn.resize(img, resize_x=size, resize_y=size, antialias=True))
    pipe.build()
    for start in range(0, n, batch):
        idx = np.arange(start, min(start + batch, n))
        pipe.feed_input("enc", [np.frombuffer(b, np.uint8) for b in reader.read(idx)])
        (out,) = pipe.run()
        yield start, _to_torch(out, len(idx), size, device)


class DaliRenderer(Renderer):
    name = "dali"

    def __init__(self, split, device, threads: int | None = None):
        super().__init__(split, device)
        self.cuda = self.device.type == "cuda"
        self.threads = threads or min(8, os.cpu_count() or 1)
        self._pipes: dict[tuple[int, int], object] = {}

    def _pipe(self, batch_size: int, size: int):
        # Any batch up to the largest seen reuses a pipeline; a larger one builds a new one.
        for (bs, s), pipe in self._pipes.items():
            if s == size and bs >= batch_size:
                return pipe
        from nvidia.dali import fn, types
        pipe = _pipeline(batch_size, self.device, self.threads)
        with pipe:
            enc = fn.external_source(name="enc", dtype=types.DALIDataType.UINT8, ndim=1)
            start = fn.external_source(name="start", dtype=types.DALIDataType.FLOAT, ndim=1)
            shape = fn.external_source(name="shape", dtype=types.DALIDataType.FLOAT, ndim=1)
            flip = fn.external_source(name="flip", dtype=types.DALIDataType.INT32, ndim=0)
            img = fn.decoders.image_slice(enc, rel_start=start, rel_shape=shape,
                                          device="mixed" if self.cuda else "cpu",
                                          output_type=types.DALIImageType.RGB)
            img = fn.resize(  # type: ignore[assignment]  # a DataNode: DALI's stub adds save_attrs' forms
                img, resize_x=size, resize_y=size, antialias=True)
            img = fn.flip(img, horizontal=flip)
            pipe.set_outputs(img)
        pipe.build()
        self._pipes[(batch_size, size)] = pipe
        return pipe

    def render(self, indices, params, size, dtype=None):
        indices = np.asarray(indices, dtype=np.int64)
        p = params.cpu().numpy() if isinstance(params, torch.Tensor) else np.asarray(params)
        n = len(indices)
        if n == 0:
            return self._empty(size, dtype), self.labels(indices)
        pipe = self._pipe(n, size)
        # slice arguments are in WH order: (x, y)
        start = np.ascontiguousarray(p[:, [COL["x0"], COL["y0"]]], dtype=np.float32)
        shape = np.ascontiguousarray(p[:, [COL["w"], COL["h"]]], dtype=np.float32)
        flip = (p[:, COL["flip"]] >= 0.5).astype(np.int32)
        pipe.feed_input("enc", [np.frombuffer(b, np.uint8) for b in self.reader.read(indices)])
        pipe.feed_input("start", list(start))
        pipe.feed_input("shape", list(shape))
        pipe.feed_input("flip", list(flip))
        (batch,) = pipe.run()
        hwc = _to_torch(batch, n, size, self.device)
        return finish(hwc_float(hwc), p, dtype, scale=255.0), self.labels(indices)

    def close(self) -> None:
        self._pipes.clear()  # DALI frees a pipeline's threads and buffers when it is dropped
        super().close()
