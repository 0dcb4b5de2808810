"""Images read where they lie, a unit at a time: a `.tar.gz` archive streamed (never extracted,
member names taken as data), or a run of files in a folder. Each unit is encoded by one worker
into a spill file; spills are merged into shards in unit order, so the shards do not depend
on how many workers there are.

A unit's images are matched by file name against a sorted table of names (`Lookup`): a hit
whose entry is to be kept is decoded and re-encoded (`shards.encode_image`, with libjpeg's
draft scaling), any other hit is passed over, a miss is counted ("in no CSV"). Memory per
worker is one image and the decoder's buffers, whatever the archive's size.

Spill layout (`spill/<key>.rec`, then `spill/<key>.json` written last): records of
RECORD header (lookup position, status, original width and height, stored width and height,
payload bytes) + payload: the JPEG (status OK) or the reason it could not be read (status
UNREADABLE). The key hashes everything the records depend on (the unit's file names, sizes
and times, the encoding options, the labels' hash), so a spill left by an interrupted run is
used again only for the very same work; anything else in spill/ is removed.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import struct
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vwwfast.files import write_atomic

SPILL_FORMAT = 1
RECORD = struct.Struct("<iBiiiiI")  # position, status, orig w, orig h, w, h, payload bytes
OK, UNREADABLE = 0, 1
FIRST_LISTED = 100  # names listed per reason in the manifest; the rest are counted
MAX_IMAGE_BYTES = 64 << 20  # a member larger than this is no photo: skipped unread
PROGRESS_EVERY = 32 << 20  # compressed bytes between progress notes of a worker
STREAM_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError)


@dataclass(frozen=True)
class Unit:
    """One worker's share: an archive (`archive` set), or files (`files`: lookup position
    and path of each)."""
    name: str
    key: str
    archive: str | None = None
    files: tuple = ()
    nbytes: int = 0  # what the progress bar counts: compressed bytes, or files


def archive_unit(path: Path, salt: str) -> Unit:
    st = path.stat()
    key = _key({"archive": path.name, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}, salt)
    return Unit(path.name, key, archive=str(path), nbytes=st.st_size)


def files_unit(name: str, files: list[tuple[int, str]], salt: str) -> Unit:
    ident = []
    for pos, path in files:
        try:
            st = os.stat(path)
            ident.append((pos, path, st.st_size, st.st_mtime_ns))
        except OSError:
            ident.append((pos, path, -1, -1))
    return Unit(name, _key({"files": ident}, salt), files=tuple(files), nbytes=len(files))


def _key(identity: dict, salt: str) -> str:
    text = json.dumps({"spill_format": SPILL_FORMAT, "unit": identity, "salt": salt}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


# ---------------------------------------------------------------------------------------
# The name table, shared with workers as memory-mapped .npy files

class Lookup:
    """Sorted file names (bytes) and whether each is to be encoded."""

    def __init__(self, names: np.ndarray, keep: np.ndarray):
        self.names, self.keep = names, keep
        self.width = names.dtype.itemsize

    def find(self, name: bytes) -> int:
        """Position of `name`, or -1."""
        if not name or len(name) > self.width:
            return -1
        i = int(np.searchsorted(self.names, name))
        return i if i < len(self.names) and self.names[i] == name else -1

    def save(self, folder: Path) -> str:
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "names.npy", self.names)
        np.save(folder / "keep.npy", self.keep)
        return str(folder)


_LOOKUPS: dict[str, Lookup] = {}


def _lookup(folder: str) -> Lookup:
    """A worker's lookup, mapped once per process (the pages are shared between workers)."""
    if folder not in _LOOKUPS:
        _LOOKUPS[folder] = Lookup(np.load(Path(folder) / "names.npy", mmap_mode="r"),
                                  np.load(Path(folder) / "keep.npy", mmap_mode="r"))
    return _LOOKUPS[folder]


# ---------------------------------------------------------------------------------------
# Reading one unit into its spill (runs in a worker)

class _Spill:
    def __init__(self, folder: Path, unit: Unit):
        self.final = folder / f"{unit.key}.rec"
        self.tmp = folder / f"{unit.key}.rec.tmp"
        self.summary_path = folder / f"{unit.key}.json"
        self.progress_path = folder / f"{unit.key}.progress"
        self.f = open(self.tmp, "wb")
        self.counts = {"members": 0, "encoded": 0, "unreadable": 0, "passed_over": 0, "no_csv": 0}
        self.no_csv_first: list[bytes] = []  # sorted
        self.last_progress = 0

    def record(self, pos: int, res) -> None:
        if isinstance(res, str):
            payload, dims = res.encode(), (0, 0, 0, 0)
            status = UNREADABLE
            self.counts["unreadable"] += 1
        else:
            payload, dims = res[0], res[1:]
            status = OK
            self.counts["encoded"] += 1
        self.f.write(RECORD.pack(pos, status, *dims, len(payload)))
        self.f.write(payload)

    def no_csv(self, name: bytes) -> None:
        """Counted; the FIRST_LISTED smallest names kept (whatever order the archive has)."""
        self.counts["no_csv"] += 1
        first = self.no_csv_first
        if len(first) < FIRST_LISTED or name < first[-1]:
            bisect.insort(first, name)
            del first[FIRST_LISTED:]

    def progress(self, done: int) -> None:
        if done - self.last_progress >= PROGRESS_EVERY:
            self.last_progress = done
            self.progress_path.write_text(str(done))

    def finish(self, unit: Unit, damage: dict | None) -> dict:
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        os.replace(self.tmp, self.final)
        summary = {"unit": unit.name, "key": unit.key, **self.counts,
                   "no_csv_first": [n.decode("utf-8", "replace") for n in self.no_csv_first],
                   "damage": damage, "spill_bytes": self.final.stat().st_size}
        write_atomic(self.summary_path, json.dumps(summary, sort_keys=True))
        self.progress_path.unlink(missing_ok=True)
        return summary


