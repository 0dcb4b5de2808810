"""Runs compared with the noise in mind: predictions.csv (records/predictions.py), the paired
comparison of `vwwfast runs --diff` (records/compare.py), the ± and the marks of the runs
table, replicate groups of a sweep over init_seed (table, --json, card, --plot), and what
is said instead of a p-value when there is none."""

from __future__ import annotations

import io
import json
import re
import shutil
from datetime import timedelta

import numpy as np
import pytest
from rich.console import Console
from test_evaluate import run_eval
from conftest import T0, T1, epoch_record, finished_run, stub_curves

from vwwfast import config as C
from vwwfast.errors import UserError
from vwwfast.records import stats
from vwwfast.records.compare import pair_predictions, replicate_groups
from vwwfast.records.predictions import COLUMNS, read_predictions, write_predictions
from vwwfast.records.runs import Run, SweepRecord
from vwwfast.records.table import runs_command

N = 400
LABELS = np.random.default_rng(7).integers(0, 2, N)


def give_predictions(run: Run, right: np.ndarray, labels: np.ndarray = LABELS,
                     keys: np.ndarray | None = None) -> None:
    """predictions.csv for a run that was right on `right`, and the record to match it."""
    preds = np.where(right, labels, 1 - labels)
    keys = np.arange(len(labels)) if keys is None else keys
    write_predictions(run.path / "predictions.csv", keys, labels, np.where(preds == 1, 0.9, 0.1), preds)
    cm = np.zeros((2, 2), int)
    np.add.at(cm, (labels, preds), 1)
    run.update_summary({"best_val_acc": float(np.mean(right)), "confusion": cm.tolist(),
                        "recall_0": cm[0, 0] / cm[0].sum(), "recall_1": cm[1, 1] / cm[1].sum()})


