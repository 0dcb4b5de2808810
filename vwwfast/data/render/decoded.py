"""Decoded-cache renderer: decode a split once into uint8 [N, S, S, 3], then render every
batch from memory.

The whole image is resized to S x S (antialiased), so relative crop boxes keep their
geometry; a view's box is then resampled from the cache exactly as the reference resamples
the JPEG: PIL's bilinear filter, widened when it shrinks (antialiased), then the flip.
- CUDA: two batched matmuls with those weights (vwwfast.data.render.resample), the flip folded
  into them; no host synchronisation.
- CPU: PIL's resize on each cached image, as the reference's `view_pil` (tests hold them
  equal), split between the calling thread and one more per core (PIL releases the GIL).
  Measured on a 2-core machine shared with other work, against the same matmuls and the
  bilinear `grid_sample` (no antialiasing) that it replaced: as fast as grid_sample when
  the machine is quiet and faster when it is busy, where the matmuls (many small OpenMP
  parallel regions waiting on each other) fell to a tenth of it.
Colour and normalisation are the shared `finish`.

The cache lives on the GPU when it fits the budget, else in pinned host memory (CUDA), else
in plain memory; with a cache_dir it is also saved as decoded-<split>-<S>.npy (+ .json
holding the shard content hash) and memory-mapped the next time (a damaged file is rebuilt,
with a warning: it is only a cache). Decoding: DALI (GPU 'mixed' decode on CUDA), else
torchvision's decode_jpeg on CUDA, else PIL.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vwwfast.data.render.base import Renderer, dali_available
from vwwfast.data.render.color import finish
from vwwfast.data.render.resample import resample, weights
from vwwfast.data.views import COL

DECODE_BATCH = 256
FORMAT = 1


def decoded_nbytes(n: int, size: int) -> int:
    return n * size * size * 3


def host_available_bytes() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def default_budget(device: torch.device) -> int:
    """40% of free device memory (GPU), or of available RAM (CPU)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(0.4 * free)
    return int(0.4 * host_available_bytes())


def placement(n: int, size: int, device: torch.device, budget_bytes: int | None) -> str | None:
    """'cuda' | 'pinned' | 'cpu' where the cache would live, None if it fits nowhere."""
    need = decoded_nbytes(n, size)
    budget = budget_bytes if budget_bytes is not None else default_budget(device)
    if device.type == "cuda":
        if need <= budget:
            return "cuda"
        return "pinned" if need <= int(0.4 * host_available_bytes()) else None
    return "cpu" if need <= budget else None


def decoded_fits(n: int, size: int, device, budget_bytes: int | None = None) -> bool:
    return placement(n, size, torch.device(device), budget_bytes) is not None


def why_not_decoded(n: int, size: int, device, budget_bytes: int | None = None) -> str:
    """In words, the memory a decoded cache would need against what it may take."""
    device = torch.device(device)
    gib = lambda b: f"{b / 2**30:,.1f} GiB"  # noqa: E731
    budget = budget_bytes if budget_bytes is not None else default_budget(device)
    where = "--decoded-budget-gb" if budget_bytes is not None else \
        f"40% of free {'GPU' if device.type == 'cuda' else 'host'} memory"
    text = (f"a decoded cache of {n:,} images at {size} px would need {gib(decoded_nbytes(n, size))}, "
            f"more than {gib(budget)} ({where})")
    if device.type == "cuda":
        text += f" or 40% of available host memory ({gib(0.4 * host_available_bytes())})"
    return text


def split_fingerprint(split) -> str:
    """The shard content hash when the split knows it, else a hash of its sample table."""
    known = getattr(split, "content_hash", None)
    if known:
        return known
    h = hashlib.sha256()
    for a in (split.labels, split.heights, split.widths, split.shard, split.offsets, split.nbytes):
        h.update(np.ascontiguousarray(a).tobytes())
    h.update("|".join(Path(p).name for p in split.tar_paths).encode())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------
# Decoding every image once: yields (start, uint8 [b, S, S, 3]) as numpy or torch

def _decode_torchvision_cuda(reader, n: int, size: int, device: torch.device, batch: int):
    from torchvision.io import decode_jpeg
    for start in range(0, n, batch):
        idx = np.arange(start, min(start + batch, n))
        data = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in reader.read(idx)]
        imgs = decode_jpeg(data, device=device)
        out = torch.stack([F.interpolate(im[None].float(), size=(size, size), mode="bilinear",
                                         antialias=True, align_corners=False)[0]
                           for im in imgs])
        yield start, out.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def decoder_name(device: torch.device) -> str:
    if dali_available():
        return "dali"
    return "torchvision" if device.type == "cuda" else "pil"


