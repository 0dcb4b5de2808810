"""Teacher ensembles in the cache: the store keeps log(mean of the members' probabilities);
every member is named, checked and recomputed by --verify; bad members are refused."""

import json
import shutil

import numpy as np
import pytest
import torch

from vwwfast import config as C
from vwwfast.errors import UserError
from vwwfast.teach.build import cache_teacher
from vwwfast.teach.cache import TeacherCache
from vwwfast.train.commands import distill

OTHER_RUN = "2026-01-02_00-00-00_teacher_mbv3s_vww32_other-shards"


def _member(small_teacher, path, *, input_size=48, seed=1, run=OTHER_RUN, role="teacher", **payload):
    """Another teacher: small_teacher's weights, perturbed and its head scaled (so it
    predicts otherwise, and confidently),
    saved as a run at `input_size` wrote it; payload overrides checkpoint fields."""
    from vwwfast.models import build_model, load_checkpoint, save_checkpoint
    ck = load_checkpoint(small_teacher)
    model = build_model(ck["arch"])
    model.load_state_dict(ck["state_dict"])
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g) * p.abs().mean())
        model.classifier[3].weight.mul_(40)  # confident, and not like small_teacher
        model.classifier[3].bias.add_(torch.tensor([0.5, -0.5]))
    save_checkpoint(path, model, arch=ck["arch"], input_size=input_size, config={"pretrained": False},
                    epoch=1, metrics={"acc": 0.6}, role=role, run=run)
    if payload:
        data = torch.load(path, weights_only=True)
        data.update(payload)
        torch.save(data, path)
    return str(path)


def _cache(shards, teachers, out, **kw):
    base = dict(shards=str(shards), teacher=teachers, views=2, out=str(out), batch_size=32,
                renderer="decoded", decoded_size=48)
    base.update(kw)
    return cache_teacher(C.resolve(C.CacheTeacherConfig, base))


@pytest.fixture(scope="module")
def pair(small_teacher, tmp_path_factory):
    """small_teacher (48 px) and another teacher trained elsewhere, at 32 px."""
    root = tmp_path_factory.mktemp("pair")
    return small_teacher, _member(small_teacher, root / "b.pt", input_size=32)


@pytest.fixture(scope="module")
def ens_store(synth_shards, pair, tmp_path_factory):
    return str(_cache(synth_shards, list(pair), tmp_path_factory.mktemp("ens") / "e.zarr"))


def _member_logits(path, shards, params, idx):
    """A member's own logits on views `params` of samples idx, rendered at its size."""
    from vwwfast.data.render.factory import make_renderer
    from vwwfast.data.shards import ShardSet
    from vwwfast.models import model_from_checkpoint
    model, ck = model_from_checkpoint(path)
    r = make_renderer("decoded", ShardSet.open(shards).split("train"), device="cpu", decoded_size=48,
                      out_size=ck["input_size"])
    x, _ = r.render(idx, params[idx], ck["input_size"])
    with torch.no_grad():
        return model(x).double().numpy()


def test_ensemble_logits_are_the_log_mean_probability(ens_store, pair, synth_shards):
    store = TeacherCache(ens_store)
    idx = np.array([0, 5, 41, 95])
    for view in range(2):
        params = store.params()[view]
        probs = [torch.softmax(torch.from_numpy(_member_logits(p, synth_shards, params, idx)), 1).numpy()
                 for p in pair]
        want = np.log(np.mean(probs, axis=0))  # the members computed separately, in float64
        have = store.logits()[view][idx]
        half_ulp = np.spacing(np.abs(have)).astype(np.float64) / 2  # float16 rounding
        assert np.all(np.abs(have.astype(np.float64) - want) <= half_ulp + 1e-4)
        np.testing.assert_allclose(np.exp(have.astype(np.float64)).sum(1), 1, atol=2e-3)
    # and the members disagree, so the mean is not one of them
    one = _member_logits(pair[0], synth_shards, store.params()[0], idx)
    assert np.abs(torch.log_softmax(torch.from_numpy(one), 1).numpy() - store.logits()[0][idx]).max() > 1e-2


