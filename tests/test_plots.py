"""curves.png (terms as they enter the loss, schedules, best epoch, legends clear of the data),
`vwwfast runs --plot`, and TensorBoard events when tensorboard is installed."""

from __future__ import annotations

import sys

import pytest

from conftest import T0, T1, T2, epoch_record, finished_run, stub_curves
from vwwfast import config as C
from vwwfast.records import plots
from vwwfast.errors import UserError
from vwwfast.records.report import write_report
from vwwfast.records.runs import Run, SweepRecord
from vwwfast.records.table import runs_command
from vwwfast.train.losses import KDRecipe


def _kd_run(root, now=T0, alpha=0.8, alpha_end=0.2, epochs=6, **kw):
    cfg = C.DistillConfig(shards="s", alpha=alpha, alpha_end=alpha_end, epochs=epochs,
                          margin_weight=0.05, margin_weight_end=0.0, margin_decay_end_epoch=4, **kw)
    run = Run.create(root, "student", cfg, now=now)
    run.update_summary({"loss_terms": KDRecipe().labels()})  # as the trainer records them
    for e in range(1, epochs + 1):
        a = alpha + (alpha_end - alpha) * (e - 1) / (epochs - 1)
        m = 0.05 * max(0.0, 1 - (e - 1) / 3)
        run.log_epoch(epoch_record(e, 0.6 + 0.04 * e - 0.01 * (e == epochs), alpha=a, margin_weight=m))
    write_report(run, run.finish({"best_val_acc": 0.6 + 0.04 * (epochs - 1), "best_epoch": epochs - 1},
                                 "finished"))
    return run


def _legend_texts(ax) -> list[str]:
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend else []


def test_curves_of_a_kd_run(tmp_path):
    run = _kd_run(tmp_path)
    png = (run.path / "curves.png").read_bytes()
    assert png[:4] == b"\x89PNG" and len(png) > 20_000
    fig = plots.curves_figure(run)
    ax_loss, ax_val, ax_kd, ax_lr = fig.axes[:4]
    assert _legend_texts(ax_loss) == ["loss (their sum)", r"$(1-\alpha)\,$CE", r"$\alpha T^2\,$KL",
                                      r"margin weight $\times$ margin"]
    # the terms drawn are the weighted ones, which sum to the loss
    lines = {l.get_label(): l.get_ydata() for l in ax_loss.get_lines()}
    total = sum(lines[label] for label in _legend_texts(ax_loss)[1:])
    assert total == pytest.approx(lines["loss (their sum)"])
    assert any(t.startswith("best 0.8000 at epoch 5") for t in _legend_texts(ax_val))
    schedule = {l.get_label(): list(l.get_ydata()) for ax in fig.axes for l in ax.get_lines()}
    assert schedule["alpha (teacher weight)"][0] == pytest.approx(0.8)
    assert schedule["alpha (teacher weight)"][-1] == pytest.approx(0.2)
    assert schedule["margin weight (right axis)"][3:] == [0.0, 0.0, 0.0]  # reached at epoch 4
    assert "learning rate" in ax_lr.get_title()
    for ax in (ax_loss, ax_val, ax_kd, ax_lr):  # the best epoch marked in every panel
        assert any(list(l.get_xdata()) == [5, 5] for l in ax.get_lines())
    val_acc = next(l for l in ax_val.get_lines() if l.get_label() == "val acc")
    assert list(val_acc.get_xdata()) == [1, 2, 3, 4, 5, 6]  # epochs from 1


def test_terms_are_read_from_the_records(tmp_path):
    """A run recorded before the terms' names were kept draws its terms by their names."""
    run = finished_run(tmp_path, C.DistillConfig(shards="s", alpha=0.5), T0, 0.8, epochs=3)
    assert plots.loss_terms(run.epochs()) == ["ce", "kl", "margin"] and plots.uses_kd(run.epochs())
    fig = plots.curves_figure(run)
    assert _legend_texts(fig.axes[0]) == ["loss (their sum)", "ce", "kl", "margin"]


def test_legends_sit_clear_of_the_data(tmp_path):
    fig = plots.curves_figure(_kd_run(tmp_path))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        legend = ax.get_legend()
        if legend is not None:
            assert not legend.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))


def test_a_teacher_run_draws_no_kd_terms(tmp_path):
    run = finished_run(tmp_path, C.TrainConfig(shards="s"), T0, 0.9, kind="teacher", epochs=3)
    assert not plots.uses_kd(run.epochs())
    fig = plots.curves_figure(run)
    assert len(fig.axes) == 3
    labels = [t for ax in fig.axes for t in _legend_texts(ax)]
    assert "loss (cross-entropy)" in labels
    assert not any("KL" in t or "alpha" in t or "margin" in t for t in labels)


def test_runs_plot(tmp_path, capsys, monkeypatch):
    stub_curves(monkeypatch)
    a = _kd_run(tmp_path, T0, alpha=0.3, alpha_end=0.3)
    b = _kd_run(tmp_path, T1, alpha=0.8, alpha_end=0.2)
    sup = finished_run(tmp_path, C.DistillConfig(shards="s", alpha=0.0, margin_weight=0.0, tag="sup"),
                       T2, 0.7)
    from vwwfast.records.compare_plot import plot_labels
    assert plot_labels([a, b]) == ["a=0.3, a_end=0.3", "a=0.8, a_end=0.2"]
    out = tmp_path / "figs" / "ab.png"
    runs_command(C.RunsConfig(runs_dir=str(tmp_path), plot=[a.short_id, b.id, "sup"], out=str(out)))
    assert capsys.readouterr().out.strip() == str(out)
    assert out.read_bytes()[:4] == b"\x89PNG"
    fig = plots.compare_figure([a, b, sup], plot_labels([a, b, sup]), "t")
    assert len(fig.legends[0].get_texts()) == 3
    assert any("alpha (teacher weight)" in ax.get_title() for ax in fig.axes)  # accuracy vs alpha
    # a sweep stands for its runs; the default file is RUNS_DIR/compare.png
    rec = SweepRecord.create(tmp_path, "s", "grid", {"alpha": [0.3, 0.8]}, now=T2)
    for run in (a, b):
        rec.add_member(run.id, {"alpha": run.config["alpha"]})
    runs_command(C.RunsConfig(runs_dir=str(tmp_path), plot=["sweep_s"]))
    assert (tmp_path / "compare.png").is_file()
    with pytest.raises(UserError, match="ending in .png"):
        runs_command(C.RunsConfig(runs_dir=str(tmp_path), plot=[a.id], out=str(tmp_path / "x.pdf")))
    with pytest.raises(UserError, match="no run 'nope'"):
        runs_command(C.RunsConfig(runs_dir=str(tmp_path), plot=[a.id, "nope"]))


def test_no_tensorboard_files_without_tensorboard(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed
    stub_curves(monkeypatch)
    run = finished_run(tmp_path, C.DistillConfig(shards="s"), T0, 0.8)
    assert not list(run.path.glob("events.out.tfevents*"))


def test_tensorboard_scalars_match_metrics(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    stub_curves(monkeypatch)
    run = _kd_run(tmp_path, epochs=3)
    events = EventAccumulator(str(run.path))
    events.Reload()
    acc = events.Scalars("val/val_acc")
    assert [e.step for e in acc] == [1, 2, 3]
    assert [e.value for e in acc] == pytest.approx([r["val_acc"] for r in run.epochs()])
    assert "loss_terms/term_kl" in events.Tags()["scalars"]
    assert "confusion/TP" in events.Tags()["scalars"]