def right_with(acc: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(N) < acc


def student_run(root, now, tag, **cfg) -> Run:
    return finished_run(root, C.DistillConfig(shards="s", tag=tag, **cfg), now, 0.8)


def text_of(cfg: C.RunsConfig, width: int = 100) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    runs_command(cfg, console=console)
    return console.export_text()


def diff_json(root, a, b, capsys) -> dict:
    runs_command(C.RunsConfig(runs_dir=str(root), diff=[a, b], json=True))
    return json.loads(capsys.readouterr().out)


# ---------------------------------------------------------------------------------------
# predictions.csv

def test_predictions_round_trip_in_key_order(tmp_path):
    path = write_predictions(tmp_path / "p.csv", [2, 0, 1], [1, 0, 1], [0.7, 0.2, 0.4], [1, 0, 0],
                             meta={"000000000": {"source_id": 5, "file": "a.jpg"}})
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(COLUMNS)
    assert lines[1] == "000000000,5,a.jpg,0,0.200000,0" and lines[3] == "000000002,,,1,0.700000,1"
    p = read_predictions(path)
    assert p.keys.tolist() == ["000000000", "000000001", "000000002"]
    assert p.right.tolist() == [True, False, True] and p.acc == pytest.approx(2 / 3)
    assert p.confusion() == [[1, 0], [1, 1]] and p.names.tolist() == ["5/a.jpg", "", ""]


def test_a_file_that_is_not_predictions_is_refused_in_one_line(tmp_path):
    bad = tmp_path / "bad.csv"
    for text, words in (("a,b\n1,2\n", "not a predictions file"),
                        ("key,label,prob_person,prediction\n000,1,0.5\n", "line 2"),
                        ("key,label,prob_person,prediction\n000,2,0.5,1\n", "must be 0 or 1"),
                        ("key,label,prob_person,prediction\n000,1,0.5,1\n000,1,0.5,1\n", "twice")):
        bad.write_text(text)
        with pytest.raises(UserError, match=words) as e:
            read_predictions(bad)
        assert "\n" not in str(e.value)


def test_pairing_needs_the_same_images():
    from vwwfast.records.predictions import Predictions

    def preds(keys, labels, names=None):
        k = np.asarray([f"{i:09d}" for i in keys])
        labels = np.asarray(labels)
        return Predictions(k, labels, labels * 1.0, labels, np.asarray(names or [""] * len(k)))
    a = preds([0, 1, 2, 3], [0, 1, 1, 0])
    assert pair_predictions(a, preds([4, 5], [0, 1])).reason.endswith("no paired test")
    other = pair_predictions(a, preds([0, 1, 2, 3], [0, 1, 0, 0]))  # key 2 holds another image
    assert other.result is None and "other val sets" in other.reason and "1 of 4" in other.reason
    named = pair_predictions(preds([0, 1], [0, 1], ["1/x.jpg", "2/y.jpg"]),
                             preds([0, 1], [0, 1], ["1/x.jpg", "3/z.jpg"]))
    assert named.result is None and "other val sets" in named.reason
    part = pair_predictions(a, preds([1, 2, 3], [1, 1, 0]))
    assert part.result["n"] == 3 and part.warnings == [
        "paired on the 3 val images both were scored on (A has 4, B 3)"]


# ---------------------------------------------------------------------------------------
# runs --diff

def test_diff_json_gives_the_paired_comparison(tmp_path, capsys):
    a, b = student_run(tmp_path, T0, "a"), student_run(tmp_path, T1, "b", alpha=0.8)
    ra, rb = right_with(0.80, 1), right_with(0.84, 2)
    give_predictions(a, ra)
    give_predictions(b, rb)
    d = diff_json(tmp_path, a.id, b.id, capsys)
    p = d["paired"]
    # the formulas, written out on the two files
    n, bb, c = N, int(np.sum(ra & ~rb)), int(np.sum(~ra & rb))
    assert (p["n"], p["b"], p["c"]) == (n, bb, c)
    assert p["acc_a"] == pytest.approx(ra.mean()) and p["acc_b"] == pytest.approx(rb.mean())
    assert p["diff"] == pytest.approx((c - bb) / n)
    half = 1.959963984540054 * np.sqrt(bb + c - (bb - c) ** 2 / n) / n
    assert p["ci95"] == pytest.approx([(c - bb) / n - half, (c - bb) / n + half])
    assert p["mcnemar_p"] == stats.mcnemar_p(bb, c)
    assert d["paired_reason"] is None and p["warnings"] == []
    runs_command(C.RunsConfig(runs_dir=str(tmp_path), diff=[a.id, b.id]))
    out = capsys.readouterr().out
    assert f"a right and b wrong on {bb}, a wrong and b right on {c}" in out
    assert stats.in_words(p, "b") in out and f"on these {N} images" in out


def test_diff_without_predictions_says_how_to_make_them(tmp_path, capsys):
    a, b = student_run(tmp_path, T0, "old"), student_run(tmp_path, T1, "new", val_center_crop=True)
    give_predictions(a, right_with(0.8, 1))
    d = diff_json(tmp_path, a.id, b.id, capsys)
    assert d["paired"] is None
    assert f"`vwwfast eval {b.path} --predictions {b.path / 'predictions.csv'} --center-crop`" \
        in d["paired_reason"]
    runs_command(C.RunsConfig(runs_dir=str(tmp_path), diff=[a.id, b.id]))
    captured = capsys.readouterr()
    assert "no paired test: 10-27_16-00-00_new has no predictions.csv" in captured.out
    assert "McNemar" not in captured.out and "Traceback" not in captured.err


def test_diff_of_runs_on_other_shards_gives_no_p_value(tmp_path, capsys):
    a, b = student_run(tmp_path, T0, "a"), student_run(tmp_path, T1, "b")
    give_predictions(a, right_with(0.8, 1))
    give_predictions(b, right_with(0.8, 2))
    b.update_summary({"fingerprints": {"shards_content_hash": "d" * 64}})
    d = diff_json(tmp_path, a.id, b.id, capsys)
    assert d["paired"] is None and "other shards" in d["paired_reason"]
    runs_command(C.RunsConfig(runs_dir=str(tmp_path), diff=[a.id, b.id]))
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "other shards" in line]
    assert len(lines) == 1 and "McNemar" not in out and "p " not in lines[0]


