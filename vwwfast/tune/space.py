"""`--space KEY=LO:HI`, `KEY=LO:HI:log` or `KEY=A,B,C`: what a tune searches, checked against the
settings it names (a sweepable setting of distill, each value within that setting's range),
and the same space as Optuna distributions."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Optional

from vwwfast import config as C
from vwwfast.checks import bounds_of, check_choice, check_range, did_you_mean, parse_scalar_text
from vwwfast.errors import UserError

# sweepable, but tune sets them itself (init seeds) or they name files, not a search
NOT_SEARCHED = ("init_seed", "init", "pretrained")


@dataclass(frozen=True)
class Dimension:
    """One searched setting: a range (lo..hi, sampled; log-uniform when log) or choices."""
    name: str
    kind: type                     # int, float or str: the setting's type
    lo: Optional[float] = None
    hi: Optional[float] = None
    log: bool = False
    choices: tuple = ()

    def text(self) -> str:
        if self.choices:
            return f"{self.name}=" + ",".join(f"{c:g}" if isinstance(c, float) else str(c)
                                              for c in self.choices)
        return f"{self.name}={self.lo:g}:{self.hi:g}" + (":log" if self.log else "")


def searchable() -> list[str]:
    fields = {f.name: f for f in dataclasses.fields(C.DistillConfig)}
    return [n for n, f in fields.items() if f.metadata.get("sweep") and n not in NOT_SEARCHED]


def parse_space(texts: list[str], where: str = "--space") -> list[Dimension]:
    """Every --space given, checked; one line naming the problem otherwise."""
    if not texts:
        raise UserError(f"{where}: give at least one setting to search, e.g. --space alpha=0.3:0.9 "
                        f"(searchable: {', '.join(searchable())})")
    dims = [_one(t, where) for t in texts]
    names = [d.name for d in dims]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UserError(f"{where}: {', '.join(twice)} given twice")
    return dims


def _one(text: str, where: str) -> Dimension:
    name, sep, value = text.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or not value.strip():
        raise UserError(f"{where} {text!r}: write KEY=LO:HI (a range) or KEY=A,B,C (choices)")
    fields = {f.name: f for f in dataclasses.fields(C.DistillConfig)}
    if name not in searchable():
        why = ("is set by tune itself (--seeds)" if name in NOT_SEARCHED else
               "is not a sweepable setting" if name in fields else "is not a setting")
        raise UserError(f"{where}: '{name}' {why}{did_you_mean(name, searchable())}; searchable: "
                        f"{', '.join(searchable())}")
    meta = fields[name].metadata
    kind = C.base_type(C.field_types(C.DistillConfig)[name])
    what = f"{where} {name}"
    if ":" in value:
        return _range(name, kind, value, meta, what)
    choices = tuple(_typed(parse_scalar_text(v.strip()), kind, what) for v in value.split(","))
    for c in choices:
        _check(c, meta, what)
    return Dimension(name, kind, choices=tuple(dict.fromkeys(choices)))


def _range(name: str, kind: type, value: str, meta, what: str) -> Dimension:
    parts = [p.strip() for p in value.split(":")]
    log = parts[-1] == "log"
    if log:
        parts = parts[:-1]
    if kind not in (int, float) or "choices" in meta:
        raise UserError(f"{what}: a range needs a number setting; give choices (A,B,C)")
    if len(parts) != 2:
        raise UserError(f"{what}: a range is LO:HI (or LO:HI:log), got {value!r}")
    lo, hi = (_typed(parse_scalar_text(p), kind, what) for p in parts)
    if not lo < hi:
        raise UserError(f"{what}: the range's low end must be below its high end, got {value!r}")
    if log and lo <= 0:
        raise UserError(f"{what}: a log range must start above 0, got {lo:g}")
    for end in (lo, hi):
        _check(end, meta, f"{what} (range {value})")
    return Dimension(name, kind, lo=lo, hi=hi, log=log)


def _typed(value: Any, kind: type, what: str):
    if kind is str:
        return str(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and isinstance(value, float)):
        raise UserError(f"{what}: {value!r} is not {'an integer' if kind is int else 'a number'}")
    return kind(value)


def _check(value, meta, what: str) -> None:
    if "choices" in meta:
        check_choice(what, value, meta["choices"], "--space")
    elif isinstance(value, (int, float)):
        check_range(what, value, "--space", bounds_of(meta), meaning=_rule(meta))


def _rule(meta) -> str:
    b = bounds_of(meta)
    low = f"[{b['lo']:g}" if "lo" in b else f"({b['gt']:g}" if "gt" in b else "(-inf"
    high = f"{b['hi']:g}]" if "hi" in b else f"{b['lt']:g})" if "lt" in b else "inf)"
    return f"within the setting's range {low}, {high}"


def distributions(dims: list[Dimension]) -> dict:
    """The space as Optuna distributions (a categorical for choices)."""
    import optuna.distributions as od
    out: dict[str, Any] = {}
    for d in dims:
        if d.choices:
            out[d.name] = od.CategoricalDistribution(list(d.choices))
        elif d.kind is int:
            out[d.name] = od.IntDistribution(int(d.lo), int(d.hi), log=d.log)  # type: ignore[arg-type]
        elif d.log:
            out[d.name] = od.FloatDistribution(float(d.lo), float(d.hi), log=True)  # type: ignore[arg-type]
        else:
            lo, hi, step = float(d.lo), float(d.hi), grid_step(float(d.lo), float(d.hi))  # type: ignore[arg-type]
            top = round(lo + math.floor((hi - lo) / step + 1e-6) * step, 12)  # 0.9, not 0.8999999999999999
            out[d.name] = od.FloatDistribution(lo, top, step=step)
    return out


def grid_step(lo: float, hi: float) -> float:
    """A linear range is sampled on a grid of about 100 to 1,000 points (0.3:0.9 in steps of
    0.001): settings read as 0.629, not 0.6292881023563949, and nothing finer matters here."""
    return 10.0 ** (math.floor(math.log10(hi - lo)) - 2)