def read_unit(unit: Unit, lookup_dir: str, spill_dir: str, size: int, quality: int) -> dict:
    """Encode every kept image of `unit` into its spill; returns the spill's summary."""
    from vwwfast.data.shards import encode_image
    lookup = _lookup(lookup_dir)
    spill = _Spill(Path(spill_dir), unit)
    try:
        if unit.archive is None:
            for pos, path in unit.files:
                spill.counts["members"] += 1
                spill.record(pos, encode_image(path, size, quality, draft=True))
            return spill.finish(unit, None)
        return spill.finish(unit, _read_archive(unit.archive, lookup, spill, size, quality))
    except BaseException:
        spill.f.close()
        spill.tmp.unlink(missing_ok=True)
        raise


def _read_archive(path: str, lookup: Lookup, spill: _Spill, size: int, quality: int) -> dict | None:
    """Stream one .tar.gz; returns None, or what was damaged and where."""
    from vwwfast.data.shards import encode_image
    last, good = None, 0
    with open(path, "rb") as raw:
        try:
            tar = tarfile.open(fileobj=raw, mode="r|gz", bufsize=1 << 20)
            while True:
                member = tar.next()
                if member is None:
                    break
                # a stream keeps every header it read: drop them (memory)
                tar.members = []  # type: ignore[attr-defined]  # TarFile's, not in typeshed's stub
                spill.progress(raw.tell())
                if not member.isfile():
                    continue
                # the member's name is data: its last part is looked up, never used as a path
                name = member.name.rsplit("/", 1)[-1].encode("utf-8", "surrogateescape")
                spill.counts["members"] += 1
                pos = lookup.find(name)
                if pos < 0:
                    spill.no_csv(name)
                elif not lookup.keep[pos]:
                    spill.counts["passed_over"] += 1
                elif member.size > MAX_IMAGE_BYTES:
                    spill.record(pos, f"larger than {MAX_IMAGE_BYTES >> 20} MiB ({member.size:,} bytes)")
                else:
                    stream = tar.extractfile(member)
                    assert stream is not None, "extractfile gives a regular file's stream"
                    data = stream.read()
                    if len(data) != member.size:
                        raise tarfile.ReadError("unexpected end of data")
                    spill.record(pos, encode_image(data, size, quality, draft=True))
                last, good = name, good + 1
        except STREAM_ERRORS as e:
            return {"archive": Path(path).name, "error": f"{type(e).__name__}: {e}"[:200],
                    "members_before": good,
                    "last_complete": last.decode("utf-8", "replace") if last else None,
                    "compressed_offset": raw.tell()}
    return None


def spill_records(path: Path):
    """(position, status, orig w, orig h, w, h, payload) of each record, in order."""
    with open(path, "rb", buffering=1 << 20) as f:
        while True:
            head = f.read(RECORD.size)
            if not head:
                return
            if len(head) != RECORD.size:
                raise OSError(f"{path}: truncated spill record")
            *fields, n = RECORD.unpack(head)
            payload = f.read(n)
            if len(payload) != n:
                raise OSError(f"{path}: truncated spill record")
            yield (*fields, payload)


def finished_summary(spill_dir: Path, unit: Unit) -> dict | None:
    """The summary of a spill that an earlier run finished for the same work, else None."""
    js, rec = spill_dir / f"{unit.key}.json", spill_dir / f"{unit.key}.rec"
    try:
        summary = json.loads(js.read_text())
        if summary.get("key") == unit.key and rec.stat().st_size == summary["spill_bytes"]:
            return summary
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    return None


def progress_of(spill_dir: Path, unit: Unit) -> int:
    """Compressed bytes a worker has read of `unit` so far (as it last noted)."""
    try:
        return int((spill_dir / f"{unit.key}.progress").read_text() or 0)
    except (OSError, ValueError):
        return 0


def remove_stale(spill_dir: Path, keys: set[str]) -> None:
    """Everything in spill/ that is not a finished spill of this run's units."""
    for p in spill_dir.iterdir():
        stem = p.name.split(".", 1)[0]
        if stem not in keys or p.name.endswith((".tmp", ".progress")):
            p.unlink(missing_ok=True)