def test_ensemble_fingerprint_and_attributes_name_every_member(ens_store, pair):
    from vwwfast.files import file_sha256
    store = TeacherCache(ens_store)
    fp = store.fingerprint
    shas = sorted(file_sha256(p) for p in pair)
    assert [m["sha256"] for m in fp["teachers"]] == shas            # in sha256 order
    by_sha = {m["sha256"]: m for m in fp["teachers"]}
    assert by_sha[file_sha256(pair[0])]["input_size"] == 48 and by_sha[file_sha256(pair[1])]["input_size"] == 32
    assert {m["arch"] for m in fp["teachers"]} == {"mobilenet_v3_small"}
    assert fp["ensemble"] == "log_mean_probability" and "teacher_sha256" not in fp
    assert store.ensemble and store.teacher is None
    assert {w["checkpoint"] for w in store.teachers} == set(pair)
    assert OTHER_RUN in {w["run"] for w in store.teachers}           # trained on other shards: allowed
    assert "--teacher" in store.finish_command() and all(p in store.finish_command() for p in pair)


def test_single_teacher_fingerprint_is_unchanged(small_store):
    """Stores made before ensembles stay valid: one teacher keeps its fingerprint's keys."""
    fp = TeacherCache(small_store).fingerprint
    assert set(fp) == {"shards_content_hash", "teacher_sha256", "teacher_arch", "teacher_input_size",
                       "interpolation", "rendering", "normalization", "view_spec", "seed",
                       "vwwfast_version"}


def test_ensemble_order_does_not_matter_and_extends_like_one_teacher(synth_shards, pair, ens_store, tmp_path):
    out = tmp_path / "e.zarr"
    _cache(synth_shards, [pair[1], pair[0]], out, views=1)              # the other order, one view
    _cache(synth_shards, list(pair), out, views=2)                      # extended
    a, b = TeacherCache(out), TeacherCache(ens_store)
    assert a.fingerprint == b.fingerprint and a.complete()
    np.testing.assert_array_equal(a.logits(), b.logits())
    np.testing.assert_array_equal(a.val_logits(), b.val_logits())
    with pytest.raises(UserError, match="teacher \\(an ensemble of 2 in the store, one teacher here\\)"):
        _cache(synth_shards, [pair[0]], out)


def test_verify_recomputes_the_ensemble(ens_store, pair, tmp_path, capsys):
    import zarr
    r = cache_teacher(C.resolve(C.CacheTeacherConfig, dict(verify=ens_store, samples=10)))
    assert r["ok"] and r["rows"][0][4] == "100.00%"
    # members moved: found by sha256 among the --teacher given
    moved = [str(shutil.copy(p, tmp_path / f"m{k}.pt")) for k, p in enumerate(pair)]
    assert cache_teacher(C.resolve(C.CacheTeacherConfig, dict(verify=ens_store, samples=4,
                                                               teacher=moved[::-1])))["ok"]
    # one member's logits alone are not the ensemble's
    out = tmp_path / "bad.zarr"
    shutil.copytree(ens_store, out)
    one = TeacherCache(out)
    a = zarr.open_group(str(out), mode="r+")["train/logits"]
    single = _member_logits(pair[0], TeacherCache(ens_store).attrs["shards"], one.params()[0],
                            np.arange(96))
    a[0] = torch.log_softmax(torch.from_numpy(single), 1).numpy().astype(np.float16)
    with pytest.raises(UserError, match="train views logits differ"):
        cache_teacher(C.resolve(C.CacheTeacherConfig, dict(verify=str(out), samples=96)))


def _cli(capsys, *argv):
    from vwwfast.cli import main
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err.strip()


