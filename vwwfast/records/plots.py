"""Pictures of runs: curves.png of one run, the comparison figure of `vwwfast runs --plot`,
and the same scalars as metrics.jsonl for TensorBoard when it is installed.

Everything is read from the records (metrics.jsonl, summary.json, config.yaml), so a figure
can be redrawn at any time. Legends sit outside the axes: they never hide a curve.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Optional

from vwwfast import config as C
from vwwfast.files import write_atomic
from vwwfast.records.runs import Run

VALIDATION = (("val_acc", "val acc", "-"), ("recall_0", "recall no-person", "--"),
              ("recall_1", "recall person", ":"))


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # no display on a training box
    import matplotlib.pyplot as plt
    return plt


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(r["epoch"], r[key]) for r in records
           if isinstance(r.get("epoch"), int) and isinstance(r.get(key), (int, float))
           and not isinstance(r.get(key), bool)]
    return [e for e, _ in pts], [float(v) for _, v in pts]


def _nonzero(records: list[dict], key: str) -> bool:
    return any(v for v in _series(records, key)[1])


def loss_terms(records: list[dict]) -> list[str]:
    """The names of the loss terms a run recorded (loss_<name>: a term's mean, term_<name>: as
    it enters the loss; the loss is their sum), in the order it recorded them."""
    names: list[str] = []
    for r in records:
        for key in r:
            name = key.split("_", 1)[1] if key.startswith(("loss_", "term_")) else None
            if name and name not in names:
                names.append(name)
    return names


def uses_kd(records: list[dict]) -> bool:
    """Whether more than one loss term was in play: a teacher run or a supervised student has
    the cross-entropy alone; then a figure shows neither the terms nor the KD weights."""
    return sum(_nonzero(records, f"loss_{n}") or _nonzero(records, f"term_{n}")
               for n in loss_terms(records)) > 1


def _weights(records: list[dict]) -> list[str]:
    """The recorded KD weights besides alpha that are not 0 (the temperature is in the title)."""
    return [k for k in C.kd_settings() if k not in ("alpha", "temperature") and _nonzero(records, k)]


def _legend_below(ax, ncol: Optional[int] = None, handles=None, labels=None) -> None:
    h, l = (handles, labels) if handles is not None else ax.get_legend_handles_labels()
    if h:
        ax.legend(h, l, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=ncol or len(h),
                  frameon=False, fontsize=8, handlelength=2.2, columnspacing=1.2)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    _pyplot().close(fig)
    return buf.getvalue()


def _integer_epochs(ax) -> None:
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch", fontsize=8, labelpad=1)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.25)


# ---------------------------------------------------------------------------------------
# curves.png

def curves_figure(run: Run):
    plt = _pyplot()
    records = run.epochs()
    summary = run.summary
    kd = uses_kd(records)
    if kd:
        fig, axes = plt.subplots(2, 2, figsize=(11, 7.2), layout="constrained")
        ax_loss, ax_val, ax_kd, ax_lr = axes.ravel()
    else:
        fig, axes = plt.subplots(1, 3, figsize=(13, 4), layout="constrained")
        (ax_loss, ax_val, ax_lr), ax_kd = axes, None
    best = summary.get("best_epoch")
    for ax in axes.ravel():
        _integer_epochs(ax)
        if best:
            ax.axvline(best, color="0.55", lw=0.9, ls=(0, (2, 2)), zorder=0)
    if not records:
        for ax in axes.ravel():
            ax.text(0.5, 0.5, "no epoch recorded", ha="center", va="center", transform=ax.transAxes)

    # loss terms as they enter the loss, named as the run recorded them (else by name)
    terms = summary.get("loss_terms")
    labels: dict = terms if isinstance(terms, dict) else {}
    names = loss_terms(records)
    shown = [n for n in names if _nonzero(records, f"term_{n}")]
    if kd and shown:
        ax_loss.plot(*_series(records, "loss"), color="black", lw=2, label="loss (their sum)")
        for i, name in enumerate(names):
            if name in shown:
                ax_loss.plot(*_series(records, f"term_{name}"), color=f"C{i}", marker=".",
                             label=labels.get(name, name))
        temps = sorted(set(_series(records, "temperature")[1]))
        title = "training loss, terms as they enter it" + (f" (T = {temps[0]:g})" if len(temps) == 1 else "")
    else:
        ax_loss.plot(*_series(records, "loss"), color="black", marker=".", label="loss (cross-entropy)")
        title = "training loss"
    ax_loss.set_title(title, fontsize=10)
    _legend_below(ax_loss)

    # validation
    for key, label, style in VALIDATION:
        ax_val.plot(*_series(records, key), style, marker=".", label=label)
    if best and summary.get("best_val_acc") is not None:
        ax_val.plot([best], [summary["best_val_acc"]], "*", color="crimson", ms=13, zorder=5,
                    label=f"best {summary['best_val_acc']:.4f} at epoch {best} (dotted line)")
    ax_val.set_title("validation", fontsize=10)
    _legend_below(ax_val, ncol=2)

    # schedules in force
    if ax_kd is not None:
        ax_kd.plot(*_series(records, "alpha"), color="C3", marker=".", label="alpha (teacher weight)")
        ax_kd.set_ylim(-0.03, 1.03)
        ax_kd.set_ylabel("alpha", fontsize=8)
        handles, texts = ax_kd.get_legend_handles_labels()
        others = _weights(records)
        if others:  # every other weight on one right axis
            ax_m = ax_kd.twinx()
            for i, key in enumerate(others):
                ax_m.plot(*_series(records, key), color=f"C{4 + i}", ls="--", marker=".",
                          label=f"{key.replace('_', ' ')} (right axis)")
            top = max(max(_series(records, key)[1]) for key in others)
            ax_m.set_ylim(-0.03 * top, 1.4 * top)  # not level with alpha = 1
            ax_m.set_ylabel(" / ".join(k.replace("_", " ") for k in others), fontsize=8)
            ax_m.tick_params(labelsize=8)
            h2, l2 = ax_m.get_legend_handles_labels()
            handles, texts = handles + h2, texts + l2
        ax_kd.set_title("KD weights per epoch", fontsize=10)
        _legend_below(ax_kd, handles=handles, labels=texts)
    ax_lr.plot(*_series(records, "lr"), color="C5", marker=".", label="learning rate (end of epoch)")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    ax_lr.yaxis.get_offset_text().set_fontsize(8)
    ax_lr.set_title("learning rate", fontsize=10)
    _legend_below(ax_lr)

    status = summary.get("status") or "?"
    goal = run.config.get("note")
    fig.suptitle(f"{run.id}  ({status})" + (f"\n{goal}" if goal else ""), fontsize=9)
    return fig


def write_curves(run: Run) -> Path:
    path = run.path / "curves.png"
    write_atomic(path, _png(curves_figure(run)))
    return path


# ---------------------------------------------------------------------------------------
# Several runs on one figure

def _band_series(records: list[list[dict]], key: str):
    """Epochs, mean, min and max of `key` over replicate runs, at each epoch some run has."""
    by_epoch: dict[int, list[float]] = {}
    for recs in records:
        for e, v in zip(*_series(recs, key)):
            by_epoch.setdefault(e, []).append(v)
    epochs = sorted(by_epoch)
    vals = [by_epoch[e] for e in epochs]
    return (epochs, [sum(v) / len(v) for v in vals], [min(v) for v in vals],
            [max(v) for v in vals], [len(v) for v in vals])


def _draw(ax, records: list[list[dict]], key: str, color, style: str, label=None) -> None:
    """One run as a line; a replicate group as its mean with a band from min to max."""
    if len(records) == 1:
        ax.plot(*_series(records[0], key), style, color=color, marker=".", label=label)
        return
    epochs, mean, low, high, _ = _band_series(records, key)
    ax.fill_between(epochs, low, high, color=color, alpha=0.22, lw=0, step=None)
    ax.plot(epochs, mean, style, color=color, lw=2, label=label)


def compare_figure(runs: list, labels: list[str], title: str):
    """Several runs on one figure. An item of `runs` is a Run, or a list of Runs: a replicate
    group (runs that differ only in init_seed), drawn as its mean with a min..max band."""
    plt = _pyplot()
    groups = [r if isinstance(r, (list, tuple)) else [r] for r in runs]
    records = [[run.epochs() for run in g] for g in groups]
    kd = any(uses_kd(recs) for g in records for recs in g)
    # the legend goes under the panels, in as many columns as its labels allow
    longest = max((len(x) for x in labels), default=1)
    ncol = max(1, min(len(labels), 150 // (longest + 8)))
    rows = -(-len(labels) // ncol)
    fig = plt.figure(figsize=(12, (7.5 if kd else 6.5) + 0.2 * rows), layout="constrained")
    left, right = fig.subfigures(1, 2)
    if kd:  # alpha under the accuracy, on the same epochs: what the schedule did, at a glance
        ax_acc, ax_alpha = left.subplots(2, 1, sharex=True, height_ratios=[2, 1])
    else:
        ax_acc, ax_alpha = left.subplots(1, 1), None
    ax_r0, ax_r1 = right.subplots(2, 1, sharex=True)
    for ax in (ax_acc, ax_r0, ax_r1, ax_alpha):
        if ax is not None:
            _integer_epochs(ax)
    for ax in (ax_r0,) + ((ax_acc,) if ax_alpha is not None else ()):
        ax.set_xlabel("")  # the panel below, on the same epochs, says it
    cmap = plt.get_cmap("tab10" if len(groups) <= 10 else "tab20")
    for k, (group, recs, label) in enumerate(zip(groups, records, labels)):
        color = cmap(k % cmap.N)
        _draw(ax_acc, recs, "val_acc", color, "-", label)
        if len(group) == 1:
            s = group[0].summary
            if s.get("best_epoch") and s.get("best_val_acc") is not None:
                ax_acc.plot([s["best_epoch"]], [s["best_val_acc"]], "*", color=color, ms=12, zorder=5)
        _draw(ax_r0, recs, "recall_0", color, "--")
        _draw(ax_r1, recs, "recall_1", color, ":")
        if ax_alpha is not None:
            _draw(ax_alpha, recs, "alpha", color, "-")
    notes = (["star: best epoch"] if any(len(g) == 1 for g in groups) else []) + \
        (["replicates: mean, band min..max"] if any(len(g) > 1 for g in groups) else [])
    ax_acc.set_title("val accuracy" + (f" ({'; '.join(notes)})" if notes else ""), fontsize=10)
    ax_r0.set_title("recall no-person", fontsize=10)
    ax_r1.set_title("recall person", fontsize=10)
    if ax_alpha is not None:
        ax_alpha.set_title("alpha (teacher weight) in force", fontsize=10)
        ax_alpha.set_ylim(-0.03, 1.03)
    handles, texts = ax_acc.get_legend_handles_labels()
    fig.legend(handles, texts, loc="outside lower center", ncol=ncol, frameon=False, fontsize=9)
    fig.suptitle(title, fontsize=10)
    return fig


def write_compare(runs: list, labels: list[str], out, title: str) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, _png(compare_figure(runs, labels, title)))
    return out