def test_diff_warns_when_predictions_do_not_match_the_record(tmp_path, capsys):
    a, b = student_run(tmp_path, T0, "a"), student_run(tmp_path, T1, "b")
    give_predictions(a, right_with(0.8, 1))
    give_predictions(b, right_with(0.8, 2))
    b.update_summary({"confusion": [[1, 0], [0, 1]]})  # as if of another checkpoint
    p = diff_json(tmp_path, a.id, b.id, capsys)["paired"]
    assert p is not None and len(p["warnings"]) == 1 and "not exactly the predictions" in p["warnings"][0]


@pytest.mark.slow
def test_diff_of_two_eval_prediction_files(student, tmp_path, capsys):
    """The whole way: `vwwfast eval RUN --predictions` writes both files (the second run
    scored at another input size, so the two differ), and --diff --json gives what the
    formulas give from those files."""
    a = tmp_path / student.name
    shutil.copytree(student, a)
    b = tmp_path / (student.name + "_b")
    shutil.copytree(student, b)
    run_eval(checkpoint=str(a), predictions=str(a / "predictions.csv"))
    run_eval(checkpoint=str(b), predictions=str(b / "predictions.csv"), input_size=32)
    capsys.readouterr()  # eval's own table
    pa, pb = read_predictions(a / "predictions.csv"), read_predictions(b / "predictions.csv")
    assert (pa.keys == pb.keys).all() and (pa.names != "").all()
    d = diff_json(tmp_path, str(a), str(b), capsys)
    want = stats.paired_comparison(pa.right, pb.right)
    assert {k: d["paired"][k] for k in want} == want  # JSON keeps every digit of a float
    assert d["paired"]["n"] == len(pa) == 48
    # b's file is not what its record says (scored at 32 px, the record at 48) unless the
    # two happen to agree: said as a note, never as a refusal
    if pb.confusion() != Run(b).summary["confusion"]:
        assert any("not exactly the predictions" in w for w in d["paired"]["warnings"])


# ---------------------------------------------------------------------------------------
# The runs table: ± and marks

def four_runs(root):
    runs = [student_run(root, T0 + timedelta(seconds=k), f"r{k}", lr=0.001 * (k + 1)) for k in range(4)]
    best = right_with(0.85, 0)
    give_predictions(runs[0], best)
    close = best.copy()
    close[np.flatnonzero(best)[:4]] = False           # 4 worse: p 0.125, not distinguishable
    give_predictions(runs[1], close)
    far = best.copy()
    far[np.flatnonzero(best)[:40]] = False            # 40 worse: p ~ 2e-12
    give_predictions(runs[2], far)
    runs[3].update_summary({"best_val_acc": 0.6, "confusion": [[120, 80], [80, 120]]})  # no predictions
    return runs


def test_runs_table_marks_what_the_val_set_cannot_tell_apart(tmp_path, capsys):
    runs = four_runs(tmp_path)
    text = text_of(C.RunsConfig(runs_dir=str(tmp_path)))
    assert max(len(line) for line in text.splitlines()) <= 100
    row = {r.short_id: next(line for line in text.splitlines() if line.startswith(r.short_id + " "))
           for r in runs}
    se = np.sqrt(0.85 * 0.15 / N)
    acc0 = runs[0].summary["best_val_acc"]
    assert f"{acc0:.4f}±{np.sqrt(acc0 * (1 - acc0) / N):.4f}*" in row[runs[0].short_id]
    assert re.search(r"±0\.0\d{3}≈", row[runs[1].short_id])
    assert re.search(r"±0\.0\d{3} ", row[runs[2].short_id])        # told apart: no mark
    assert re.search(r"±0\.0\d{3}\?", row[runs[3].short_id])
    assert f"binomial, {N} val images" in text and "≈ not distinguishable" in text
    assert "no predictions.csv (`vwwfast eval RUN --predictions RUN/predictions.csv`" in \
        " ".join(text.split())
    assert se > 0
    runs_command(C.RunsConfig(runs_dir=str(tmp_path), json=True))
    rows = {r["short_id"]: r for r in json.loads(capsys.readouterr().out)}
    close = rows[runs[1].short_id]["vs_best"]
    assert close["mark"] == "≈" and close["best"] == runs[0].id
    assert (close["b"], close["c"]) == (4, 0) and close["mcnemar_p"] == 2 / 16
    assert rows[runs[2].short_id]["vs_best"]["mcnemar_p"] < 1e-10
    assert rows[runs[3].short_id]["vs_best"]["mark"] == "?"
    assert rows[runs[0].short_id]["val_acc_se"] == pytest.approx(np.sqrt(acc0 * (1 - acc0) / N))
    runs_command(C.RunsConfig(runs_dir=str(tmp_path), wide=True))
    wide = capsys.readouterr().out
    assert "p vs" in wide and "0.12" in wide


