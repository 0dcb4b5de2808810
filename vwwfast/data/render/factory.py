"""`make_renderer`: one renderer for a split, by name; 'auto' picks by memory and size."""

from __future__ import annotations

import torch

from vwwfast.config import RENDERER_CHOICES as RENDERERS
from vwwfast.data.render.base import Renderer, dali_available
from vwwfast.errors import UserError


def make_renderer(name: str, split, *, device, decoded_size: int = 160,
                  budget_bytes: int | None = None, out_size: int | None = None,
                  cache_dir=None, content_hash: str | None = None,
                  show_progress: bool = True) -> Renderer:
    """Create a renderer for one split (a vwwfast.data.shards.Split).

    budget_bytes: memory the decoded cache may take (None = 40% of free device memory,
    or of available RAM on the CPU). out_size: the size `auto` must serve. cache_dir:
    where the decoded cache is saved / memory-mapped (decoded-<split>-<S>.npy), keyed by
    content_hash (default: the split's own fingerprint)."""
    from vwwfast.progress import info, warn
    device = torch.device(device)
    if name not in RENDERERS:
        raise UserError(f"unknown renderer '{name}': use one of {', '.join(RENDERERS)}")
    if name == "auto":
        from vwwfast.data.render.decoded import decoded_fits, why_not_decoded
        need = out_size or 0
        if decoded_size >= need and decoded_fits(len(split), decoded_size, device, budget_bytes):
            name, why = "decoded", f"decoded cache {decoded_size}px fits in memory"
        elif decoded_size < need:
            name, why = "dali", f"decoded cache {decoded_size}px is smaller than {need}px output"
        else:  # a set larger than memory: stream its JPEGs, hold nothing per image
            name = "dali"
            why = f"{why_not_decoded(len(split), decoded_size, device, budget_bytes)}: streaming the JPEGs"
        _say_once(info, f"renderer: {name} ({why})")
    if name == "dali" and not dali_available():
        _say_once(warn, "NVIDIA DALI is not installed: the 'dali' renderer falls back to PIL "
                        "(reference, threaded), which is much slower")
        name = "reference-threaded"
    if name == "decoded":
        from vwwfast.data.render.decoded import DecodedRenderer
        return DecodedRenderer(split, device, decoded_size, budget_bytes=budget_bytes,
                               cache_dir=cache_dir, content_hash=content_hash,
                               show_progress=show_progress)
    if name == "dali":
        from vwwfast.data.render.dali import DaliRenderer
        return DaliRenderer(split, device)
    from vwwfast.data.render.reference import ReferenceRenderer
    return ReferenceRenderer(split, device, threads=None)  # one thread per core: same per-sample code


_SAID: set[str] = set()


def _say_once(say, message: str) -> None:
    """A run opens several renderers (train, val, a teacher's): the choice is said once."""
    if message not in _SAID:
        _SAID.add(message)
        say(message)
