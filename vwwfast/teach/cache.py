"""The teacher cache: E deterministic views x N samples of view parameters and teacher logits
in a Zarr v3 store, chunked like the shards, resumable view by view.

Layout: train/params float32 [E, N, P], train/logits float16 [E, N, C], val/logits float16
[N_val, C]; attributes hold the fingerprint of everything that determines the numbers, the
teacher that made them (checkpoint path, arch, run) and how far the store got.

A store of an ensemble (several teachers) holds the log of the members' mean probability
(`ENSEMBLE`): softmax of it is that mean. Its fingerprint names every member (sha256,
arch, input size); their checkpoint paths and runs are attributes (`teachers`).

Trust: every chunk ends with a crc32c checksum (zarr's Crc32cCodec, after zstd), so a
flipped byte or a truncated chunk is an error when read, never a wrong number; the chunks a
reader needs are listed once when the store is opened, so a missing chunk is an error too
(zarr would hand out the fill value, NaN here). `cache-teacher --verify` reads every chunk,
regenerates the view parameters and recomputes a sample of the logits with the teacher.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
from pathlib import Path

import numpy as np

from vwwfast.data.render.base import RENDERING
from vwwfast.errors import UserError
from vwwfast.provenance import __version__

# 1: no chunk checksums (such a store cannot be verified; it is refused, to be made again).
# 2: crc32c per chunk, NaN fill, the teacher / shards / renderer in the attributes.
FORMAT_VERSION = 2
INTERPOLATION = "bilinear"
ARRAYS = ("train/params", "train/logits", "val/logits")
_ATTRS = ("fingerprint", "num_views", "views_completed", "val_done", "view_spec_name",
          "param_columns", "classes", "train_view_acc", "val_acc")


# What an ensemble store's logits are: log of the members' mean probability, so that
# softmax of them is that mean (and softmax(z / T) the tempered mean).
ENSEMBLE = "log_mean_probability"


def fingerprint(*, shards, members: list[dict], normalization, spec, seed: int) -> dict:
    """Everything that determines a store's numbers. members: [{sha256, arch, input_size}],
    one per teacher, sorted by sha256 (an ensemble given in any order is the same store).
    One teacher keeps the keys it always had, so its stores stay valid."""
    common = {
        "shards_content_hash": shards.content_hash,
        "interpolation": INTERPOLATION,
        "rendering": RENDERING,  # a change of the renderers' maths changes the logits
        "normalization": normalization,
        "view_spec": spec.to_dict(),
        "seed": seed,
        "vwwfast_version": __version__,
    }
    if len(members) == 1:
        m = members[0]
        return {"teacher_sha256": m["sha256"], "teacher_arch": m["arch"],
                "teacher_input_size": m["input_size"], **common}
    return {"teachers": [{k: m[k] for k in ("sha256", "arch", "input_size")} for m in members],
            "ensemble": ENSEMBLE, **common}


def members_of(fp: dict) -> list[dict]:
    """[{sha256, arch, input_size}] of a fingerprint: one for a teacher, K for an ensemble."""
    if "teachers" in fp:
        return [dict(m) for m in fp["teachers"]]
    return [{"sha256": fp["teacher_sha256"], "arch": fp["teacher_arch"],
             "input_size": fp["teacher_input_size"]}]


def describe_difference(want: dict, have: dict) -> str:
    names = {"shards_content_hash": "shards", "teacher_sha256": "teacher checkpoint",
             "teacher_arch": "teacher arch", "teacher_input_size": "teacher input size",
             "teachers": "teacher ensemble", "ensemble": "ensemble rule",
             "view_spec": "view spec", "seed": "view seed", "interpolation": "interpolation",
             "normalization": "normalisation", "vwwfast_version": "vwwfast version"}
    if ("teachers" in want) != ("teachers" in have):
        k = lambda fp: f"an ensemble of {len(fp['teachers'])}" if "teachers" in fp else "one teacher"  # noqa: E731
        teacher = [f"teacher ({k(have)} in the store, {k(want)} here)"]
        keys = [k_ for k_ in want if k_ in have and not k_.startswith("teacher")]
    else:
        teacher, keys = [], list(want)
    diff = teacher + [names.get(k, k) for k in keys if want.get(k) != have.get(k)]
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
            raise UserError(f"teacher cache not found: {self.path}{stores_hint(self.path.parent)}")
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
        from vwwfast.viewspec import ViewSpec
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
        pretrained, sha256. None for an ensemble (see `teachers`)."""
        return self.attrs.get("teacher")

    @property
    def members(self) -> list[dict]:
        """[{sha256, arch, input_size}] from the fingerprint: one teacher, or each member."""
        return members_of(self.fingerprint)

    @property
    def ensemble(self) -> bool:
        return "teachers" in self.fingerprint

    @property
    def teachers(self) -> list[dict]:
        """`models.describe_teacher` of each member, in the fingerprint's order (as recorded
        by cache-teacher; empty when the store does not say)."""
        if self.attrs.get("teachers"):
            return list(self.attrs["teachers"])
        return [self.attrs["teacher"]] if self.attrs.get("teacher") else []

    @property
    def num_train(self) -> int:
        return self._arrays["train/logits"].shape[1]

    def finish_command(self, views: int | None = None) -> str:
        """The cache-teacher command that resumes (or extends) this store."""
        fp, base = self.fingerprint, self.attrs["view_spec_name"]
        whos = {w.get("sha256"): w for w in self.teachers}
        args = ["vwwfast", "cache-teacher", "--shards", self.attrs.get("shards") or "SHARDS"]
        for k, m in enumerate(self.members):
            name = f"TEACHER{k + 1}.pt" if self.ensemble else "TEACHER.pt"
            args += ["--teacher", (whos.get(m["sha256"]) or {}).get("checkpoint") or name]
        who = self.teacher or {}
        if base != "default":
            args += ["--view-spec", base]
        for k, v in self.spec.non_default(base).items():
            args += ["--view", f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}"]
        if self.seed:
            args += ["--seed", str(self.seed)]
        if not self.ensemble and fp["teacher_input_size"] != who.get("input_size"):
            args += ["--input-size", str(fp["teacher_input_size"])]
        if any(w.get("role") == "student" for w in self.teachers):
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

    def params(self, view: int | None = None) -> np.ndarray:
        """float32 [E, N, P], or [N, P] of one view, columns in this version's PARAM_COLUMNS
        order. One view is what a trainer holds (76 B per sample; every view of a 6M-image
        split would be gigabytes)."""
        from vwwfast.data.views import in_layout
        raw = self.read("train/params") if view is None else self.read("train/params", (view,))
        return in_layout(raw, self.attrs["param_columns"], str(self.path))

    def logits(self) -> np.ndarray:
        return self.read("train/logits")

    def val_logits(self) -> np.ndarray:
        return self.read("val/logits")