def test_runs_table_fits_80_columns_with_marks(tmp_path):
    four_runs(tmp_path)
    text = text_of(C.RunsConfig(runs_dir=str(tmp_path)), width=80)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "≈" in text and "*" in text


# ---------------------------------------------------------------------------------------
# Replicates

def seed_sweep(root, alphas=(0.5,), seeds=(0, 1, 2), accs=None):
    """A sweep over alpha x init_seed with predictions; accs[(alpha, seed)] = right rate."""
    swept = {"alpha": list(alphas), "init_seed": list(seeds)} if len(alphas) > 1 else \
        {"init_seed": list(seeds)}
    rec = SweepRecord.create(root, "seeds", "grid", swept, now=T1)
    runs = {}
    k = 0
    for a in alphas:
        for s in seeds:
            run = finished_run(root, C.DistillConfig(shards="s", alpha=a, init_seed=s, epochs=4,
                                                     tag=f"seeds_a{a}-iseed{s}"),
                               T1 + timedelta(seconds=k), 0.8, sweep=rec.id, epochs=4)
            give_predictions(run, right_with((accs or {}).get((a, s), 0.8 + 0.01 * s), 10 + k))
            rec.add_member(run.id, {k2: v for k2, v in (("alpha", a), ("init_seed", s))
                                    if k2 in swept})
            runs[(a, s)] = run
            k += 1
    rec.finish("finished")
    return rec, runs


def test_a_sweep_over_init_seeds_is_one_replicate_group(tmp_path, capsys):
    rec, runs = seed_sweep(tmp_path)
    accs = [runs[(0.5, s)].summary["best_val_acc"] for s in (0, 1, 2)]
    runs_command(C.RunsConfig(runs_dir=str(tmp_path), sweep="seeds", json=True))
    data = json.loads(capsys.readouterr().out)
    assert len(data["replicates"]) == 1
    g = data["replicates"][0]
    assert g["settings"] == {} and g["n"] == 3 and g["init_seeds"] == [0, 1, 2]
    assert g["mean"] == pytest.approx(np.mean(accs)) and g["sd"] == pytest.approx(np.std(accs, ddof=1))
    assert g["members"] == [runs[(0.5, s)].id for s in (0, 1, 2)]
    text = text_of(C.RunsConfig(runs_dir=str(tmp_path), sweep="seeds"))
    assert "3 runs in 1 replicate group" in text and max(len(x) for x in text.splitlines()) <= 100
    row = next(line for line in text.splitlines() if "0,1,2" in line)
    assert f"{np.mean(accs):.4f}±{np.std(accs, ddof=1):.4f}" in row and " 3 " in row
    assert f"{min(accs):.4f}..{max(accs):.4f}" in row
    assert "10-27_16-00-00_seeds" not in text  # one row for the group, not its members
    wide = text_of(C.RunsConfig(runs_dir=str(tmp_path), sweep="seeds", wide=True), width=400)
    assert all(r.id in wide for r in runs.values())


