"""Benchmarks: how fast each renderer feeds the student, against the student's own step."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from vwwfast.config import BenchLoaderConfig
from vwwfast.devices import device_name, sync

STUDENT_MIN_SECONDS = 2.0  # time the student's step at least this long (tests lower it)

# ---------------------------------------------------------------------------------------
# bench_loader


def time_renderer(renderer, order: np.ndarray, params: np.ndarray, size: int,
                  batch_size: int, batches: int, warmup: int = 1) -> float:
    """img/s of renderer.render over `batches` batches (after `warmup` untimed ones),
    cycling through `order`; params holds one row per sample of the split."""
    def batch(k):
        idx = np.take(order, np.arange(k * batch_size, (k + 1) * batch_size), mode="wrap")
        return idx, params[idx]
    for k in range(warmup):
        renderer.render(*batch(k), size)
    sync(renderer.device)
    t0 = time.perf_counter()
    for k in range(warmup, warmup + batches):
        x, _ = renderer.render(*batch(k), size)
    sync(renderer.device)
    return batches * batch_size / (time.perf_counter() - t0)


def agreement(x: torch.Tensor, ref: torch.Tensor) -> dict:
    """|x - ref| in normalised units over one batch: its mean and 99th percentile."""
    d = (x.float().cpu() - ref.float().cpu()).abs().flatten()
    return {"mean": d.mean().item(), "p99": torch.quantile(d[:1 << 24], 0.99).item()}


def student_step_rate(device: torch.device, batch_size: int, steps: int, size: int = 96,
                      min_seconds: float | None = None) -> float:
    """img/s of forward + backward + AdamW step of MobileNetV3-Small (2 classes) on random
    tensors already on the device; channels_last everywhere and bf16 autocast on CUDA, as in training.
    Runs at least `steps` timed steps (at least 2) or `min_seconds`, whichever is longer,
    capped at 10 * steps."""
    from torchvision.models import mobilenet_v3_small
    torch.manual_seed(0)
    model = mobilenet_v3_small(num_classes=2).to(device)
    cuda = device.type == "cuda"
    fmt = torch.channels_last  # as in training, on every device
    model = model.to(memory_format=fmt).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(batch_size, 3, size, size, device=device).to(memory_format=fmt)
    y = torch.randint(0, 2, (batch_size,), device=device)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    min_seconds = STUDENT_MIN_SECONDS if min_seconds is None else min_seconds
    for _ in range(3 if cuda else 1):
        step()
    sync(device)
    t0, done = time.perf_counter(), 0
    while done < max(2, steps) or (time.perf_counter() - t0 < min_seconds and done < 10 * steps):
        step()
        done += 1
        if cuda and done % 10 == 0:
            sync(device)
    sync(device)
    return done * batch_size / (time.perf_counter() - t0)


def bench_loader(cfg: BenchLoaderConfig) -> dict:
    """Time every renderer (or cfg.renderer) at cfg.size on training views, and the
    student's training step; measure how far each renderer's first batch is from the
    reference's (normalised units: mean and 99th percentile of |x - reference|); print a
    table; return (and write to cfg.json) the figures."""
    from vwwfast.data.render.base import dali_available
    from vwwfast.data.render.factory import make_renderer
    from vwwfast.data.shards import ShardSet
    from vwwfast.data.split import budget_bytes
    from vwwfast.data.views import view_params
    from vwwfast.viewspec import ViewSpec
    from vwwfast.devices import resolve_device
    from vwwfast.errors import UserError
    from vwwfast.progress import info, print_table

    if not cfg.shards:
        raise UserError("bench-loader needs --shards (a folder written by `vwwfast shard`)")
    if cfg.batch_size < 1 or cfg.batches < 1:
        raise UserError("--batch-size and --batches must be at least 1")
    device = resolve_device(cfg.device)
    split = ShardSet.open(cfg.shards).split("train")
    names = ["reference", "decoded", "dali"] if cfg.renderer == "all" else [cfg.renderer]
    if cfg.renderer == "all" and not dali_available():
        names.remove("dali")
        info("NVIDIA DALI is not installed: skipping the dali renderer")
    order = np.random.default_rng(0).permutation(len(split))
    params = view_params(ViewSpec(), 0, 0, np.arange(len(split)), split.heights, split.widths)
    # Accuracy beside speed: every renderer's first batch against the reference's (on the CPU).
    first = order[:cfg.batch_size]
    with make_renderer("reference", split, device="cpu") as ref_r:
        reference = ref_r.render(first, params[first], cfg.size)[0]

    renderers: dict[str, dict] = {}
    for name in names:
        info(f"timing renderer {name} ...")
        t0 = time.perf_counter()
        r = make_renderer(name, split, device=device, decoded_size=cfg.decoded_size,
                          budget_bytes=budget_bytes(cfg),
                          out_size=cfg.size)
        built = time.perf_counter() - t0
        try:
            entry = {"renderer": r.name,
                     "img_per_s": time_renderer(r, order, params, cfg.size, cfg.batch_size,
                                                cfg.batches)}
            entry["vs_reference"] = agreement(r.render(first, params[first], cfg.size)[0], reference)
            built_once = getattr(r, "first_pass", None)
            if built_once is not None:  # decoded: building the cache, reported apart
                entry["first_pass_img_per_s"] = built_once["img_per_s"]
                entry["first_pass_seconds"] = built_once["seconds"]
                entry["cache_where"] = built_once["where"]
                entry["decoder"] = built_once["decoder"]
            else:
                entry["setup_seconds"] = built
        finally:
            r.close()
        renderers[name] = entry

    info("timing the student's training step ...")
    student = student_step_rate(device, cfg.batch_size, cfg.batches)
    result = {"device": device_name(device), "size": cfg.size, "batch_size": cfg.batch_size,
              "batches": cfg.batches, "decoded_size": cfg.decoded_size, "images": len(split),
              "renderers": renderers, "student_step_img_per_s": student}

    rows = []
    for name, e in renderers.items():
        once = e.get("first_pass_img_per_s")
        agree = e["vs_reference"]
        rows.append((name, f"{e['img_per_s']:,.0f}",
                     "-" if once is None else f"{once:,.0f}",
                     f"{e['img_per_s'] / student:.1f}x",
                     f"{agree['mean']:.4f} / {agree['p99']:.3f}"))
    rows.append(("student step (bound)", f"{student:,.0f}", "-", "1.0x", "-"))
    print_table(f"loader speed at {cfg.size}px, batch {cfg.batch_size}, {result['device']}",
                ["renderer", "img/s", "first pass img/s", "vs student step",
                 "|x - reference| mean / p99"], rows)
    if cfg.json:
        Path(cfg.json).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.json).write_text(json.dumps(result, indent=1))
    return result
