"""Checks of a user's values: one place for ranges, choices and "did you mean".

Used by config.py (every command's settings) and viewspec.py (the `views:` settings), so a
range or a typo is refused with the same words wherever it is given.
"""

from __future__ import annotations

import difflib
import math
from typing import Any, Callable, Iterable, Mapping

import yaml

from vwwfast.errors import UserError

# bound name -> (sign in the message, test)
BOUNDS: dict[str, tuple[str, Callable[[float, float], bool]]] = {
    "lo": (">=", lambda v, b: v >= b), "gt": (">", lambda v, b: v > b),
    "hi": ("<=", lambda v, b: v <= b), "lt": ("<", lambda v, b: v < b)}


def did_you_mean(word: str, names: Iterable[str], aliases: Mapping[str, str] | None = None) -> str:
    """'; did you mean 'x'?' for the name closest to `word` (or its alias), else ''."""
    hint = (aliases or {}).get(word)
    if hint is None:
        close = difflib.get_close_matches(word, list(names), n=1, cutoff=0.6)
        hint = close[0] if close else None
    return f"; did you mean '{hint}'?" if hint else ""


def check_choice(what: str, value: Any, choices: Iterable[Any], where: str) -> None:
    """`value` is one of `choices`, else one line naming them (with a "did you mean")."""
    choices = tuple(choices)
    if value not in choices:
        raise UserError(f"{where}: {what} must be one of {', '.join(map(repr, choices))}, "
                        f"got {value!r}{did_you_mean(str(value), map(str, choices))}")


def check_range(what: str, value: float, where: str, bounds: Mapping[str, float],
                meaning: str | None = None) -> None:
    """A finite number within `bounds` ({'lo': 0, 'lt': 1}: lo / hi inclusive, gt / lt
    exclusive). meaning: the rule in words for the message ('a probability within [0, 1]'),
    else the bound it breaks."""
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{where}: {what} must be a finite number, got {value}")
    for key, bound in bounds.items():
        sign, ok = BOUNDS[key]
        if not ok(value, bound):
            rule = meaning or f"{sign} {bound}"
            shown = f"{value:g}" if isinstance(value, float) else value
            raise UserError(f"{where}: {what} must be {rule}, got {shown}")


def bounds_of(meta: Mapping[str, Any]) -> dict[str, float]:
    """The bounds among a setting's declared metadata (lo, hi, gt, lt)."""
    return {k: meta[k] for k in BOUNDS if k in meta}


def parse_scalar_text(text: str):
    """A value typed as text (a flag, a KEY=VALUE): a number (1e-3 too), else YAML's reading
    of it (true, null, a word)."""
    for number in (int, float):
        try:
            return number(text)
        except ValueError:
            pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text
