"""WebDataset shards: the writer (deterministic tars, DALI index files, manifest) and the reader.

A split's samples go into `<split>-NNNNNN.tar` with members `<key>.jpg`, `<key>.cls`,
`<key>.json`, key = zero-padded global sample index. Beside each tar, a DALI `.idx` file.
Per split, `<split>-samples.npy` is a small table (label, stored size, tar, byte offset and
length of the JPEG) so readers seek straight to a sample's bytes without scanning tars.
A source with per-sample attributes (Wake Vision's benchmark columns) adds
`<split>-columns.npy`, int8 [N, K], its column names in the manifest.
Splits: train and val always, test when the source has one (SPLITS gives the order).
`manifest.json` is written last: a folder without it is incomplete.

Trust: opening a shard set checks the manifest's content hash, each samples table's sha256
(a few MB) and each tar's size against its table (a stat, no hashing), so a truncated or
missing tar is refused before any work; `vwwfast shard --verify DIR` hashes every file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vwwfast.errors import UserError
from vwwfast.files import file_sha256, worker_pool
from vwwfast.provenance import __version__

FORMAT_VERSION = 1
KEY_DIGITS = 9
SPLITS = ("train", "val", "test")  # test is optional
SAMPLE_TABLE = np.dtype([("label", "u1"), ("height", "<i4"), ("width", "<i4"),
                         ("shard", "<i4"), ("offset", "<i8"), ("nbytes", "<i8")])


@dataclass(frozen=True)
class SourceItem:
    path: str       # image file to read (JPEG, PNG, ... whatever PIL opens)
    label: int      # 0 = no person, 1 = person
    meta: dict = field(default_factory=dict)  # source id, person area fraction, ...


# ---------------------------------------------------------------------------------------
# Encoding one image (runs in worker processes; output depends only on the input bytes)

def encode_image(path: str | bytes, size: int, quality: int,
                 draft: bool = False) -> tuple[bytes, int, int, int, int] | str:
    """-> (jpeg bytes, orig width, orig height, width, height), or a reason string if unreadable.

    path: a file, or the image's bytes. draft: let libjpeg decode a JPEG at 1/2, 1/4 or 1/8
    scale when that still leaves the short side at least `size` (PIL's `draft`): much less
    work for a large photo, and a DCT-domain reduction before the final resize."""
    from PIL import Image, ImageOps, UnidentifiedImageError
    im: Image.Image  # the opened file, then the transposed RGB copy
    try:
        with Image.open(io.BytesIO(path) if isinstance(path, bytes) else path) as im:
            orig_w, orig_h = im.size
            if im.getexif().get(0x0112) in (5, 6, 7, 8):  # EXIF orientation turns it a quarter
                orig_w, orig_h = orig_h, orig_w
            if draft and im.format == "JPEG" and min(orig_w, orig_h) > size:
                im.draft("RGB", (size, size))
            im.load()
            im = ImageOps.exif_transpose(im)
            im = im.convert("RGB")  # grayscale, CMYK, palette, alpha -> RGB
    except FileNotFoundError:
        return "missing file"
    except UnidentifiedImageError:
        return "not an image"
    except Image.DecompressionBombError:
        return "too many pixels (PIL's decompression-bomb limit)"
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        return f"corrupt image ({str(e).splitlines()[0][:80]})"
    w, h = im.size
    short = min(w, h)
    if short > size:  # never upscale
        scale = size / short
        w, h = max(1, round(w * scale)), max(1, round(h * scale))
        im = im.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=None)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality, optimize=False, progressive=False)
    return buf.getvalue(), orig_w, orig_h, w, h


def _encode_star(args):
    return encode_image(*args)


# ---------------------------------------------------------------------------------------
# Writing

def _tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> int:
    """Add a member with fixed metadata; return the byte offset of its data."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    header = info.tobuf(tar.format, tar.encoding, tar.errors)
    data_offset = tar.offset + len(header)
    tar.addfile(info, io.BytesIO(data))
    return data_offset


def content_hash(manifest: dict) -> str:
    body = {k: v for k, v in manifest.items() if k != "content_hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class _Growing:
    """An array that grows by doubling: a split's table of 6 million rows stays a few
    hundred MB, where a list of tuples would take gigabytes."""

    def __init__(self, dtype, width: int | None = None):
        self._shape = () if width is None else (width,)
        self._a = np.empty((1024,) + self._shape, dtype)
        self.n = 0

    def append(self, row) -> None:
        if self.n == len(self._a):
            grown = np.empty((2 * len(self._a),) + self._shape, self._a.dtype)
            grown[:self.n] = self._a
            self._a = grown
        self._a[self.n] = row
        self.n += 1

    def array(self) -> np.ndarray:
        return self._a[:self.n]


class ShardWriter:
    """Writes one split: rolls tars every `per_shard` samples, tmp name until complete.
    columns: names of per-sample int8 attributes (`add(..., columns=[...])`), written as
    `<split>-columns.npy`; None = the source has none."""

    def __init__(self, out: Path, split: str, per_shard: int, columns: list[str] | None = None):
        self.out, self.split, self.per_shard = out, split, per_shard
        self.shards: list[dict] = []
        self.rows = _Growing(SAMPLE_TABLE)
        self.columns = list(columns) if columns is not None else None
        self._cols = _Growing(np.int8, len(self.columns)) if self.columns is not None else None
        self._tar: tarfile.TarFile | None = None
        self._idx_lines: list[str] = []

    def __len__(self) -> int:
        return self.rows.n

    def add(self, jpeg: bytes, label: int, meta: dict, height: int, width: int,
            columns=None) -> None:
        index = self.rows.n
        if index % self.per_shard == 0:
            self._close()
            name = f"{self.split}-{len(self.shards):06d}.tar"
            self.shards.append({"file": name, "first": index, "count": 0})
            self._tmp = self.out / (name + ".tmp")
            self._tar = tarfile.open(self._tmp, "w", format=tarfile.USTAR_FORMAT)
        key = f"{index:0{KEY_DIGITS}d}"
        cls = str(label).encode()
        js = json.dumps(meta, sort_keys=True).encode()
        assert self._tar is not None, "a tar is open from a split's first sample on"
        parts = []
        for ext, data in (("jpg", jpeg), ("cls", cls), ("json", js)):
            off = _tar_member(self._tar, f"{key}.{ext}", data)
            parts.append(f"{ext} {off} {len(data)} {key}.{ext}")
            if ext == "jpg":
                jpg_off = off
        self._idx_lines.append(" ".join(parts))
        self.shards[-1]["count"] += 1
        self.rows.append((label, height, width, len(self.shards) - 1, jpg_off, len(jpeg)))
        if self._cols is not None:
            self._cols.append(columns)

    def _close(self) -> None:
        if self._tar is None:
            return
        self._tar.close()
        entry = self.shards[-1]
        final = self.out / entry["file"]
        idx = final.with_suffix(".idx")
        idx.write_text(f"v1.2 {len(self._idx_lines)}\n" + "\n".join(self._idx_lines) + "\n")
        os.replace(self._tmp, final)
        entry["sha256"] = file_sha256(final)
        self._tar, self._idx_lines = None, []

    def finish(self) -> dict:
        self._close()
        table = self.rows.array()
        table_file = f"{self.split}-samples.npy"
        np.save(self.out / table_file, table)
        labels = table["label"]
        entry = {
            "num_samples": len(table),
            "class_counts": {"0": int((labels == 0).sum()), "1": int((labels == 1).sum())},
            "shards": self.shards,
            "samples_file": table_file,
            "samples_sha256": file_sha256(self.out / table_file),
        }
        if self._cols is not None:
            cols_file = f"{self.split}-columns.npy"
            np.save(self.out / cols_file, self._cols.array())
            entry["columns"] = {"names": self.columns, "file": cols_file,
                                "sha256": file_sha256(self.out / cols_file)}
        return entry


def check_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"output path {out} is a file")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"output folder {out} exists; pass --overwrite to replace it")


