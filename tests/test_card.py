"""card.md: result, change vs previous with signed deltas, the teacher by its run, config in
the kd:/teacher: shape, the code version, export, and notes that survive every rewrite."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from conftest import T0, T1, T2, finished_run, summary, teacher_info
from vwwfast import config as C
from vwwfast.records.card import NOTES_BEGIN, NOTES_END
from vwwfast.records.report import write_report
from vwwfast.records.runs import Run
from vwwfast.provenance import versions

pytestmark = pytest.mark.usefixtures("quick_curves")  # conftest: curves.png as a placeholder


def _card(run: Run) -> str:
    return (run.path / "card.md").read_text()


def _kd_run(tmp_path, **kw):
    teacher = finished_run(tmp_path, C.TrainConfig(shards="s", tag="base", epochs=2), T0, 0.94,
                           kind="teacher")
    cfg = C.DistillConfig(shards="s", cache="s/teacher-mbv3l224.zarr", alpha=0.7, alpha_end=0.2,
                          temperature=4.0, epochs=2, tag="kd", note="alpha 0.7 -> 0.2", **kw)
    run = finished_run(tmp_path, cfg, T1, 0.85, teacher=teacher_info(teacher))
    run.update_summary({"remarks": ["2 epochs over 10 cached views: epoch e replays view (e - 1) mod 10"]})
    write_report(run)
    return teacher, run


def test_card_sections(tmp_path):
    teacher, run = _kd_run(tmp_path)
    card = _card(run)
    assert card.startswith(f"# {run.id}\n")
    assert "**Goal:** alpha 0.7 -> 0.2" in card
    assert "**Status:** finished: 2 of 2 epochs in 2m05s" in card
    assert "Short id `10-27_16-00-00_kd`" in card
    assert "| **0.8500** | 2 | 0.8700 | 0.8300 | 2,000 | 2m05s |" in card  # best epoch from 1
    assert "Confusion matrix (val, epoch 2)" in card
    assert "| **no-person** | TN 40 | FP 10 |" in card and "| **person** | FN 5 | TP 45 |" in card
    # the teacher by its run, with its accuracy and a link to its card
    assert f"- run: [`10-27_15-06-43_base`](../{teacher.id}/card.md), val acc 0.9400" in card
    assert "mobilenet_v3_large at 224 px" in card and "(sha256 aaaaaaaaaaaa)" in card
    assert "cached in `shards/s/teacher-mbv3l224.zarr` (10 views" in card
    assert "- 2 epochs over 10 cached views" in card
    v = versions()
    assert f"vwwfast {v['vwwfast']}" in card
    assert (f"(git {v['git']})" if v["git"] else "(not a git checkout)") in card
    assert card.rstrip().endswith(NOTES_END)


def test_card_config_is_sectioned_and_reads_back(tmp_path):
    _, run = _kd_run(tmp_path)
    card = _card(run)
    blocks = re.findall(r"```yaml\n(.*?)```", card, re.S)
    first = yaml.safe_load(blocks[0])
    assert list(first)[:2] == ["kd", "teacher"]
    assert first["kd"]["alpha"] == 0.7 and first["kd"]["alpha_end"] == 0.2
    assert first["teacher"]["temperature"] == 4.0
    assert "batch_size" not in first  # a default: folded away below
    data = {}
    for b in blocks:
        data.update(yaml.safe_load(b))
    assert C.to_dict(C.resolve(C.DistillConfig, data, {}, where="card")) == run.config


def test_change_vs_previous_says_what_the_change_did(tmp_path):
    a = finished_run(tmp_path, C.DistillConfig(shards="s", lr=0.002, epochs=3), T0, 0.80, epochs=3)
    finished_run(tmp_path, C.TrainConfig(shards="s"), T1, 0.90, kind="teacher")  # another kind
    b = finished_run(tmp_path, C.DistillConfig(shards="s", lr=0.001, alpha_end=0.0, epochs=3,
                                               note="lower lr"), T2, 0.85, epochs=2)
    card = _card(b)
    assert "## Change vs previous student run" in card
    assert f"Previous: `{a.short_id}` ({a.id}, finished)" in card
    assert "| val acc | 0.8500 | 0.8000 | +0.0500 |" in card
    assert "| recall no-person | 0.8700 | 0.8200 | +0.0500 |" in card
    assert "| best epoch | 2 | 3 | -1 |" in card
    assert "- lr: 0.002 -> 0.001" in card and "- alpha_end: unset -> 0" in card
    assert "- note:" not in card  # the goal is not a "change"
    assert "First run of its kind." in _card(a)


def test_notes_survive_every_rewrite(tmp_path):
    run = finished_run(tmp_path, C.DistillConfig(shards="s", epochs=4), T0, 0.8, status="interrupted",
                       resume_command="vwwfast distill --resume x")
    notes = "- alpha too high early: recall person drops\n\n  next: try alpha_end 0.2\n| a | b |"
    card = _card(run)
    assert "continue with `vwwfast distill --resume x`" in card
    (run.path / "card.md").write_text(card.replace(f"{NOTES_BEGIN}\n", f"{NOTES_BEGIN}\n{notes}\n"))
    write_report(run)                                    # `vwwfast export` rewrites it
    write_report(run, run.finish(summary(0.82, epoch=4), "finished"))  # the resumed run finishes
    card = _card(run)
    assert f"{NOTES_BEGIN}\n{notes}\n{NOTES_END}\n" in card
    assert "**Status:** finished" in card and card.count(NOTES_BEGIN) == 1
    # the closing marker deleted by hand: the notes run to the end and still survive
    (run.path / "card.md").write_text(card.replace(NOTES_END, "more words"))
    write_report(run)
    assert f"{notes}\nmore words\n{NOTES_END}" in _card(run)


def test_status_lines(tmp_path):
    failed = finished_run(tmp_path, C.DistillConfig(shards="s", epochs=5), T0, 0.8, status="failed",
                          error="the training loss became nan in epoch 2")
    assert "**Status:** failed after 2 of 5 epochs: the training loss became nan in epoch 2" in _card(failed)
    early = finished_run(tmp_path, C.DistillConfig(shards="s", epochs=5, patience=1), T1, 0.8,
                         stopped_early=True)
    assert "stopped early: no better val accuracy for 1 epochs" in _card(early)


def test_supervised_student_and_teacher_cards(tmp_path):
    sup = finished_run(tmp_path, C.DistillConfig(shards="s", alpha=0.0, margin_weight=0.0), T0, 0.8)
    assert "None: a supervised student (alpha 0)." in _card(sup)
    teacher = finished_run(tmp_path, C.TrainConfig(shards="s"), T1, 0.9, kind="teacher")
    card = _card(teacher)
    assert "## Teacher" not in card and "kd:" not in card


def test_export_section(tmp_path):
    run = finished_run(tmp_path, C.DistillConfig(shards="s"), T0, 0.85)
    (run.path / "export").mkdir()
    report = {"float": {"file": "model.pt", "precision": "float32", "bytes": 6_090_000, "acc": 0.85,
                        "recall_0": 0.87, "recall_1": 0.83},
              "files": {"model.onnx": {"precision": "float32", "bytes": 6_100_000, "acc": 0.85,
                                       "recall_0": 0.87, "recall_1": 0.83},
                        "model-int8.onnx": {"precision": "int8", "bytes": 1_870_000, "acc": 0.847,
                                            "peak_activation_bytes": 64_512},
                        "model-int8.tflite": {}},  # missing keys are tolerated
              "quantization": {"calibration_views": 512}, "warnings": []}
    (run.path / "export" / "export.json").write_text(json.dumps(report))
    write_report(run)
    card = _card(run)
    assert "## Export" in card
    assert "| model.pt (float) | float32 | 6.09 MB | - | 0.8500 | - |" in card
    assert "| model-int8.onnx | int8 | 1.87 MB | 64.5 KB | 0.8470 | -0.30 points | - | - |" in card
    assert "| model-int8.tflite | - | - | - | - | - | - | - |" in card