@pytest.mark.parametrize("case, match", [
    ("student", "written by a student run .*--self-distill"),
    ("classes", "ensemble members disagree on classes"),
    ("normalization", "ensemble members disagree on input normalisation"),
    ("missing", "checkpoint not found: .*nowhere.pt"),
    ("twice", "is the same checkpoint as --teacher .*: give each member of the ensemble once"),
    ("input_size", "--input-size 48 with an ensemble: each member runs at the size it was trained at"),
])
def test_bad_members_are_refused_in_one_line(case, match, synth_shards, small_teacher, tmp_path, capsys):
    import re
    second = {
        "student": lambda: _member(small_teacher, tmp_path / "s.pt", role="student",
                                   run="2026-01-03_00-00-00_student_mbv3s_vww48"),
        "classes": lambda: _member(small_teacher, tmp_path / "c.pt", classes=["cat", "dog"]),
        "normalization": lambda: _member(small_teacher, tmp_path / "n.pt",
                                         normalization={"mean": [0.5] * 3, "std": [0.5] * 3}),
        "missing": lambda: str(tmp_path / "nowhere.pt"),
        "twice": lambda: str(shutil.copy(small_teacher, tmp_path / "copy.pt")),
        "input_size": lambda: _member(small_teacher, tmp_path / "i.pt"),
    }[case]()
    out = tmp_path / "e.zarr"
    extra = ["--input-size", "48"] if case == "input_size" else []
    rc, err = _cli(capsys, "cache-teacher", "--shards", synth_shards, "--teacher", small_teacher,
                   "--teacher", second, "--views", 1, "--out", out, "--renderer", "decoded",
                   "--decoded-size", 48, *extra)
    assert rc == 2 and len(err.splitlines()) == 1 and re.search(match, err), err
    assert not out.exists() and not (tmp_path / ".e.zarr.partial").exists()   # nothing written
    if case == "student":  # on purpose, it may teach
        assert _cache(synth_shards, [small_teacher, second], out, views=1, self_distill=True)


def test_yaml_teacher_takes_one_or_a_list(tmp_path):
    one = C.resolve(C.CacheTeacherConfig, {"teacher": "runs\\a\\model.pt"})
    several = C.resolve(C.CacheTeacherConfig, {"teacher": ["a.pt", "b.pt"]})
    assert one.teacher == ["runs/a/model.pt"] and several.teacher == ["a.pt", "b.pt"]


def test_a_second_single_valued_flag_is_refused(capsys):
    from vwwfast.cli import main
    for argv, said in [(["eval", "r", "--batch-size", "8", "--batch-size", "16"],
                        "argument --batch-size: given twice (8, then 16)"),
                       (["bench", "kd", "--teacher", "a.pt", "--teacher", "b.pt"],
                        "argument --teacher: given twice (a.pt, then b.pt)"),
                       (["distill", "--compile", "on", "--compile", "off"], "--compile: given twice")]:
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and len(err.splitlines()) == 1 and said in err


# ---------------------------------------------------------------------------------------
# Students of an ensemble

def _distill(shards, tmp_path, **kw):
    base = dict(shards=str(shards), input_size=32, epochs=1, batch_size=32, renderer="decoded",
                decoded_size=48, runs_dir=str(tmp_path / "runs"), bn_settle=32)
    base.update(kw)
    return distill(C.resolve_sweep(C.DistillConfig, base))


def _no_runs(tmp_path):
    return not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_student_of_an_ensemble_names_every_member(synth_shards, ens_store, pair, tmp_path, capsys):
    from vwwfast.cli import main
    s = _distill(synth_shards, tmp_path, cache=ens_store, teacher=[pair[1], pair[0]])  # any order
    assert s["status"] == "finished"
    summary = json.loads(open(s["run_dir"] + "/summary.json").read())
    t = summary["teacher"]
    assert t["mode"] == "cached" and len(t["members"]) == 2
    assert {m["checkpoint"] for m in t["members"]} == set(pair)
    assert {m["input_size"] for m in t["members"]} == {48, 32}
    saved = C.load_yaml(s["run_dir"] + "/config.yaml")
    assert saved["teacher_input_size"] is None and saved["teacher_arch"] == "mobilenet_v3_small"
    card = open(s["run_dir"] + "/card.md").read()
    assert "An ensemble of 2" in card and "other-shards" in card and "member 2" in card
    assert all(p in card for p in pair)
    from vwwfast.records.runs import Run, short_id
    from vwwfast.records.rows import run_row
    row = run_row(Run(s["run_dir"]))
    small_run = pair[0].split("/")[-2]
    assert set(row["teacher"].split("+")) == {short_id(small_run), short_id(OTHER_RUN)}
    assert set(row["teacher_run"].split("+")) == {small_run, OTHER_RUN}
    assert row["teacher_val_acc"] == TeacherCache(ens_store).attrs["val_acc"]
    capsys.readouterr()
    assert main(["runs", "--runs-dir", str(tmp_path / "runs"), "--csv"]) == 0
    assert row["teacher"] in capsys.readouterr().out


