"""The teacher cache: E deterministic views x N samples of view parameters and teacher logits
in a Zarr v3 store, chunked like the shards, resumable view by view.

Layout: train/params float32 [E, N, P], train/logits float16 [E, N, C], val/logits float16
[N_val, C]; attributes hold the fingerprint of everything that determines the numbers, the
teacher that made them (checkpoint path, arch, run) and how far the store got.

Trust: every chunk ends with a crc32c checksum (zarr's Crc32cCodec, after zstd), so a
flipped byte or a truncated chunk is an error when read, never a wrong number; the chunks a
reader needs are listed once when the store is opened, so a missing chunk is an error too
(zarr would hand out the fill value, NaN here). `cache-teacher --verify` reads every chunk,
regenerates the view parameters and recomputes a sample of the logits with the teacher.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shlex
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from vwwfast import __version__
from vwwfast import config as C
from vwwfast.errors import UserError
from vwwfast.data import SplitData, val_params
from vwwfast.models import autocast
from vwwfast.render import RENDERING

# 1: no chunk checksums (such a store cannot be verified; it is refused, to be made again).
# 2: crc32c per chunk, NaN fill, the teacher / shards / renderer in the attributes.
FORMAT_VERSION = 2
INTERPOLATION = "bilinear"
ARRAYS = ("train/params", "train/logits", "val/logits")
_ATTRS = ("fingerprint", "num_views", "views_completed", "val_done", "view_spec_name",
          "param_columns", "classes", "train_view_acc", "val_acc")


def fingerprint(*, shards, ckpt_path, ckpt: dict, input_size: int, spec, seed: int) -> dict:
    from vwwfast.shards import file_sha256
    return {
        "shards_content_hash": shards.content_hash,
        "teacher_sha256": file_sha256(ckpt_path),
        "teacher_arch": ckpt["arch"],
        "teacher_input_size": input_size,
        "interpolation": INTERPOLATION,
        "rendering": RENDERING,  # a change of the renderers' maths changes the logits
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


def _damaged(path, what: str) -> UserError:
    return UserError(f"teacher cache {path} is damaged: {what}; delete it and run `vwwfast "
                     f"cache-teacher` again")


class TeacherCache:
    """A complete or partial store, opened for reading. Opening checks the format, the
    attributes, each array's metadata and checksum codec, and that every chunk of the
    finished views (and of val, once done) exists; reads check every chunk's checksum.
    Anything damaged is a UserError naming the store and what to do."""

    def __init__(self, path):
        import zarr
        self.path = Path(path)
        if not (self.path / "zarr.json").is_file():
            if self.path.is_dir() and any(self.path.iterdir()):
                raise UserError(f"{self.path} has no zarr.json: not a teacher cache, or a damaged one; "
                                f"make it with `vwwfast cache-teacher` (delete it first if it is damaged)")
            raise UserError(f"teacher cache not found: {self.path} (make it with `vwwfast cache-teacher`)")
        try:
            self.group = zarr.open_group(str(self.path), mode="r")
            self.attrs = dict(self.group.attrs)
        except Exception as e:  # a torn zarr.json: JSONDecodeError, ValueError, ...
            raise _damaged(self.path, f"its zarr.json is unreadable ({type(e).__name__})") from None
        version = self.attrs.get("format_version")
        if version is None:
            raise UserError(f"{self.path} is a Zarr store but not a vwwfast teacher cache")
        if version != FORMAT_VERSION:
            why = ("made by an older vwwfast, without chunk checksums, so it cannot be verified"
                   if isinstance(version, int) and version < FORMAT_VERSION else "made by a newer vwwfast")
            raise UserError(f"{self.path} is a teacher cache of format {version}, not {FORMAT_VERSION} "
                            f"({why}); delete it and run `vwwfast cache-teacher` again")
        missing = [k for k in _ATTRS if k not in self.attrs]
        if missing or not isinstance(self.attrs["fingerprint"], dict):
            raise _damaged(self.path, f"its attributes lack {', '.join(missing) or 'fingerprint'}")
        self.fingerprint = self.attrs["fingerprint"]
        self.num_views = int(self.attrs["num_views"])
        self.views_completed = int(self.attrs["views_completed"])
        self._arrays = {name: self._open_array(name) for name in ARRAYS}
        self._check_layout()
        self._check_chunks()

    # -- opening ------------------------------------------------------------------------

    def _open_array(self, name: str):
        import zarr
        try:
            arr = self.group[name]
        except Exception as e:  # KeyError (metadata deleted), JSONDecodeError (torn), ...
            raise _damaged(self.path, f"array {name} is missing or its zarr.json is unreadable "
                                      f"({type(e).__name__})") from None
        if not isinstance(arr, zarr.Array):
            raise _damaged(self.path, f"{name} is not an array")
        return arr

    def _check_layout(self) -> None:
        from zarr.codecs import Crc32cCodec
        n = self._arrays["train/params"].shape[1] if self._arrays["train/params"].ndim == 3 else -1
        n_val = self._arrays["val/logits"].shape[0]
        c, p = len(self.attrs["classes"]), len(self.attrs["param_columns"])
        want = {"train/params": ((self.num_views, n, p), "float32"),
                "train/logits": ((self.num_views, n, c), "float16"),
                "val/logits": ((n_val, c), "float16")}
        for name, (shape, dtype) in want.items():
            arr = self._arrays[name]
            if tuple(arr.shape) != shape or str(arr.dtype) != dtype:
                raise _damaged(self.path, f"{name} is {arr.dtype} {list(arr.shape)}, its attributes "
                                          f"say {dtype} {list(shape)}")
            if not any(isinstance(codec, Crc32cCodec) for codec in arr.metadata.codecs):
                raise _damaged(self.path, f"{name} has no chunk checksums")
        if not 0 <= self.views_completed <= self.num_views:
            raise _damaged(self.path, f"{self.views_completed} of {self.num_views} views completed")

    def _check_chunks(self) -> None:
        """Every chunk of the finished views (and val once done) must exist: zarr would hand
        out the fill value for a missing one. One listing of the store, no chunk is read."""
        have = {os.path.relpath(os.path.join(d, f), self.path).replace(os.sep, "/")
                for d, _, files in os.walk(self.path) for f in files}
        for name, arr in self._arrays.items():
            grid = arr.cdata_shape
            if name.startswith("train/"):
                grid = (min(self.views_completed, grid[0]),) + tuple(grid[1:])
            elif not self.attrs["val_done"]:
                continue
            lost = [key for key in (f"{name}/{arr.metadata.encode_chunk_key(c)}" for c in np.ndindex(*grid))
                    if key not in have]
            if lost:
                raise _damaged(self.path, f"{len(lost)} chunk(s) of {name} missing (first: {lost[0]})")

    # -- what the store holds ---------------------------------------------------------------

    @property
    def fingerprint_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.fingerprint, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def spec(self):
        """The ViewSpec the store was made with."""
        from vwwfast.views import ViewSpec
        return ViewSpec.from_dict(self.fingerprint["view_spec"], str(self.path))

    @property
    def seed(self) -> int:
        return self.fingerprint["seed"]

    @property
    def plain(self) -> bool:
        """Every view is the un-augmented whole image (one view; the student draws its own)."""
        return self.attrs["view_spec_name"] == "plain" or self.spec.is_plain

    @property
    def teacher(self) -> dict | None:
        """`models.describe_teacher` of the checkpoint that made the store: checkpoint path,
        arch, input_size (the size it was trained at), role, run, run_val_acc, epoch,
        pretrained, sha256."""
        return self.attrs.get("teacher")

    @property
    def num_train(self) -> int:
        return self._arrays["train/logits"].shape[1]

    def finish_command(self, views: int | None = None) -> str:
        """The cache-teacher command that resumes (or extends) this store."""
        who, fp = self.teacher or {}, self.fingerprint
        base = self.attrs["view_spec_name"]
        args = ["vwwfast", "cache-teacher", "--shards", self.attrs.get("shards") or "SHARDS",
                "--teacher", who.get("checkpoint") or "TEACHER.pt"]
        if base != "default":
            args += ["--view-spec", base]
        for k, v in self.spec.non_default(base).items():
            args += ["--view", f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}"]
        if self.seed:
            args += ["--seed", str(self.seed)]
        if fp["teacher_input_size"] != who.get("input_size"):
            args += ["--input-size", str(fp["teacher_input_size"])]
        if who.get("role") == "student":
            args += ["--self-distill"]
        args += ["--views", str(views or self.num_views), "--out", str(self.path)]
        return shlex.join(args)

    def state(self) -> str:
        """Where the store stands, in words."""
        val = "val logits done" if self.attrs["val_done"] else "no val logits yet"
        return f"holds {self.views_completed} of {self.num_views} views, {val}"

    def complete(self) -> bool:
        return self.views_completed >= self.num_views and bool(self.attrs["val_done"])

    def check_complete(self) -> None:
        if not self.complete():
            raise UserError(f"{self.path} is incomplete: it {self.state()}; finish it with "
                            f"`{self.finish_command()}`, or delete it")

    def check_shards(self, shards) -> None:
        if self.fingerprint["shards_content_hash"] != shards.content_hash:
            raise UserError(f"{self.path} was made from other shards than {shards.root} "
                            f"(content hash differs); run `vwwfast cache-teacher` on these shards")

    # -- reading ---------------------------------------------------------------------------

    def read(self, name: str, selection=None) -> np.ndarray:
        """An array, or `selection` of it (orthogonal indexing: slices, ints, index arrays),
        with every chunk's checksum checked."""
        arr = self._arrays[name]
        try:
            return np.asarray(arr[...] if selection is None else arr.oindex[selection])
        except Exception:
            bad = self._bad_chunks(name)
            if not bad:
                raise
            raise _damaged(self.path, f"{len(bad)} chunk(s) of {name} fail their checksum "
                                      f"(first: {bad[0]})") from None

    def _bad_chunks(self, name: str) -> list[str]:
        """On a failed read only: which chunks do not decode (checksum, codec)."""
        arr, bad = self._arrays[name], []
        for c in np.ndindex(*arr.cdata_shape):
            try:
                arr.get_block_selection(c)
            except Exception:
                bad.append(f"{name}/{arr.metadata.encode_chunk_key(c)}")
        return bad

    def params(self) -> np.ndarray:
        """float32 [E, N, P], columns in this version's PARAM_COLUMNS order."""
        from vwwfast.views import in_layout
        return in_layout(self.read("train/params"), self.attrs["param_columns"], str(self.path))

    def logits(self) -> np.ndarray:
        return self.read("train/logits")

    def val_logits(self) -> np.ndarray:
        return self.read("val/logits")


