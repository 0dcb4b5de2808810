"""Wake Vision: the official CSVs and archives into shards, the test split and its benchmark
subsets, the centre-crop views. The fixture is built here in the distributed layout: official
headers, flat JPEGs in .tar.gz archives, -1 rows, distance-only rows, unlabeled images and
rows with no image."""

from __future__ import annotations

import csv
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from vwwfast.cli import main
from vwwfast.data.shards import ShardSet, verify_shards
from vwwfast.errors import UserError

FULL = ("filename,person,depiction,body_part,predominantly_female,predominantly_male,gender_unknown,"
        "young,middle_age,older,age_unknown,near,medium_distance,far,dark,normal_lighting,bright,"
        "person_depiction,non-person_depiction,non-person_non-depiction")
COLS = FULL.split(",")[1:]
PERSON_SUBSETS = ["predominantly_female", "predominantly_male", "gender_unknown", "young",
                  "middle_age", "older", "age_unknown", "near", "medium_distance", "far", "dark",
                  "normal_lighting", "bright"]
NO_PERSON_SUBSETS = ["person_depiction", "non-person_depiction", "non-person_non-depiction"]


def flickr(i: int, tag: str = "") -> str:
    return f"{1000 + i}_{tag}{i:04x}cafe_o.jpg"


class Fixture:
    """Writes DIR and says what each split must hold, in order."""

    def __init__(self, root: Path, images: list[bytes]):
        self.root, self.images = root, images
        root.mkdir(parents=True, exist_ok=True)
        self.used = 0
        rng = np.random.default_rng(0)
        # train: quality and large label the same images differently; a_? names
        q = [(flickr(i, "a"), p) for i, p in enumerate([1, 0, -1, 1, 0, 1, 0, 1])]
        large = [(flickr(i, "a"), p) for i, p in enumerate([1, 0, 1, 1, 1, 0, 0, 1])]
        large.append((flickr(8, "a"), 0))          # only in the large CSV
        self.quality, self.large = dict(q), dict(large)
        no_image = {flickr(3, "a")}                # listed, never in an archive
        self._csv("wake_vision_train_quality.csv", "filename,person,depiction,body_part",
                  [(n, p, 0, int(p == 1)) for n, p in q])
        self._csv("wake_vision_train_large.csv", "filename,person", large)
        # val: mains, a -1 row and a -1 far 1 row (left out: distance-only rows are test's)
        val = [(flickr(i, "b"), p, 0) for i, p in enumerate([1, 0, 1, 0, -1])] + [(flickr(5, "b"), -1, 1)]
        self.val = {n: (p, far) for n, p, far in val}
        self._csv("wake_vision_validation.csv", FULL, [self._full(n, p, far, rng) for n, p, far in val])
        # test: 30 rows; person -1 with far 1 = distance-only, with far 0 = left out
        persons = [1, 0] * 11 + [-1, -1, -1, -1, -1, 1, 0, 1]
        fars = [None] * 22 + [1, 1, 0, 1, 0, None, None, None]
        test = [(flickr(i, "c"), p, f) for i, (p, f) in enumerate(zip(persons, fars))]
        no_image.add(flickr(29, "c"))
        self.test_rows = {}
        rows = []
        for n, p, f in test:
            row = self._full(n, p, f, rng)
            self.test_rows[n] = dict(zip(COLS, row[1:]))
            rows.append(row)
        self._csv("wake_vision_test.csv", FULL, rows)
        self.no_image = no_image
        # archives (natural order: train-2, train-10, train-11, where names sort 10, 11, 2);
        # members in a chosen order
        a = [n for n, _ in large if n not in no_image]
        self.members = {
            "wake-vision-train-2.tar.gz": [a[1], a[0], "90_unlisted_o.jpg", a[2]],
            "wake-vision-train-10.tar.gz": [a[5], a[4], a[6], a[7]],
            "wake-vision-train-11.tar.gz": [a[3], "91_unlisted_o.jpg"],
            "wake-vision-validation.tar.gz": [n for n, _, _ in reversed(val)] + ["92_unlisted_o.jpg"],
            "wake-vision-test.tar.gz": [n for n, _, _ in test if n not in no_image][::-1],
        }
        for archive, names in self.members.items():
            self._archive(archive, names)

    def _image(self) -> bytes:
        self.used += 1
        return self.images[(self.used - 1) % len(self.images)]

    def _full(self, name, person, far, rng) -> tuple:
        vals = {c: int(rng.random() < 0.35) for c in COLS}
        vals["person"] = person
        if far is not None:
            vals["far"] = far
        return (name,) + tuple(vals[c] for c in COLS)

    def _csv(self, file: str, header: str, rows) -> None:
        text = header + "\n" + "".join(",".join(str(v) for v in r) + "\n" for r in rows)
        (self.root / file).write_text(text)

    def _archive(self, file: str, names: list[str]) -> None:
        with tarfile.open(self.root / file, "w:gz") as tar:
            for name in names:
                data = self._image()
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))

    def expected(self, train: str = "quality") -> dict[str, list[tuple]]:
        """split -> [(file, label, distance_only)] in shard order."""
        labels = self.quality if train == "quality" else self.large
        out = {"train": [], "val": [], "test": []}
        for archive, names in self.members.items():   # already in natural order
            for n in names:
                if n in labels and labels[n] >= 0:
                    out["train"].append((n, labels[n], False))
                elif n in self.val and self.val[n][0] >= 0:
                    out["val"].append((n, self.val[n][0], False))
                elif n in self.test_rows:
                    r = self.test_rows[n]
                    if r["person"] >= 0:
                        out["test"].append((n, r["person"], False))
                    elif r["far"] == 1:
                        out["test"].append((n, 1, True))
        return out


