"""`vwwfast cache-teacher`: run the teacher once over E deterministic views of every training
sample (and the val view) into a teacher cache (cache.py), resumable view by view.

Each rank (one without torchrun) owns whole shards, i.e. whole chunks of the store; rank 0
creates the store and writes the attributes once every rank is done."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from vwwfast import config as C
from vwwfast.data.constants import CLASSES
from vwwfast.data.split import SplitData, val_params
from vwwfast.errors import UserError
from vwwfast.teach.cache import (
    ARRAYS,
    FORMAT_VERSION,
    TeacherCache,
    _damaged,
    default_out,
    describe_difference,
    fingerprint,
)
from vwwfast.teach.teacher import ensemble_logits, who_teaches
from vwwfast.teach.verify import verify_store
from vwwfast.train.lifecycle import held_interrupt, interrupt_point

# ---------------------------------------------------------------------------------------
# Writing

def _create(out: Path, n_views: int, n_train: int, n_val: int, per_shard: int, attrs: dict) -> None:
    """A new, empty store with its attributes, built under a temporary name and moved into
    place whole, so a store under its final name always has its arrays and attributes."""
    import zarr
    from zarr.codecs import BytesCodec, Crc32cCodec, ZstdCodec
    tmp = out.parent / f".{out.name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    g = zarr.open_group(str(tmp), mode="w")
    codecs = dict(serializer=BytesCodec(), compressors=(ZstdCodec(level=3), Crc32cCodec()),
                  fill_value=np.nan)  # a chunk never written reads NaN, not a plausible 0
    chunk = max(1, min(per_shard, n_train))
    n_params, n_classes = len(attrs["param_columns"]), len(attrs["classes"])
    g.create_array("train/params", shape=(n_views, n_train, n_params), chunks=(1, chunk, n_params),
                   dtype="float32", **codecs)
    g.create_array("train/logits", shape=(n_views, n_train, n_classes), chunks=(1, chunk, n_classes),
                   dtype="float16", **codecs)
    g.create_array("val/logits", shape=(n_val, n_classes),
                   chunks=(max(1, min(per_shard, n_val)), n_classes), dtype="float16", **codecs)
    g.attrs.update(attrs)
    os.replace(tmp, out)


def _prepare(out: Path, fp: dict, n_views: int, n_train: int, n_val: int, per_shard: int,
             attrs: dict) -> int:
    """Rank 0: create the store, or check and reopen one with the same fingerprint (resume /
    extend). Returns the number of views the store will hold."""
    import zarr

    from vwwfast.progress import info
    if not out.exists():
        _create(out, n_views, n_train, n_val, per_shard, attrs)
        return n_views
    if not (out / "zarr.json").is_file() and not any(out.iterdir()):
        out.rmdir()
        _create(out, n_views, n_train, n_val, per_shard, attrs)
        return n_views
    store = TeacherCache(out)  # refuses anything damaged
    if store.fingerprint != fp:
        raise UserError(f"{out} holds a cache of a different {describe_difference(fp, store.fingerprint)}; "
                        f"pass another --out or delete it")
    if store.num_train != n_train:
        raise _damaged(out, f"it holds {store.num_train} train samples, the shards {n_train}")
    g = zarr.open_group(str(out), mode="r+")
    # the same teacher (sha256) perhaps at a new path, the shards perhaps moved: keep them findable
    g.attrs.update({"teacher": attrs["teacher"], "teachers": attrs["teachers"], "shards": attrs["shards"]})
    if n_views < store.num_views:
        if not store.complete():
            raise UserError(f"{out} {store.state()}: run with --views {store.num_views} to finish "
                            f"it (`{store.finish_command()}`), or delete it")
        info(f"{out} already holds all {store.num_views} views (more than --views {n_views}) and the "
             f"val logits; nothing to do")
        return store.num_views
    if n_views > store.num_views:
        for name in ("train/params", "train/logits"):
            a = g[name]
            a.resize((n_views,) + a.shape[1:])
        g.attrs["num_views"] = n_views
    elif store.complete():
        info(f"{out} already holds all {n_views} views and the val logits; nothing to do")
    return n_views


def _shard_ranges(shards, split: str) -> list[tuple[int, int]]:
    return [(e["first"], e["count"]) for e in shards.manifest["splits"][split]["shards"]]


def _run_ranges(groups, ranges, params, batch_size, desc):
    """Teacher (or ensemble) logits over whole shards (this rank's), yielding each shard's
    result. groups: [(data, [models])], one per input size."""
    from vwwfast.progress import bar
    with bar(desc, sum(c for _, c in ranges) * len(groups)) as advance:
        for first, count in ranges:
            order = np.arange(first, first + count)
            logits, correct = ensemble_logits(groups, order, params, batch_size, advance)
            yield first, count, logits, correct


def load_members(paths: list, *, self_distill: bool, device):
    """The teachers of a store: every checkpoint read (a missing one refused), none a
    student's unless self_distill, each once, one set of classes and normalisation among
    them. Returns [(path, model, ckpt, sha256)] sorted by sha256 (the fingerprint's order)."""
    from vwwfast.files import file_sha256
    from vwwfast.models import (
        check_ensemble,
        check_teacher,
        load_checkpoint,
        model_from_checkpoint,
    )
    ckpts = [load_checkpoint(p) for p in paths]  # all read before anything is written
    for p, ckpt in zip(paths, ckpts):
        check_teacher(p, ckpt, self_distill=self_distill)
    shas = [file_sha256(p) for p in paths]
    check_ensemble(paths, ckpts, shas)
    members = sorted(zip(paths, ckpts, shas), key=lambda m: m[2])
    return [(p, model_from_checkpoint(p, device=device)[0].to(memory_format=torch.channels_last), ckpt, sha)
            for p, ckpt, sha in members]


def _groups(members, size_of, make):
    """[(data, [models])]: one rendering per input size, in the members' order."""
    by_size: dict = {}
    for path, model, ckpt, sha in members:
        by_size.setdefault(size_of(ckpt), []).append(model)
    return [(make(size), models) for size, models in by_size.items()]


def cache_teacher(cfg: C.CacheTeacherConfig):
    """`vwwfast cache-teacher`: make (resume, extend) a store, or with --verify check one.

    Each rank (one without torchrun) owns whole shards, i.e. whole chunks of the store;
    rank 0 creates the store and writes the attributes once every rank is done. On Ctrl-C
    the store keeps every view it completed, and the same command continues it."""
    if cfg.verify:
        return verify_store(cfg)
    made: dict = {}
    try:
        return _cache_teacher(cfg, made)
    except KeyboardInterrupt:
        if made.get("out") is not None:
            _say_interrupted(made["out"])
        raise


def _say_interrupted(out: Path) -> None:
    from vwwfast import distributed as D
    from vwwfast.progress import info
    if not D.is_main():
        return
    try:
        state = TeacherCache(out).state()
    except UserError:
        state = "is incomplete"
    info(f"interrupted; {out} {state}. Continue with the same command: it goes on from the "
         f"views the store holds")


def _cache_teacher(cfg: C.CacheTeacherConfig, made: dict):
    """cache_teacher's work; `made["out"]` names the store once it exists."""
    from vwwfast import distributed as D
    from vwwfast.data.shards import ShardSet, view_defaults, with_shard_views
    from vwwfast.data.views import PARAM_COLUMNS, view_params, view_spec
    from vwwfast.devices import resolve_device
    from vwwfast.models import describe_teacher
    from vwwfast.progress import info, print_table, warn

    if C.is_given(cfg, "samples"):
        raise UserError("--samples is for --verify STORE (views recomputed); drop it")
    C.require(cfg, "shards", "teacher")
    if len(cfg.teacher) > 1 and cfg.input_size is not None:
        raise UserError(f"--input-size {cfg.input_size} with an ensemble: each member runs at the size "
                        f"it was trained at; drop --input-size")
    device = D.device() if D.active() else resolve_device(cfg.device)
    shards = ShardSet.open(cfg.shards)
    members = load_members(cfg.teacher, self_distill=cfg.self_distill, device=device)
    size_of = lambda ckpt: cfg.input_size or ckpt["input_size"]  # noqa: E731
    if len(members) == 1:
        path, _, ckpt, _ = members[0]
        if size_of(ckpt) != ckpt["input_size"] and D.is_main():
            warn(f"{path} was trained at {ckpt['input_size']} px and is cached at {size_of(ckpt)} px; "
                 f"a teacher at a size it was not trained at is usually weaker (the store records both)")
    spec = view_spec(cfg.view_spec, with_shard_views(shards.manifest, cfg.view))
    if spec.is_plain and C.is_given(cfg, "views") and cfg.views != 1:
        raise UserError(f"a plain view spec has one view (the whole image): drop --views {cfg.views}")
    n_views = 1 if spec.is_plain else cfg.views
    described = [{"sha256": sha, "arch": ckpt["arch"], "input_size": size_of(ckpt)}
                 for _, _, ckpt, sha in members]
    fp = fingerprint(shards=shards, members=described, normalization=members[0][2]["normalization"],
                     spec=spec, seed=cfg.seed)
    whos = [describe_teacher(path, ckpt, sha) for path, _, ckpt, sha in members]
    tag = cfg.view_spec if not spec.non_default(cfg.view_spec) else \
        f"{cfg.view_spec}-{hashlib.sha256(json.dumps(spec.to_dict(), sort_keys=True).encode()).hexdigest()[:6]}"
    out = Path(cfg.out) if cfg.out else default_out(shards.root, described, tag)
    n, n_val = len(shards.split("train")), len(shards.split("val"))
    per_shard = shards.manifest["options"]["samples_per_shard"]
    attrs = {
        "format_version": FORMAT_VERSION, "fingerprint": fp, "num_views": n_views,
        "views_completed": 0, "val_done": False, "view_spec_name": cfg.view_spec,
        "param_columns": list(PARAM_COLUMNS), "classes": list(members[0][2].get("classes") or CLASSES),
        "train_view_acc": [], "val_acc": None, "teacher": whos[0] if len(whos) == 1 else None,
        "teachers": whos, "shards": str(Path(cfg.shards).resolve()),
        "precision": "bf16" if device.type == "cuda" else "fp32",
    }
    if D.is_main():
        if len(whos) == 1:
            who = whos[0]
            run = f" from {who['role'] or 'the'} run {who['run']}" if who.get("run") else ""
            acc = f" (val acc {who['run_val_acc']:.4f})" if who.get("run_val_acc") is not None else ""
            info(f"teacher: {who['checkpoint']}: {who['arch']} trained at {who['input_size']} px{run}"
                 f"{acc}; cached at {described[0]['input_size']} px")
        else:
            info(f"teachers: {who_teaches({'members': whos})}")
        n_views = _prepare(out, fp, n_views, n, n_val, per_shard, attrs)
    made["out"] = out
    D.barrier()
    trains = _groups(members, size_of, lambda size: SplitData(shards, "train", cfg, device, size))
    vals = _groups(members, size_of, lambda size: SplitData(shards, "val", cfg, device, size))
    train, val = trains[0][0], vals[0][0]
    import zarr
    g = zarr.open_group(str(out), mode="r+")
    rendered = {"train": train.renderer.name, "val": val.renderer.name, "decoded_size": cfg.decoded_size}
    if len(trains) > 1:  # each input size may render otherwise ('auto'): what --verify uses
        rendered["sizes"] = {str(d.size): {"train": d.renderer.name, "val": v.renderer.name}
                             for (d, _), (v, _) in zip(trains, vals)}
    if D.is_main():  # what --verify renders with; a resume on another renderer is said
        old = g.attrs.get("renderer")
        if old is None:
            g.attrs["renderer"] = rendered
        elif (old.get("train"), old.get("val")) != (rendered["train"], rendered["val"]):
            warn(f"{out} was started with the {old.get('train')} renderer, this run renders with "
                 f"{rendered['train']}: its logits agree only as closely as the renderers do")
    n_views = g.attrs["num_views"]
    arr = {name: g[name].with_config({"write_empty_chunks": True}) for name in ARRAYS}
    mine = lambda split: _shard_ranges(shards, split)[D.rank()::D.world_size()]  # noqa: E731
    start = time.perf_counter()
    done = g.attrs["views_completed"]
    accs = list(g.attrs["train_view_acc"])
    images = 0
    for view in range(done, n_views):
        params = view_params(spec, cfg.seed, view, np.arange(n), train.split.heights, train.split.widths)
        correct = 0
        for first, count, logits, c in _run_ranges(trains, mine("train"), params,
                                                   cfg.batch_size, f"teacher view {view + 1}/{n_views}"):
            arr["train/params"][view, first:first + count] = params[first:first + count]
            arr["train/logits"][view, first:first + count] = logits.astype(np.float16)
            correct += c
        correct = int(D.all_reduce_sum(torch.tensor(correct, device=device)).item())
        accs.append(correct / n)
        images += n
        if D.is_main():  # after the all-reduce: every rank's chunks are written
            with held_interrupt():  # the attributes written whole
                g.attrs.update({"views_completed": view + 1, "train_view_acc": accs})
            interrupt_point("view-done")
        D.barrier()
    if not g.attrs["val_done"]:
        vparams = val_params(val.split, view_defaults(shards.manifest)["val_center_crop"])
        correct = 0
        for first, count, logits, c in _run_ranges(vals, mine("val"), vparams,
                                                   cfg.batch_size, "teacher val"):
            arr["val/logits"][first:first + count] = logits.astype(np.float16)
            correct += c
        correct = int(D.all_reduce_sum(torch.tensor(correct, device=device)).item())
        if D.is_main():
            with held_interrupt():
                g.attrs.update({"val_done": True, "val_acc": correct / max(len(val), 1)})
        D.barrier()
    for data, _ in trains + vals:
        data.close()
    if not D.is_main():
        return out
    store = TeacherCache(out)
    seconds = time.perf_counter() - start
    nbytes = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    tv = float(np.mean(accs)) if accs else float("nan")
    print_table(f"teacher cache {out}", ["views", "train samples", "teacher acc (train views)",
                                         "teacher acc (val)", "size", "per view x sample", "img/s"],
                [(n_views, n, f"{tv:.4f}", f"{store.attrs['val_acc']:.4f}", f"{nbytes / 2**20:.1f} MiB",
                  f"{nbytes / max(n_views * n, 1):.0f} B", f"{images / max(seconds, 1e-9):,.0f}")])
    return out