def default_out(shards_root: Path, ckpt: dict, input_size: int, spec_name: str, sha: str) -> Path:
    from vwwfast.runs import arch_short
    return shards_root / f"teacher-{arch_short(ckpt['arch'])}-{input_size}-{spec_name}-{sha[:8]}.zarr"


def _given(cfg, name: str) -> bool:
    f = next(f for f in dataclasses.fields(cfg) if f.name == name)
    default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
    return getattr(cfg, name) != default


def _flags(cfg, names) -> list[str]:
    return [f"--{n.replace('_', '-')}" for n in names if _given(cfg, n)]


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
    g.attrs.update({"teacher": attrs["teacher"], "shards": attrs["shards"]})
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


@torch.no_grad()
def _teacher_logits(model, data, order, params, batch_size, on_chunk=None, exact=False):
    """float32 logits [len(order), C] for `order` (in order), plus how many were right.
    exact: no bf16 autocast (what --verify compares against)."""
    device = next(model.parameters()).device
    out = np.zeros((len(order), 2), np.float32)
    correct, pos = 0, 0
    for x, y, idx in data.batches(order, params, batch_size):
        if exact:  # full fp32: no bf16 autocast, no TF32 convolutions
            with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
                z = model(x.float().contiguous(memory_format=torch.channels_last)).float()
        else:
            with autocast(device):
                z = model(x.contiguous(memory_format=torch.channels_last)).float()
        out[pos:pos + len(y)] = z.cpu().numpy()
        # a mixed view's soft label counts as its larger weight's class
        correct += int((z.argmax(1) == (y.argmax(1) if y.ndim == 2 else y)).sum())
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


