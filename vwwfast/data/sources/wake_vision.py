"""Wake Vision (Banbury et al. 2024; Edge AI Foundation): person / no person on Open Images,
from its official CSVs and its images where they lie (`.tar.gz` archives or extracted JPEGs).

Labels: a row's `person` (1 / 0) in wake_vision_train_{quality,large}.csv (train),
wake_vision_validation.csv (val) and wake_vision_test.csv (test). person -1 leaves the row
out of the main set; in the test CSV a row with person -1 and far 1 is a far-away person
kept only for the `far` benchmark subset: sharded as a person, marked `distance_only`.
The labels were made on the central square crop of each image, so a shard set of Wake
Vision asks for it (manifest `view_defaults`): the val / test view is the centre crop and
training views are drawn inside it (docs/VIEWS.md says why).

Order: archives in natural order of their names, each archive's members in archive order
(a folder: file names in sorted order), whatever --workers is. A name listed in more than
one CSV is kept in the last of test, val, train (an image of the test set is never trained
on) and counted in the others.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vwwfast.data.shards import (
    FORMAT_VERSION,
    SPLITS,
    ShardWriter,
    check_out_dir,
    partial_dir,
    write_manifest,
)
from vwwfast.data.sources import archives as A
from vwwfast.errors import UserError
from vwwfast.files import file_sha256, worker_pool
from vwwfast.provenance import __version__

BENCHMARK_HEADER = (
    "filename", "person", "depiction", "body_part", "predominantly_female", "predominantly_male",
    "gender_unknown", "young", "middle_age", "older", "age_unknown", "near", "medium_distance",
    "far", "dark", "normal_lighting", "bright", "person_depiction", "non-person_depiction",
    "non-person_non-depiction")
CSVS = {  # name -> (file, header)
    "large": ("wake_vision_train_large.csv", ("filename", "person")),
    "quality": ("wake_vision_train_quality.csv", ("filename", "person", "depiction", "body_part")),
    "val": ("wake_vision_validation.csv", BENCHMARK_HEADER),
    "test": ("wake_vision_test.csv", BENCHMARK_HEADER),
}
PERSON_SUBSETS = ("predominantly_female", "predominantly_male", "gender_unknown", "young",
                  "middle_age", "older", "age_unknown", "near", "medium_distance", "far", "dark",
                  "normal_lighting", "bright")
NO_PERSON_SUBSETS = ("person_depiction", "non-person_depiction", "non-person_non-depiction")
SUBSETS = PERSON_SUBSETS + NO_PERSON_SUBSETS
DISTANCE_ONLY = "distance_only"  # the extra column of every Wake Vision split
LABEL_RULE = ("Wake Vision CSV column 'person' (1 person, 0 no person; -1 rows left out); in the "
              "test CSV, rows with person -1 and far 1 are sharded as persons marked "
              "distance_only, for the 'far' benchmark subset only")
VIEW_DEFAULTS = {"val_center_crop": True, "train": {"region": "center"},
                 "why": "Wake Vision's labels were made on the central square crop of each image"}
MAIN, DISTANCE, EXCLUDED = 0, 1, 2  # kinds of row
VALUES = {"1": 1, "0": 0, "-1": -1, "1.0": 1, "0.0": 0, "-1.0": -1}
FILES_PER_UNIT = 4096  # extracted JPEGs per worker task
CHUNK_ROWS = 1 << 20


# ---------------------------------------------------------------------------------------
# The CSVs

@dataclass
class CsvTable:
    split: str
    file: str
    columns: list        # every column but filename, in the CSV's order
    names: np.ndarray    # bytes, in file order
    values: np.ndarray   # int8 [n, len(columns)]


def read_csv(path: Path, split: str, header: tuple) -> CsvTable:
    """A label CSV, streamed: names as a bytes array, values as int8; one line names what is
    wrong (missing file, other header, a value not 1 / 0 / -1)."""
    want = ",".join(header)
    if not path.is_file():
        raise UserError(f"{path} not found: --wake-vision DIR needs it, with the header '{want}'")
    names: list[bytes] = []
    values: list[int] = []
    chunks: list[tuple[np.ndarray, np.ndarray]] = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        first = next(reader, None)
        if first is None or tuple(h.strip() for h in first) != header:
            got = ",".join(first) if first else "nothing"
            raise UserError(f"{path}: the header is '{got[:200]}', expected '{want}'")
        k = len(header)
        for row in reader:
            if not row:
                continue
            if len(row) != k:
                raise UserError(f"{path}, line {reader.line_num}: {len(row)} fields, expected {k} "
                                f"('{want}')")
            if not row[0].strip():
                raise UserError(f"{path}, line {reader.line_num}: no file name")
            try:
                values.extend(VALUES[v.strip()] for v in row[1:])
            except KeyError:
                bad = next(v for v in row[1:] if v.strip() not in VALUES)
                raise UserError(f"{path}, line {reader.line_num}: value '{bad[:40]}' is not 1, 0 "
                                f"or -1") from None
            names.append(row[0].strip().encode("utf-8", "surrogateescape"))
            if len(names) == CHUNK_ROWS:
                chunks.append((np.array(names, dtype=bytes), np.array(values, np.int8)))
                names, values = [], []
    chunks.append((np.array(names, dtype=bytes if names else "S1"), np.array(values, np.int8)))
    all_names = np.concatenate([c[0] for c in chunks])
    all_values = np.concatenate([c[1] for c in chunks]).reshape(len(all_names), k - 1)
    return CsvTable(split, path.name, list(header[1:]), all_names, all_values)


def row_kinds(table: CsvTable) -> np.ndarray:
    """MAIN (person 0 / 1), DISTANCE (test only: person -1 and far 1) or EXCLUDED."""
    person = table.values[:, 0]
    kind = np.where(person >= 0, MAIN, EXCLUDED).astype(np.uint8)
    if table.split == "test" and "far" in table.columns:
        far = table.values[:, table.columns.index("far")]
        kind[(person == -1) & (far == 1)] = DISTANCE
    return kind


@dataclass
class Labels:
    """Every row of the CSVs read, one entry per file name (sorted): its split, row and kind."""
    tables: dict          # split -> CsvTable (names dropped once merged here)
    names: np.ndarray     # sorted, unique
    split: np.ndarray     # uint8 index into SPLITS
    row: np.ndarray       # int64 row of tables[split]
    kind: np.ndarray      # uint8 MAIN / DISTANCE / EXCLUDED
    not_sharded: list     # rows dropped while merging (duplicates)

    @property
    def lookup(self) -> A.Lookup:
        return A.Lookup(self.names, self.kind != EXCLUDED)


def merge_tables(tables: dict) -> Labels:
    order_splits = [s for s in SPLITS if s in tables]
    names = np.concatenate([tables[s].names for s in order_splits])
    split = np.concatenate([np.full(len(tables[s].names), SPLITS.index(s), np.uint8)
                            for s in order_splits])
    row = np.concatenate([np.arange(len(tables[s].names)) for s in order_splits])
    kind = np.concatenate([row_kinds(tables[s]) for s in order_splits])
    for s in order_splits:
        tables[s].names = None
    # by name; among equal names the later split first (test, val, train), then the CSV row
    order = np.lexsort((row, -split.astype(np.int16), names))
    names, split, row, kind = names[order], split[order], row[order], kind[order]
    first = np.ones(len(names), bool)
    first[1:] = names[1:] != names[:-1]
    winner = np.maximum.accumulate(np.where(first, np.arange(len(names)), 0))
    not_sharded: list[dict] = []
    for code, s in enumerate(SPLITS):
        if s not in tables:
            continue
        dropped = ~first & (split == code)
        twice = dropped & (split[winner] == code)
        elsewhere = dropped & ~twice
        _count(not_sharded, s, f"listed more than once in {tables[s].file} (the first row kept)",
               names[twice])
        for other in order_splits:
            hit = elsewhere & (split[winner] == SPLITS.index(other))
            _count(not_sharded, s, f"also listed in {tables[other].file} (kept there)", names[hit])
    return Labels(tables, names[first], split[first], row[first], kind[first], not_sharded)


def _count(out: list, split: str | None, reason: str, names) -> None:
    """A `not_sharded` entry: how many, and the first FIRST_LISTED names."""
    n = len(names)
    if n:
        out.append({"split": split, "reason": reason, "count": int(n),
                    "first": [_text(x) for x in names[:A.FIRST_LISTED]]})


def _text(name) -> str:
    return name.decode("utf-8", "surrogateescape") if isinstance(name, bytes) else str(name)


# ---------------------------------------------------------------------------------------
# Benchmark subsets (used by `vwwfast eval --benchmark`)

def main_mask(columns: dict) -> np.ndarray:
    """The samples of the main set: every one but the distance-only rows."""
    return columns[DISTANCE_ONLY] == 0


def subset_masks(columns: dict, labels: np.ndarray) -> dict[str, np.ndarray]:
    """The 16 benchmark subsets as masks over a split's samples: a person subset holds the
    main-set persons with that column 1 (`far` also every distance-only row), a no-person
    subset the main-set no-person images with that column 1."""
    missing = [c for c in SUBSETS + (DISTANCE_ONLY,) if c not in columns]
    if missing:
        raise KeyError(", ".join(missing))
    main = main_mask(columns)
    labels = np.asarray(labels)
    out = {}
    for name in PERSON_SUBSETS:
        out[name] = main & (columns[name] == 1) & (labels == 1)
    out["far"] |= columns[DISTANCE_ONLY] == 1
    for name in NO_PERSON_SUBSETS:
        out[name] = main & (columns[name] == 1) & (labels == 0)
    return out


# ---------------------------------------------------------------------------------------
# Where the images are

def _natural(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def find_archives(root: Path) -> list[Path]:
    return sorted((p for p in root.iterdir() if p.name.endswith(".tar.gz") and p.is_file()),
                  key=lambda p: _natural(p.name))


def folder_units(root: Path, labels: Labels, salt: str, skip: Path) -> tuple[list, dict]:
    """Units of extracted JPEGs (`*.jpg`, `*.jpeg` anywhere under root, in lookup order) and
    what the walk found besides: no_csv, duplicates."""
    lookup = labels.lookup
    where = np.full(len(labels.names), -1, np.int32)
    dirs: list[str] = []
    no_csv, duplicates = 0, []
    no_csv_first: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and Path(dirpath, d).resolve() != skip)
        jpegs = sorted(f for f in filenames if f.lower().endswith((".jpg", ".jpeg")))
        if not jpegs:
            continue
        dirs.append(dirpath)
        for f in jpegs:
            pos = lookup.find(f.encode("utf-8", "surrogateescape"))
            if pos < 0:
                no_csv += 1
                if len(no_csv_first) < A.FIRST_LISTED:
                    no_csv_first.append(f)
            elif where[pos] >= 0:
                duplicates.append((int(labels.split[pos]), str(Path(dirpath, f))))
            else:
                where[pos] = len(dirs) - 1
    todo = np.flatnonzero((where >= 0) & (labels.kind != EXCLUDED))
    units = []
    for k, start in enumerate(range(0, len(todo), FILES_PER_UNIT)):
        part = todo[start:start + FILES_PER_UNIT]
        files = [(int(p), os.path.join(dirs[where[p]], _text(labels.names[p]))) for p in part]
        units.append(A.files_unit(f"files {k + 1}", files, salt))
    found = {"no_csv": no_csv, "no_csv_first": sorted(no_csv_first), "duplicates": duplicates,
             "files": int((where >= 0).sum())}
    return units, found


# ---------------------------------------------------------------------------------------
# `vwwfast shard --wake-vision DIR`

def write_wake_vision(root, out_dir, *, train: str = "quality", size: int = 224,
                      samples_per_shard: int = 1000, quality: int = 90, workers: int = 1,
                      overwrite: bool = False, allow_damaged: bool = False,
                      show_progress: bool = True) -> dict:
    """Shards of train (the `train` CSV), val and test; returns the manifest."""
    from vwwfast.progress import info, warn
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"Wake Vision folder not found: {root}")
    if train not in ("quality", "large"):
        raise UserError(f"--wake-vision-train must be 'quality' or 'large', got '{train}'")
    if not 1 <= quality <= 100:
        raise UserError(f"--quality must be within 1..100, got {quality}")
    if size < 8 or samples_per_shard < 1:
        raise UserError("--size must be at least 8 and --samples-per-shard at least 1")
    sources = {"train": CSVS[train], "val": CSVS["val"], "test": CSVS["test"]}
    for split, (file, header) in sources.items():  # every file before reading any
        if not (root / file).is_file():
            raise UserError(f"{root / file} not found: --wake-vision DIR needs it, with the header "
                            f"'{','.join(header)}'")
    final = Path(out_dir)
    check_out_dir(final, overwrite)
    csv_sha = {file: file_sha256(root / file) for file, _ in sources.values()}
    tables = {split: read_csv(root / file, split, header) for split, (file, header) in sources.items()}
    labels = merge_tables(tables)
    out = partial_dir(final, keep=("spill",))
    spill_dir = out / "spill"
    spill_dir.mkdir(exist_ok=True)
    salt = f"{__version__}|{train}|{size}|{quality}|" + "|".join(f"{k}={v}" for k, v in sorted(csv_sha.items()))
    lookup_dir = labels.lookup.save(out / "lookup")
    found_archives = find_archives(root)
    if found_archives:
        units = [A.archive_unit(p, salt) for p in found_archives]
        walk: dict = {"no_csv": 0, "no_csv_first": [], "duplicates": [], "files": 0}
        info(f"reading {len(units)} archives in {root} ({sum(u.nbytes for u in units) / 2**30:,.1f} GiB), "
             f"streamed")
    else:
        units, walk = folder_units(root, labels, salt, final.resolve())
        info(f"no .tar.gz archives in {root}: reading {walk['files']:,} extracted JPEGs found under it")
    A.remove_stale(spill_dir, {u.key for u in units})
    summaries = _read_units(units, spill_dir, lookup_dir, size, quality, workers, show_progress)
    damaged = [summaries[u.key]["damage"] for u in units if summaries[u.key]["damage"]]
    if damaged and not allow_damaged:
        d = damaged[0]
        more = f" (and {len(damaged) - 1} more archive(s))" if len(damaged) > 1 else ""
        raise UserError(
            f"{root / d['archive']} is damaged after {_images(d['members_before'])} (last complete: "
            f"{d['last_complete'] or 'none'}; {d['error']}){more}; the images read before the damage "
            f"and every other archive's are kept in {out}: replace the archive and run the same "
            f"command (only what changed is read again), or add --allow-damaged to shard without "
            f"the rest of it")
    for d in damaged:
        warn(f"{d['archive']} is damaged after {_images(d['members_before'])} ({d['error']}): "
             f"the images before the damage are sharded, the rest of it is not (manifest `damaged`)")
    entries, skipped, not_sharded = _merge(units, summaries, labels, out, spill_dir,
                                           samples_per_shard, show_progress)
    for split, path in walk["duplicates"]:
        skipped.append({"split": SPLITS[split], "file": path, "reason": "a second file of this name"})
    no_csv = walk["no_csv"] + sum(s["no_csv"] for s in summaries.values())
    first = sorted(set(walk["no_csv_first"]).union(*(s["no_csv_first"] for s in summaries.values())))
    files = ", ".join(file for file, _ in sources.values())
    _count(not_sharded, None, f"image in none of the CSVs read ({files})",
           first if no_csv else [])
    if no_csv:
        not_sharded[-1]["count"] = int(no_csv)
    shutil.rmtree(spill_dir)
    shutil.rmtree(out / "lookup")
    source = {"kind": "wake_vision", "root": str(root), "train": train,
              "images": "archives" if found_archives else "folder",
              "csvs": csv_sha,
              "archives": [{"file": p.name, "bytes": p.stat().st_size} for p in found_archives]}
    manifest = {
        "format_version": FORMAT_VERSION, "vwwfast_version": __version__, "source": source,
        "options": {"size": size, "samples_per_shard": samples_per_shard, "quality": quality},
        "label_rule": LABEL_RULE, "splits": entries, "skipped": skipped,
        "not_sharded": not_sharded, "damaged": damaged, "view_defaults": VIEW_DEFAULTS,
    }
    return write_manifest(out, final, manifest)


def _read_units(units, spill_dir: Path, lookup_dir: str, size: int, quality: int, workers: int,
                show_progress: bool) -> dict:
    """Each unit's spill summary: finished ones of an earlier run as they are, the rest read
    by `workers` processes (at most two units each in flight)."""
    from vwwfast.progress import bar, info
    summaries, todo = {}, []
    for u in units:
        done = A.finished_summary(spill_dir, u)
        if done is not None:
            summaries[u.key] = done
        else:
            todo.append(u)
    if summaries:
        info(f"resuming: {len(summaries)} of {len(units)} units were read by an earlier run "
             f"({spill_dir.parent})")
    archive = bool(units) and units[0].archive is not None
    total = sum(u.nbytes for u in todo)
    args = (lookup_dir, str(spill_dir), size, quality)
    pool = worker_pool(workers)
    try:
        with bar("read", total, unit="B" if archive else "img", enabled=show_progress) as advance:
            if pool is None:
                for u in todo:
                    summaries[u.key] = A.read_unit(u, *args)
                    advance(u.nbytes)
                return summaries
            pending: dict[Future[dict], A.Unit] = {}
            queue, shown, finished = iter(todo), 0, 0
            while True:
                while len(pending) < 2 * workers:
                    u = next(queue, None)
                    if u is None:
                        break
                    pending[pool.submit(A.read_unit, u, *args)] = u
                if not pending:
                    return summaries
                completed, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for f in completed:
                    u = pending.pop(f)
                    summaries[u.key] = f.result()
                    finished += u.nbytes
                now = finished + (sum(A.progress_of(spill_dir, u) for u in pending.values())
                                  if archive else 0)
                if now > shown:
                    advance(now - shown)
                    shown = now
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)


def _merge(units, summaries, labels: Labels, out: Path, spill_dir: Path, per_shard: int,
           show_progress: bool):
    """The spills, in unit order, into one ShardWriter per split; each spill removed once
    copied. Returns (split entries, skipped, not_sharded)."""
    from vwwfast.progress import bar
    writers = {s: ShardWriter(out, s, per_shard, labels.tables[s].columns + [DISTANCE_ONLY])
               for s in SPLITS}
    seen = np.zeros(len(labels.names), bool)
    skipped: list[dict] = []
    twice: dict[str, list[str]] = {s: [] for s in SPLITS}
    total = sum(summaries[u.key]["encoded"] + summaries[u.key]["unreadable"] for u in units)
    with bar("shard", total, enabled=show_progress) as advance:
        for u in units:
            rec = spill_dir / f"{u.key}.rec"
            for pos, status, ow, oh, w, h, payload in A.spill_records(rec):
                advance(1)
                s = SPLITS[labels.split[pos]]
                name = _text(labels.names[pos])
                if status == A.UNREADABLE:
                    skipped.append({"split": s, "file": name, "reason": payload.decode()})
                    seen[pos] = True
                    continue
                if seen[pos]:
                    twice[s].append(name)
                    continue
                seen[pos] = True
                table = labels.tables[s]
                values = table.values[labels.row[pos]]
                distance = labels.kind[pos] == DISTANCE
                meta = {"file": name, **dict(zip(table.columns, values.tolist())),
                        DISTANCE_ONLY: bool(distance), "orig_width": ow, "orig_height": oh}
                writers[s].add(payload, 1 if distance else int(values[0]), meta, h, w,
                               columns=np.append(values, np.int8(distance)))
            rec.unlink()
            (spill_dir / f"{u.key}.json").unlink(missing_ok=True)
    not_sharded = list(labels.not_sharded)
    for code, s in enumerate(SPLITS):
        mine = labels.split == code
        _count(not_sharded, s, f"person -1 in {labels.tables[s].file} (not in the main set)",
               labels.names[mine & (labels.kind == EXCLUDED)])
        _count(not_sharded, s, "no image of this name in the archives / folder",
               labels.names[mine & (labels.kind != EXCLUDED) & ~seen])
        _count(not_sharded, s, "a second image of this name (the first kept)", twice[s])
    return {s: w.finish() for s, w in writers.items()}, skipped, not_sharded


def _images(n: int) -> str:
    return f"{n:,} image" + ("" if n == 1 else "s")