def decode_batches(reader, n: int, size: int, device: torch.device, decoder: str | None = None):
    """Yield (start, uint8 [b, size, size, 3]) for samples 0..n-1 of `reader`, in order."""
    from vwwfast.data.render.dali import decode_whole as dali_whole
    from vwwfast.data.render.reference import decode_whole as pil_whole
    decoder = decoder or decoder_name(device)
    fn = {"dali": dali_whole, "torchvision": _decode_torchvision_cuda, "pil": pil_whole}
    return fn[decoder](reader, n, size, device, DECODE_BATCH)


# ---------------------------------------------------------------------------------------

class DecodedRenderer(Renderer):
    name = "decoded"

    def __init__(self, split, device, size: int = 160, *, budget_bytes: int | None = None,
                 cache_dir=None, content_hash: str | None = None, decoder: str | None = None,
                 show_progress: bool = True):
        super().__init__(split, device)
        self.size = size
        self.where = placement(len(split), size, self.device, budget_bytes)
        if self.where is None:
            from vwwfast.progress import warn
            self.where = "pinned" if self.device.type == "cuda" else "cpu"
            warn(f"the decoded cache ({decoded_nbytes(len(split), size) / 2**30:.1f} GiB) is over "
                 f"the memory budget; holding it in {self.where} memory anyway")
        self.decoder = decoder or decoder_name(self.device)
        self._hash = content_hash or split_fingerprint(split)
        self._show = show_progress
        self._pool: ThreadPoolExecutor | None = None  # the CPU path's threads
        self._x: torch.Tensor | None = None  # ... and its float buffer, reused: no fresh pages per batch
        t0 = time.perf_counter()
        if cache_dir is not None:
            self.cache, source = self._from_file(Path(cache_dir))
        else:
            self.cache, source = self._alloc(), "decode"
            self._fill(self.cache)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - t0
        # The first pass (decoding or loading) is reported apart from steady-state rendering.
        self.first_pass = {"source": source, "images": len(split), "seconds": seconds,
                           "img_per_s": len(split) / max(seconds, 1e-9), "where": self.where,
                           "decoder": self.decoder, "bytes": decoded_nbytes(len(split), size)}

    # -- building -------------------------------------------------------------------

    def _alloc(self) -> torch.Tensor:
        shape = (len(self.split), self.size, self.size, 3)
        if self.where == "cuda":
            return torch.empty(shape, dtype=torch.uint8, device=self.device)
        return torch.empty(shape, dtype=torch.uint8, pin_memory=self.where == "pinned")

    def _fill(self, dest) -> None:
        """Decode every image into dest (a torch tensor or a numpy array / memmap)."""
        from vwwfast.progress import bar
        desc = f"decode {self.split.name} {self.size}px ({self.decoder})"
        with bar(desc, len(self.split)) if self._show else nullcontext(lambda n=1: None) as advance:
            for start, batch in decode_batches(self.reader, len(self.split), self.size, self.device,
                                               self.decoder):
                stop = start + len(batch)
                if isinstance(dest, torch.Tensor):
                    src = batch if isinstance(batch, torch.Tensor) else torch.from_numpy(batch)
                    dest[start:stop].copy_(src, non_blocking=True)
                else:
                    dest[start:stop] = batch.cpu().numpy() if isinstance(batch, torch.Tensor) else batch
                advance(len(batch))

    def _from_file(self, cache_dir: Path):
        path = cache_dir / f"decoded-{self.split.name}-{self.size}.npy"
        meta_path = path.with_suffix(".json")
        meta = {"format": FORMAT, "content_hash": self._hash, "split": self.split.name,
                "num_samples": len(self.split), "size": self.size}
        arr, source = None, "file"
        if path.is_file() and _read_json(meta_path) == meta:
            arr = self._map(path)
        if arr is None:
            source = "decode"
            try:
                self._write_file(path, meta_path, meta)
            except OSError as e:  # read-only shard folder, full disk: keep it in memory
                from vwwfast.progress import warn
                warn(f"cannot save the decoded cache in {cache_dir} ({e.strerror or e}); "
                     f"decoding into memory only")
                cache = self._alloc()
                self._fill(cache)
                return cache, source
            arr = np.load(path, mmap_mode="c")
        if self.where == "cpu":
            return torch.from_numpy(arr), source
        dest = self._alloc()
        for start in range(0, len(arr), 4096):
            dest[start:start + 4096].copy_(torch.from_numpy(arr[start:start + 4096]))
        return dest, source

    def _map(self, path: Path):
        """The saved cache, memory-mapped (copy-on-write: torch wants a writable buffer; the
        file is never modified), or None, with a warning, when the file is damaged
        (truncated, another shape): it is only a cache, so the caller rebuilds it."""
        shape = (len(self.split), self.size, self.size, 3)
        try:
            arr = np.load(path, mmap_mode="c")
            if arr.shape == shape and arr.dtype == np.uint8:
                return arr
            why = f"holds {arr.dtype} {list(arr.shape)}, expected uint8 {list(shape)}"
        except (ValueError, OSError, EOFError) as e:  # truncated: "mmap length is greater ..."
            why = str(e) or type(e).__name__
        from vwwfast.progress import warn
        warn(f"decoded cache {path} is damaged ({why}); decoding it again")
        return None

    def _write_file(self, path: Path, meta_path: Path, meta: dict) -> None:
        """Decode into <path>.<pid>.tmp, then rename; the .json (with the content hash)
        goes last, so a file without a matching .json is never trusted. Per-process tmp
        names: ranks racing to build the same cache each write a whole file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        meta_path.unlink(missing_ok=True)  # never leave a hash beside other contents
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        try:
            arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                            shape=(len(self.split), self.size, self.size, 3))
            self._fill(arr)
            arr.flush()
            del arr
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        tmp_meta = meta_path.with_name(f"{meta_path.name}.{os.getpid()}.tmp")
        tmp_meta.write_text(json.dumps(meta))
        os.replace(tmp_meta, meta_path)

    # -- rendering ------------------------------------------------------------------

    def _gather(self, indices: np.ndarray) -> torch.Tensor:
        """uint8 [B, S, S, 3] on the device. Host copies use numpy's take (a memcpy per
        image): torch's index_select on a 4-D uint8 tensor is orders of magnitude slower."""
        if self.cache.is_cuda:
            idx = torch.from_numpy(indices).to(self.device, non_blocking=True)
            return self.cache.index_select(0, idx)
        out = torch.empty((len(indices),) + tuple(self.cache.shape[1:]), dtype=torch.uint8,
                          pin_memory=self.where == "pinned")
        np.take(self.cache.numpy(), indices, axis=0, out=out.numpy())
        return out.to(self.device, non_blocking=True) if self.where == "pinned" else out

    def render(self, indices, params, size, dtype=None):
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) == 0:
            return self._empty(size, dtype), self.labels(indices)
        if self.device.type == "cuda":
            x = self._matmul(indices, params, size)
        else:
            x = self._pil(indices, params, size)
        return finish(x, params, dtype, scale=255.0), self.labels(indices)

    def _matmul(self, indices: np.ndarray, params, size: int) -> torch.Tensor:
        """float [B, 3, size, size] (channels_last, 0..255) by two batched matmuls on the
        renderer's device (any device: the tests run it on the CPU)."""
        p = torch.as_tensor(params).to(self.device, torch.float32, non_blocking=True)
        S = self.size
        wy = weights(p[:, COL["y0"]], p[:, COL["h"]], S, size)
        wx = weights(p[:, COL["x0"]], p[:, COL["w"]], S, size, flip=p[:, COL["flip"]] >= 0.5)
        return resample(self._gather(indices), wy, wx).permute(0, 3, 1, 2)

    def _pil(self, indices: np.ndarray, params, size: int) -> torch.Tensor:
        """float [B, 3, size, size] (NCHW, 0..255): PIL's resize with the crop box and the
        flip on each cached image, as the reference's view_pil (the tests hold the two
        equal), the batch split between the calling thread and one more per core."""
        from PIL import Image
        p = params.cpu().numpy() if isinstance(params, torch.Tensor) else np.asarray(params)
        S, n = self.size, len(indices)
        y0, x0, h, w = (p[:, COL[c]].astype(np.float64) for c in ("y0", "x0", "h", "w"))
        boxes = (np.stack([x0, y0, x0 + w, y0 + h], 1) * S).tolist()   # view_pil's arithmetic
        flips = (p[:, COL["flip"]] >= 0.5).tolist()
        cache, views = self.cache.numpy(), np.empty((n, size, size, 3), np.uint8)
        todo = iter(range(n))  # shared: each thread takes the next image (next() holds the GIL)

        def run():
            for k in todo:
                img = Image.frombuffer("RGB", (S, S), cache[indices[k]], "raw", "RGB", 0, 1)
                img = img.resize((size, size), Image.Resampling.BILINEAR, box=boxes[k])
                if flips[k]:
                    img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
                views[k] = np.asarray(img)
        threads = min(8, os.cpu_count() or 1)
        if self._pool is None and threads > 1:
            self._pool = ThreadPoolExecutor(threads - 1, thread_name_prefix="vwwfast-decoded")
        # no pool on one core, where no more threads are asked for
        done = ([self._pool.submit(run) for _ in range(min(threads, n) - 1)]
                if self._pool is not None else [])
        run()  # this thread works too; PIL releases the GIL while it resamples
        for f in done:
            f.result()
        if self._x is None or self._x.numel() < n * 3 * size * size:
            self._x = torch.empty(n * 3 * size * size)
        x = self._x[:n * 3 * size * size].view(n, 3, size, size)
        return x.copy_(torch.from_numpy(views).permute(0, 3, 1, 2))  # NCHW: finish's fast layout

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        self.cache = self._x = None
        super().close()


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
