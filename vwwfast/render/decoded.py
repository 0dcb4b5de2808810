"""Decoded-cache renderer: decode a split once into uint8 [N, S, S, 3], then render every
batch with one batched affine sampling call.

The whole image is resized to S x S (antialiased), so relative crop boxes keep their
geometry. The cache lives on the GPU when it fits the budget, else in pinned host memory
(CUDA), else in plain memory; with a cache_dir it is also saved as
decoded-<split>-<S>.npy (+ .json holding the shard content hash) and memory-mapped the
next time. Decoding: DALI (GPU 'mixed' decode on CUDA), else torchvision's decode_jpeg on
CUDA, else PIL.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vwwfast.render import Renderer, dali_available
from vwwfast.render.color import finish
from vwwfast.views import COL

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
    from vwwfast.render.dali import decode_whole as dali_whole
    from vwwfast.render.reference import decode_whole as pil_whole
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
        self._src_buf = None
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
        source = "file"
        if not (path.is_file() and _read_json(meta_path) == meta):
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
        # copy-on-write map: torch wants a writable buffer; the file is never modified
        arr = np.load(path, mmap_mode="c")
        if self.where == "cpu":
            return torch.from_numpy(arr), source
        dest = self._alloc()
        for start in range(0, len(arr), 4096):
            dest[start:start + 4096].copy_(torch.from_numpy(arr[start:start + 4096]))
        return dest, source

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

    def render(self, indices, params, size, dtype=torch.float32):
        indices = np.asarray(indices, dtype=np.int64)
        n = len(indices)
        src = self._gather(indices)                           # uint8 [B, S, S, 3]
        if self.device.type == "cuda":
            x = src.permute(0, 3, 1, 2).float()               # channels_last strides
        else:
            # On the CPU, NCHW grid_sample beats channels_last even after the transposing
            # conversion, and a reused buffer avoids page-faulting a fresh ~80 MB each batch.
            if self._src_buf is None or self._src_buf.shape[0] < n:
                self._src_buf = torch.empty(n, 3, self.size, self.size)
            x = self._src_buf[:n]
            x.copy_(src.permute(0, 3, 1, 2))
        p = torch.as_tensor(params).to(self.device, torch.float32, non_blocking=True)
        grid = crop_grid(p, size)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return finish(out, params, dtype, scale=255.0), self.labels(indices)

    def close(self) -> None:
        self.cache = self._src_buf = None
        super().close()


def crop_theta(p: torch.Tensor) -> torch.Tensor:
    """[B, 2, 3] affine maps from the output square (normalised -1..1, pixel edges) to the
    crop box in the source; a flip negates the x scale."""
    y0, x0, h, w = (p[:, COL[c]] for c in ("y0", "x0", "h", "w"))
    sx = w * (1 - 2 * (p[:, COL["flip"]] >= 0.5).float())
    theta = torch.zeros(len(p), 2, 3, dtype=torch.float32, device=p.device)
    theta[:, 0, 0], theta[:, 0, 2] = sx, 2 * x0 + w - 1
    theta[:, 1, 1], theta[:, 1, 2] = h, 2 * y0 + h - 1
    return theta


def crop_grid(p: torch.Tensor, size: int) -> torch.Tensor:
    """F.affine_grid(crop_theta(p), [B, 3, size, size], align_corners=False), built from
    its two separable axes: the maps are axis-aligned, and on the CPU affine_grid's
    batched matmul over every pixel costs as much as the sampling itself."""
    theta = crop_theta(p)
    base = (torch.arange(size, dtype=torch.float32, device=p.device) * 2 + 1) / size - 1
    gx = theta[:, 0, 0, None] * base + theta[:, 0, 2, None]     # [B, size]
    gy = theta[:, 1, 1, None] * base + theta[:, 1, 2, None]
    grid = torch.empty(len(p), size, size, 2, dtype=torch.float32, device=p.device)
    grid[..., 0] = gx[:, None, :]
    grid[..., 1] = gy[:, :, None]
    return grid


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
