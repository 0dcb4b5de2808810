"""`iterate`: batches of an order rendered ahead in a background thread, so rendering
overlaps the consumer's compute."""

from __future__ import annotations

import queue
import threading
from contextlib import nullcontext
from typing import Callable, Iterator, Protocol

import numpy as np
import torch



class BatchRenderer(Protocol):
    """What `iterate` uses of a renderer: a Renderer (vwwfast.data.render.base), or a
    MixingRenderer (vwwfast.data.mixing) around one."""

    @property
    def device(self) -> torch.device: ...

    def render(self, indices: np.ndarray, params, size: int, /, dtype=None): ...


def iterate(renderer: BatchRenderer, order: np.ndarray, params_for: Callable[[np.ndarray], object],
            batch_size: int, size: int, prefetch: int = 2, dtype=None,
            ) -> Iterator[tuple[torch.Tensor, torch.Tensor, np.ndarray]]:
    """Yield (x, y, idx) batches of `order` rendered `prefetch` batches ahead in a
    background thread. The last batch may be short. Errors in the thread are raised in the
    consumer. prefetch=0 renders in the caller's thread (no overlap; on a CPU with few cores
    a render thread competes with the model's own threads). Every batch is a new tensor the
    consumer may keep."""
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
                pass
        return False

    def work():
        try:
            # A side stream on CUDA: the batch's kernels run beside the consumer's; the
            # thread waits for them before handing the batch over.
            stream = torch.cuda.Stream(renderer.device) if cuda else None
            for idx in batches:
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
                current = torch.cuda.current_stream(renderer.device)
                x.record_stream(current)
                y.record_stream(current)
            yield x, y, idx
    finally:
        stop.set()
        thread.join()
