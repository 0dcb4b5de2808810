"""WebDataset shards: the writer (deterministic tars, DALI index files, manifest) and the reader.

A split's samples go into `<split>-NNNNNN.tar` with members `<key>.jpg`, `<key>.cls`,
`<key>.json`, key = zero-padded global sample index. Beside each tar, a DALI `.idx` file.
Per split, `<split>-samples.npy` is a small table (label, stored size, tar, byte offset and
length of the JPEG) so readers seek straight to a sample's bytes without scanning tars.
`manifest.json` is written last: a folder without it is incomplete.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vwwfast import __version__
from vwwfast.errors import UserError

FORMAT_VERSION = 1
KEY_DIGITS = 9
SAMPLE_TABLE = np.dtype([("label", "u1"), ("height", "<i4"), ("width", "<i4"),
                         ("shard", "<i4"), ("offset", "<i8"), ("nbytes", "<i8")])


@dataclass(frozen=True)
class SourceItem:
    path: str       # image file to read (JPEG, PNG, ... whatever PIL opens)
    label: int      # 0 = no person, 1 = person
    meta: dict = field(default_factory=dict)  # source id, person area fraction, ...


# ---------------------------------------------------------------------------------------
# Encoding one image (runs in worker processes; output depends only on the input bytes)

def encode_image(path: str, size: int, quality: int) -> tuple[bytes, int, int, int, int] | str:
    """-> (jpeg bytes, orig width, orig height, width, height), or a reason string if unreadable."""
    from PIL import Image, ImageOps, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            orig_w, orig_h = im.size
            im = im.convert("RGB")  # grayscale, CMYK, palette, alpha -> RGB
    except FileNotFoundError:
        return "missing file"
    except UnidentifiedImageError:
        return "not an image"
    except (OSError, SyntaxError, ValueError) as e:
        return f"corrupt image ({str(e).splitlines()[0][:80]})"
    w, h = im.size
    short = min(w, h)
    if short > size:  # never upscale
        scale = size / short
        w, h = max(1, round(w * scale)), max(1, round(h * scale))
        im = im.resize((w, h), Image.BILINEAR, reducing_gap=None)
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


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def content_hash(manifest: dict) -> str:
    body = {k: v for k, v in manifest.items() if k != "content_hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class _ShardWriter:
    """Writes one split: rolls tars every `per_shard` samples, tmp name until complete."""

    def __init__(self, out: Path, split: str, per_shard: int):
        self.out, self.split, self.per_shard = out, split, per_shard
        self.shards: list[dict] = []
        self.rows: list[tuple] = []
        self._tar = None
        self._idx_lines: list[str] = []

    def add(self, jpeg: bytes, label: int, meta: dict, height: int, width: int) -> None:
        index = len(self.rows)
        if index % self.per_shard == 0:
            self._close()
            name = f"{self.split}-{len(self.shards):06d}.tar"
            self.shards.append({"file": name, "first": index, "count": 0})
            self._tmp = self.out / (name + ".tmp")
            self._tar = tarfile.open(self._tmp, "w", format=tarfile.USTAR_FORMAT)
        key = f"{index:0{KEY_DIGITS}d}"
        cls = str(label).encode()
        js = json.dumps(meta, sort_keys=True).encode()
        parts = []
        for ext, data in (("jpg", jpeg), ("cls", cls), ("json", js)):
            off = _tar_member(self._tar, f"{key}.{ext}", data)
            parts.append(f"{ext} {off} {len(data)} {key}.{ext}")
            if ext == "jpg":
                jpg_off = off
        self._idx_lines.append(" ".join(parts))
        self.shards[-1]["count"] += 1
        self.rows.append((label, height, width, len(self.shards) - 1, jpg_off, len(jpeg)))

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
        table = np.array(self.rows, dtype=SAMPLE_TABLE)
        table_file = f"{self.split}-samples.npy"
        np.save(self.out / table_file, table)
        labels = table["label"]
        return {
            "num_samples": len(table),
            "class_counts": {"0": int((labels == 0).sum()), "1": int((labels == 1).sum())},
            "shards": self.shards,
            "samples_file": table_file,
            "samples_sha256": file_sha256(self.out / table_file),
        }


def check_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"output path {out} is a file")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"output folder {out} exists; pass --overwrite to replace it")


def partial_dir(out: Path) -> Path:
    """Work happens here; the finished folder replaces `out` only at the end, so an
    interrupted run never destroys earlier output nor leaves a complete-looking folder."""
    tmp = out.parent / f".{out.name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
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
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    try:
        for split, items in splits.items():
            writer = _ShardWriter(out, split, samples_per_shard)
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
    manifest["content_hash"] = content_hash(manifest)
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(tmp, out / "manifest.json")
    commit_dir(out, final)
    return manifest


# ---------------------------------------------------------------------------------------
# Reading

class Split:
    """One split of a shard set: labels, stored sizes and random access to JPEG bytes."""

    def __init__(self, root: Path, name: str, entry: dict):
        self.name = name
        table = np.load(root / entry["samples_file"])
        self.labels = table["label"].astype(np.int64)
        self.heights = table["height"].astype(np.int32)
        self.widths = table["width"].astype(np.int32)
        self.shard = table["shard"].astype(np.int32)
        self.offsets = table["offset"].astype(np.int64)
        self.nbytes = table["nbytes"].astype(np.int64)
        self.tar_paths = [root / s["file"] for s in entry["shards"]]
        self.class_counts = entry["class_counts"]
        self._files: dict[int, object] = {}

    def __len__(self) -> int:
        return len(self.labels)

    def _file(self, shard: int):
        f = self._files.get(shard)
        if f is None:
            f = self._files[shard] = open(self.tar_paths[shard], "rb")
        return f

    def read_jpeg(self, i: int) -> bytes:
        f = self._file(int(self.shard[i]))
        f.seek(int(self.offsets[i]))
        return f.read(int(self.nbytes[i]))

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()

    def __getstate__(self):  # file handles stay behind when pickled to workers
        state = self.__dict__.copy()
        state["_files"] = {}
        return state


class ShardSet:
    """A shard folder with a complete manifest."""

    def __init__(self, root: Path, manifest: dict):
        self.root, self.manifest = root, manifest
        self.content_hash = manifest["content_hash"]
        self._splits: dict[str, Split] = {}

    @classmethod
    def open(cls, root) -> "ShardSet":
        root = Path(root)
        if not root.is_dir():
            raise UserError(f"shard folder not found: {root} (make it with `vwwfast shard`)")
        mf = root / "manifest.json"
        if not mf.is_file():
            raise UserError(f"{root} has no manifest.json: the shard run did not finish; "
                            f"run `vwwfast shard` again with --overwrite")
        try:
            manifest = json.loads(mf.read_text())
        except json.JSONDecodeError:
            raise UserError(f"{mf} is not valid JSON; run `vwwfast shard` again") from None
        if manifest.get("format_version") != FORMAT_VERSION:
            raise UserError(f"{root}: shard format {manifest.get('format_version')} is not "
                            f"{FORMAT_VERSION}; run `vwwfast shard` again")
        if content_hash(manifest) != manifest.get("content_hash"):
            raise UserError(f"{mf}: content hash does not match its contents (edited by hand?)")
        return cls(root, manifest)

    @property
    def split_names(self) -> list[str]:
        return list(self.manifest["splits"])

    def split(self, name: str) -> Split:
        if name not in self.manifest["splits"]:
            raise UserError(f"{self.root} has no split '{name}' (has: {', '.join(self.split_names)})")
        if name not in self._splits:
            self._splits[name] = Split(self.root, name, self.manifest["splits"][name])
        return self._splits[name]

    def require_both_classes(self, name: str) -> None:
        counts = self.manifest["splits"][name]["class_counts"]
        for c, label in (("0", "no-person"), ("1", "person")):
            if counts.get(c, 0) == 0:
                raise UserError(f"{self.root}: split '{name}' has no {label} samples; "
                                f"training needs both classes")


def print_summary(manifest: dict, out: Path, seconds: float) -> None:
    from vwwfast.progress import print_table
    rows = []
    total = 0
    for split, e in manifest["splits"].items():
        size = sum((out / s["file"]).stat().st_size for s in e["shards"])
        n = e["num_samples"]
        total += n
        skipped = sum(1 for s in manifest["skipped"] if s.get("split") == split)
        share = f"{e['class_counts']['1'] / n:.1%}" if n else "-"
        rows.append((split, n, share, len(e["shards"]), f"{size / 2**20:.1f} MiB", skipped))
    print_table(f"shards in {out} ({total / max(seconds, 1e-9):,.0f} img/s)",
                ["split", "samples", "person", "shards", "size", "skipped"], rows)
