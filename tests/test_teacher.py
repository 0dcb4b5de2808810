"""Views and logits sources: every setting a store or a teacher fixes is checked or filled in."""

import json

import pytest
import yaml

from vwwfast import config as C
from vwwfast.errors import UserError
from vwwfast.models import build_model, load_checkpoint, save_checkpoint
from vwwfast.train.commands import distill


def _cfg(shards, tmp_path, **kw):
    base = dict(shards=str(shards), input_size=32, epochs=1, batch_size=32, renderer="decoded",
                decoded_size=48, runs_dir=str(tmp_path / "runs"), bn_settle=32)
    base.update(kw)
    return C.resolve(C.DistillConfig, base)


def _no_runs(tmp_path):
    return not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_cached_run_records_the_stores_settings(synth_shards, small_store, tmp_path):
    s = distill(_cfg(synth_shards, tmp_path, cache=small_store))
    saved = yaml.safe_load(open(s["run_dir"] + "/config.yaml"))
    assert (saved["view_spec"], saved["view_seed"], saved["teacher_input_size"]) == ("default", 0, 48)
    teacher = json.loads(open(s["run_dir"] + "/summary.json").read())["teacher"]
    assert teacher["run"] and teacher["role"] == "teacher" and teacher["input_size"] == 48


@pytest.mark.parametrize("kw, match", [
    ({"view_spec": "plain"}, "other views than this run asks for"),
    ({"view": {"erase": 0.25}}, "erase: store 0.0, asked 0.25"),
    ({"view_seed": 5}, "--view-seed 5 differs"),
    ({"teacher_input_size": 96}, "teacher input size is 96 in the config but .* 48 px"),
    ({"teacher_arch": "mobilenet_v3_large"}, "teacher arch is mobilenet_v3_large"),
])
def test_settings_the_store_fixes_must_agree(synth_shards, small_store, tmp_path, kw, match):
    with pytest.raises(UserError, match=match):
        distill(_cfg(synth_shards, tmp_path, cache=small_store, **kw))
    assert _no_runs(tmp_path)  # refused before any record was made


def test_a_teacher_given_with_a_cache_must_be_its_teacher(synth_shards, small_store, small_teacher, tmp_path):
    other = tmp_path / "other.pt"
    ck = load_checkpoint(small_teacher)
    save_checkpoint(other, build_model("mobilenet_v3_small"), arch=ck["arch"], input_size=48,
                    config={}, epoch=1, metrics={}, role="teacher")
    with pytest.raises(UserError, match=r"--teacher .*other.pt .* is not the teacher of"):
        distill(_cfg(synth_shards, tmp_path, cache=small_store, teacher=str(other)))
    s = distill(_cfg(synth_shards, tmp_path, cache=small_store, teacher=small_teacher))
    assert s["status"] == "finished"


def test_a_students_checkpoint_does_not_teach_by_accident(synth_shards, small_store, tmp_path):
    student = distill(_cfg(synth_shards, tmp_path / "s", cache=small_store))
    ckpt = student["run_dir"] + "/model.pt"
    with pytest.raises(UserError, match="written by a student run .*--self-distill"):
        distill(_cfg(synth_shards, tmp_path / "o", teacher_mode="online", teacher=ckpt, input_size=32))
    s = distill(_cfg(synth_shards, tmp_path / "o", teacher_mode="online", teacher=ckpt, self_distill=True))
    teacher = json.loads(open(s["run_dir"] + "/summary.json").read())["teacher"]
    assert teacher["role"] == "student" and teacher["run"] == student["run_dir"].split("/")[-1]


def test_online_teacher_settings_checked_against_its_checkpoint(synth_shards, small_teacher, tmp_path):
    with pytest.raises(UserError, match="teacher input size is 224"):
        distill(_cfg(synth_shards, tmp_path, teacher_mode="online", teacher=small_teacher,
                     teacher_input_size=224))
    with pytest.raises(UserError, match="teacher pretrained is true"):
        distill(_cfg(synth_shards, tmp_path, teacher_mode="online", teacher=small_teacher,
                     teacher_pretrained=True))
    with pytest.raises(UserError, match="--cache is for --teacher-mode cached"):
        distill(_cfg(synth_shards, tmp_path, teacher_mode="online", teacher=small_teacher,
                     cache="x.zarr"))
