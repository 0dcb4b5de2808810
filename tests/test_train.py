import json

import numpy as np
import pytest
import torch

from vwwfast import config as C
from vwwfast.errors import UserError
from vwwfast.train import distill, fit, onecycle, train_teacher


def _cfg(shards, tmp_path, cls=C.TrainConfig, **kw):
    base = dict(shards=str(shards), arch="mobilenet_v3_small", input_size=32, epochs=2,
                batch_size=32, renderer="decoded", decoded_size=48, runs_dir=str(tmp_path / "runs"),
                lr=3e-3)
    base.update(kw)
    return C.resolve(cls, base)


def test_run_end_to_end_writes_every_record(synth_shards, tmp_path):
    s = train_teacher(_cfg(synth_shards, tmp_path, tag="t", note="smoke"))
    run = tmp_path / "runs" / s["run_dir"].split("/")[-1]
    for f in ("config.yaml", "metrics.jsonl", "model.pt", "last.pt", "summary.json", "card.md", "curves.png"):
        assert (run / f).is_file(), f
    lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in lines] == [0, 1]
    for key in ("loss", "loss_ce", "val_acc", "recall_0", "recall_1", "confusion", "img_per_s", "lr"):
        assert key in lines[0]
    cm = np.array(lines[0]["confusion"])
    assert cm.sum() == 48 and abs(lines[0]["val_acc"] - np.trace(cm) / 48) < 1e-9
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["best_epoch"] in (0, 1)
    assert "_teacher_mbv3s_vww32_t" in run.name


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


def test_early_stopping(synth_shards, tmp_path):
    # lr 0 never improves on the first epoch's accuracy: patience 1 stops after epoch 2.
    s = train_teacher(_cfg(synth_shards, tmp_path, epochs=5, patience=1, lr=1e-12))
    lines = (tmp_path / "runs" / s["run_dir"].split("/")[-1] / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2


@pytest.mark.slow
def test_resume_equals_uninterrupted(synth_shards, tmp_path, monkeypatch):
    import vwwfast.train as T
    full = train_teacher(_cfg(synth_shards, tmp_path / "a", epochs=3))
    real_evaluate, calls = T.evaluate, {"n": 0}

    def evaluate_then_stop(*a, **kw):  # Ctrl-C during epoch 3's evaluation
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_evaluate(*a, **kw)
    monkeypatch.setattr(T, "evaluate", evaluate_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train_teacher(_cfg(synth_shards, tmp_path / "b", epochs=3))
    monkeypatch.setattr(T, "evaluate", real_evaluate)
    cut = next((tmp_path / "b" / "runs").iterdir())
    assert json.loads((cut / "summary.json").read_text())["status"] == "unfinished"
    train_teacher(C.resolve(C.TrainConfig, {"resume": str(cut)}))
    a = [json.loads(l) for l in (tmp_path / "a" / "runs" / full["run_dir"].split("/")[-1] / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(l) for l in (cut / "metrics.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in b] == [0, 1, 2]
    assert b[-1]["confusion"] == a[-1]["confusion"]
    assert b[-1]["loss"] == pytest.approx(a[-1]["loss"], rel=1e-5)


@pytest.fixture(scope="module")
def easy_shards(tmp_path_factory):
    """Bright images = person, dark = no person: learnable in a few steps."""
    from conftest import write_jpeg
    from vwwfast.shards import write_shards
    from vwwfast.sources.folder import folder_splits
    root = tmp_path_factory.mktemp("easy")
    rng = np.random.default_rng(0)
    from PIL import Image
    for cls, lo in (("person", 150), ("non_person", 0)):
        for i in range(60):
            arr = rng.integers(lo, lo + 100, (40, 40, 3), dtype=np.uint8)
            (root / "in" / cls).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(root / "in" / cls / f"{i}.jpg")
    splits, source = folder_splits(root / "in", val_fraction=0.3, seed=0)
    write_shards(root / "shards", splits, source=source, size=40, show_progress=False)
    return root / "shards"


@pytest.mark.slow
def test_bn_momentum_short_run_beats_majority(easy_shards, tmp_path):
    kw = dict(epochs=3, input_size=32, decoded_size=40, batch_size=16, lr=3e-3)
    settled = train_teacher(_cfg(easy_shards, tmp_path / "a", **kw))
    trailing = train_teacher(_cfg(easy_shards, tmp_path / "b", bn_momentum=0.01, bn_settle=0, **kw))
    assert settled["best_val_acc"] >= 0.9    # the defaults evaluate what the model learned
    assert trailing["best_val_acc"] <= 0.7   # torchvision's momentum alone: near the majority rate


def test_refuses_bad_shards(tmp_path):
    with pytest.raises(UserError, match="shard folder not found"):
        train_teacher(_cfg(tmp_path / "none", tmp_path))


def test_resume_dir_must_be_a_run(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(UserError):
        train_teacher(C.resolve(C.TrainConfig, {"shards": "s", "resume": str(tmp_path / "x")}))


def test_supervised_distill_needs_no_teacher(synth_shards, tmp_path):
    s = distill(_cfg(synth_shards, tmp_path, cls=C.DistillConfig, alpha=0.0, epochs=1))
    assert s["best_val_acc"] >= 0
