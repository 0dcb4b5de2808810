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


# Byte sizes: KB = 1000 and MB = 1e6 bytes (SI, as flash and RAM sizes are quoted on data
# sheets), KiB = 1024 and MiB = 2**20; a plain number is bytes.
BYTE_UNITS = {"": 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2,
              "gb": 1000**3, "gib": 1024**3}


def parse_bytes(text) -> int:
    """'256KB' -> 256000, '256KiB' -> 262144, '0.25MB' -> 250000, '262144' -> 262144.
    Raises ValueError for anything else (a negative size, an unknown unit)."""
    import re
    if isinstance(text, bool):
        raise ValueError(text)
    if isinstance(text, (int, float)):
        number, unit = float(text), ""
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
        if not m or m.group(2).lower() not in BYTE_UNITS:
            raise ValueError(text)
        number, unit = float(m.group(1)), m.group(2).lower()
    value = number * BYTE_UNITS[unit]
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError(text)
    return int(round(value))


def fmt_bytes(n) -> str:
    """Bytes in the units parse_bytes reads: 812 B, 198.4 KB, 1.62 MB ('-' when unknown)."""
    if n is None:
        return "-"
    if n < 1000:
        return f"{int(n)} B"
    if n < 1000**2:
        return f"{n / 1000:.1f} KB"
    return f"{n / 1000**2:.2f} MB"


def fmt_count(n) -> str:
    """A parameter or MAC count: 198.3k, 11.0M ('-' when unknown)."""
    if n is None:
        return "-"
    if n < 1000:
        return str(int(n))
    if n < 1000**2:
        return f"{n / 1000:.1f}k"
    if n < 1000**3:
        return f"{n / 1000**2:.1f}M"
    return f"{n / 1000**3:.2f}G"