@pytest.fixture(scope="module")
def jpegs(synth_shards):
    """Real-looking photos: the synthetic scenes behind synth_shards, as JPEG bytes."""
    files = sorted((synth_shards.parent / "coco").rglob("*.jpg"))[:60]
    return [f.read_bytes() for f in files]


@pytest.fixture(scope="module")
def wv(tmp_path_factory, jpegs):
    return Fixture(tmp_path_factory.mktemp("wv") / "wake-vision", jpegs)


@pytest.fixture(scope="module")
def wv_shards(wv, tmp_path_factory):
    out = tmp_path_factory.mktemp("wvs") / "shards"
    assert main(["shard", "--wake-vision", str(wv.root), "--out", str(out), "--size", "64",
                 "--samples-per-shard", "4"]) == 0
    return out


def held(shards_dir: Path) -> dict[str, list[tuple]]:
    """split -> [(file, label, distance_only)] read back from the tars, in index order."""
    from vwwfast.deploy.evaluate import sample_meta
    from vwwfast.records.predictions import sample_key
    s = ShardSet.open(shards_dir)
    out = {}
    for name in s.split_names:
        sp = s.split(name)
        meta = sample_meta(sp)
        out[name] = [(meta[sample_key(i)]["file"], int(sp.labels[i]), meta[sample_key(i)]["distance_only"])
                     for i in range(len(sp))]
    return out


def test_shards_hold_exactly_the_csv_labels_and_splits(wv, wv_shards):
    got = held(wv_shards)
    assert got == wv.expected("quality")
    assert any(d for _, _, d in got["test"])    # the test split holds the distance-only rows
    m = json.loads((wv_shards / "manifest.json").read_text())
    assert m["source"]["kind"] == "wake_vision" and m["source"]["train"] == "quality"
    import hashlib
    for file in ("wake_vision_train_quality.csv", "wake_vision_validation.csv", "wake_vision_test.csv"):
        assert m["source"]["csvs"][file] == hashlib.sha256((wv.root / file).read_bytes()).hexdigest()
    counted = {(c["split"], c["reason"].split(" ")[0]): c for c in m["not_sharded"]}
    assert counted[("train", "person")]["first"] == [flickr(2, "a")]       # person -1
    assert counted[("train", "no")]["first"] == [flickr(3, "a")]           # no image
    assert counted[("test", "no")]["first"] == [flickr(29, "c")]
    assert counted[("val", "person")]["count"] == 2                        # -1, and -1 far 1
    excluded_test = [n for n, r in wv.test_rows.items() if r["person"] == -1 and r["far"] == 0]
    assert counted[("test", "person")]["first"] == sorted(excluded_test)
    unlisted = counted[(None, "image")]
    assert unlisted["count"] == 4 and flickr(8, "a") in unlisted["first"]  # 3 unlisted + large-only
    assert m["view_defaults"]["val_center_crop"] is True


