"""A run's report: card.md and curves.png, drawn from its files whenever it ends (and again
after an export). A figure that fails never costs the run its record."""

from __future__ import annotations

from typing import Optional

from vwwfast.files import write_atomic
from vwwfast.records import card, plots
from vwwfast.records.runs import Run


def write_report(run: Run, summary: Optional[dict] = None) -> None:
    """(Re)write card.md and curves.png from the files on disk. The card's notes stay."""
    from vwwfast.progress import warn
    summary = run.summary if summary is None else summary
    path = run.path / "card.md"
    old = path.read_text() if path.is_file() else ""
    write_atomic(path, card.card_text(run, summary, notes=card.kept_notes(old)))
    try:
        plots.write_curves(run)
    except Exception as e:  # a figure must never cost the run its record
        warn(f"{run.path / 'curves.png'} not drawn: {type(e).__name__}: {e}")