def partial_dir(out: Path, keep: tuple[str, ...] = ()) -> Path:
    """Work happens here; the finished folder replaces `out` only at the end, so an
    interrupted run never destroys earlier output nor leaves a complete-looking folder.
    keep: entries of an earlier partial folder to keep (work a source can resume from)."""
    tmp = out.parent / f".{out.name}.partial"
    if tmp.exists():
        for entry in tmp.iterdir():
            if entry.name not in keep:
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    tmp.mkdir(parents=True, exist_ok=True)
    return tmp


def commit_dir(tmp: Path, out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)


def write_shards(out_dir, splits: dict[str, list[SourceItem]], *, source: dict, size: int = 224,
                 samples_per_shard: int = 1000, quality: int = 90, workers: int = 1,
                 overwrite: bool = False, label_rule: str = "", skipped: list[dict] | None = None,
                 show_progress: bool = True) -> dict:
    """Encode every item into shards under out_dir and write the manifest last."""
    from vwwfast.progress import bar

    if not 1 <= quality <= 100:
        raise UserError(f"--quality must be within 1..100, got {quality}")
    if size < 8 or samples_per_shard < 1:
        raise UserError("--size must be at least 8 and --samples-per-shard at least 1")
    final = Path(out_dir)
    check_out_dir(final, overwrite)
    out = partial_dir(final)
    skipped = list(skipped or [])
    split_entries = {}
    pool = worker_pool(workers)
    try:
        for split, items in splits.items():
            writer = ShardWriter(out, split, samples_per_shard)
            jobs = [(it.path, size, quality) for it in items]
            results = (pool.map(_encode_star, jobs, chunksize=16) if pool
                       else map(_encode_star, jobs))
            desc = f"shard {split}"
            with bar(desc, len(items), enabled=show_progress) as advance:
                for item, res in zip(items, results):
                    advance(1)
                    if isinstance(res, str):
                        skipped.append({"split": split, "file": item.path, "reason": res})
                        continue
                    jpeg, ow, oh, w, h = res
                    meta = dict(item.meta, orig_width=ow, orig_height=oh)
                    writer.add(jpeg, int(item.label), meta, h, w)
            split_entries[split] = writer.finish()
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    manifest = {
        "format_version": FORMAT_VERSION,
        "vwwfast_version": __version__,
        "source": source,
        "options": {"size": size, "samples_per_shard": samples_per_shard, "quality": quality},
        "label_rule": label_rule,
        "splits": split_entries,
        "skipped": skipped,
    }
    return write_manifest(out, final, manifest)