def cache_teacher(cfg: C.CacheTeacherConfig):
    """`vwwfast cache-teacher`: make (resume, extend) a store, or with --verify check one.

    Each rank (one without torchrun) owns whole shards, i.e. whole chunks of the store;
    rank 0 creates the store and writes the attributes once every rank is done."""
    if cfg.verify:
        return verify_store(cfg)
    from vwwfast import distributed as D
    from vwwfast.models import check_teacher, describe_teacher, model_from_checkpoint
    from vwwfast.render import resolve_device
    from vwwfast.progress import info, print_table, warn
    from vwwfast.shards import ShardSet
    from vwwfast.views import PARAM_COLUMNS, view_params, view_spec

    if _given(cfg, "samples"):
        raise UserError("--samples is for --verify STORE (views recomputed); drop it")
    C.require(cfg, "shards", "teacher")
    device = D.device() if D.active() else resolve_device(cfg.device)
    shards = ShardSet.open(cfg.shards)
    model, ckpt = model_from_checkpoint(cfg.teacher, device=device)
    check_teacher(cfg.teacher, ckpt, self_distill=cfg.self_distill)
    model = model.to(memory_format=torch.channels_last)
    size = cfg.input_size or ckpt["input_size"]
    if size != ckpt["input_size"] and D.is_main():
        warn(f"{cfg.teacher} was trained at {ckpt['input_size']} px and is cached at {size} px; "
             f"a teacher at a size it was not trained at is usually weaker (the store records both)")
    spec = view_spec(cfg.view_spec, cfg.view)
    if spec.is_plain and _given(cfg, "views") and cfg.views != 1:
        raise UserError(f"a plain view spec has one view (the whole image): drop --views {cfg.views}")
    n_views = 1 if spec.is_plain else cfg.views
    fp = fingerprint(shards=shards, ckpt_path=cfg.teacher, ckpt=ckpt, input_size=size,
                     spec=spec, seed=cfg.seed)
    who = describe_teacher(cfg.teacher, ckpt, fp["teacher_sha256"])
    tag = cfg.view_spec if not spec.non_default(cfg.view_spec) else \
        f"{cfg.view_spec}-{hashlib.sha256(json.dumps(spec.to_dict(), sort_keys=True).encode()).hexdigest()[:6]}"
    out = Path(cfg.out) if cfg.out else default_out(shards.root, ckpt, size, tag, fp["teacher_sha256"])
    n, n_val = len(shards.split("train")), len(shards.split("val"))
    per_shard = shards.manifest["options"]["samples_per_shard"]
    attrs = {
        "format_version": FORMAT_VERSION, "fingerprint": fp, "num_views": n_views,
        "views_completed": 0, "val_done": False, "view_spec_name": cfg.view_spec,
        "param_columns": list(PARAM_COLUMNS), "classes": ["no_person", "person"],
        "train_view_acc": [], "val_acc": None, "teacher": who,
        "shards": str(Path(cfg.shards).resolve()),
        "precision": "bf16" if device.type == "cuda" else "fp32",
    }
    if D.is_main():
        run = f" from {who['role'] or 'the'} run {who['run']}" if who.get("run") else ""
        acc = f" (val acc {who['run_val_acc']:.4f})" if who.get("run_val_acc") is not None else ""
        info(f"teacher: {cfg.teacher}: {who['arch']} trained at {who['input_size']} px{run}{acc}; "
             f"cached at {size} px")
        n_views = _prepare(out, fp, n_views, n, n_val, per_shard, attrs)
    D.barrier()
    train = SplitData(shards, "train", cfg, device, size)
    val = SplitData(shards, "val", cfg, device, size)
    import zarr
    g = zarr.open_group(str(out), mode="r+")
    rendered = {"train": train.renderer.name, "val": val.renderer.name, "decoded_size": cfg.decoded_size}
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
        for first, count, logits, c in _run_ranges(model, train, mine("train"), params,
                                                   cfg.batch_size, f"teacher view {view + 1}/{n_views}"):
            arr["train/params"][view, first:first + count] = params[first:first + count]
            arr["train/logits"][view, first:first + count] = logits.astype(np.float16)
            correct += c
        correct = int(D.all_reduce_sum(torch.tensor(correct, device=device)).item())
        accs.append(correct / n)
        images += n
        if D.is_main():  # after the all-reduce: every rank's chunks are written
            g.attrs.update({"views_completed": view + 1, "train_view_acc": accs})
        D.barrier()
    if not g.attrs["val_done"]:
        vparams = val_params(val.split, False)
        correct = 0
        for first, count, logits, c in _run_ranges(model, val, mine("val"), vparams,
                                                   cfg.batch_size, "teacher val"):
            arr["val/logits"][first:first + count] = logits.astype(np.float16)
            correct += c
        correct = int(D.all_reduce_sum(torch.tensor(correct, device=device)).item())
        if D.is_main():
            g.attrs.update({"val_done": True, "val_acc": correct / max(len(val), 1)})
        D.barrier()
    train.close()
    val.close()
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


