"""The teacher cache: E deterministic views x N samples of view parameters and teacher logits
in a Zarr v3 store, chunked like the shards, resumable view by view.

Layout: train/params float32 [E, N, P], train/logits float16 [E, N, C], val/logits float16
[N_val, C]; attributes hold the fingerprint of everything that determines the numbers.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from vwwfast import __version__
from vwwfast import config as C
from vwwfast.errors import UserError
from vwwfast.data import SplitData, val_params
from vwwfast.models import autocast

FORMAT_VERSION = 1
INTERPOLATION = "bilinear"


def fingerprint(*, shards, ckpt_path, ckpt: dict, input_size: int, spec, seed: int) -> dict:
    from vwwfast.shards import file_sha256
    return {
        "shards_content_hash": shards.content_hash,
        "teacher_sha256": file_sha256(ckpt_path),
        "teacher_arch": ckpt["arch"],
        "teacher_input_size": input_size,
        "interpolation": INTERPOLATION,
        "normalization": ckpt["normalization"],
        "view_spec": spec.to_dict(),
        "seed": seed,
        "vwwfast_version": __version__,
    }


def describe_difference(want: dict, have: dict) -> str:
    names = {"shards_content_hash": "shards", "teacher_sha256": "teacher checkpoint",
             "teacher_arch": "teacher arch", "teacher_input_size": "teacher input size",
             "view_spec": "view spec", "seed": "view seed", "interpolation": "interpolation",
             "normalization": "normalisation", "vwwfast_version": "vwwfast version"}
    diff = [names.get(k, k) for k in want if want.get(k) != have.get(k)]
    return ", ".join(diff) or "nothing"


class TeacherCache:
    """A complete or partial store, opened for reading."""

    def __init__(self, path):
        import zarr
        self.path = Path(path)
        if not (self.path / "zarr.json").is_file():
            raise UserError(f"teacher cache not found: {self.path} (make it with `vwwfast cache-teacher`)")
        self.group = zarr.open_group(str(self.path), mode="r")
        self.attrs = dict(self.group.attrs)
        if self.attrs.get("format_version") != FORMAT_VERSION:
            raise UserError(f"{self.path} is not a vwwfast teacher cache of format {FORMAT_VERSION}")
        self.fingerprint = self.attrs["fingerprint"]
        self.num_views = self.attrs["num_views"]
        self.views_completed = self.attrs["views_completed"]

    @property
    def fingerprint_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.fingerprint, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def plain(self) -> bool:
        return self.attrs["view_spec_name"] == "plain"

    def check_complete(self) -> None:
        if self.views_completed < self.num_views or not self.attrs.get("val_done"):
            raise UserError(f"{self.path} is incomplete ({self.views_completed}/{self.num_views} views); "
                            f"run `vwwfast cache-teacher` again to finish it")

    def check_shards(self, shards) -> None:
        if self.fingerprint["shards_content_hash"] != shards.content_hash:
            raise UserError(f"{self.path} was made from other shards than {shards.root} "
                            f"(content hash differs); run `vwwfast cache-teacher` on these shards")

    def params(self) -> np.ndarray:
        return self.group["train/params"][:]

    def logits(self) -> np.ndarray:
        return self.group["train/logits"][:]

    def val_logits(self) -> np.ndarray:
        return self.group["val/logits"][:]


def default_out(shards_root: Path, ckpt: dict, input_size: int, spec_name: str, sha: str) -> Path:
    from vwwfast.runs import arch_short
    return shards_root / f"teacher-{arch_short(ckpt['arch'])}-{input_size}-{spec_name}-{sha[:8]}.zarr"


def _open_for_writing(out: Path, fp: dict, n_views: int, spec_name: str, n_train: int,
                      n_val: int, per_shard: int, n_params: int, columns):
    """Create the store, or reopen one with the same fingerprint (resume / extend)."""
    import zarr
    if (out / "zarr.json").is_file():
        g = zarr.open_group(str(out), mode="r+")
        have = dict(g.attrs).get("fingerprint")
        if have != fp:
            raise UserError(f"{out} holds a cache of a different {describe_difference(fp, have or {})}; "
                            f"pass another --out or delete it")
        old = g.attrs["num_views"]
        if n_views > old:
            for name in ("train/params", "train/logits"):
                a = g[name]
                a.resize((n_views,) + a.shape[1:])
            g.attrs["num_views"] = n_views
        return g
    if out.exists():
        raise UserError(f"{out} exists and is not a teacher cache; pass another --out")
    g = zarr.open_group(str(out), mode="w")
    chunk = max(1, min(per_shard, n_train))
    g.create_array("train/params", shape=(n_views, n_train, n_params), chunks=(1, chunk, n_params),
                   dtype="float32", fill_value=0)
    g.create_array("train/logits", shape=(n_views, n_train, 2), chunks=(1, chunk, 2),
                   dtype="float16", fill_value=0)
    g.create_array("val/logits", shape=(n_val, 2), chunks=(max(1, min(per_shard, n_val)), 2),
                   dtype="float16", fill_value=0)
    g.attrs.update({
        "format_version": FORMAT_VERSION, "fingerprint": fp, "num_views": n_views,
        "views_completed": 0, "val_done": False, "view_spec_name": spec_name,
        "param_columns": list(columns), "classes": ["no_person", "person"],
        "train_view_acc": [], "val_acc": None,
    })
    return g


@torch.no_grad()
def _teacher_logits(model, data, order, params, batch_size, on_chunk=None):
    """Logits for `order` (in order) as float16 numpy, plus how many were right."""
    device = next(model.parameters()).device
    out = np.zeros((len(order), 2), np.float16)
    correct, pos = 0, 0
    for x, y, idx in data.batches(order, params, batch_size):
        with autocast(device):
            z = model(x.contiguous(memory_format=torch.channels_last)).float()
        out[pos:pos + len(y)] = z.half().cpu().numpy()
        correct += int((z.argmax(1) == y).sum())
        pos += len(y)
        if on_chunk:
            on_chunk(len(y))
    return out, correct


def _shard_ranges(shards, split: str) -> list[tuple[int, int]]:
    return [(e["first"], e["count"]) for e in shards.manifest["splits"][split]["shards"]]


def _run_ranges(model, data, ranges, params, batch_size, desc):
    """Teacher logits over whole shards (this rank's), yielding each shard's result."""
    from vwwfast.progress import bar
    with bar(desc, sum(c for _, c in ranges)) as advance:
        for first, count in ranges:
            order = np.arange(first, first + count)
            logits, correct = _teacher_logits(model, data, order, params, batch_size, advance)
            yield first, count, logits, correct


def cache_teacher(cfg: C.CacheTeacherConfig) -> Path:
    """Each rank (one without torchrun) owns whole shards, i.e. whole chunks of the store;
    rank 0 creates the store and writes the attributes once every rank is done."""
    from vwwfast import distributed as D
    from vwwfast.models import model_from_checkpoint
    from vwwfast.render import resolve_device
    from vwwfast.progress import info, print_table
    from vwwfast.shards import ShardSet
    from vwwfast.views import PARAM_COLUMNS, view_params, view_spec

    C.require(cfg, "shards", "teacher")
    if cfg.views < 1:
        raise UserError("--views must be at least 1")
    device = D.device() if D.active() else resolve_device(cfg.device)
    shards = ShardSet.open(cfg.shards)
    model, ckpt = model_from_checkpoint(cfg.teacher, device=device)
    model = model.to(memory_format=torch.channels_last)
    size = cfg.input_size or ckpt["input_size"]
    spec = view_spec(cfg.view_spec)
    n_views = 1 if cfg.view_spec == "plain" else cfg.views
    fp = fingerprint(shards=shards, ckpt_path=cfg.teacher, ckpt=ckpt, input_size=size,
                     spec=spec, seed=cfg.seed)
    out = Path(cfg.out) if cfg.out else default_out(shards.root, ckpt, size, cfg.view_spec,
                                                    fp["teacher_sha256"])
    train = SplitData(shards, "train", cfg, device, size)
    val = SplitData(shards, "val", cfg, device, size)
    n = len(train)
    per_shard = shards.manifest["options"]["samples_per_shard"]
    args = (out, fp, n_views, cfg.view_spec, n, len(val), per_shard, len(PARAM_COLUMNS), PARAM_COLUMNS)
    g = _open_for_writing(*args) if D.is_main() else None
    D.barrier()
    if g is None:
        g = _open_for_writing(*args)
    mine = lambda split: _shard_ranges(shards, split)[D.rank()::D.world_size()]  # noqa: E731
    start = time.perf_counter()
    done = g.attrs["views_completed"]
    if done >= n_views and g.attrs["val_done"]:
        info(f"{out} already holds {done} views; nothing to do")
    accs = list(g.attrs["train_view_acc"])
    images = 0
    for view in range(done, n_views):
        params = view_params(spec, cfg.seed, view, np.arange(n), train.split.heights, train.split.widths)
        correct = 0
        for first, count, logits, c in _run_ranges(model, train, mine("train"), params,
                                                   cfg.batch_size, f"teacher view {view + 1}/{n_views}"):
            g["train/params"][view, first:first + count] = params[first:first + count]
            g["train/logits"][view, first:first + count] = logits
            correct += c
        correct = int(D.all_reduce_sum(torch.tensor(correct, device=device)).item())
        accs.append(correct / n)
        images += n
        if D.is_main():  # after every rank's data is written
            g.attrs.update({"views_completed": view + 1, "train_view_acc": accs})
        D.barrier()
    if not g.attrs["val_done"]:
        vparams = val_params(val.split, False)
        correct = 0
        for first, count, logits, c in _run_ranges(model, val, mine("val"), vparams,
                                                   cfg.batch_size, "teacher val"):
            g["val/logits"][first:first + count] = logits
            correct += c
        correct = int(D.all_reduce_sum(torch.tensor(correct, device=device)).item())
        if D.is_main():
            g.attrs.update({"val_done": True, "val_acc": correct / max(len(val), 1)})
        D.barrier()
    if not D.is_main():
        return out
    import zarr
    attrs = dict(zarr.open_group(str(out), mode="r").attrs)
    seconds = time.perf_counter() - start
    nbytes = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    tv = float(np.mean(accs)) if accs else float("nan")
    print_table(f"teacher cache {out}", ["views", "train samples", "teacher acc (train views)",
                                         "teacher acc (val)", "size", "per view x sample", "img/s"],
                [(n_views, n, f"{tv:.4f}", f"{attrs['val_acc']:.4f}", f"{nbytes / 2**20:.1f} MiB",
                  f"{nbytes / max(n_views * n, 1):.0f} B", f"{images / max(seconds, 1e-9):,.0f}")])
    return out