def test_each_sample_keeps_its_file_name_and_every_csv_column(wv, wv_shards):
    from vwwfast.deploy.evaluate import sample_meta
    from vwwfast.records.predictions import sample_key
    s = ShardSet.open(wv_shards)
    test = s.split("test")
    cols = s.columns("test")
    meta = sample_meta(test)
    for i in range(len(test)):
        js = meta[sample_key(i)]
        row = wv.test_rows[js["file"]]
        assert {c: js[c] for c in COLS} == row                 # -1 of a distance-only row kept
        assert [int(cols[c][i]) for c in COLS] == [row[c] for c in COLS]
        assert int(cols["distance_only"][i]) == int(js["distance_only"])
    train_js = sample_meta(s.split("train"))[sample_key(0)]
    assert set(train_js) >= {"file", "person", "depiction", "body_part", "orig_width", "orig_height"}


def test_large_labels(wv, tmp_path):
    out = tmp_path / "large"
    assert main(["shard", "--wake-vision", str(wv.root), "--wake-vision-train", "large",
                 "--out", str(out), "--size", "48"]) == 0
    assert held(out) == wv.expected("large")


@pytest.mark.slow
def test_same_bytes_whatever_workers_and_extracted_jpegs_give_the_same_labels(wv, wv_shards, tmp_path):
    two = tmp_path / "two"
    assert main(["shard", "--wake-vision", str(wv.root), "--out", str(two), "--size", "64",
                 "--samples-per-shard", "4", "--workers", "2"]) == 0
    files = sorted(p.name for p in wv_shards.iterdir())
    assert files == sorted(p.name for p in two.iterdir())
    for f in files:
        assert (wv_shards / f).read_bytes() == (two / f).read_bytes(), f
    # the same set, extracted into per-archive folders: same labels, sorted by name
    folder = tmp_path / "extracted"
    folder.mkdir()
    for p in wv.root.iterdir():
        if p.name.endswith(".csv"):
            (folder / p.name).write_bytes(p.read_bytes())
        else:
            with tarfile.open(p, "r:gz") as tar:
                sub = folder / p.name.split(".")[0]
                sub.mkdir()
                for m in tar:
                    (sub / m.name).write_bytes(tar.extractfile(m).read())
    ex = tmp_path / "ex"
    assert main(["shard", "--wake-vision", str(folder), "--out", str(ex), "--size", "64",
                 "--workers", "2"]) == 0
    want = wv.expected("quality")
    got = held(ex)
    for split in want:
        assert got[split] == sorted(want[split])
    m = json.loads((ex / "manifest.json").read_text())
    assert m["source"]["images"] == "folder"
    assert next(c for c in m["not_sharded"] if c["split"] is None)["count"] == 4


def test_member_names_are_data(wv, tmp_path, jpegs):
    root = tmp_path / "wv"
    root.mkdir()
    for p in wv.root.glob("*.csv"):
        (root / p.name).write_bytes(p.read_bytes())
    name = flickr(0, "a")
    with tarfile.open(root / "wake-vision-train-1.tar.gz", "w:gz") as tar:
        for member in (f"../../{name}", "/etc/evil.jpg", "sub/dir/x.jpg"):
            info = tarfile.TarInfo(member)
            info.size = len(jpegs[0])
            tar.addfile(info, io.BytesIO(jpegs[0]))
    before = set(tmp_path.rglob("*"))
    assert main(["shard", "--wake-vision", str(root), "--out", str(tmp_path / "o"), "--size", "32"]) == 0
    new = {p for p in set(tmp_path.rglob("*")) - before if "o" not in p.relative_to(tmp_path).parts[:1]}
    assert not new                                   # nothing written outside the output folder
    assert [f for f, _, _ in held(tmp_path / "o")["train"]] == [name]   # its last part was looked up


def _truncate(path: Path, share: float) -> bytes:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * share)])
    return data


