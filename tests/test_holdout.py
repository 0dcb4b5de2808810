"""--holdout: training samples set apart, never trained on, where a run chooses its checkpoint
and early stopping, so that val is only reported."""

import json
import re

import numpy as np
import pytest
import torch

from conftest import one_line_error
from vwwfast import config as C
from vwwfast import distributed as D
from vwwfast.data.epochs import train_subset, training_samples
from vwwfast.errors import UserError
from vwwfast.records.selection import read as read_selection
from vwwfast.train.commands import distill

FAST = dict(input_size=32, epochs=2, batch_size=16, renderer="decoded", decoded_size=48,
            bn_settle=32, alpha=0.0)


# ---------------------------------------------------------------------------------------
# The samples

def test_the_holdout_is_disjoint_from_training_and_fixed_by_its_seed():
    subset, held = training_samples(100, holdout=20, holdout_seed=3, limit=None, limit_seed=0)
    assert len(held) == 20 and len(subset) == 80 and not set(held) & set(subset)
    assert sorted(np.concatenate([held, subset])) == list(range(100))
    again = training_samples(100, holdout=20, holdout_seed=3, limit=None, limit_seed=0)
    assert np.array_equal(again[1], held)
    other = training_samples(100, holdout=20, holdout_seed=4, limit=None, limit_seed=0)[1]
    assert not np.array_equal(other, held)
    limited, held2 = training_samples(100, holdout=20, holdout_seed=3, limit=30, limit_seed=1)
    assert np.array_equal(held2, held) and len(limited) == 30 and not set(limited) & set(held)


def test_without_a_holdout_the_subset_is_what_it_was():
    for limit in (None, 37):
        subset, held = training_samples(96, holdout=None, holdout_seed=0, limit=limit, limit_seed=5)
        assert np.array_equal(subset, train_subset(96, limit, 5)) and len(held) == 0


@pytest.mark.parametrize("holdout,limit,message", [
    (96, None, "--holdout 96 is as large as the train split (96 samples)"),
    (200, None, "as large as the train split"),
    (90, 10, "--train-limit 10 with --holdout 90: the train split's 96 samples leave 6"),
])
def test_sizes_that_leave_nothing_to_train_on_are_refused(holdout, limit, message):
    with pytest.raises(UserError, match=re.escape(message)):
        training_samples(96, holdout=holdout, holdout_seed=0, limit=limit, limit_seed=0)


def _inputs(synth_shards, **kw):
    from vwwfast.train.inputs import Inputs, resolve_configs
    cfg = C.resolve(C.DistillConfig, dict(shards=str(synth_shards), **FAST, **kw))
    (cfg,) = resolve_configs([cfg])
    return Inputs(cfg, needs_teacher=False)


def test_no_rank_ever_trains_on_the_holdout(synth_shards, monkeypatch):
    """Every epoch's order on each of 2 ranks (torchrun's split, simulated) leaves it out."""
    with _inputs(synth_shards, holdout=24, holdout_seed=7) as inputs:
        held = set(inputs.holdout.tolist())
        assert len(held) == 24
        seen = set()
        monkeypatch.setattr(D, "world_size", lambda: 2)
        for rank in (0, 1):
            monkeypatch.setattr(D, "rank", lambda r=rank: r)
            for epoch in (1, 2, 3):
                order = inputs.epoch(epoch).order
                assert not held & set(order.tolist())
                seen |= set(order.tolist())
        assert seen == set(range(96)) - held


# ---------------------------------------------------------------------------------------
# Runs

def _distill(synth_shards, tmp_path, **kw):
    return distill(C.resolve_sweep(C.DistillConfig, dict(
        shards=str(synth_shards), runs_dir=str(tmp_path / "runs"), **{**FAST, **kw})))


@pytest.fixture
def trained_indices(monkeypatch):
    """Every sample index of every training batch any student stepped on."""
    from vwwfast.train.inputs import Inputs
    seen: list[int] = []
    real = Inputs.train_batches

    def recording(self, epoch, batch_size):
        for x, y, z_t, idx in real(self, epoch, batch_size):
            seen.extend(np.asarray(idx).tolist())
            yield x, y, z_t, idx
    monkeypatch.setattr(Inputs, "train_batches", recording)
    return seen