# ---------------------------------------------------------------------------------------
# Verifying: `vwwfast cache-teacher --verify STORE`

# How far recomputed (fp32) logits may be from the stored float16 ones beyond float16
# rounding: each sample within atol + rtol * |z|, and the median difference within
# `median`. fp32 on both sides differs only by summation order. A store made under bf16
# autocast (CUDA) carries bf16's error, with a long tail: on an H100, MobileNetV3-Large
# at 96 px, 2,000 samples, two runs: median 0.0035-0.0043, 99th percentile 0.032-0.043,
# largest 0.072-0.178 (near z = 0). So a bf16 store is checked loosely per sample (about
# 3x the largest seen) and tightly in the median (5x), which a shifted, scaled or other
# teacher's logits fail. Another device may also decode JPEGs differently.
TOLERANCE = {"fp32": {"atol": 2e-3, "rtol": 2e-3, "median": 1e-3},
             "bf16 or another device": {"atol": 0.5, "rtol": 0.1, "median": 0.02}}


def _allowed(stored: np.ndarray, how: str, rounding_only: bool = False) -> np.ndarray:
    """Per logit: float16's half-ulp at the stored value, plus the slack of `how`."""
    a = np.abs(stored.astype(np.float32))
    half_ulp = np.spacing(a.astype(np.float16)).astype(np.float32) / 2
    return half_ulp if rounding_only else half_ulp + TOLERANCE[how]["atol"] + TOLERANCE[how]["rtol"] * a


