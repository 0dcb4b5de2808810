"""Renderers: (sample indices, view parameters, output size) -> normalised batch.

Three implementations that agree on geometry and colour (tests/test_render.py holds them to
one stated bound against the reference, at the student's, the teacher's and the val size):
  reference  PIL, sample by sample: slow and simple, the one to trust
  decoded    every image decoded once into uint8 [N, S, S, 3]; a batch is resampled from
             memory with the reference's antialiased bilinear filter: two batched matmuls
             on CUDA (the cache on the GPU when it fits), PIL per image on the CPU
  dali       JPEG bytes from the shards through a DALI pipeline (GPU decode on CUDA)
`make_renderer('auto', ...)` picks decoded when it fits its memory budget and its S is at
least the output size, else dali. A renderer holds files / pipelines / memory: call
`close()` (or use it as a context manager) when done.

Writing into the caller's buffers (a static training step, e.g. one captured in a CUDA
graph, reads its input from fixed addresses):

    bufs = input_buffers(renderer, batch_size, size, dtype=torch.bfloat16)  # prefetch + 1
    for x, y, idx in iterate(renderer, order, params_for, batch_size, size, buffers=bufs):
        step(x, y)          # x is one of bufs: no copy between the renderer and the step

`render(..., out=buf)` writes one batch into `buf` ([B, 3, S, S] on the renderer's device,
any layout: channels_last is what the models want) and returns it. `iterate(...,
buffers=bufs)` renders batch k into bufs[k % len(bufs)] in its thread (on CUDA, on a side
stream) while the consumer works on the batch before: a yielded x stays valid until the
consumer asks for the next batch, and a buffer is written again only after the consumer's
stream has finished with it (a CUDA event, no host sync). So `prefetch` batches ahead need
prefetch + 1 buffers: 2 for double buffering with prefetch=1, 3 for the default 2. The last
batch of an epoch may be short: it is written into the first rows of its buffer and that
view is yielded (a static step drops it, or takes only full batches from `order`).
Without buffers every batch is a fresh tensor the consumer may keep.
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
from contextlib import nullcontext
from typing import Callable, Iterator

import numpy as np
import torch

from vwwfast.errors import UserError

RENDERERS = ("auto", "decoded", "dali", "reference")
# What a rendered view is, for fingerprints of stores that hold logits of rendered views:
# change it whenever a renderer's output for the same parameters changes.
RENDERING = "pil-bilinear-antialiased/colour-affine-yiq-hue/2"


class Renderer:
    """Base class. `render(indices, params, size, dtype=None, out=None)` returns (x, y):
    x normalised [B, 3, size, size] in `dtype` (default float32) on `self.device`,
    NCHW on the CPU and channels_last on CUDA, or written into `out` (see the module
    docstring) and returned; y int64 [B] on the device.
    A renderer is used by one thread at a time (`iterate` runs it in its own thread)."""

    name = "base"

    def __init__(self, split, device):
        self.split = split
        self.device = torch.device(device)
        self._labels = torch.from_numpy(np.asarray(split.labels, dtype=np.int64))
        self.reader = JpegReader(split)

    def render(self, indices: np.ndarray, params, size: int, dtype=None, out=None):
        raise NotImplementedError

    def _output(self, out, n: int, size: int, dtype):
        """Check a caller's output buffer; returns (out, the dtype to render in)."""
        if out is None:
            return None, dtype or torch.float32
        same_device = out.device.type == self.device.type and (
            self.device.index is None or out.device.index == self.device.index)
        if tuple(out.shape) != (n, 3, size, size) or not same_device or \
                (dtype is not None and dtype != out.dtype):
            raise ValueError(f"out is {out.dtype} {list(out.shape)} on {out.device}; this batch "
                             f"needs [{n}, 3, {size}, {size}] on {self.device}"
                             + (f" in {dtype}" if dtype is not None else ""))
        return out, out.dtype

    def _empty(self, size: int, dtype, out):
        if out is not None:
            return out
        fmt = torch.channels_last if self.device.type == "cuda" else torch.contiguous_format
        return torch.empty(0, 3, size, size, dtype=dtype, device=self.device, memory_format=fmt)

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
        _say_once(info, f"renderer: {name} ({why})")
    if name == "dali" and not dali_available():
        _say_once(warn, "NVIDIA DALI is not installed: the 'dali' renderer falls back to PIL "
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


_SAID: set[str] = set()


def _say_once(say, message: str) -> None:
    """A run opens several renderers (train, val, a teacher's): the choice is said once."""
    if message not in _SAID:
        _SAID.add(message)
        say(message)


def input_buffers(renderer: Renderer, batch_size: int, size: int, dtype=None,
                  prefetch: int = 2) -> list[torch.Tensor]:
    """prefetch + 1 channels_last buffers [batch_size, 3, size, size] on the renderer's
    device for `iterate(..., buffers=...)`; dtype: bfloat16 on CUDA, float32 on the CPU
    unless given."""
    if dtype is None:
        dtype = torch.bfloat16 if renderer.device.type == "cuda" else torch.float32
    return [torch.empty(batch_size, 3, size, size, dtype=dtype, device=renderer.device,
                        memory_format=torch.channels_last) for _ in range(prefetch + 1)]


def iterate(renderer: Renderer, order: np.ndarray, params_for: Callable[[np.ndarray], object],
            batch_size: int, size: int, prefetch: int = 2, dtype=None,
            buffers: list[torch.Tensor] | None = None,
            ) -> Iterator[tuple[torch.Tensor, torch.Tensor, np.ndarray]]:
    """Yield (x, y, idx) batches of `order` rendered `prefetch` batches ahead in a
    background thread, so rendering overlaps the consumer's compute. The last batch may
    be short. Errors in the thread are raised in the consumer. prefetch=0 renders in the
    caller's thread (no overlap; on a CPU with few cores a render thread competes with the
    model's own threads). buffers: render into these, in turn (at least prefetch + 1 of
    them; see the module docstring); otherwise every batch is a new tensor."""
    order = np.asarray(order, dtype=np.int64)
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if buffers is not None:
        if len(buffers) < prefetch + 1:
            raise ValueError(f"prefetch={prefetch} renders into {prefetch + 1} buffers at once "
                             f"(one being consumed); got {len(buffers)}")
        if any(b.shape[0] < batch_size for b in buffers):
            raise ValueError(f"buffers hold fewer than batch_size={batch_size} images")

    def target(k: int, n: int):
        return None if buffers is None else buffers[k % len(buffers)][:n]

    if prefetch <= 0:
        for k, idx in enumerate(batches):
            x, y = renderer.render(idx, params_for(idx), size, dtype=dtype, out=target(k, len(idx)))
            yield x, y, idx
        return
    cuda = renderer.device.type == "cuda"
    q: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()
    _END = object()
    # With buffers, slot k % R is free again once the consumer has moved past batch k;
    # on CUDA its stream must also have finished reading it (an event, waited on the GPU).
    free = threading.Semaphore(len(buffers)) if buffers is not None else None
    done_reading = [None] * (len(buffers) if buffers is not None else 0)

    def wait(acquire) -> bool:
        while not stop.is_set():
            if acquire():
                return True
        return False

    def put(item) -> bool:
        def attempt():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                return False
        return wait(attempt)

    def work():
        try:
            # A side stream on CUDA: the batch's kernels run beside the consumer's; the
            # thread waits for them before handing the batch over.
            stream = torch.cuda.Stream(renderer.device) if cuda else None
            for k, idx in enumerate(batches):
                if free is not None and not wait(lambda: free.acquire(timeout=0.1)):
                    return
                with torch.cuda.stream(stream) if cuda else nullcontext():
                    slot = k % len(buffers) if buffers is not None else None
                    if cuda and slot is not None and done_reading[slot] is not None:
                        stream.wait_event(done_reading[slot])
                    x, y = renderer.render(idx, params_for(idx), size, dtype=dtype,
                                           out=target(k, len(idx)))
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
        for k in itertools.count():
            item = q.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            x, y, idx = item
            if cuda:  # memory made on the side stream is now used on the consumer's
                current = torch.cuda.current_stream(renderer.device)
                if buffers is None:
                    x.record_stream(current)
                y.record_stream(current)
            yield x, y, idx
            if free is not None:  # the consumer asked for the next batch: done with this one
                if cuda:
                    event = torch.cuda.Event()
                    event.record(torch.cuda.current_stream(renderer.device))
                    done_reading[k % len(buffers)] = event
                free.release()
    finally:
        stop.set()
        thread.join()