@pytest.mark.slow
def test_a_sweep_never_trains_on_its_holdout_and_keeps_its_predictions(
        synth_shards, small_store, tmp_path, trained_indices):
    summaries = _distill(synth_shards, tmp_path, holdout=16, holdout_seed=1, cache=small_store,
                         alpha=[0.0, 0.55])
    run = summaries[0]["run_dir"]
    sel = read_selection(run)
    assert sel.split == "holdout" and len(sel.indices) == 16 and sel.epochs == [1, 2]
    assert trained_indices and not set(sel.indices.tolist()) & set(trained_indices)
    for s in summaries:
        assert s["selected_on"] == "holdout" and s["best_holdout_acc"] is not None
        records = [json.loads(line) for line in open(f"{s['run_dir']}/metrics.jsonl")]
        assert [r["holdout_acc"] for r in records] == pytest.approx(
            read_selection(s["run_dir"]).accuracy().tolist())
        saved = C.load_yaml(f"{s['run_dir']}/config.yaml")
        assert saved["holdout"] == 16 and saved["holdout_seed"] == 1


@pytest.mark.slow
def test_selection_predictions_equal_a_reevaluation_of_the_checkpoint(synth_shards, tmp_path,
                                                                      trained_indices):
    """A lone run: never trained on its holdout, whose last row is last.pt's predictions."""
    from vwwfast.data.shards import ShardSet
    from vwwfast.data.split import SplitData
    from vwwfast.models import model_from_checkpoint
    from vwwfast.train.evaluate import evaluate
    s = _distill(synth_shards, tmp_path, holdout=20)
    sel = read_selection(s["run_dir"])
    assert trained_indices and not set(sel.indices.tolist()) & set(trained_indices)
    model, _ = model_from_checkpoint(f"{s['run_dir']}/last.pt", device="cpu")
    data = SplitData(ShardSet.open(synth_shards), "train", C.RenderSettings(
        renderer="decoded", decoded_size=48), "cpu", 32)
    try:
        again = evaluate(model, data, 64, outputs=True, indices=sel.indices)
    finally:
        data.close()
    assert np.array_equal(again["indices"], sel.indices)
    assert np.array_equal(again["preds"], sel.preds[-1])  # last.pt is the last epoch's


def test_the_best_epoch_is_chosen_on_the_holdout(synth_shards, tmp_path, monkeypatch):
    """Val improves every epoch, the holdout gets worse: the holdout chooses epoch 1."""
    import vwwfast.train.loop as L
    real = L.evaluate_many
    epoch = {"n": 0}

    def scripted(models, data, batch_size, center_crop, outputs=False, indices=None):
        out = real(models, data, batch_size, center_crop, outputs=outputs, indices=indices)
        if indices is None:
            epoch["n"] += 1
        acc = 0.5 + 0.1 * epoch["n"] if indices is None else 0.9 - 0.1 * epoch["n"]
        return [{**m, "acc": acc} for m in out]
    monkeypatch.setattr(L, "evaluate_many", scripted)
    chosen = _distill(synth_shards, tmp_path / "a", holdout=16, epochs=3)
    epoch["n"] = 0
    on_val = _distill(synth_shards, tmp_path / "b", epochs=3)
    assert chosen["best_epoch"] == 1 and chosen["selected_on"] == "holdout"
    assert chosen["best_val_acc"] == pytest.approx(0.6)      # val's figure at epoch 1: reported
    assert chosen["best_holdout_acc"] == pytest.approx(0.8)
    assert on_val["best_epoch"] == 3 and on_val["selected_on"] == "val"


def test_a_run_without_holdout_chooses_on_val_and_keeps_no_selection(synth_shards, tmp_path):
    s = _distill(synth_shards, tmp_path, epochs=1)
    assert s["selected_on"] == "val" and s["best_holdout_acc"] is None
    assert read_selection(s["run_dir"]) is None
    record = json.loads(open(f"{s['run_dir']}/metrics.jsonl").readline())
    assert "holdout_acc" not in record