def test_knobs_by_seeds_group_per_knob_value(tmp_path, capsys):
    seed_sweep(tmp_path, alphas=(0.5, 0.8), seeds=(0, 1))
    runs_command(C.RunsConfig(runs_dir=str(tmp_path), sweep="seeds", json=True))
    groups = json.loads(capsys.readouterr().out)["replicates"]
    assert sorted(g["settings"]["alpha"] for g in groups) == [0.5, 0.8]
    assert all(g["n"] == 2 and g["sd"] is not None for g in groups)


def test_a_group_of_one_has_no_sd():
    groups = replicate_groups([{"run": "x", "settings": {"alpha": 0.5, "init_seed": 0}, "val_acc": 0.8},
                               {"run": "y", "settings": {"alpha": 0.6, "init_seed": 0}, "val_acc": 0.7},
                               {"run": "z", "settings": {"alpha": 0.6, "init_seed": 1}, "val_acc": None}])
    assert groups[0] == {"settings": {"alpha": 0.5}, "n": 1, "mean": 0.8, "sd": None,
                         "members": ["x"], "init_seeds": [0]}
    assert groups[1]["n"] == 1 and groups[1]["sd"] is None and groups[1]["without_result"] == ["z"]


def test_the_card_of_a_sweep_member_names_its_group(tmp_path):
    from vwwfast.records.report import write_report
    rec, runs = seed_sweep(tmp_path, alphas=(0.5, 0.8), seeds=(0, 1))
    run = runs[(0.8, 1)]
    write_report(run)
    card = (run.path / "card.md").read_text()
    assert "**Replicate group:** 2 runs at alpha 0.8, init seeds 0, 1: " in card
    assert f"`{runs[(0.8, 0)].short_id}`, `{run.short_id}` (this run)" in card
    assert runs[(0.5, 0)].short_id not in card.split("**Replicate group:**")[1].split("\n")[0]
    assert f"`vwwfast runs --sweep {rec.short_id}`" in card
    # the ± of its result, and the paired test against the previous run
    assert "one binomial standard error on 400 val images" in card
    assert "Paired on the val images: this run " in card


def test_plot_of_a_replicate_group_draws_a_band(tmp_path, capsys, monkeypatch):
    stub_curves(monkeypatch)
    from matplotlib.collections import PolyCollection

    from vwwfast.records import plots
    from vwwfast.records.compare_plot import group_labels, replicate_sets
    rec, runs = seed_sweep(tmp_path, alphas=(0.5, 0.8), seeds=(0, 1, 2))
    for (a, s), run in runs.items():  # curves that differ between seeds
        (run.path / "metrics.jsonl").write_text("".join(
            json.dumps(epoch_record(e, 0.6 + 0.05 * e + 0.01 * s + 0.1 * a)) + "\n" for e in range(1, 5)))
    groups = replicate_sets(rec.runs())
    assert [len(g) for g in groups] == [3, 3]
    labels = group_labels(groups)
    assert labels[0].startswith("a=0.5, 3 init seeds (0,1,2): best val acc mean ")
    fig = plots.compare_figure(groups, labels, "t")
    ax_acc = fig.axes[0]
    bands = [c for c in ax_acc.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2 and len(ax_acc.get_lines()) == 2          # mean lines, no tangle of 6
    mean = ax_acc.get_lines()[0].get_ydata()
    assert mean == pytest.approx([0.6 + 0.05 * e + 0.01 + 0.05 for e in range(1, 5)])
    out = tmp_path / "band.png"
    runs_command(C.RunsConfig(runs_dir=str(tmp_path), plot=["seeds"], out=str(out)))
    assert capsys.readouterr().out.strip() == str(out) and out.read_bytes()[:4] == b"\x89PNG"


# ---------------------------------------------------------------------------------------
# What training keeps

def test_a_run_keeps_its_val_predictions_at_its_checkpoint(student):
    """Every run writes predictions.csv when it saves model.pt: every val sample once, and
    the confusion matrix its record holds for that checkpoint."""
    run = Run(student)
    preds = read_predictions(student / "predictions.csv")
    assert preds.keys.tolist() == [f"{i:09d}" for i in range(48)]
    assert preds.confusion() == run.summary["confusion"]
    assert preds.acc == pytest.approx(run.summary["best_val_acc"])
