"""The training loop: records, schedules, early stopping, resume and what it refuses."""

import json

import numpy as np
import pytest
import torch

from vwwfast import config as C
from vwwfast.cli import main
from vwwfast.errors import UserError
from vwwfast.train.student import onecycle, scaled_lr
from vwwfast.train.commands import distill, train_teacher

from conftest import one_line_error


def _cfg(shards, tmp_path, cls=C.TrainConfig, **kw):
    base = dict(shards=str(shards), arch="mobilenet_v3_small", input_size=32, epochs=2,
                batch_size=32, renderer="decoded", decoded_size=48, runs_dir=str(tmp_path / "runs"),
                lr=3e-3, bn_settle=64)
    base.update(kw)
    return C.resolve(cls, base)


def _lines(summary):
    return [json.loads(l) for l in open(summary["run_dir"] + "/metrics.jsonl")]


def test_run_end_to_end_writes_every_record(synth_shards, tmp_path):
    s = train_teacher(_cfg(synth_shards, tmp_path, tag="t", note="smoke"))
    run = tmp_path / "runs" / s["run_dir"].split("/")[-1]
    for f in ("config.yaml", "metrics.jsonl", "model.pt", "last.pt", "summary.json", "card.md", "curves.png"):
        assert (run / f).is_file(), f
    lines = _lines(s)
    assert [l["epoch"] for l in lines] == [1, 2]  # numbered from 1 in the files too
    for key in ("loss", "loss_ce", "term_ce", "val_acc", "recall_0", "recall_1", "confusion",
                "img_per_s", "lr", "views_sha256"):
        assert key in lines[0]
    cm = np.array(lines[0]["confusion"])
    assert cm.sum() == 48 and abs(lines[0]["val_acc"] - np.trace(cm) / 48) < 1e-9
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["best_epoch"] in (1, 2)
    assert summary["fingerprints"]["shards_content_hash"] and summary["wall_time_s"] > 0
    assert "_teacher_mbv3s_vww32_t" in run.name
    ckpt = torch.load(run / "model.pt", weights_only=True)
    assert ckpt["role"] == "teacher" and ckpt["run"] == run.name
    assert ckpt["epoch"] == summary["best_epoch"]


def test_every_step_sees_a_full_batch(synth_shards, tmp_path, monkeypatch):
    # 96 training samples, batch 40: two full steps an epoch, the remaining 16 left to later epochs
    from vwwfast.train.student import Student
    seen = []
    real = Student.step
    monkeypatch.setattr(Student, "step", lambda self, x, y, z: seen.append(len(y)) or real(self, x, y, z))
    train_teacher(_cfg(synth_shards, tmp_path, epochs=1, batch_size=40))
    assert seen == [40, 40]
    with pytest.raises(UserError, match="larger than the 96 training samples"):
        train_teacher(_cfg(synth_shards, tmp_path, batch_size=128))


def test_onecycle_start_peak_end():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=1.0)
    cfg = C.TrainConfig(lr=0.01, pct_start=0.25, div_factor=25, final_div_factor=1e4)
    sched = onecycle(opt, cfg, 100)
    lrs = []
    for _ in range(100):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.01 / 25)
    assert max(lrs) == pytest.approx(0.01, rel=1e-3) and int(np.argmax(lrs)) in (24, 25)
    assert lrs[-1] == pytest.approx(0.01 / 25 / 1e4, rel=1e-2)


def test_lr_scaling_rules():
    cfg = C.TrainConfig(lr=1e-3, batch_size=512, lr_base_batch=128)
    assert scaled_lr(cfg) == 1e-3
    assert scaled_lr(C.TrainConfig(lr=1e-3, batch_size=512, lr_scaling="linear")) == pytest.approx(4e-3)
    assert scaled_lr(C.TrainConfig(lr=1e-3, batch_size=512, lr_scaling="sqrt")) == pytest.approx(2e-3)


