"""Search spaces written in Hydra's sweep grammar, turned into Optuna distributions.

The grammar is the one hydra-optuna-sweeper users know:
    choice(a, b, ...)  or  a,b,c            -> categorical
    range(start, stop[, step])              -> int (or float) steps, stop excluded
    interval(low, high)                     -> float, uniform
    int(interval(low, high))                -> int, uniform
    tag(log, interval(low, high))           -> float, log-uniform (int(...) inside for ints)
    anything else                           -> a fixed value, passed to every trial
"""

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Sequence, Tuple

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, RangeSweep, Transformer
from hydra.errors import HydraException
from optuna.distributions import (BaseDistribution, CategoricalDistribution, FloatDistribution,
                                  IntDistribution)

GRAMMAR = ("choice(a, b, ...) or a,b,c; range(start, stop[, step]); interval(low, high); "
           "int(interval(low, high)); tag(log, interval(low, high)); or a fixed value")


class SpaceError(ValueError):
    """A search dimension that cannot be understood; the message names it."""


@dataclass
class Dimension:
    """One searched config key: its Optuna distribution and how a value becomes an override."""
    key: str                       # as written in the override, e.g. model.blocks.res1.scale
    name: str                      # Optuna's parameter name: the key without +/++
    spec: str                      # the grammar text, kept for the study's record
    distribution: BaseDistribution
    raw: frozenset = field(default_factory=frozenset)  # choices that are lists/dicts, as text

    def override(self, value: Any) -> str:
        return f"{self.key}={format_value(value, self.raw)}"

    def contains(self, value: Any) -> bool:
        """Whether a config value (the paper preset's) is a point of this dimension."""
        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            return any(_same(value, c, self.raw) for c in d.choices)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if not d.low <= value <= d.high:
            return False
        if isinstance(d, IntDistribution):
            return float(value).is_integer() and (int(value) - d.low) % d.step == 0
        if d.step is None:
            return True
        k = (value - d.low) / d.step
        return math.isclose(k, round(k), abs_tol=1e-9)

    def external(self, value: Any) -> Any:
        """`value` as this dimension's choice object (for enqueue_trial)."""
        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            return next(c for c in d.choices if _same(value, c, self.raw))
        return int(value) if isinstance(d, IntDistribution) else float(value)


def _same(value: Any, choice: Any, raw: frozenset) -> bool:
    if choice in raw:
        return not isinstance(value, str) and Transformer.str(value) == choice
    return type(value) is type(choice) and value == choice or (
        isinstance(value, (int, float)) and not isinstance(value, bool)
        and isinstance(choice, (int, float)) and not isinstance(choice, bool) and value == choice)


def format_value(value: Any, raw: frozenset = frozenset()) -> str:
    """A value as override text that Hydra parses back to the same value."""
    if isinstance(value, str):
        if value in raw:  # a list or dict choice, already in override syntax
            return value
        return quote(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def quote(text: str) -> str:
    """Single-quote `text` for Hydra's override grammar. Inside quotes only a quote, and the
    backslashes right before one (or before the closing quote), need escaping."""
    out, i = [], 0
    while i < len(text):
        j = i
        while j < len(text) and text[j] == "\\":
            j += 1
        slashes = text[i:j]
        if j == len(text) or text[j] == "'":
            slashes *= 2
        out.append(slashes)
        if j < len(text):
            out.append("\\'" if text[j] == "'" else text[j])
        i = j + 1
    return "'" + "".join(out) + "'"


def distribution(override: Override) -> Tuple[BaseDistribution, frozenset]:
    """The Optuna distribution of a sweep override (and the choices that are raw text)."""
    value = override.value()
    if override.is_choice_sweep() or (isinstance(value, RangeSweep) and value.shuffle):
        choices, raw = [], set()
        for x in override.sweep_iterator(transformer=Transformer.identity):
            if isinstance(x, (list, dict)):
                x = Transformer.str(x)
                raw.add(x)
            choices.append(x)
        if len(set(map(repr, choices))) != len(choices):
            raise SpaceError("a choice is listed twice")
        return CategoricalDistribution(choices), frozenset(raw)
    if isinstance(value, RangeSweep):
        points = list(override.sweep_iterator())
        if not points:
            raise SpaceError("the range is empty")
        low, high, step = min(points), max(points), abs(value.step)
        if all(isinstance(p, int) for p in points) and isinstance(step, int):
            return IntDistribution(low, high, step=step), frozenset()
        return FloatDistribution(float(low), float(high), step=float(step)), frozenset()
    if isinstance(value, IntervalSweep):
        unknown = set(value.tags) - {"log"}
        if unknown:
            raise SpaceError(f"unknown tag {sorted(unknown)[0]!r}; the only tag understood is log")
        log = "log" in value.tags
        if not value.start < value.end:
            raise SpaceError(f"the interval is empty: low {value.start} is not below high "
                             f"{value.end}")
        if log and value.start <= 0:
            raise SpaceError(f"a log interval needs low > 0, got {value.start}")
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log), frozenset()
        return FloatDistribution(float(value.start), float(value.end), log=log), frozenset()
    raise SpaceError(f"{type(value).__name__} is not a sweep this sweeper understands")


def parse_space(params: Mapping[str, Any], arguments: Sequence[str]
                ) -> Tuple[Dict[str, Dimension], List[str], List[str]]:
    """Search dimensions and fixed overrides from the sweeper's `params` (key -> grammar text)
    and the command line. A later entry for the same key wins, so a fixed value on the command
    line takes a key out of the search, and a sweep on the command line adds or replaces one.

    Returns (dimensions by parameter name, every fixed override, the fixed overrides that came
    from `params` alone: those are not in Hydra's composed master config)."""
    parser = OverridesParser.create()
    entries: List[Tuple[str, str]] = []  # (where, override text)
    for key, spec in params.items():
        entries.append((f"hydra.sweeper.params[{key!r}]", f"{key}={format_param(spec)}"))
    entries += [(f"command-line override {arg!r}", arg) for arg in arguments]

    dims: Dict[str, Dimension] = {}
    fixed: Dict[str, str] = {}
    from_params: Dict[str, bool] = {}
    for where, text in entries:
        try:
            override = parser.parse_override(text)
        except HydraException as exc:
            raise SpaceError(f"{where}: {text.split('=', 1)[-1]!r} is not valid sweep grammar "
                             f"({_first_line(exc)}). Accepted: {GRAMMAR}.") from None
        name = override.key_or_group
        dims.pop(name, None)
        fixed.pop(name, None)
        if not override.is_sweep_override():
            fixed[name] = text
            from_params[name] = where.startswith("hydra.sweeper.params")
            continue
        try:
            dist, raw = distribution(override)
        except (SpaceError, ValueError) as exc:
            raise SpaceError(f"{where}: {_first_line(exc)}. Accepted: {GRAMMAR}.") from None
        dims[name] = Dimension(key=override.get_key_element(), name=name,
                               spec=text.split("=", 1)[1], distribution=dist, raw=raw)
    return dims, list(fixed.values()), [t for k, t in fixed.items() if from_params[k]]


def format_param(spec: Any) -> str:
    """A `params` entry as override text: grammar strings as written, YAML values formatted."""
    if isinstance(spec, str):
        return spec
    if isinstance(spec, (list, dict)):
        return Transformer.str(spec)
    return format_value(spec)


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