def verify_store(cfg) -> dict:
    """Read every chunk (checksums), compare the stored view parameters with those
    regenerated from the store's spec and seed, and recompute --samples random stored
    (view, sample) pairs and val samples with the teacher. Prints a table; a UserError
    when anything disagrees beyond float16 rounding."""
    from vwwfast import distributed as D
    from vwwfast.models import model_from_checkpoint
    from vwwfast.progress import bar, out, print_table
    from vwwfast.render import resolve_device
    from vwwfast.shards import ShardSet, file_sha256
    from vwwfast.views import view_params

    if not D.is_main():
        return {}
    fixed = _flags(cfg, ("views", "input_size", "view_spec", "view", "seed", "out", "self_distill"))
    if fixed:
        raise UserError(f"--verify checks a store as it was made; drop {', '.join(fixed)}")
    store = TeacherCache(cfg.verify)
    fp, done, val_done = store.fingerprint, store.views_completed, bool(store.attrs["val_done"])
    if done == 0 and not val_done:
        raise UserError(f"{store.path} holds no finished view yet: nothing to verify")
    where = cfg.shards or store.attrs.get("shards")
    if not where and (store.path.parent / "manifest.json").is_file():
        where = str(store.path.parent)
    if not where:
        raise UserError(f"{store.path} does not say where its shards are: pass --shards DIR")
    shards = ShardSet.open(where)
    store.check_shards(shards)
    teacher = cfg.teacher or (store.teacher or {}).get("checkpoint")
    if not teacher or not Path(teacher).is_file():
        raise UserError(f"the teacher of {store.path} ({teacher or 'not recorded'}) is not there: "
                        f"pass --teacher with its checkpoint (sha256 {fp['teacher_sha256'][:12]}...)")
    sha = file_sha256(teacher)
    if sha != fp["teacher_sha256"]:
        raise UserError(f"{teacher} (sha256 {sha[:12]}...) is not the teacher of {store.path} "
                        f"({fp['teacher_sha256'][:12]}...); pass the checkpoint it was made with")

    # 1. every chunk read: each checksum checked
    params, logits = store.params()[:done], store.logits()[:done]
    stored_val = store.val_logits() if val_done else None
    # 2. view parameters: a pure function of (spec, seed, view, sample, size)
    split = shards.split("train")
    spec, n = store.spec, len(split)
    param_diff = 0.0
    for v in range(done):
        regen = view_params(spec, store.seed, v, np.arange(n), split.heights, split.widths)
        param_diff = max(param_diff, float(np.max(np.abs(regen - params[v]), initial=0.0)))
    finite = bool(np.isfinite(logits).all() and (stored_val is None or np.isfinite(stored_val).all()))

    # 3. logits recomputed (fp32) on the renderer the store was made with, unless given
    rec = store.attrs.get("renderer") or {}
    rcfg = dataclasses.replace(cfg, decoded_size=cfg.decoded_size if _given(cfg, "decoded_size")
                               else rec.get("decoded_size", cfg.decoded_size))
    device = resolve_device(cfg.device)
    model, _ = model_from_checkpoint(teacher, device=device)
    model = model.to(memory_format=torch.channels_last)
    size = fp["teacher_input_size"]
    how = "fp32" if store.attrs.get("precision") == "fp32" and device.type == "cpu" else "bf16 or another device"
    rng = np.random.default_rng(0)  # the same command checks the same samples
    rows, failures = [], []

    def check(name, split_name, todo):
        """todo: [(params [N, P], indices, stored logits [len(indices), C])]."""
        r = dataclasses.replace(rcfg, renderer=rcfg.renderer if _given(cfg, "renderer")
                                else rec.get(split_name, cfg.renderer))
        data = SplitData(shards, split_name, r, device, size)
        diffs, excess, agree, over = [], [], 0, 0
        try:
            with bar(f"verify {name}", sum(len(i) for _, i, _ in todo)) as advance:
                for p, idx, want in todo:
                    z, _ = _teacher_logits(model, data, idx, p, cfg.batch_size, advance, exact=True)
                    d = np.abs(z - want.astype(np.float32))
                    diffs.append(d.max(axis=1))
                    excess.append(np.clip(d - _allowed(want, how, rounding_only=True), 0, None).max(axis=1))
                    over += int((d > _allowed(want, how)).any(axis=1).sum())
                    agree += int((z.argmax(1) == want.astype(np.float32).argmax(1)).sum())
        finally:
            data.close()
        d = np.concatenate(diffs) if diffs else np.zeros(0)
        total, worst = len(d), float(d.max(initial=0.0))
        median = float(np.median(d)) if total else 0.0
        beyond = float(np.median(np.concatenate(excess))) if total else 0.0  # beyond float16 rounding
        rows.append((name, f"{total}", f"{median:.3g}", f"{worst:.3g}", f"{agree / max(total, 1):.2%}",
                     f"{over}", data.renderer.name))
        if beyond > TOLERANCE[how]["median"]:
            failures.append(f"{name} logits differ from the teacher's by {beyond:.3g} beyond float16 "
                            f"rounding in the median ({how} explains up to {TOLERANCE[how]['median']:g})")
        elif over:
            failures.append(f"{name} logits differ from the teacher's beyond rounding ({how}) in {over} "
                            f"of {total} samples (largest difference {worst:.3g})")

    if done:
        k = min(cfg.samples, done * n)
        picks = rng.choice(done * n, size=k, replace=False)
        views, idx = np.divmod(picks, n)
        check("train views", "train",
              [(params[v], np.sort(idx[views == v]), logits[v][np.sort(idx[views == v])])
               for v in np.unique(views)])
    if val_done and len(stored_val):
        vsplit = shards.split("val")
        vidx = np.sort(rng.choice(len(vsplit), size=min(cfg.samples, len(vsplit)), replace=False))
        check("val", "val", [(val_params(vsplit), vidx, stored_val[vidx])])
    if param_diff > 1e-6:
        failures.insert(0, f"stored view parameters differ from those regenerated from its view spec "
                           f"and seed {store.seed} (by up to {param_diff:.3g})")
    if not finite:
        failures.insert(0, "stored logits hold NaN or infinite values")
    print_table(f"verify {store.path} ({store.state()}; teacher {teacher})",
                ["what", "samples", "median |logit diff|", "largest", "argmax agrees", f"beyond rounding ({how})",
                 "renderer"],
                rows)
    out.print(f"chunks: every chunk of {done} views{' and val' if val_done else ''} read, checksums OK; "
              f"view parameters {'equal' if param_diff <= 1e-6 else 'DIFFER from'} those regenerated "
              f"from the spec and seed (largest difference {param_diff:.3g})")
    if failures:
        raise UserError(f"{store.path}: {'; '.join(failures)}: it does not hold what its fingerprint "
                        f"says; delete it and run `vwwfast cache-teacher` again")
    out.print(f"OK: {store.path} holds teacher {Path(teacher).name}'s logits")
    return {"ok": True, "param_diff": param_diff, "rows": rows}