def default_out(shards_root: Path, members: list[dict], spec_name: str) -> Path:
    """<shards>/teacher-<arch>-<size>-<spec>-<sha8>.zarr (sha8: the first 8 hex digits of the
    checkpoint's sha256), e.g. teacher-mbv3l-224-default-1a2b3c4d.zarr; for an ensemble
    teacher-ens<K>-<arch><size>-...-<spec>-<sha8 of the members' sha256s>.zarr."""
    from vwwfast.provenance import arch_short
    if len(members) == 1:
        m = members[0]
        return shards_root / f"teacher-{arch_short(m['arch'])}-{m['input_size']}-{spec_name}-{m['sha256'][:8]}.zarr"
    who = "-".join(f"{arch_short(m['arch'])}{m['input_size']}" for m in members)
    sha = hashlib.sha256("".join(m["sha256"] for m in members).encode()).hexdigest()
    return shards_root / f"teacher-ens{len(members)}-{who}-{spec_name}-{sha[:8]}.zarr"


def stores_in(folder) -> list[Path]:
    """The teacher stores directly in `folder` (`cache-teacher` puts them beside the shards)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix == ".zarr" and (p / "zarr.json").is_file())


def stores_hint(folder) -> str:
    """The end of a "no store given / not found" line: the stores `folder` holds, so the
    user can pick one (the default name carries the teacher's sha256), or how to make one."""
    found = stores_in(folder)
    if len(found) == 1:
        return f"; {folder} holds one store: --cache {found[0]}"
    if found:
        shown = ", ".join(p.name for p in found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        return f"; {folder} holds {len(found)} stores: {shown}"
    return " (make one with `vwwfast cache-teacher`)"
