"""Renderers: (sample indices, view parameters, output size) -> normalised batch.

Three implementations that agree on geometry (tests compare them):
  reference  PIL, sample by sample: slow and simple, the one to trust
  decoded    every image decoded once into uint8 [N, S, S, 3]; a batch is one affine
             sampling call (GPU when the cache fits there)
  dali       JPEG bytes from the shards through a DALI pipeline (GPU decode on CUDA)
`make_renderer('auto', ...)` picks decoded when it fits its memory budget and its S is at
least the output size, else dali. A renderer holds files / pipelines / memory: call
`close()` (or use it as a context manager) when done.
"""

from __future__ import annotations

import os
import queue
import threading
from contextlib import nullcontext
from typing import Callable, Iterator

import numpy as np
import torch

from vwwfast.errors import UserError

RENDERERS = ("auto", "decoded", "dali", "reference")


class Renderer:
    """Base class. `render` returns (x, y): x float32 (or `dtype`) [B, 3, size, size],
    normalised, channels_last on CUDA; y int64 [B]; both on `self.device`.
    A renderer is used by one thread at a time (`iterate` runs it in its own thread)."""

    name = "base"

    def __init__(self, split, device):
        self.split = split
        self.device = torch.device(device)
        self._labels = torch.from_numpy(np.asarray(split.labels, dtype=np.int64))
        self.reader = JpegReader(split)

    def render(self, indices: np.ndarray, params, size: int, dtype=torch.float32):
        raise NotImplementedError

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


class JpegReader:
    """Random access to a split's JPEG bytes with os.pread on this reader's own file
    descriptors: safe from several threads at once (the split's own reader seeks shared
    handles), so a renderer in a prefetch thread never races another reader."""

    def __init__(self, split):
        self.tar_paths = list(split.tar_paths)
        self.shard = np.asarray(split.shard)
        self.offsets = np.asarray(split.offsets)
        self.nbytes = np.asarray(split.nbytes)
        self._fds: dict[int, int] = {}
        self._lock = threading.Lock()

    def _fd(self, shard: int) -> int:
        fd = self._fds.get(shard)
        if fd is None:
            with self._lock:
                fd = self._fds.get(shard)
                if fd is None:
                    fd = self._fds[shard] = os.open(self.tar_paths[shard], os.O_RDONLY)
        return fd

    def read(self, indices) -> list[bytes]:
        out = []
        for i in np.asarray(indices, dtype=np.int64):
            data = os.pread(self._fd(int(self.shard[i])), int(self.nbytes[i]), int(self.offsets[i]))
            if len(data) != self.nbytes[i]:
                raise UserError(f"{self.tar_paths[self.shard[i]]}: truncated (sample {i}); "
                                f"run `vwwfast shard` again")
            out.append(data)
        return out

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA when present, else CPU; 'cuda' without CUDA is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but PyTorch sees no CUDA device")
    if not (name == "cpu" or name.startswith("cuda")):
        raise UserError(f"unknown device '{name}': use 'auto', 'cuda' or 'cpu'")
    return torch.device(name)


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


def make_renderer(name: str, split, *, device, decoded_size: int = 160,
                  budget_bytes: int | None = None, out_size: int | None = None,
                  cache_dir=None, content_hash: str | None = None,
                  show_progress: bool = True) -> Renderer:
    """Create a renderer for one split (a vwwfast.shards.Split).

    budget_bytes: memory the decoded cache may take (None = 40% of free device memory,
    or of available RAM on the CPU). out_size: the size `auto` must serve. cache_dir:
    where the decoded cache is saved / memory-mapped (decoded-<split>-<S>.npy), keyed by
    content_hash (default: the split's own fingerprint)."""
    from vwwfast.progress import info, warn

    device = torch.device(device)
    if name not in RENDERERS:
        raise UserError(f"unknown renderer '{name}': use one of {', '.join(RENDERERS)}")
    if name == "auto":
        from vwwfast.render.decoded import decoded_fits
        need = out_size or 0
        if decoded_size >= need and decoded_fits(len(split), decoded_size, device, budget_bytes):
            name, why = "decoded", f"decoded cache {decoded_size}px fits in memory"
        elif decoded_size < need:
            name, why = "dali", f"decoded cache {decoded_size}px is smaller than {need}px output"
        else:
            name, why = "dali", "decoded cache would not fit the memory budget"
        info(f"renderer: {name} ({why})")
    if name == "dali" and not dali_available():
        warn("NVIDIA DALI is not installed: the 'dali' renderer falls back to PIL "
             "(reference, threaded), which is much slower")
        name = "reference-threaded"
    if name == "decoded":
        from vwwfast.render.decoded import DecodedRenderer
        return DecodedRenderer(split, device, decoded_size, budget_bytes=budget_bytes,
                               cache_dir=cache_dir, content_hash=content_hash,
                               show_progress=show_progress)
    if name == "dali":
        from vwwfast.render.dali import DaliRenderer
        return DaliRenderer(split, device)
    from vwwfast.render.reference import ReferenceRenderer
    return ReferenceRenderer(split, device, threads=None)  # one thread per core: same per-sample code


def iterate(renderer: Renderer, order: np.ndarray, params_for: Callable[[np.ndarray], object],
            batch_size: int, size: int, prefetch: int = 2, dtype=torch.float32,
            ) -> Iterator[tuple[torch.Tensor, torch.Tensor, np.ndarray]]:
    """Yield (x, y, idx) batches of `order` rendered `prefetch` batches ahead in a
    background thread, so rendering overlaps the consumer's compute. The last batch may
    be short. Errors in the thread are raised in the consumer. prefetch=0 renders in the
    caller's thread (no overlap; on a CPU with few cores a render thread competes with the
    model's own threads)."""
    order = np.asarray(order, dtype=np.int64)
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if prefetch <= 0:
        for idx in batches:
            x, y = renderer.render(idx, params_for(idx), size, dtype=dtype)
            yield x, y, idx
        return
    cuda = renderer.device.type == "cuda"
    q: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()
    _END = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            # A side stream on CUDA: the batch's kernels run beside the consumer's; the
            # thread waits for them before handing the batch over.
            stream = torch.cuda.Stream(renderer.device) if cuda else None
            for idx in batches:
                if stop.is_set():
                    return
                with torch.cuda.stream(stream) if cuda else nullcontext():
                    x, y = renderer.render(idx, params_for(idx), size, dtype=dtype)
                if cuda:
                    stream.synchronize()
                if not put((x, y, idx)):
                    return
            put(_END)
        except BaseException as e:  # handed to the consumer
            put(e)

    thread = threading.Thread(target=work, name="vwwfast-render", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            x, y, idx = item
            if cuda:  # memory made on the side stream is now used on the consumer's
                x.record_stream(torch.cuda.current_stream(renderer.device))
                y.record_stream(torch.cuda.current_stream(renderer.device))
            yield x, y, idx
    finally:
        stop.set()
        thread.join()