@pytest.mark.parametrize("flags,message", [
    (["--holdout", "96"], "--holdout 96 is as large as the train split (96 samples)"),
    (["--holdout", "90", "--train-limit", "10"], "--train-limit 10 with --holdout 90"),
    (["--holdout-seed", "3"], "--holdout-seed is the seed of --holdout's samples"),
])
def test_bad_holdouts_are_refused_before_anything_is_written(synth_shards, tmp_path, capsys,
                                                             flags, message):
    runs = tmp_path / "runs"
    err = one_line_error(capsys, "distill", "--shards", str(synth_shards), "--alpha", "0",
                         "--runs-dir", str(runs), *flags)
    assert message in err
    assert not runs.exists()


def test_a_resume_cannot_change_the_holdout(tmp_path, capsys):
    err = one_line_error(capsys, "distill", "--resume", str(tmp_path / "some_run"),
                         "--holdout", "10")
    assert "--resume continues a run with the settings it started with; drop --holdout" in err


# ---------------------------------------------------------------------------------------
# KDData

def test_kddata_leaves_the_holdout_out_and_hands_it_out_apart(synth_shards):
    from vwwfast import KDData
    with KDData(synth_shards, input_size=32, renderer="decoded", decoded_size=48, holdout=12,
                holdout_seed=2) as data:
        held = data.holdout
        assert len(held) == 12 and data.num_train == 84
        for epoch in (1, 2):
            for _, _, z_t, idx in data.train_batches(epoch, 16):
                assert z_t is None and not set(idx.tolist()) & set(held.tolist())
        got = [idx for _, _, idx in data.holdout_batches(5)]
        assert np.array_equal(np.concatenate(got), held)
        x, y, _ = next(iter(data.holdout_batches(12)))
        assert x.shape == (12, 3, 32, 32) and y.dtype == torch.int64
    with KDData(synth_shards, input_size=32, renderer="decoded", decoded_size=48) as data:
        assert len(data.holdout) == 0 and list(data.holdout_batches(8)) == []


# ---------------------------------------------------------------------------------------
# What the records say of it

@pytest.mark.usefixtures("quick_curves")
def test_card_runs_and_diff_say_which_split_chose(tmp_path, capsys):
    import io

    from rich.console import Console

    from conftest import T0, T1, cli, finished_run
    from vwwfast.records.table import print_runs
    runs = tmp_path / "runs"
    on_val = finished_run(runs, C.DistillConfig(shards="s", alpha=0.0, tag="v"), T0, 0.80)
    held = finished_run(runs, C.DistillConfig(shards="s", alpha=0.0, tag="h", holdout=100), T1,
                        0.81, selected_on="holdout", best_holdout_acc=0.77)
    assert "Best epoch chosen on val itself: the val acc is optimistic" in \
        (on_val.path / "card.md").read_text()
    assert "Best epoch chosen on the --holdout samples (accuracy 0.7700 there), never on val" in \
        (held.path / "card.md").read_text()
    console = Console(width=100, record=True, file=io.StringIO())
    print_runs(runs, console=console)
    text = console.export_text()
    assert "° best epoch chosen on val itself: that val acc is optimistic" in text
    row = next(line for line in text.splitlines() if line.startswith(on_val.short_id))
    assert " 2° " in row
    rc, _, out = cli(capsys, "runs", "--runs-dir", str(runs), "--diff", on_val.id, held.id)
    assert rc == 0 and re.search(r"chosen on\s+val\s+holdout", out)


def test_int8_calibration_draws_only_samples_the_run_trained_on(synth_shards, monkeypatch):
    from vwwfast.data.shards import ShardSet
    from vwwfast.data.split import SplitData
    from vwwfast.deploy.export import calibration_views
    config = C.to_dict(C.resolve(C.DistillConfig, dict(
        shards=str(synth_shards), alpha=0.0, holdout=30, holdout_seed=4, renderer="decoded",
        decoded_size=48)))
    drawn: list[int] = []
    real = SplitData.batches

    def recording(self, order, params, batch_size):
        drawn.extend(np.asarray(order).tolist())
        return real(self, order, params, batch_size)
    monkeypatch.setattr(SplitData, "batches", recording)
    views = calibration_views(ShardSet.open(synth_shards), config, 80, "cpu", 32)
    held = training_samples(96, holdout=30, holdout_seed=4, limit=None, limit_seed=None)[1]
    assert len(views) == 80 and drawn and not set(drawn) & set(held.tolist())
