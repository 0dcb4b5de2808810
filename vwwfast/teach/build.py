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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, cast

import numpy as np
import torch

from vwwfast import config, distributed
from vwwfast.constants import CLASSES
from vwwfast.data.shards import ShardSet, view_defaults, with_shard_views
from vwwfast.data.split import SplitData, val_params
from vwwfast.data.views import PARAM_COLUMNS, view_params
from vwwfast.devices import resolve_device
from vwwfast.errors import UserError
from vwwfast.interrupts import held_interrupt, interrupt_point
from vwwfast.models import describe_teacher
from vwwfast.progress import info, print_table, warn
from vwwfast.teach.cache import (
    ARRAYS,
    FORMAT_VERSION,
    TeacherCache,
    _damaged,
    default_out,
    describe_difference,
    fingerprint,
)
from vwwfast.teach.description import TeacherDescription, TeacherModel, who_teaches
from vwwfast.teach.inference import ensemble_logits
from vwwfast.teach.verify import verify_store
from vwwfast.viewspec import ViewSpec, view_spec

# (path, model, checkpoint, sha256) of each member, as load_members returns them
Member = tuple[str, torch.nn.Module, dict, str]
# [(data, [models])]: the members that share an input size share its rendering
Groups = list[tuple[SplitData, list[torch.nn.Module]]]

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
    codecs: dict[str, Any] = dict(serializer=BytesCodec(), compressors=(ZstdCodec(level=3), Crc32cCodec()),
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
            a = cast(zarr.Array, g[name])
            a.resize((n_views,) + a.shape[1:])
        g.attrs["num_views"] = n_views
    elif store.complete():
        info(f"{out} already holds all {n_views} views and the val logits; nothing to do")
    return n_views


def _writable(g) -> dict:
    """The store's arrays, each chunk written even when it holds only the fill value."""
    import zarr
    every_chunk: Any = {"write_empty_chunks": True}
    return {name: cast(zarr.Array, g[name]).with_config(every_chunk) for name in ARRAYS}


# ---------------------------------------------------------------------------------------
# Running the teachers

def _shard_ranges(shards: ShardSet, split: str) -> list[tuple[int, int]]:
    return [(e["first"], e["count"]) for e in shards.manifest["splits"][split]["shards"]]


def _run_ranges(groups: Groups, ranges: list[tuple[int, int]], params: np.ndarray, batch_size: int,
                desc: str) -> Iterator[tuple[int, int, np.ndarray, int]]:
    """Teacher (or ensemble) logits over whole shards (this rank's), yielding each shard's
    result. groups: [(data, [models])], one per input size."""
    from vwwfast.progress import bar
    with bar(desc, sum(c for _, c in ranges) * len(groups)) as advance:
        for first, count in ranges:
            order = np.arange(first, first + count)
            logits, correct = ensemble_logits(groups, order, params, batch_size, advance)
            yield first, count, logits, correct


def load_members(paths: list[str], *, self_distill: bool, device: torch.device) -> list[Member]:
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


def _groups(members: list[Member], size_of: Callable[[dict], int],
            make: Callable[[int], SplitData]) -> Groups:
    """[(data, [models])]: one rendering per input size, in the members' order."""
    by_size: dict[int, list[torch.nn.Module]] = {}
    for path, model, ckpt, sha in members:
        by_size.setdefault(size_of(ckpt), []).append(model)
    return [(make(size), models) for size, models in by_size.items()]


# ---------------------------------------------------------------------------------------
# The command and its steps

def cache_teacher(cfg: config.CacheTeacherConfig) -> Path | dict:
    """`vwwfast cache-teacher`: make (resume, extend) a store, or with --verify check one.

        refuse what cannot be cached, load the members       _plan
        rank 0: say who teaches, create or reopen the store  _open_store
        render train and val at each member's input size     _renderings, _record_renderer
        each view not yet written: run, write, record it     _cache_views
        the val view, unless done                            _cache_val
        rank 0: the table                                    _report

    Each rank (one without torchrun) owns whole shards, i.e. whole chunks of the store;
    rank 0 creates the store and writes the attributes once every rank is done. On Ctrl-C
    the store keeps every view it completed, and the same command continues it."""
    if cfg.verify:
        return verify_store(cfg)
    job = _plan(cfg)
    try:
        return _build(job)
    except KeyboardInterrupt:
        if job.out.exists():
            _say_interrupted(job.out)
        raise


def _say_interrupted(out: Path) -> None:
    if not distributed.is_main():
        return
    try:
        state = TeacherCache(out).state()
    except UserError:
        state = "is incomplete"
    info(f"interrupted; {out} {state}. Continue with the same command: it goes on from the "
         f"views the store holds")


def _build(job: CacheJob) -> Path:
    """The store made, extended or completed: cache_teacher's steps after the plan."""
    _open_store(job)
    import zarr
    trains, vals = _renderings(job)
    g = zarr.open_group(str(job.out), mode="r+")
    _record_renderer(job, g, trains, vals)
    job.n_views = cast(int, g.attrs["num_views"])
    arr = _writable(g)
    start = time.perf_counter()
    accs, images = _cache_views(job, g, arr, trains)
    _cache_val(job, g, arr, vals)
    for data, _ in trains + vals:
        data.close()
    if distributed.is_main():
        _report(job, accs, images, time.perf_counter() - start)
    return job.out


@dataclass
class CacheJob:
    """What `cache-teacher` carries from step to step: the command, what it caches and where."""

    cfg: config.CacheTeacherConfig
    device: torch.device
    shards: ShardSet
    members: list[Member]  # in the fingerprint's order (by sha256)
    spec: ViewSpec
    n_views: int  # the views asked for; once the store is open, the views it holds
    described: list[dict]  # [{sha256, arch, input_size}]: each member as cached
    whos: list[dict]  # models.describe_teacher of each member
    fp: dict  # the store's fingerprint
    out: Path

    def size_of(self, ckpt: dict) -> int:
        return _size_of(self.cfg, ckpt)

    @property
    def n_train(self) -> int:
        return len(self.shards.split("train"))

    def mine(self, split: str) -> list[tuple[int, int]]:
        """This rank's shards of `split`: (first sample, count) each."""
        return _shard_ranges(self.shards, split)[distributed.rank()::distributed.world_size()]


def _refuse_flags(cfg: config.CacheTeacherConfig) -> None:
    """The settings a store cannot be made with, refused before anything is read."""
    if config.is_given(cfg, "samples"):
        raise UserError("--samples is for --verify STORE (views recomputed); drop it")
    config.require(cfg, "shards", "teacher")
    if len(cfg.teacher or []) > 1 and cfg.input_size is not None:
        raise UserError(f"--input-size {cfg.input_size} with an ensemble: each member runs at the size "
                        f"it was trained at; drop --input-size")


def _plan(cfg: config.CacheTeacherConfig) -> CacheJob:
    """Every setting checked and every member loaded: what to cache and where."""
    _refuse_flags(cfg)
    device = distributed.device() if distributed.active() else resolve_device(cfg.device)
    shards = ShardSet.open(cfg.shards)
    members = load_members(cfg.teacher or [], self_distill=cfg.self_distill, device=device)
    _warn_size(cfg, members)
    spec = view_spec(cfg.view_spec, with_shard_views(shards.manifest, cfg.view))
    if spec.is_plain and config.is_given(cfg, "views") and cfg.views != 1:
        raise UserError(f"a plain view spec has one view (the whole image): drop --views {cfg.views}")
    described = [{"sha256": sha, "arch": ckpt["arch"], "input_size": _size_of(cfg, ckpt)}
                 for _, _, ckpt, sha in members]
    fp = fingerprint(shards=shards, members=described, normalization=members[0][2]["normalization"],
                     spec=spec, seed=cfg.seed)
    whos = [describe_teacher(path, ckpt, sha) for path, _, ckpt, sha in members]
    tag = cfg.view_spec if not spec.non_default(cfg.view_spec) else \
        f"{cfg.view_spec}-{hashlib.sha256(json.dumps(spec.to_dict(), sort_keys=True).encode()).hexdigest()[:6]}"
    out = Path(cfg.out) if cfg.out else default_out(shards.root, described, tag)
    return CacheJob(cfg, device, shards, members, spec, 1 if spec.is_plain else cfg.views, described,
                    whos, fp, out)


def _size_of(cfg: config.CacheTeacherConfig, ckpt: dict) -> int:
    """The input size a member is cached at: --input-size, else the size it was trained at."""
    return cfg.input_size or ckpt["input_size"]


def _warn_size(cfg: config.CacheTeacherConfig, members: list[Member]) -> None:
    """One teacher cached at a size it was not trained at: said (an ensemble refuses it)."""
    if len(members) != 1:
        return
    path, _, ckpt, _ = members[0]
    if _size_of(cfg, ckpt) != ckpt["input_size"] and distributed.is_main():
        warn(f"{path} was trained at {ckpt['input_size']} px and is cached at {_size_of(cfg, ckpt)} px; "
             f"a teacher at a size it was not trained at is usually weaker (the store records both)")


def _new_attrs(job: CacheJob) -> dict:
    """The attributes of a new store (an existing one keeps its own but for where its
    teachers and shards are)."""
    whos = job.whos
    return {
        "format_version": FORMAT_VERSION, "fingerprint": job.fp, "num_views": job.n_views,
        "views_completed": 0, "val_done": False, "view_spec_name": job.cfg.view_spec,
        "param_columns": list(PARAM_COLUMNS), "classes": list(job.members[0][2].get("classes") or CLASSES),
        "train_view_acc": [], "val_acc": None, "teacher": whos[0] if len(whos) == 1 else None,
        "teachers": whos, "shards": str(Path(job.cfg.shards).resolve()),
        "precision": "bf16" if job.device.type == "cuda" else "fp32",
    }


def _say_who(job: CacheJob) -> None:
    """The teacher (or the ensemble) the store is made with, in one line."""
    if len(job.whos) == 1:
        who = job.whos[0]
        run = f" from {who['role'] or 'the'} run {who['run']}" if who.get("run") else ""
        acc = f" (val acc {who['run_val_acc']:.4f})" if who.get("run_val_acc") is not None else ""
        info(f"teacher: {who['checkpoint']}: {who['arch']} trained at {who['input_size']} px{run}"
             f"{acc}; cached at {job.described[0]['input_size']} px")
    else:
        members = [TeacherModel.from_dict(w) for w in job.whos]
        info(f"teachers: {who_teaches(TeacherDescription(mode='cached', members=members))}")


def _open_store(job: CacheJob) -> None:
    """Rank 0 says who teaches and creates (or checks and reopens) the store; every rank
    waits for it."""
    if distributed.is_main():
        attrs = _new_attrs(job)
        _say_who(job)
        n_val = len(job.shards.split("val"))
        per_shard = job.shards.manifest["options"]["samples_per_shard"]
        job.n_views = _prepare(job.out, job.fp, job.n_views, job.n_train, n_val, per_shard, attrs)
    distributed.barrier()


def _renderings(job: CacheJob) -> tuple[Groups, Groups]:
    """[(data, [models])] for train and for val: one rendering per input size."""
    cfg, shards, device = job.cfg, job.shards, job.device
    trains = _groups(job.members, job.size_of, lambda size: SplitData(shards, "train", cfg, device, size))
    vals = _groups(job.members, job.size_of, lambda size: SplitData(shards, "val", cfg, device, size))
    return trains, vals


def _record_renderer(job: CacheJob, g, trains: Groups, vals: Groups) -> None:
    """Rank 0 records the renderers (what --verify renders with); a resume on another
    renderer is said."""
    train, val = trains[0][0], vals[0][0]
    rendered = {"train": train.renderer.name, "val": val.renderer.name, "decoded_size": job.cfg.decoded_size}
    if len(trains) > 1:  # each input size may render otherwise ('auto'): what --verify uses
        rendered["sizes"] = {str(d.size): {"train": d.renderer.name, "val": v.renderer.name}
                             for (d, _), (v, _) in zip(trains, vals)}
    if not distributed.is_main():
        return
    old = g.attrs.get("renderer")
    if old is None:
        g.attrs["renderer"] = rendered
    elif (old.get("train"), old.get("val")) != (rendered["train"], rendered["val"]):
        warn(f"{job.out} was started with the {old.get('train')} renderer, this run renders with "
             f"{rendered['train']}: its logits agree only as closely as the renderers do")


def _all_correct(job: CacheJob, correct: int) -> int:
    """Right answers summed over the ranks."""
    return int(distributed.all_reduce_sum(torch.tensor(correct, device=job.device)).item())


def _cache_views(job: CacheJob, g, arr: dict, trains: Groups) -> tuple[list[float], int]:
    """Each view the store does not hold yet, written chunk by chunk; the store records it
    as done once every rank has written its chunks (what a resume starts after). Returns
    the teacher's accuracy on every view and the images run."""
    n, train = job.n_train, trains[0][0]
    accs = list(g.attrs["train_view_acc"])
    images = 0
    for view in range(g.attrs["views_completed"], job.n_views):
        params = view_params(job.spec, job.cfg.seed, view, np.arange(n), train.split.heights,
                             train.split.widths)
        correct = 0
        for first, count, logits, c in _run_ranges(trains, job.mine("train"), params, job.cfg.batch_size,
                                                   f"teacher view {view + 1}/{job.n_views}"):
            arr["train/params"][view, first:first + count] = params[first:first + count]
            arr["train/logits"][view, first:first + count] = logits.astype(np.float16)
            correct += c
        accs.append(_all_correct(job, correct) / n)
        images += n
        if distributed.is_main():  # after the all-reduce: every rank's chunks are written
            with held_interrupt():  # the attributes written whole
                g.attrs.update({"views_completed": view + 1, "train_view_acc": accs})
            interrupt_point("view-done")
        distributed.barrier()
    return accs, images


def _cache_val(job: CacheJob, g, arr: dict, vals: Groups) -> None:
    """The val view (centre crop or whole image, as the shards say), unless done."""
    if g.attrs["val_done"]:
        return
    val = vals[0][0]
    vparams = val_params(val.split, view_defaults(job.shards.manifest)["val_center_crop"])
    correct = 0
    for first, count, logits, c in _run_ranges(vals, job.mine("val"), vparams, job.cfg.batch_size,
                                               "teacher val"):
        arr["val/logits"][first:first + count] = logits.astype(np.float16)
        correct += c
    correct = _all_correct(job, correct)
    if distributed.is_main():
        with held_interrupt():
            g.attrs.update({"val_done": True, "val_acc": correct / max(len(val), 1)})
    distributed.barrier()


def _report(job: CacheJob, accs: list[float], images: int, seconds: float) -> None:
    """The store in one table: views, accuracy, size, speed."""
    out, n, n_views = job.out, job.n_train, job.n_views
    store = TeacherCache(out)
    nbytes = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    tv = float(np.mean(accs)) if accs else float("nan")
    print_table(f"teacher cache {out}", ["views", "train samples", "teacher acc (train views)",
                                         "teacher acc (val)", "size", "per view x sample", "img/s"],
                [(n_views, n, f"{tv:.4f}", f"{store.attrs['val_acc']:.4f}", f"{nbytes / 2**20:.1f} MiB",
                  f"{nbytes / max(n_views * n, 1):.0f} B", f"{images / max(seconds, 1e-9):,.0f}")])