def frozen_accuracy(monkeypatch, accuracies=None):
    """Evaluation that reports fixed val accuracies (one per epoch, the last repeated)."""
    import vwwfast.train.loop as T
    real, seen = T.evaluate_many, []

    def fixed(models, *a, **kw):
        out = real(models, *a, **kw)
        acc = (accuracies or [0.5])[min(len(seen), len(accuracies or [0.5]) - 1)]
        seen.append(acc)
        return [{**m, "acc": acc} for m in out]
    monkeypatch.setattr(T, "evaluate_many", fixed)


def test_early_stopping(synth_shards, tmp_path, monkeypatch):
    # no better val accuracy after epoch 1: patience 1 stops after epoch 2
    frozen_accuracy(monkeypatch)
    s = train_teacher(_cfg(synth_shards, tmp_path, epochs=5, patience=1))
    assert len(_lines(s)) == 2 and s["stopped_early"] and s["status"] == "finished"


def test_schedules_in_the_records(synth_shards, small_store, tmp_path):
    s = distill(_cfg(synth_shards, tmp_path, C.DistillConfig, cache=small_store, epochs=3,
                     alpha=0.8, alpha_end=0.2, margin_weight=0.1, margin_weight_end=0.0,
                     margin_decay_end_epoch=2))
    lines = _lines(s)
    assert [l["alpha"] for l in lines] == pytest.approx([0.8, 0.5, 0.2])
    assert [l["margin_weight"] for l in lines] == pytest.approx([0.1, 0.0, 0.0])
    for l in lines:  # the terms as they enter the loss sum to it
        assert l["term_ce"] + l["term_kl"] + l["term_margin"] == pytest.approx(l["loss"], rel=1e-4)
    assert [l["view"] for l in lines] == [0, 1, 0]
    summary = json.loads(open(s["run_dir"] + "/summary.json").read())
    assert summary["teacher"]["mode"] == "cached" and summary["teacher"]["store"] == small_store
    assert any("replays view" in r for r in summary["remarks"])


def count_steps(monkeypatch) -> list:
    """Every optimizer step from now on, one entry each."""
    from vwwfast.train.student import Student
    seen, real = [], Student.step
    monkeypatch.setattr(Student, "step", lambda self, *a: seen.append(1) or real(self, *a))
    return seen


def test_a_new_loss_term_reaches_every_record(synth_shards, tmp_path, monkeypatch):
    """Adding a loss term = entries in losses.py (TERMS, WEIGHTS, SETTINGS) and a field of
    config.py's RecipeSettings; here a toy term registered by the test. The trainer sums, records and prints it;
    curves.png draws it and its weight, TensorBoard groups them, the runs table shows its knob."""
    import dataclasses
    import io

    from rich.console import Console
    from test_runs import stub_curves

    from vwwfast.records import plots, tensorboard
    from vwwfast.records.runs import Run
    from vwwfast.records.table import print_runs
    from vwwfast.train import losses
    from vwwfast.train.loop import epoch_line

    @dataclasses.dataclass
    class ToyRecipe(C.RecipeSettings):  # as if declared in config.py's RecipeSettings
        toy_weight: float = C.opt(0.0, "weight of the toy term", lo=0, sweep=True, short="toy", kd=True)

    @dataclasses.dataclass
    class ToyConfig(ToyRecipe, C.DistillConfig):
        pass
    monkeypatch.setattr(C, "RecipeSettings", ToyRecipe)
    monkeypatch.setattr(C, "DistillConfig", ToyConfig)
    monkeypatch.setattr(losses, "TERMS", losses.TERMS + (losses.Term(
        "toy", "toy weight $\\times$ toy", lambda z_s, z_t, y, w: z_s.pow(2).mean(),
        lambda w: w["toy_weight"], teacher=False),))
    monkeypatch.setattr(losses, "WEIGHTS", losses.WEIGHTS + (
        losses.Weight("toy_weight", lambda s, epoch, epochs: s["toy_weight"], teacher=False),))
    monkeypatch.setitem(losses.SETTINGS, "toy_weight", 0.0)
    stub_curves(monkeypatch)  # the figure is drawn below, once

    sweep = C.resolve_sweep(ToyConfig, dict(
        shards=str(synth_shards), alpha=0.0, epochs=1, input_size=32, batch_size=32,
        renderer="decoded", decoded_size=48, bn_settle=0, runs_dir=str(tmp_path / "runs"),
        toy_weight=[0.0, 0.5], lr=[3e-3, 2e-3], sweep_mode="zip"))
    off, on = distill(sweep)
    record = _lines(on)[0]  # metrics.jsonl
    assert record["toy_weight"] == 0.5 and record["loss_toy"] > 0
    assert record["term_toy"] == pytest.approx(0.5 * record["loss_toy"])
    assert sum(v for k, v in record.items() if k.startswith("term_")) == pytest.approx(record["loss"], rel=1e-4)
    assert _lines(off)[0]["term_toy"] == 0
    assert "toy 0." in epoch_line(1, 1, record, losses.KDRecipe(toy_weight=0.5), None)

    fig = plots.curves_figure(Run(on["run_dir"]))
    texts = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert "toy weight $\\times$ toy" in texts and "toy weight (right axis)" in texts
    drawn = {line.get_label() for ax in fig.axes for line in ax.get_lines()}
    assert {"toy weight $\\times$ toy", "toy weight (right axis)"} <= drawn
    assert tensorboard.group("term_toy", C.kd_settings()) == "loss_terms"
    assert tensorboard.group("toy_weight", C.kd_settings()) == "schedule"

    console = Console(width=120, record=True, file=io.StringIO())  # room for every setting
    print_runs(tmp_path / "runs", console=console)
    header = next(line for line in console.export_text().splitlines() if line.startswith("run "))
    assert header.split().index("toy") < header.split().index("lr")  # a KD knob, shown first


