"""The one way a config value is checked: each check names the key, the value and what would be
accepted, in one line (`train.lr = inf: expected a finite number > 0`), before anything is built,
loaded or trained. Booleans are never numbers here (YAML's `true` is not 1)."""

import math
from collections.abc import Mapping

from tinycnn.errors import ConfigError


SHOWN = 80  # characters of a value an error line quotes


def shown(value, limit: int = SHOWN) -> str:
    """repr(value), shortened when long: a 2,000-character study name is quoted by its start and
    its length, so the error line stays one readable line."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f"{len(value):,} characters" if isinstance(value, str) else f"{len(text):,} characters"
    return f"{text[:limit - 20]}... ({size})"


def fail(where: str, value, why: str):
    """Raise the one-line error: `where = value: why` (a long value shortened)."""
    raise ConfigError(f"{where} = {shown(value)}: {why}")


def whole(where: str, value, low: int = 1, hint: str = "") -> int:
    """A whole number >= low (1.5 is refused, not truncated)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        fail(where, value, f"expected a whole number >= {low}{hint}")
    return value


def number(where: str, value, low: float | None = None, high: float | None = None,
           above_low: bool = False, below_high: bool = False, hint: str = "") -> float:
    """A finite number within [low, high] (or (low, ...) with above_low, (..., high) with
    below_high); inf and nan are refused at once, never found out by training."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if above_low else value >= low
    if ok and high is not None:
        ok = value < high if below_high else value <= high
    if not ok:
        lo = "" if low is None else f"{'>' if above_low else '>='} {low:g}"
        hi = "" if high is None else f"{'<' if below_high else '<='} {high:g}"
        span = " and ".join(p for p in (lo, hi) if p)
        fail(where, value, f"expected a finite number{' ' + span if span else ''}{hint}")
    return float(value)


def choice(where: str, value, choices):
    if value not in choices:
        fail(where, value, f"expected one of {', '.join(map(str, choices))}")
    return value


def flag(where: str, value) -> bool:
    if not isinstance(value, bool):
        fail(where, value, "expected true or false")
    return value


def known(where: str, cfg: Mapping, allowed: set) -> None:
    """No key outside `allowed` (a typo such as `kernal` is named, with the keys that exist)."""
    unknown = sorted(set(cfg) - allowed)
    if unknown:
        fail(f"{where}.{unknown[0]}", cfg[unknown[0]],
             f"unknown field; the fields here are {', '.join(sorted(allowed))}")