def test_truncated_archive_keeps_what_came_before_names_the_damage_and_resumes(wv, tmp_path, capsys,
                                                                               monkeypatch):
    root = tmp_path / "wv"
    root.mkdir()
    for p in wv.root.iterdir():
        (root / p.name).write_bytes(p.read_bytes())
    archive = root / "wake-vision-train-10.tar.gz"
    whole = _truncate(archive, 0.6)
    out = tmp_path / "o"
    argv = ["shard", "--wake-vision", str(root), "--out", str(out), "--size", "48", "--workers", "2"]
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and "wake-vision-train-10.tar.gz is damaged after" in err[0]
    assert not out.exists()
    partial = tmp_path / ".o.partial" / "spill"
    assert len(list(partial.glob("*.json"))) == len(wv.members)    # every archive's work kept

    # --allow-damaged: the complete images before the damage, the damage in the manifest
    assert main(argv + ["--allow-damaged"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    (d,) = m["damaged"]
    names = wv.members["wake-vision-train-10.tar.gz"]
    before = names[: d["members_before"]]
    assert d["archive"] == archive.name and d["error"]
    assert d["last_complete"] == (before[-1] if before else None)
    want = [r for r in wv.expected()["train"] if r[0] not in names or r[0] in before]
    assert held(out)["train"] == want

    # damaged again, then the archive replaced: the rerun reads that archive only
    _truncate(archive, 0.6)
    import shutil
    shutil.rmtree(out)
    assert main(argv) == 2
    archive.write_bytes(whole)
    import vwwfast.data.sources.archives as A
    read = []
    real = A.read_unit

    def counting(unit, *args):
        read.append(unit.name)
        return real(unit, *args)
    monkeypatch.setattr(A, "read_unit", counting)
    assert main(argv[:-2]) == 0            # one worker: read_unit runs here, where it is counted
    assert read == [archive.name]
    assert held(out) == wv.expected()


def test_interrupted_run_leaves_no_manifest_and_a_rerun_is_clean(wv, wv_shards, tmp_path, monkeypatch):
    import vwwfast.data.sources.archives as A
    real = A.read_unit
    calls = []

    def boom(unit, *args):
        calls.append(unit.name)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(unit, *args)
    monkeypatch.setattr(A, "read_unit", boom)
    out = tmp_path / "shards"
    argv = ["shard", "--wake-vision", str(wv.root), "--out", str(out), "--size", "64",
            "--samples-per-shard", "4"]
    assert main(argv) == 130
    assert not out.exists() and not list(tmp_path.rglob("manifest.json"))
    spill = tmp_path / ".shards.partial" / "spill"
    recs = sorted(spill.glob("*.rec"))
    assert len(recs) == 2 and not list(spill.glob("*.tmp"))
    # what a kill -9 leaves: a spill cut short, a stray temp file; neither is trusted
    recs[0].write_bytes(recs[0].read_bytes()[:-7])
    (spill / "0123.rec.tmp").write_bytes(b"half")
    monkeypatch.setattr(A, "read_unit", real)
    assert main(argv) == 0
    assert not (tmp_path / ".shards.partial").exists()
    for f in wv_shards.iterdir():
        assert (out / f.name).read_bytes() == f.read_bytes(), f.name


@pytest.mark.parametrize("problem", ["missing", "header", "value"])
def test_bad_csv_is_one_line(wv, tmp_path, capsys, problem):
    root = tmp_path / "wv"
    root.mkdir()
    for p in wv.root.glob("*.csv"):
        (root / p.name).write_bytes(p.read_bytes())
    target = root / "wake_vision_validation.csv"
    if problem == "missing":
        target.unlink()
    elif problem == "header":
        target.write_text("filename,label\nx.jpg,1\n")
    else:
        target.write_text(FULL + "\n" + flickr(1, "b") + ",yes" + ",0" * 18 + "\n")
    assert main(["shard", "--wake-vision", str(root), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "wake_vision_validation.csv" in err[0]
    if problem != "value":
        assert FULL in err[0]                       # the expected header, spelled out
    else:
        assert "line 2" in err[0] and "'yes'" in err[0]


def test_a_name_in_two_csvs_is_kept_in_test_then_val_never_trained_on():
    from vwwfast.data.sources.wake_vision import SPLITS, CsvTable, merge_tables
    t = lambda split, file, names, persons: CsvTable(  # noqa: E731
        split, file, ["person"], np.array(names, dtype=bytes), np.array(persons, np.int8)[:, None])
    labels = merge_tables({"train": t("train", "tr.csv", [b"a", b"b", b"c", b"a"], [1, 0, 1, 0]),
                           "val": t("val", "va.csv", [b"b", b"d"], [1, 1]),
                           "test": t("test", "te.csv", [b"c", b"b"], [0, 0])})
    where = {n.decode(): (SPLITS[s], int(r)) for n, s, r in zip(labels.names, labels.split, labels.row)}
    assert where == {"a": ("train", 0), "b": ("test", 1), "c": ("test", 0), "d": ("val", 1)}
    counted = {(c["split"], c["reason"]): c["first"] for c in labels.not_sharded}
    assert counted == {("train", "listed more than once in tr.csv (the first row kept)"): ["a"],
                       ("train", "also listed in te.csv (kept there)"): ["b", "c"],
                       ("val", "also listed in te.csv (kept there)"): ["b"]}


def test_flags_of_another_source_are_refused(wv, tmp_path, capsys):
    assert main(["shard", "--wake-vision", str(wv.root), "--split", "coco", "--out", str(tmp_path / "o")]) == 2
    assert "--split" in capsys.readouterr().err
    assert main(["shard", "--wake-vision", str(wv.root), "--limit", "3", "--out", str(tmp_path / "o")]) == 2
    assert "--limit" in capsys.readouterr().err
    assert main(["shard", "--coco-root", str(tmp_path), "--wake-vision-train", "large"]) == 2
    assert "--wake-vision-train" in capsys.readouterr().err


def test_test_split_in_verify_summary_and_damage(wv_shards, tmp_path, capsys):
    import shutil
    copy = tmp_path / "s"
    shutil.copytree(wv_shards, copy)
    assert verify_shards(copy)["samples"] == sum(len(v) for v in held(copy).values())
    cols = copy / "test-columns.npy"
    data = bytearray(cols.read_bytes())
    data[-1] ^= 1
    cols.write_bytes(bytes(data))
    with pytest.raises(UserError, match="test-columns.npy"):
        verify_shards(copy)
    with pytest.raises(UserError, match="test-columns.npy"):
        ShardSet.open(copy).columns("test")


# ---------------------------------------------------------------------------------------
# Evaluation: the main set and the 16 subsets, against a hand computation

def _hand(pred_csv: Path) -> dict:
    rows = list(csv.DictReader(pred_csv.open()))
    main_rows = [r for r in rows if r["distance_only"] == "0"]
    right = lambda r: r["label"] == r["prediction"]  # noqa: E731
    out = {"n": len(main_rows), "acc": sum(map(right, main_rows)) / len(main_rows), "subsets": {}}
    tp = sum(r["label"] == "1" and r["prediction"] == "1" for r in main_rows)
    fp = sum(r["label"] == "0" and r["prediction"] == "1" for r in main_rows)
    fn = sum(r["label"] == "1" and r["prediction"] == "0" for r in main_rows)
    out["precision"] = tp / (tp + fp) if tp + fp else None
    out["recall"] = tp / (tp + fn) if tp + fn else None
    for name in PERSON_SUBSETS + NO_PERSON_SUBSETS:
        want = "1" if name in PERSON_SUBSETS else "0"
        members = [r for r in main_rows if r[name] == "1" and r["label"] == want]
        if name == "far":
            members += [r for r in rows if r["distance_only"] == "1"]
        out["subsets"][name] = {"n": len(members),
                                "acc": sum(map(right, members)) / len(members) if members else None}
    return out


def test_eval_benchmark_matches_a_hand_computation(wv, wv_shards, small_teacher, tmp_path, capsys):
    js, pred = tmp_path / "r.json", tmp_path / "p.csv"
    assert main(["eval", small_teacher, "--shards", str(wv_shards), "--split", "test", "--benchmark",
                 "--json", str(js), "--predictions", str(pred), "--renderer", "reference",
                 "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    got = json.loads(js.read_text())
    hand = _hand(pred)
    assert got["n"] == hand["n"] == sum(1 for _, _, d in wv.expected()["test"] if not d)
    assert got["acc"] == pytest.approx(hand["acc"])
    assert got["precision"] == pytest.approx(hand["precision"])
    assert got["recall"] == pytest.approx(hand["recall"])
    p, r = hand["precision"], hand["recall"]
    assert got["f1"] == pytest.approx(2 * p * r / (p + r) if p and r else None)
    assert set(got["subsets"]) == set(PERSON_SUBSETS + NO_PERSON_SUBSETS)
    for name, want in hand["subsets"].items():
        assert got["subsets"][name]["n"] == want["n"], name
        assert got["subsets"][name]["acc"] == pytest.approx(want["acc"]), name
    assert got["subsets"]["far"]["n"] >= sum(1 for _, _, d in wv.expected()["test"] if d) > 0
    assert len({r["prediction"] for r in csv.DictReader(pred.open())}) == 2   # not one constant answer
    assert got["center_crop"] is True              # the shard set's val view
    assert "benchmark subsets" in printed and "non-person_non-depiction" in printed
    rows = list(csv.DictReader(pred.open()))
    assert len(rows) == len(wv.expected()["test"])   # every sample has its line, distance-only too


def test_benchmark_without_subset_columns_is_one_line(synth_shards, small_teacher, capsys):
    assert main(["eval", small_teacher, "--shards", str(synth_shards), "--benchmark"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--benchmark needs the Wake Vision benchmark columns" in err[0]
    assert main(["eval", small_teacher, "--shards", str(synth_shards), "--split", "test"]) == 2
    assert "no split 'test'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# Views: the centre crop the labels were made on

def test_center_region_views_stay_in_the_centred_square():
    from vwwfast.data.views import val_params, view_params
    from vwwfast.viewspec import view_spec
    H = np.array([100, 240, 64, 300, 77])
    W = np.array([300, 100, 64, 301, 200])
    for spec in (view_spec("default", {"region": "center"}),
                 view_spec("default", {"region": "center", "scale": [0.05, 1.0]})):
        p = view_params(spec, 3, 1, np.arange(5), H, W)
        s = np.minimum(H, W)
        top, left = (H - s) // 2, (W - s) // 2
        assert np.all(p[:, 0] * H >= top - 1e-3) and np.all((p[:, 0] + p[:, 2]) * H <= top + s + 1e-3)
        assert np.all(p[:, 1] * W >= left - 1e-3) and np.all((p[:, 1] + p[:, 3]) * W <= left + s + 1e-3)
    plain = view_params(view_spec("plain", {"region": "center"}), 0, 0, np.arange(5), H, W)
    np.testing.assert_array_equal(plain[:, :4], val_params(H, W, center_crop=True)[:, :4])
    assert "region" not in view_spec("default").to_dict()    # old stores keep their fingerprints
    with pytest.raises(UserError, match="region must be"):
        view_spec("default", {"region": "middle"})


def test_a_run_on_wake_vision_records_the_centre_crop(wv_shards, tmp_path):
    """The shard set's views are what a run uses unless it says otherwise, and its config says so."""
    import yaml

    from vwwfast import config as C
    from vwwfast.train.inputs import resolve_configs
    cfg = C.resolve(C.DistillConfig, {"shards": str(wv_shards), "alpha": 0})
    (got,) = resolve_configs([cfg])
    assert got.val_center_crop is True and got.view == {"region": "center"}
    own = C.resolve(C.DistillConfig, {"shards": str(wv_shards), "alpha": 0, "val_center_crop": False,
                                      "views": {"region": "image", "erase": 0.25}})
    (got,) = resolve_configs([own])
    assert got.val_center_crop is False and got.view == {"region": "image", "erase": 0.25}
    assert yaml.safe_load(C.dump_yaml(resolve_configs([cfg])[0]))["views"] == {"region": "center"}


def test_auto_renderer_streams_a_set_larger_than_memory(synth_shards, monkeypatch):
    import vwwfast.data.render.factory as F
    import vwwfast.progress as P
    said = []
    monkeypatch.setattr(P, "info", said.append)
    monkeypatch.setattr(F, "_SAID", set())
    split = ShardSet.open(synth_shards).split("train")
    r = F.make_renderer("auto", split, device="cpu", decoded_size=64, budget_bytes=1024, out_size=32)
    r.close()
    assert r.name in ("dali", "reference-threaded")
    assert any("would need" in m and "--decoded-budget-gb" in m and "streaming" in m for m in said)