def _interrupt_in_epoch(monkeypatch, epoch):
    import vwwfast.train.loop as T
    real = T.evaluate_many
    calls = {"n": 0}

    def evaluate_then_stop(*a, **kw):  # Ctrl-C during the evaluation of `epoch`
        calls["n"] += 1
        if calls["n"] == epoch:
            raise KeyboardInterrupt
        return real(*a, **kw)
    monkeypatch.setattr(T, "evaluate_many", evaluate_then_stop)
    return lambda: monkeypatch.setattr(T, "evaluate_many", real)


@pytest.mark.slow
def test_resume_equals_uninterrupted(synth_shards, tmp_path, monkeypatch):
    full = train_teacher(_cfg(synth_shards, tmp_path / "a", epochs=3))
    restore = _interrupt_in_epoch(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        train_teacher(_cfg(synth_shards, tmp_path / "b", epochs=3))
    restore()
    cut = next((tmp_path / "b" / "runs").iterdir())
    summary = json.loads((cut / "summary.json").read_text())
    assert summary["status"] == "interrupted" and "--resume" in summary["resume_command"]
    wall_before = summary["wall_time_s"]
    # 96 samples, batch 32: 3 optimizer steps an epoch; the checkpoint of epoch 2 counts 6
    assert torch.load(cut / "last.pt", weights_only=True)["optimizer_steps"] == 6
    assert summary["epochs_done"] == 2 and summary["optimizer_steps"] == 6
    steps = count_steps(monkeypatch)
    again = train_teacher(C.resolve(C.TrainConfig, {"resume": str(cut)}))
    assert len(steps) == 3 and again["optimizer_steps"] == 9  # epoch 3 alone: resumed, not restarted
    a, b = _lines(full), _lines(again)
    assert [l["epoch"] for l in b] == [1, 2, 3]
    assert b[-1]["confusion"] == a[-1]["confusion"]
    assert b[-1]["loss"] == pytest.approx(a[-1]["loss"], rel=1e-5)
    assert again["status"] == "finished" and again["wall_time_s"] > wall_before
    with pytest.raises(UserError, match="already finished"):  # nothing left to resume
        train_teacher(C.resolve(C.TrainConfig, {"resume": str(cut)}))


def test_resume_refuses_flags_and_changed_inputs(synth_shards, tmp_path, monkeypatch, capsys):
    restore = _interrupt_in_epoch(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        train_teacher(_cfg(synth_shards, tmp_path, epochs=2))
    restore()
    cut = next((tmp_path / "runs").iterdir())
    capsys.readouterr()
    assert main(["train-teacher", "--resume", str(cut), "--epochs", "6", "--lr", "0.3"]) == 2
    err = capsys.readouterr().err
    assert "drop --epochs, --lr" in err and len(err.strip().splitlines()) == 1
    # the shards changed since the run started: a resume would mix two data sets
    summary = json.loads((cut / "summary.json").read_text())
    summary["fingerprints"]["shards_content_hash"] = "0" * 64
    (cut / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(UserError, match="the shards changed"):
        train_teacher(C.resolve(C.TrainConfig, {"resume": str(cut)}))
    assert json.loads((cut / "summary.json").read_text())["status"] == "interrupted"  # as it was
    (cut / "last.pt").write_bytes(b"not a checkpoint")
    summary["fingerprints"]["shards_content_hash"] = json.loads(
        (synth_shards / "manifest.json").read_text())["content_hash"]
    (cut / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(UserError, match="not a checkpoint"):
        train_teacher(C.resolve(C.TrainConfig, {"resume": str(cut)}))
    assert json.loads((cut / "summary.json").read_text())["status"] == "interrupted"


def test_a_failing_run_is_recorded_as_failed(synth_shards, tmp_path, monkeypatch):
    import vwwfast.train.loop as T
    monkeypatch.setattr(T, "evaluate_many", lambda *a, **kw: (_ for _ in ()).throw(RuntimeError("disk on fire")))
    with pytest.raises(RuntimeError):
        train_teacher(_cfg(synth_shards, tmp_path, epochs=1))
    run = next((tmp_path / "runs").iterdir())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and "disk on fire" in summary["error"]
    assert "failed" in (run / "card.md").read_text()


def tree(root) -> list[str]:
    """Every path under `root` (none when it does not exist)."""
    from pathlib import Path
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*")) if Path(root).exists() else []


def test_a_refused_command_leaves_the_runs_folder_as_it_was(synth_shards, small_teacher, tmp_path,
                                                           capsys):
    """What the user named is checked before any folder is made: a bad --init (missing, random
    bytes, a checkpoint of another arch), a KD sweep without --cache, a missing cache; a lone run
    and a sweep alike. One line, exit 2, and the runs folder exactly as it was."""
    runs = tmp_path / "runs"
    (runs / "earlier").mkdir(parents=True)
    (runs / "earlier" / "note.txt").write_text("kept")
    before = tree(runs)
    flags = ["distill", "--shards", str(synth_shards), "--epochs", "1",
             "--input-size", "32", "--batch-size", "32", "--renderer", "decoded", "--decoded-size", "48",
             "--device", "cpu", "--runs-dir", str(runs)]
    noise = tmp_path / "noise.pt"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    refused = [
        (["--alpha", "0", "--init", str(tmp_path / "missing.pt")], "missing.pt"),
        (["--alpha", "0", "--init", str(noise)], "noise.pt"),
        (["--alpha", "0", "--init", small_teacher, "--arch", "mobilenet_v3_large"], "mobilenet_v3_small"),
        (["--alpha", "0", "--init", str(noise), "--lr", "3e-3,1e-3"], "noise.pt"),
        (["--alpha", "0,0.55"], "needs --cache"),
        (["--alpha", "0.5", "--cache", str(tmp_path / "none.zarr")], "none.zarr"),
    ]
    for extra, words in refused:
        line = one_line_error(capsys, *flags, *extra)
        assert words in line, (extra, line)
        assert tree(runs) == before, extra
    line = one_line_error(capsys, "train-teacher", *flags[1:], "--init", str(noise))
    assert "noise.pt" in line and tree(runs) == before


def test_nan_loss_fails_the_run(synth_shards, tmp_path):
    with pytest.raises(UserError, match="loss became nan"):
        train_teacher(_cfg(synth_shards, tmp_path, epochs=2, lr=1e30))
    run = next((tmp_path / "runs").iterdir())
    assert json.loads((run / "summary.json").read_text())["status"] == "failed"


@pytest.mark.slow
def test_bn_momentum_short_run_beats_majority(easy_shards, tmp_path):
    kw = dict(epochs=3, input_size=32, decoded_size=40, batch_size=16, lr=3e-3, bn_settle=2048)
    settled = train_teacher(_cfg(easy_shards, tmp_path / "a", **kw))
    trailing = train_teacher(_cfg(easy_shards, tmp_path / "b", **{**kw, "bn_momentum": 0.01, "bn_settle": 0}))
    assert settled["best_val_acc"] >= 0.9    # the defaults evaluate what the model learned
    assert trailing["best_val_acc"] <= 0.7   # torchvision's momentum alone: near the majority rate


@pytest.fixture(scope="module")
def easy_shards(tmp_path_factory):
    """Bright images = person, dark = no person: learnable in a few steps."""
    from PIL import Image
    from vwwfast.data.shards import write_shards
    from vwwfast.data.sources.folder import folder_splits
    root = tmp_path_factory.mktemp("easy")
    rng = np.random.default_rng(0)
    for cls, lo in (("person", 150), ("non_person", 0)):
        for i in range(60):
            arr = rng.integers(lo, lo + 100, (40, 40, 3), dtype=np.uint8)
            (root / "in" / cls).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(root / "in" / cls / f"{i}.jpg")
    splits, source = folder_splits(root / "in", val_fraction=0.3, seed=0)
    write_shards(root / "shards", splits, source=source, size=40, show_progress=False)
    return root / "shards"


def test_refuses_bad_shards(tmp_path):
    with pytest.raises(UserError, match="shard folder not found"):
        train_teacher(_cfg(tmp_path / "none", tmp_path))
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_resume_dir_must_be_a_run(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(UserError):
        train_teacher(C.resolve(C.TrainConfig, {"resume": str(tmp_path / "x")}))


def test_supervised_distill_needs_no_teacher(synth_shards, tmp_path):
    s = distill(_cfg(synth_shards, tmp_path, cls=C.DistillConfig, alpha=0.0, epochs=1))
    assert s["best_val_acc"] >= 0
    assert json.loads(open(s["run_dir"] + "/summary.json").read())["teacher"] is None


def test_unused_teacher_is_refused(synth_shards, small_teacher, tmp_path):
    with pytest.raises(UserError, match="without a teacher"):
        distill(_cfg(synth_shards, tmp_path, C.DistillConfig, alpha=0.0, teacher_mode="online",
                     teacher=small_teacher))


@pytest.mark.slow
def test_compiled_step_gives_the_eager_losses(synth_shards, small_store, tmp_path):
    """--compile on (a minute of compilation on a cold CPU cache): the same losses as eager,
    and a scheduled alpha does not recompile the step."""
    import torch._dynamo
    # a small lr: at 3e-3 float rounding differences grow to ~1% in three epochs of 3 steps
    kw = dict(cache=small_store, epochs=3, alpha=0.8, alpha_end=0.2, margin_weight=0.05, lr=1e-4)
    eager = distill(_cfg(synth_shards, tmp_path / "a", C.DistillConfig, compile="off", **kw))
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = distill(_cfg(synth_shards, tmp_path / "b", C.DistillConfig, compile="on", **kw))
    a, b = _lines(eager), _lines(compiled)
    for x, y in zip(a, b):
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-4)
        assert y["alpha"] == x["alpha"]
    assert compiled["compile_s"] > 0 and eager["compile_s"] == 0
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] <= 2  # not one per epoch


def test_train_limit_trains_on_its_subset_only(synth_shards, small_store, tmp_path, monkeypatch):
    """--train-limit: every step reads the cached rows of the subset (the store covers every
    sample), BN settles on it, and the config records the subset's seed."""
    from vwwfast.data.epochs import train_subset
    from vwwfast.teach.teacher import CachedTeacher
    read, settled = [], []
    real_logits = CachedTeacher.logits
    monkeypatch.setattr(CachedTeacher, "logits", lambda self, epoch, idx, params: read.append(
        idx.tolist() if torch.is_tensor(idx) else list(idx)) or real_logits(self, epoch, idx, params))
    import vwwfast.train.loop as T
    real_settle = T.settle_bn
    monkeypatch.setattr(T, "settle_bn", lambda models, data, order, *a: settled.append(list(order))
                        or real_settle(models, data, order, *a))
    s = distill(_cfg(synth_shards, tmp_path, cls=C.DistillConfig, cache=small_store, train_limit=40,
                     seed=3, epochs=2))
    subset = set(train_subset(96, 40, 3).tolist())
    assert len(read) == 2 and all(len(b) == 32 and set(b) <= subset for b in read)  # 1 step an epoch
    assert read[0] != read[1]                                       # a new order every epoch
    assert all(sorted(o) == sorted(subset) for o in settled)
    saved = C.load_yaml(s["run_dir"] + "/config.yaml")
    assert (saved["train_limit"], saved["train_limit_seed"]) == (40, 3)
    with pytest.raises(UserError, match="--train-limit 97 is more than the 96 training samples"):
        train_teacher(_cfg(synth_shards, tmp_path / "over", train_limit=97))
    with pytest.raises(UserError, match="--train-limit-seed is the seed of --train-limit's subset"):
        train_teacher(_cfg(synth_shards, tmp_path / "over", train_limit_seed=1))
    assert not (tmp_path / "over").exists()                         # refused before any record


def _compile_runs() -> bool:
    """torch.compile's CPU backend builds C++: without a compiler it cannot run here."""
    import torch._dynamo
    try:
        torch.compile(lambda t: t * 2 + 1)(torch.ones(3))
        return True
    except Exception:
        return False
    finally:
        torch._dynamo.reset()


@pytest.mark.parametrize("backend", ["eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_compiled_step_is_one_graph_for_the_whole_run(backend, monkeypatch):
    """The trainer's compiled step: no graph break, and one compilation for every step of
    every epoch while the scheduled weights (alpha, margin) change. 'eager': Dynamo alone
    (what decides breaks and recompiles), fast; 'inductor': the real compiled step."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    from vwwfast.train.student import Student
    if backend == "inductor" and not _compile_runs():
        pytest.skip("torch.compile cannot run on this machine (no C++ compiler)")
    if backend == "eager":
        real = torch.compile
        monkeypatch.setattr(torch, "compile", lambda fn, **kw: real(fn, backend="eager",
                                                                      dynamic=kw.get("dynamic")))
    torch._dynamo.reset()
    counters.clear()
    cfg = C.resolve(C.DistillConfig, dict(shards="unused", batch_size=4, input_size=32, epochs=3,
                                          alpha=0.8, alpha_end=0.2, margin_weight=0.05,
                                          margin_weight_end=0.0, margin_decay_end_epoch=3, compile="on"))
    s = Student(cfg, "student", torch.device("cpu"), steps_per_epoch=2)
    x = torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y, z = torch.tensor([0, 1, 1, 0]), torch.randn(4, 2)
    seen = []
    with torch._dynamo.config.patch(error_on_recompile=True):  # a recompile raises
        for epoch in (1, 2, 3):
            s.begin_epoch(epoch)
            seen.append((s.weights["alpha"], s.weights["margin_weight"]))
            for _ in range(2):
                s.step(x, y, z)
    assert len(set(seen)) == 3  # the weights did change between epochs
    assert dict(counters["graph_break"]) == {}
    assert counters["stats"]["unique_graphs"] == 1
    explained = torch._dynamo.explain(s._forward_loss)(x, y, z, s.scheduled)
    assert explained.graph_break_count == 0 and explained.graph_count == 1
    torch._dynamo.reset()
