"""How numbers read on the console, in cards and in tables: one formatter for each kind."""

from __future__ import annotations


def fmt_value(v) -> str:
    """A setting's value: 'unset', 'true' / 'false', 0.55, a path."""
    if v is None:
        return "unset"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def fmt_metric(v, digits: int = 4) -> str:
    """An accuracy or recall: 0.8373; '-' when there is none."""
    return "-" if v is None else f"{v:.{digits}f}"


def fmt_delta(v, digits: int = 4) -> str:
    return "-" if v is None else f"{v:+.{digits}f}"


def fmt_duration(s) -> str:
    """Seconds as 1h02m, 25m40s or 42s."""
    if s is None:
        return "-"
    s = int(round(s))
    h, m, sec = s // 3600, s % 3600 // 60, s % 60
    return f"{h}h{m:02d}m" if h else f"{m}m{sec:02d}s" if m else f"{sec}s"


def fmt_rate(v) -> str:
    return "-" if v is None else f"{v:,.0f}"
