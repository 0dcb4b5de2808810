"""`vwwfast tune` on the small fixture: a race end to end, its Optuna study, kill -9 and
--resume, two processes sharing one storage, --replay, and the refusals."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import cli, one_line_error, vwwfast_cmd, vwwfast_env
from test_kill import kill_when, start

FAST = ["--input-size", "48", "--epochs", "3", "--batch-size", "32", "--renderer", "decoded",
        "--decoded-size", "48", "--bn-settle", "64", "--holdout", "24"]


def tune_args(shards, store, runs: Path, *extra) -> list[str]:
    return ["tune", "--shards", shards, "--cache", store, *FAST, "--runs-dir", runs,
            "--space", "alpha=0.3:0.9", "--space", "temperature=1,4", "--seeds", "2", *extra]


def load_study(path: Path, name: str = "vwwfast-tune"):
    import optuna
    from optuna.storages.journal import JournalFileBackend
    return optuna.load_study(study_name=name, storage=optuna.storages.JournalStorage(
        JournalFileBackend(str(path))))


def the_tune(runs: Path) -> dict:
    [path] = [p for p in runs.iterdir() if (p / "tune.json").is_file()]
    return json.loads((path / "tune.json").read_text())


def summaries(runs: Path, tune: dict) -> dict[str, dict]:
    return {m["run"]: json.loads((runs / m["run"] / "summary.json").read_text())
            for r in tune["rounds"] for m in r["members"]}


@pytest.mark.slow
def test_a_tune_races_records_and_reports(synth_shards, small_store, tmp_path, capsys):
    runs = tmp_path / "runs"
    rc, err, out = cli(capsys, *tune_args(synth_shards, small_store, runs, "--trials", "3",
                                          "--rungs", "1", "2"))
    assert rc == 0, err
    tune = the_tune(runs)
    assert tune["status"] == "finished" and len(tune["rounds"]) == 1
    rnd = tune["rounds"][0]
    assert len(rnd["members"]) == 8 and {m["key"] for m in rnd["members"]} == {"t0", "t1", "t2", "control"}
    # eta 3 of 3 searched settings: one goes on at rung 1, two stop unresolved (budget)
    first = {v["setting"]: v["verdict"] for v in rnd["decisions"][0]["verdicts"]}
    assert list(first.values()).count("not resolved") == 2 and first["control"] == "go on"
    by_run = summaries(runs, tune)
    for m in rnd["members"]:
        s = by_run[m["run"]]
        if first[m["key"]] == "not resolved":
            assert s["status"] == "pruned" and s["epochs_done"] == 1
            assert s["pruned"]["rung"] == 1 and "budget" in s["pruned"]["reason"]
            assert "pruned by its tune's race after 1 of 3 epochs" in (runs / m["run"] / "card.md").read_text()
        else:
            assert s["status"] == "finished" and s["epochs_done"] == 3
    assert rnd["student_epochs"] == 4 * 1 + 4 * 3
    # the study: every trial ended, pruned ones PRUNED with their rung, the rest COMPLETE
    import optuna
    study = load_study(Path(tune["storage"]))
    states = {f"t{t.number}": t.state for t in study.trials}
    for key, verdict in first.items():
        if key != "control":
            want = optuna.trial.TrialState.PRUNED if verdict != "go on" else optuna.trial.TrialState.COMPLETE
            assert states[key] == want
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 1 and done[0].value == pytest.approx(rnd["report"]["settings"][0]["selection_mean"])
    assert set(done[0].intermediate_values) == {1, 2} and len(done[0].user_attrs["runs"]) == 2
    assert all(t.user_attrs["pruned_at"] == 1 for t in study.trials if t.state == optuna.trial.TrialState.PRUNED)
    # the report: the pick, paired against the control on val
    assert "pick: t" in out and "on the report split (val, 48 images)" in out
    assert "16 student-epochs, 0.67 of a grid of these 4 settings x 2 seeds (24)" in out


@pytest.mark.slow
def test_a_tune_killed_then_resumed_completes_its_study(synth_shards, small_store, tmp_path, capsys):
    runs = tmp_path / "runs"
    argv = [*tune_args(synth_shards, small_store, runs, "--trials", "3", "--rungs", "1")]
    argv[argv.index("--epochs") + 1] = "2"
    log = tmp_path / "tune.log"
    proc = start(log, *argv)

    def decided() -> bool:
        try:
            return bool(the_tune(runs)["rounds"][0]["decisions"])
        except (OSError, ValueError, IndexError, KeyError):
            return False
    kill_when(proc, decided, log)
    tune = the_tune(runs)
    assert tune["status"] == "running" and not tune["rounds"][0]["told"]
    # its sweep, or a run of it, continues with the tune: distill would skip the race
    member = runs / tune["rounds"][0]["members"][0]["run"]
    for ref in (runs / tune["rounds"][0]["sweep"], member):
        line = one_line_error(capsys, "distill", "--resume", ref, "--runs-dir", runs)
        assert f"is a round of a tune; continue it with `vwwfast tune --resume {runs / tune['id']}`" in line
    done = subprocess.run(vwwfast_cmd("tune", "--resume", tune["id"], "--runs-dir", runs),
                          env=vwwfast_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    tune = the_tune(runs)
    assert tune["status"] == "finished" and tune["rounds"][0]["told"]
    cut = {v["setting"] for v in tune["rounds"][0]["decisions"][0]["verdicts"] if v["verdict"] != "go on"}
    for run, s in summaries(runs, tune).items():
        key = next(m["key"] for m in tune["rounds"][0]["members"] if m["run"] == run)
        assert s["status"] == ("pruned" if key in cut else "finished"), (run, s["status"])
        if key not in cut:
            assert s["epochs_done"] == 2
    import optuna
    study = load_study(Path(tune["storage"]))
    assert len(study.trials) == 3
    assert all(t.state in (optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.COMPLETE)
               for t in study.trials)


@pytest.mark.slow
def test_two_tune_processes_share_one_study(synth_shards, small_store, tmp_path):
    shared = tmp_path / "shared.log"
    def argv(k: int) -> list:
        a = tune_args(synth_shards, small_store, tmp_path / f"runs{k}", "--trials", "1", "--rungs", "1",
                      "--storage", shared, "--seed", str(k))
        a[a.index("--epochs") + 1] = "2"
        return a
    procs = [subprocess.Popen(vwwfast_cmd(*argv(k)),
                              env=vwwfast_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for k in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()
    import optuna
    study = load_study(shared)
    assert len(study.trials) == 2
    assert {t.user_attrs["tune"] for t in study.trials} == {the_tune(tmp_path / f"runs{k}")["id"] for k in range(2)}
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


@pytest.mark.slow
def test_replay_of_a_finished_sweep(synth_shards, small_store, tmp_path, capsys):
    runs = tmp_path / "runs"
    rc, err, _ = cli(capsys, "distill", "--shards", synth_shards, "--cache", small_store, *FAST,
                     "--alpha", "0,0.5,0.9", "--init-seed", "0,1", "--runs-dir", runs)
    assert rc == 0, err
    [sweep] = [p for p in runs.iterdir() if (p / "sweep.json").is_file()]
    rc, err, out = cli(capsys, "tune", "--replay", sweep.name, "--runs-dir", runs, "--rungs", "1",
                       "--eta", "2")
    assert rc == 0, err
    # 2 of the 3 settings searched... the control (a0) always goes on, eta 2 keeps 1 of 2
    assert "rung 1 (noise floor" in out and "Kendall tau" in out
    assert "student-epochs: 14 of the sweep's 18 (0.78); 4 saved" in out
    assert "pick: a0." in out and "against the sweep's pick" in out
    from vwwfast import config as C
    from vwwfast.tune.replay import replay
    data = replay(C.resolve(C.TuneConfig, dict(replay=str(sweep), runs_dir=str(runs), rungs=[1], eta=2.0)))
    [decision] = data["decisions"]
    assert [v["verdict"] for v in decision["verdicts"]].count("not resolved") == 1
    assert data["pick"] in ("a0.5", "a0.9") and data["grid_pick"] in ("a0.5", "a0.9")


@pytest.mark.slow
def test_replay_refuses_a_sweep_without_holdout_or_replicates(synth_shards, small_store, tmp_path, capsys):
    fast = [x if x != "3" else "1" for x in FAST[:-2]]  # one epoch, no --holdout
    rc, err, _ = cli(capsys, "distill", "--shards", synth_shards, "--cache", small_store, *fast,
                     "--alpha", "0,0.5", "--init-seed", "0,1", "--runs-dir", tmp_path / "a")
    assert rc == 0, err
    [sweep] = [p for p in (tmp_path / "a").iterdir() if (p / "sweep.json").is_file()]
    assert "ran without --holdout" in one_line_error(capsys, "tune", "--replay", sweep, "--runs-dir",
                                                     tmp_path / "a", "--epochs", "1")


def test_the_refusals_write_nothing(synth_shards, small_store, tmp_path, capsys):
    runs = tmp_path / "runs"
    base = ["tune", "--shards", synth_shards, "--cache", small_store, *FAST[:-2], "--runs-dir", runs]
    for extra, message in [
        (["--space", "alpha=0.3:0.9", "--holdout", "96"], "--holdout 96 is as large as the train split"),
        (["--holdout", "24", "--space", "epochs=1:5"], "'epochs' is not a sweepable setting"),
        (["--space", "alpha=0.5:2"], "must be within the setting's range [0, 1]"),
        ([], "give at least one setting to search"),
        (["--space", "alpha=0.3:0.9", "--rungs", "3"], "a rung must be an epoch from 1 to 2"),
        (["--space", "alpha=0.3:0.9", "--storage", str(tmp_path / "no" / "s.log")], "does not exist"),
        (["--space", "alpha=0.3:0.9", "--storage", "nosuchdb://x/y"], "--storage nosuchdb://x/y: cannot open it"),
        (["--space", "alpha=0.3:0.9", "--init-seed", "3"], "--init-seed: tune gives every setting"),
    ]:
        line = one_line_error(capsys, *base, *extra)
        assert message in line, (extra, line)
        assert not runs.exists() or not any(runs.iterdir()), extra
    big = [x if x != "32" else "128" for x in base]  # 72 training samples after --holdout 24
    line = one_line_error(capsys, *big, "--holdout", "24", "--space", "alpha=0.3:0.9")
    assert "--batch-size 128 is larger than the 72 training samples" in line
    assert not runs.exists() or not any(runs.iterdir())
    assert "is not a tune" in one_line_error(capsys, "tune", "--resume", tmp_path, "--runs-dir", runs)
    assert "names no tune" in one_line_error(capsys, "tune", "--resume", "nothing", "--runs-dir", tmp_path)
