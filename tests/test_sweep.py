"""Several students in one pass: each equal to its lone run, failing and stopping alone."""

import json

import pytest

from vwwfast import config as C
from vwwfast.cli import main
from vwwfast.train.commands import distill

TIMING = ("img_per_s", "time_s")


def _base(shards, tmp_path, **kw):
    base = dict(shards=str(shards), input_size=32, epochs=2, batch_size=32, renderer="decoded",
                decoded_size=48, runs_dir=str(tmp_path / "runs"), lr=3e-3, bn_settle=64)
    base.update(kw)
    return base


def _records(summary):
    return [{k: v for k, v in json.loads(l).items() if k not in TIMING}
            for l in open(summary["run_dir"] + "/metrics.jsonl")]


@pytest.mark.slow
def test_sweep_students_equal_lone_runs(synth_shards, small_store, tmp_path):
    swept = C.resolve_sweep(C.DistillConfig, _base(synth_shards, tmp_path / "sweep", cache=small_store,
                                                   alpha=[0.0, 0.5, 0.8], init_seed=[1, 1, 2],
                                                   sweep_mode="zip"))
    assert isinstance(swept, C.Sweep) and len(swept.configs) == 3
    together = distill(swept)
    for cfg, member in zip(swept.configs, together):
        alone = distill(C.resolve(C.DistillConfig, {**_base(synth_shards, tmp_path / "alone",
                                                            cache=small_store),
                                                    "alpha": cfg.alpha, "init_seed": cfg.init_seed}))
        assert _records(member) == _records(alone), cfg.alpha  # exactly, losses and accuracies
    sweep_dirs = [p for p in (tmp_path / "sweep" / "runs").iterdir() if (p / "sweep.json").is_file()]
    assert len(sweep_dirs) == 1
    record = json.loads((sweep_dirs[0] / "sweep.json").read_text())
    assert [m["run"] for m in record["members"]] == [s["run_dir"].split("/")[-1] for s in together]
    assert all(json.loads(open(s["run_dir"] + "/summary.json").read())["sweep"] == record["id"]
               for s in together)


def test_a_nan_student_fails_alone(synth_shards, small_store, tmp_path):
    out = distill(C.resolve_sweep(C.DistillConfig, _base(synth_shards, tmp_path, cache=small_store,
                                                         lr=[3e-3, 1e30])))
    status = {s["lr_peak"]: s["status"] for s in out}
    assert status == {3e-3: "finished", 1e30: "failed"}
    failed = next(s for s in out if s["status"] == "failed")
    assert "nan" in failed["error"].lower() or "inf" in failed["error"].lower()
    good = next(s for s in out if s["status"] == "finished")
    assert len(_records(good)) == 2


def test_early_stop_is_per_student(synth_shards, small_store, tmp_path, monkeypatch):
    from test_train import frozen_accuracy
    frozen_accuracy(monkeypatch)  # no better val accuracy after epoch 1
    out = distill(C.resolve_sweep(C.DistillConfig, _base(synth_shards, tmp_path, cache=small_store,
                                                         epochs=4, patience=[1, 0])))
    lengths = sorted(len(_records(s)) for s in out)
    assert lengths == [2, 4]


@pytest.mark.slow
def test_sweep_resumes_after_ctrl_c(synth_shards, small_store, tmp_path, monkeypatch):
    import vwwfast.train.loop as T
    from test_train import count_steps
    settings = _base(synth_shards, tmp_path, cache=small_store, epochs=3, alpha=[0.3, 0.6])
    full = distill(C.resolve_sweep(C.DistillConfig, {**settings, "runs_dir": str(tmp_path / "full")}))
    real, calls = T.evaluate_many, {"n": 0}

    def stop(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **kw)
    monkeypatch.setattr(T, "evaluate_many", stop)
    with pytest.raises(KeyboardInterrupt):
        distill(C.resolve_sweep(C.DistillConfig, settings))
    monkeypatch.setattr(T, "evaluate_many", real)
    sweep_dir = next(p for p in (tmp_path / "runs").iterdir() if (p / "sweep.json").is_file())
    assert json.loads((sweep_dir / "sweep.json").read_text())["status"] == "interrupted"
    steps = count_steps(monkeypatch)
    again = distill(C.resolve(C.DistillConfig, {"resume": str(sweep_dir)}))
    assert [_records(s) for s in again] == [_records(s) for s in full]
    # 3 steps an epoch: each student trained epochs 2 and 3 only (resumed, not restarted)
    assert len(steps) == 2 * 2 * 3 and [s["optimizer_steps"] for s in again] == [9, 9]


def test_supervised_and_online_students_share_a_pass(synth_shards, small_teacher, tmp_path):
    out = distill(C.resolve_sweep(C.DistillConfig, _base(
        synth_shards, tmp_path, epochs=1, teacher_mode="online", teacher=small_teacher,
        alpha=[0.0, 0.55])))
    lines = [_records(s)[0] for s in out]
    assert lines[0]["loss_kl"] == 0 and lines[1]["loss_kl"] > 0
    assert lines[0]["views_sha256"] == lines[1]["views_sha256"]


def test_shared_settings_refuse_lists_on_the_command_line(synth_shards, capsys):
    assert main(["distill", "--shards", str(synth_shards), "--epochs", "2,3"]) == 2
    err = capsys.readouterr().err
    assert "shared by every student" in err and len(err.strip().splitlines()) == 1