@pytest.mark.parametrize("given, match", [
    ("one", "--teacher names 1 of the 2 members of .* \\(missing: "),
    ("other", "is not a member of .*'s ensemble"),
    ("twice", "is given twice"),
])
def test_teachers_given_with_an_ensemble_store_must_be_its_members(
        given, match, synth_shards, ens_store, pair, small_store, tmp_path):
    teachers = {"one": [pair[0]],
                "other": [pair[0], pair[1], _member(pair[0], tmp_path / "x.pt", seed=9)],
                "twice": [pair[0], str(shutil.copy(pair[0], tmp_path / "copy.pt")), pair[1]]}[given]
    with pytest.raises(UserError, match=match):
        _distill(synth_shards, tmp_path, cache=ens_store, teacher=teachers)
    assert _no_runs(tmp_path)


def test_where_one_teacher_runs_a_second_is_refused(synth_shards, small_store, ens_store, pair, tmp_path):
    with pytest.raises(UserError, match="--teacher-mode online runs one teacher, got 2"):
        _distill(synth_shards, tmp_path, teacher_mode="online", teacher=list(pair))
    with pytest.raises(UserError, match="holds one teacher's logits, --teacher was given 2 times"):
        _distill(synth_shards, tmp_path, cache=small_store, teacher=list(pair))
    with pytest.raises(UserError, match="teacher input size is 48 in the config but .* holds the logits "
                                        "of an ensemble at 32, 48 px"):
        _distill(synth_shards, tmp_path, cache=ens_store, teacher_input_size=48)
    assert _no_runs(tmp_path)


@pytest.mark.slow
def test_a_sweep_of_an_ensemble_resumes_as_with_one_teacher(synth_shards, ens_store, tmp_path, monkeypatch):
    import vwwfast.train.loop as T
    full = _distill(synth_shards, tmp_path / "full", cache=ens_store, alpha=[0.5, 1.0], epochs=2)
    real, calls = T.evaluate_many, {"n": 0}

    def stop(*a, **kw):  # Ctrl-C in the second epoch's evaluation
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **kw)
    monkeypatch.setattr(T, "evaluate_many", stop)
    with pytest.raises(KeyboardInterrupt):
        _distill(synth_shards, tmp_path, cache=ens_store, alpha=[0.5, 1.0], epochs=2)
    monkeypatch.setattr(T, "evaluate_many", real)
    sweep_dir = next(p for p in (tmp_path / "runs").iterdir() if (p / "sweep.json").is_file())
    again = distill(C.resolve(C.DistillConfig, {"resume": str(sweep_dir)}))
    lines = lambda s: [json.loads(x) for x in open(s["run_dir"] + "/metrics.jsonl")]  # noqa: E731
    drop = lambda r: {k: v for k, v in r.items() if k not in ("time_s", "img_per_s")}  # noqa: E731
    assert [[drop(r) for r in lines(s)] for s in again] == [[drop(r) for r in lines(s)] for s in full]
    fp = json.loads(open(again[0]["run_dir"] + "/summary.json").read())["fingerprints"]
    assert fp["store_fingerprint"] == TeacherCache(ens_store).fingerprint_hash
