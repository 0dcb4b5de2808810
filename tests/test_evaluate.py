"""`vwwfast eval`: what it takes (run folder, short id, checkpoint), --input-size, the
predictions CSV, the mistakes sheet, and one-line errors for bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import one_line_error
from vwwfast import config as C
from vwwfast.errors import UserError
from vwwfast.deploy.evaluate import confident_mistakes, evaluate_command


def run_eval(**kw) -> dict:
    kw.setdefault("renderer", "decoded")
    kw.setdefault("decoded_size", 48)
    kw.setdefault("batch_size", 16)
    return evaluate_command(C.resolve(C.EvalConfig, kw))


def test_run_folder_short_id_and_checkpoint_agree(student):
    by_folder = run_eval(checkpoint=str(student))  # shards: the run's own
    by_id = run_eval(checkpoint="student", runs_dir=str(student.parent))  # its tag
    by_file = run_eval(checkpoint=str(student / "model.pt"))
    assert by_folder["n"] == 48 and by_folder["input_size"] == 48
    assert by_folder["confusion"] == by_id["confusion"] == by_file["confusion"]
    assert Path(by_id["model"]) == student / "model.pt"


def test_input_size_larger_than_stored_images_warns(student, capsys):
    small = run_eval(checkpoint=str(student), input_size=32)
    assert small["input_size"] == 32 and "larger than the stored" not in capsys.readouterr().err
    big = run_eval(checkpoint=str(student), input_size=96)  # shards store 64 px
    assert big["input_size"] == 96 and big["n"] == 48
    err = " ".join(capsys.readouterr().err.split())
    assert "evaluating at 96 px, larger than the stored images" in err


def test_predictions_csv_matches_the_confusion_matrix(student, synth_shards, tmp_path):
    out = tmp_path / "pred.csv"
    m = run_eval(checkpoint=str(student), predictions=str(out), json=str(tmp_path / "m.json"))
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == m["n"] == 48
    assert [r["key"] for r in rows] == [f"{i:09d}" for i in range(48)]
    cm = np.zeros((2, 2), int)
    for r in rows:
        cm[int(r["label"]), int(r["prediction"])] += 1
        p = float(r["prob_person"])
        assert 0 <= p <= 1
        assert (p > 0.5) == (r["prediction"] == "1") or abs(p - 0.5) < 1e-6
    assert cm.tolist() == m["confusion"] == json.loads((tmp_path / "m.json").read_text())["confusion"]
    # the source of each sample, from its <key>.json in the tar
    labels = np.load(synth_shards / "val-samples.npy")["label"]
    assert [int(r["label"]) for r in rows] == labels.tolist()
    assert all(r["file"].startswith("val2014/COCO_val2014_") and int(r["source_id"]) > 0 for r in rows)
    assert all(r["file"].endswith(f"{int(r['source_id']):012d}.jpg") for r in rows)


def test_errors_sheet_is_written(student, tmp_path):
    out = tmp_path / "sub" / "mistakes.png"
    m = run_eval(checkpoint=str(student), errors=str(out))
    im = Image.open(out)
    assert im.format == "PNG" and im.width > 8 * 96 and im.height > 2 * 96
    assert m["confusion"][0][1] + m["confusion"][1][0] > 0  # there were mistakes to show
    assert not list(out.parent.glob(".*tmp"))


def test_confident_mistakes_are_ranked_by_probability():
    m = {"labels": np.array([0, 0, 0, 1, 1, 1, 0]),
         "preds": np.array([1, 1, 0, 0, 0, 1, 1]),
         "prob_person": np.array([0.6, 0.9, 0.1, 0.4, 0.05, 0.8, 0.99])}
    fp, fn = confident_mistakes(m, k=2)
    assert fp.tolist() == [6, 1]   # no-person called person, most confident first
    assert fn.tolist() == [4, 3]   # person missed, lowest prob of person first
    fp, fn = confident_mistakes({**m, "preds": m["labels"]})
    assert len(fp) == len(fn) == 0


def test_bad_inputs_are_one_line_errors(student, synth_shards, tmp_path, capsys):
    err = one_line_error(capsys, "eval", "no-such-run", "--runs-dir", str(student.parent))
    assert "no run 'no-such-run'" in err
    fake = tmp_path / "model.onnx"
    fake.write_bytes(b"this is not a protobuf at all")
    err = one_line_error(capsys, "eval", str(fake), "--shards", str(synth_shards))
    assert "is not a readable ONNX model" in err
    # a checkpoint whose config names no shards, outside any run folder
    ckpt = torch.load(student / "model.pt", weights_only=True)
    ckpt["config"] = {}
    torch.save(ckpt, tmp_path / "bare.pt")
    err = one_line_error(capsys, "eval", str(tmp_path / "bare.pt"))
    assert "pass --shards" in err
    err = one_line_error(capsys, "eval", str(student), "--shards", str(tmp_path / "nowhere"))
    assert "shard folder not found" in err
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a run folder"):
        run_eval(checkpoint=str(tmp_path / "empty"))