def write_manifest(out: Path, final: Path, manifest: dict) -> dict:
    """The content hash, the manifest (last of all files), then the folder under its final
    name. Returns the manifest as written."""
    manifest["content_hash"] = content_hash(manifest)
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(tmp, out / "manifest.json")
    commit_dir(out, final)
    return manifest


# ---------------------------------------------------------------------------------------
# Reading

def read_manifest(root: Path) -> dict:
    if not root.is_dir():
        raise UserError(f"shard folder not found: {root} (make it with `vwwfast shard`)")
    mf = root / "manifest.json"
    if not mf.is_file():
        raise UserError(f"{root} has no manifest.json: the shard run did not finish; "
                        f"run `vwwfast shard` again with --overwrite")
    try:
        manifest = json.loads(mf.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{mf} is not valid JSON; run `vwwfast shard` again") from None
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        version = manifest.get("format_version") if isinstance(manifest, dict) else None
        raise UserError(f"{root}: shard format {version} is not {FORMAT_VERSION}; run `vwwfast shard` again")
    if content_hash(manifest) != manifest.get("content_hash"):
        raise UserError(f"{mf}: content hash does not match its contents (edited by hand?)")
    return manifest


def read_table(root: Path, name: str, entry: dict) -> np.ndarray:
    """A split's samples table, checked against the manifest (sha256 of a few MB, and length)."""
    path = root / entry["samples_file"]
    if not path.is_file():
        raise UserError(f"{root}: the samples table of split '{name}' ({path.name}) is missing; "
                        f"run `vwwfast shard` again")
    if file_sha256(path) != entry["samples_sha256"]:
        raise UserError(f"{path} does not match its sha256 in the manifest (damaged or replaced); "
                        f"run `vwwfast shard` again")
    table = np.load(path, allow_pickle=False)
    if table.dtype != SAMPLE_TABLE or len(table) != entry["num_samples"]:
        raise UserError(f"{path} is not the samples table the manifest describes; run `vwwfast shard` again")
    return table


def _round_up(n: int, to: int) -> int:
    return -(-n // to) * to


def tar_size_problems(root: Path, entry: dict, table: np.ndarray) -> list[str]:
    """One line per tar of a split that is missing or shorter than its samples say.

    Our writer's tars end with the last sample's .cls and .json members (a 512-byte header
    and at least one 512-byte block each) and tar's end-of-archive blocks, padded to a whole
    tar record; so a tar shorter than that, or not a whole number of records, is truncated."""
    out = []
    for s in entry["shards"]:
        path = root / s["file"]
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            out.append(f"{s['file']} is missing")
            continue
        if s["count"] == 0:
            continue
        last = table[s["first"] + s["count"] - 1]
        need = _round_up(_round_up(int(last["offset"]) + int(last["nbytes"]), tarfile.BLOCKSIZE)
                         + 6 * tarfile.BLOCKSIZE, tarfile.RECORDSIZE)
        if size < need:
            out.append(f"{s['file']} is truncated ({size:,} bytes; its samples need at least {need:,})")
        elif size % tarfile.RECORDSIZE:
            out.append(f"{s['file']} has {size:,} bytes, not whole tar records (truncated or altered)")
    return out


class Split:
    """One split of a shard set: labels, stored sizes and random access to JPEG bytes."""

    def __init__(self, root: Path, name: str, entry: dict, table: np.ndarray | None = None):
        self.name = name
        table = read_table(root, name, entry) if table is None else table
        self.labels = table["label"].astype(np.int64)
        self.heights = table["height"].astype(np.int32)
        self.widths = table["width"].astype(np.int32)
        self.shard = table["shard"].astype(np.int32)
        self.offsets = table["offset"].astype(np.int64)
        self.nbytes = table["nbytes"].astype(np.int64)
        self.tar_paths = [root / s["file"] for s in entry["shards"]]
        self.class_counts = entry["class_counts"]
        self._reader: JpegReader | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def read_jpeg(self, i: int) -> bytes:
        """One sample's JPEG bytes, through this split's own reader (opened on first use)."""
        if self._reader is None:
            self._reader = JpegReader(self)
        return self._reader.read([i])[0]

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()

    def __getstate__(self):  # file handles stay behind when pickled to workers
        return {**self.__dict__, "_reader": None}


class JpegReader:
    """Random access to a split's JPEG bytes with os.pread on this reader's own file
    descriptors: safe from several threads at once, so a renderer in a prefetch thread never
    races another reader of the same split."""

    def __init__(self, split: Split):
        self.tar_paths = list(split.tar_paths)
        self.shard = np.asarray(split.shard)
        self.offsets = np.asarray(split.offsets)
        self.nbytes = np.asarray(split.nbytes)
        self._fds: dict[int, int] = {}
        self._lock = threading.Lock()

    def _fd(self, shard: int) -> int:
        fd = self._fds.get(shard)
        if fd is None:
            with self._lock:
                fd = self._fds.get(shard)
                if fd is None:
                    fd = self._fds[shard] = os.open(self.tar_paths[shard], os.O_RDONLY)
        return fd

    def read(self, indices) -> list[bytes]:
        out = []
        for i in np.asarray(indices, dtype=np.int64):
            data = os.pread(self._fd(int(self.shard[i])), int(self.nbytes[i]), int(self.offsets[i]))
            if len(data) != self.nbytes[i]:
                raise UserError(f"{self.tar_paths[self.shard[i]]}: truncated (sample {i}); "
                                f"run `vwwfast shard` again")
            out.append(data)
        return out

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()


def view_defaults(manifest: dict) -> dict:
    """The views a shard set asks for unless a run says otherwise: {"val_center_crop":
    bool, "train": {view setting: value}}. Wake Vision's labels were made on the central
    square crop, so its shards ask for it; other sources for the whole image."""
    given = manifest.get("view_defaults") or {}
    return {"val_center_crop": bool(given.get("val_center_crop", False)),
            "train": dict(given.get("train") or {})}


def with_shard_views(manifest: dict, given: dict | None) -> dict:
    """`views:` settings with the shard set's defaults under the ones given (a given setting
    wins): what a run without a store, or with a view spec named, draws its views with."""
    return {**view_defaults(manifest)["train"], **(given or {})}


class ShardSet:
    """A shard folder with a complete manifest."""

    def __init__(self, root: Path, manifest: dict):
        self.root, self.manifest = root, manifest
        self.content_hash = manifest["content_hash"]
        self._splits: dict[str, Split] = {}

    @classmethod
    def open(cls, root) -> "ShardSet":
        """Refuses, with one line, an incomplete or edited manifest, a damaged samples table
        and a missing or truncated tar."""
        root = Path(root)
        shards = cls(root, read_manifest(root))
        for name, entry in shards.manifest["splits"].items():  # cheap: no tar is hashed
            table = read_table(root, name, entry)
            bad = tar_size_problems(root, entry, table)
            if bad:
                more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
                raise UserError(f"{root}: {bad[0]}{more}; the shard set is damaged: copy it again or "
                                f"run `vwwfast shard` again (`vwwfast shard --verify {root}` checks every file)")
            shards._splits[name] = Split(root, name, entry, table)
        return shards

    @property
    def split_names(self) -> list[str]:
        return list(self.manifest["splits"])

    def split(self, name: str) -> Split:
        if name not in self.manifest["splits"]:
            raise UserError(f"{self.root} has no split '{name}' (has: {', '.join(self.split_names)})")
        if name not in self._splits:
            self._splits[name] = Split(self.root, name, self.manifest["splits"][name])
        return self._splits[name]

    def columns(self, name: str) -> dict[str, np.ndarray] | None:
        """A split's per-sample attributes (name -> int8 [N]), checked against the manifest;
        None when the source wrote none."""
        entry = self.manifest["splits"][name].get("columns") if name in self.manifest["splits"] else None
        if not entry:
            return None
        path = self.root / entry["file"]
        if not path.is_file() or file_sha256(path) != entry["sha256"]:
            raise UserError(f"{path} is missing or does not match its sha256 in the manifest; "
                            f"run `vwwfast shard` again")
        table = np.load(path, allow_pickle=False)
        if table.dtype != np.int8 or table.shape != (self.manifest["splits"][name]["num_samples"],
                                                     len(entry["names"])):
            raise UserError(f"{path} is not the columns table the manifest describes; run "
                            f"`vwwfast shard` again")
        return {c: table[:, j] for j, c in enumerate(entry["names"])}

    def require_both_classes(self, name: str) -> None:
        counts = self.manifest["splits"][name]["class_counts"]
        for c, label in (("0", "no-person"), ("1", "person")):
            if counts.get(c, 0) == 0:
                raise UserError(f"{self.root}: split '{name}' has no {label} samples; "
                                f"training needs both classes")


# ---------------------------------------------------------------------------------------
# Full check: `vwwfast shard --verify DIR`

def _idx_text(tar_path: Path) -> str:
    """The DALI index our writer wrote beside a tar, rebuilt from the tar's member headers."""
    lines: dict[str, list[str]] = {}
    with tarfile.open(tar_path, "r") as tar:
        for m in tar:  # headers only: nothing is extracted
            key, ext = m.name.split(".", 1)
            lines.setdefault(key, []).append(f"{ext} {m.offset_data} {m.size} {m.name}")
    return f"v1.2 {len(lines)}\n" + "\n".join(" ".join(v) for v in lines.values()) + "\n"


def verify_shards(root) -> dict:
    """Hash every tar and samples table and compare with the manifest; rebuild each DALI
    index from its tar. Prints one row per damaged file (or OK); UserError if any is."""
    from vwwfast.progress import bar, out, print_table
    root = Path(root)
    manifest = read_manifest(root)
    start = time.perf_counter()
    bad: list[tuple[str, str]] = []
    files = [(name, e) for name, split in manifest["splits"].items() for e in split["shards"]]
    total = sum((root / e["file"]).stat().st_size for _, e in files if (root / e["file"]).is_file())
    for name, split in manifest["splits"].items():
        tables = [(split["samples_file"], split["samples_sha256"])]
        if split.get("columns"):
            tables.append((split["columns"]["file"], split["columns"]["sha256"]))
        for file, sha in tables:
            path = root / file
            if not path.is_file():
                bad.append((file, "missing"))
            elif file_sha256(path) != sha:
                bad.append((file, "sha256 differs from the manifest"))
    with bar(f"verify {root.name}", total, unit="B") as advance:
        for name, e in files:
            tar = root / e["file"]
            if not tar.is_file():
                bad.append((e["file"], "missing"))
                continue
            advance(tar.stat().st_size)
            if file_sha256(tar) != e["sha256"]:
                bad.append((e["file"], "sha256 differs from the manifest"))
                continue
            idx = tar.with_suffix(".idx")
            if not idx.is_file():
                bad.append((idx.name, "missing"))
            elif idx.read_text(errors="replace") != _idx_text(tar):
                bad.append((idx.name, "does not index its tar"))
    seconds = time.perf_counter() - start
    if bad:
        print_table(f"damaged files in {root}", ["file", "problem"], bad)
        names = ", ".join(f for f, _ in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise UserError(f"{root}: {len(bad)} damaged file(s): {names}; copy the shard set again or "
                        f"run `vwwfast shard` again")
    n = sum(split["num_samples"] for split in manifest["splits"].values())
    out.print(f"OK: {root}: {len(files)} tars ({total / 2**20:,.1f} MiB), their DALI indexes and "
         f"{len(manifest['splits'])} samples tables ({n:,} samples) match the manifest "
         f"({seconds:.1f} s)")
    return {"ok": True, "tars": len(files), "samples": n, "bytes": total}


def print_summary(manifest: dict, out: Path, seconds: float) -> None:
    """One row per split (train, val and test when there is one): samples, person share,
    shards, size, and what was left out (unreadable images; for Wake Vision also the rows
    and images counted in the manifest's `not_sharded`); then the rest of `not_sharded`."""
    from vwwfast.progress import print_table
    rows = []
    total = 0
    counted = manifest.get("not_sharded") or []
    for split, e in manifest["splits"].items():
        size = sum((out / s["file"]).stat().st_size for s in e["shards"])
        n = e["num_samples"]
        total += n
        skipped = sum(1 for s in manifest["skipped"] if s.get("split") == split)
        skipped += sum(c["count"] for c in counted if c.get("split") == split)
        share = f"{e['class_counts']['1'] / n:.1%}" if n else "-"
        rows.append((split, n, share, len(e["shards"]), f"{size / 2**20:.1f} MiB", skipped))
    print_table(f"shards in {out} ({total / max(seconds, 1e-9):,.0f} img/s)",
                ["split", "samples", "person", "shards", "size", "not sharded"], rows)
    if counted:
        print_table("not sharded (manifest.json `not_sharded` lists the first 100 of each)",
                    ["split", "what", "count"],
                    [(c.get("split") or "-", c["reason"], f"{c['count']:,}") for c in counted])
