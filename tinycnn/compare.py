"""Turn runs into a comparison table: seeds grouped, Pareto front and paper baseline marked.

Complete runs of one config that differ only by seed (same config_key) become one row with the
mean and standard deviation over seeds. A row is Pareto-optimal when no other complete row has at
least its validation accuracy with at most its parameters (and is strictly better in one).
"""

import json
import math
import operator
import re
from statistics import mean, stdev

from tinycnn.checks import shown
from tinycnn.errors import TinycnnError
from tinycnn.record import Run, recipe, standing
FIELDS = ("trial", "state", "params", "macs", "peak_kb", "flash_kb", "val_acc", "test_acc",
          "int8_val_acc", "int8_test_acc", "int8_us", "train_acc", "seconds", "n", "seed",
          "pareto", "baseline", "dir", "reason")
ALIASES = {"seeds": "n", "sec": "seconds"}  # the table's column names work as keys too


def _mean_std(values: list) -> tuple:
    values = [v for v in values if v is not None]
    return (mean(values) if values else None, stdev(values) if len(values) > 1 else None)


class Row:
    """One config: a single run, or the runs of several seeds of it (mean and std over them)."""

    def __init__(self, runs: list[Run]):
        first = runs[0]
        # A seed run twice (a sampler proposing the same network again, a rerun) is a repeat,
        # not another draw: mean and std are over distinct seeds, one run each.
        per_seed: dict = {}
        for r in sorted(runs, key=standing):  # record.standing: which run stands for a seed
            per_seed.setdefault(r.seed, r)
        self.seed_runs = list(per_seed.values())
        self.runs, self.n, self.repeats = runs, len(per_seed), len(runs) - len(per_seed)
        self.trial, self.state, self.params = first.trial, first.state, first.params
        self.seed, self.dir, self.reason = first.seed, first.dir, first.reason
        # what the network costs on a device (tinycnn/costs.py); KB = 1,000 bytes, as budgets
        # such as "peak memory <= 2,500 B" are written
        self.macs = first.macs
        self.peak_kb = None if first.peak_bytes is None else first.peak_bytes / 1000
        self.flash_kb = None if first.flash_bytes is None else first.flash_bytes / 1000
        # tinycnn deploy's int8 figures: the mean over the seeds deployed
        int8 = [r.deploy["int8"] for r in self.seed_runs if "int8" in r.deploy]
        self.int8_stats = {k: _mean_std([q.get(k) for q in int8]) for k in ("val_acc", "test_acc")}
        self.int8_val_acc, self.int8_test_acc = (self.int8_stats[k][0]
                                                 for k in ("val_acc", "test_acc"))
        self.int8_us = _mean_std([q["latency_us"]["median"] for q in int8])[0] if int8 else None
        self.int8_n = len(int8)
        self.settings = first.settings  # the same for every seed: that is what grouped them
        self.stats = {k: _mean_std([getattr(r, k) for r in self.seed_runs])
                      for k in ("val_acc", "test_acc", "train_acc", "seconds")}
        self.val_acc, self.test_acc, self.train_acc, self.seconds = \
            (self.stats[k][0] for k in ("val_acc", "test_acc", "train_acc", "seconds"))
        self.pareto = False
        self.baseline = any(r.baseline for r in runs)  # a search's trial 0, or the paper's
        self.paper = False  # the paper's network with the paper's recipe (mark_baseline)

    def get(self, key: str):
        """A field (val_acc, params, ...) or a setting, by full key (model.blocks.res1.scale)
        or short name (res1.scale); KeyError when neither exists."""
        key = ALIASES.get(key, key)
        if key in FIELDS:
            return getattr(self, key)
        if key in self.settings:
            return self.settings[key]
        for full, value in self.settings.items():
            if short_name(full) == key:
                return value
        raise KeyError(key)


def group(runs: list[Run], by_seed: bool = True) -> list[Row]:
    """One Row per config over its complete runs (its seeds) when by_seed, else one per run.
    Pruned, failed and infeasible runs always keep a row each: nothing to average there."""
    if not by_seed:
        return [Row([r]) for r in runs]
    groups: dict = {}
    for i, run in enumerate(runs):
        key = run.config_key if run.config_key and run.state == "complete" else i
        groups.setdefault(key, []).append(run)
    return [Row(sorted(rs, key=lambda r: (r.seed is None, r.seed or 0))) for rs in groups.values()]


def mark_pareto(rows: list[Row], costs=("params",)) -> None:
    """Mark the complete rows that no other complete row beats on val_acc (up) and every cost
    in `costs` (down): params by default, the costs a study optimised when it did."""
    scored = [r for r in rows if r.state == "complete" and r.val_acc is not None
              and all(r.get(c) is not None for c in costs)]

    def beats(q, r) -> bool:
        no_worse = q.val_acc >= r.val_acc and all(q.get(c) <= r.get(c) for c in costs)
        return no_worse and (q.val_acc > r.val_acc or any(q.get(c) < r.get(c) for c in costs))

    for r in scored:
        r.pareto = not any(beats(q, r) for q in scored)


def mark_baseline(rows: list[Row], paper_model: dict | None, paper_train: dict | None) -> None:
    """Also mark as baseline the rows that train the paper's network with the paper's recipe
    (data subsets and evaluation settings aside)."""
    if paper_model is None:
        return
    for row in rows:
        cfg = row.runs[0].config or {}
        if cfg.get("model") == paper_model and (paper_train is None or
                                                recipe(cfg.get("train")) == recipe(paper_train)):
            row.baseline = row.paper = True


def short_name(key: str) -> str:
    """model.blocks.res1.scale -> res1.scale; model.blocks.res2.layers.0.groups -> res2.0.groups;
    model.classifier.hidden -> classifier.hidden: narrow columns for wide search spaces."""
    if key.startswith("model.blocks."):
        key = key.removeprefix("model.blocks.").replace(".layers.", ".", 1)
    return key.removeprefix("model.")


def pick_settings(rows: list[Row], wanted: str | None) -> list[str]:
    """The setting columns: those that differ between rows, or a comma-separated choice
    (full or short names; 'none' for no setting columns)."""
    if wanted is None:
        return differing_settings(rows)
    if wanted.strip().lower() == "none":
        return []
    known = {}
    for row in rows:
        for k in row.settings:
            known.setdefault(k, k)
            known.setdefault(short_name(k), k)
    out = []
    for name in (n.strip() for n in wanted.split(",") if n.strip()):
        if name not in known:
            raise TinycnnError(f"--settings: no setting named {name!r}; the ones that differ "
                               f"here: {', '.join(map(short_name, differing_settings(rows)))}.")
        out.append(known[name])
    return out


def differing_settings(rows: list[Row]) -> list[str]:
    """Setting keys whose values are not the same in every row (in config order). A row known
    only through a study's sampled params (its job folder elsewhere) says nothing about the
    keys it lacks."""
    keys: dict = {}
    for row in rows:
        for k in row.settings:
            keys.setdefault(k, None)
    out = []
    for k in keys:
        values = {json.dumps(row.settings[k], default=str) if k in row.settings else "<absent>"
                  for row in rows if k in row.settings or row.runs[0].config is not None}
        if len(values) > 1:
            out.append(k)
    return out


# --- --where / --sort ----------------------------------------------------------------------------

_OPS = {"<=": operator.le, ">=": operator.ge, "!=": operator.ne, "==": operator.eq,
        "=": operator.eq, "<": operator.lt, ">": operator.gt}
_WHERE = re.compile(r"^\s*([\w.\-]+)\s*(<=|>=|!=|==|=|<|>)\s*(.*?)\s*$")


def _literal(text: str):
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text.replace("_", ""))
        except ValueError:
            pass
    return text


def _available(rows: list[Row]) -> str:
    names = list(FIELDS) + list(ALIASES) + sorted({short_name(k) for r in rows for k in r.settings})
    return ", ".join(names)


def parse_where(expr: str, rows: list[Row]):
    """'params<20000' / 'state=complete' / 'res1.scale>=2' -> predicate(row) -> bool.

    Accuracies are fractions; a value above 1 (val_acc>97) is read as a percentage."""
    m = _WHERE.match(expr)
    if not m:
        raise TinycnnError(f"cannot read --where {shown(expr, 60)}: write KEY OP VALUE with OP "
                           "one of = != < <= > >=, e.g. --where 'params<20000' --where "
                           "state=complete.")
    key, op, raw = m.groups()
    value = _literal(raw)
    if key.endswith("_acc") and isinstance(value, (int, float)) and value > 1:
        value = value / 100
    if rows and not any(_has(r, key) for r in rows):
        known = _available(rows)
        if len(known) > 300:  # the columns, then where to see the settings
            known = ", ".join(list(FIELDS) + list(ALIASES)) + ", and the settings " \
                "(`tinycnn compare --wide` shows them)"
        raise TinycnnError(f"--where {shown(expr, 60)}: no column or setting named "
                           f"{shown(key, 40)}. Known: {known}.")
    compare = _OPS[op]
    if op not in ("=", "==", "!=") and not isinstance(value, (int, float)):
        raise TinycnnError(f"--where {shown(expr, 60)}: {op} compares numbers, and "
                           f"{shown(raw, 40)} is not one; e.g. --where 'params<20000', "
                           "--where 'peak_kb<=2.5', or = != for text (state=complete)")
    values = [r.get(key) for r in rows if _has(r, key)]
    numeric = any(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if numeric and isinstance(value, str):
        raise TinycnnError(f"--where {shown(expr, 60)}: {key} holds numbers, and "
                           f"{shown(raw, 40)} is not one")

    def predicate(row: Row) -> bool:
        try:
            actual = row.get(key)
        except KeyError:
            return False
        if isinstance(value, str) or value is None or isinstance(actual, str) or actual is None:
            # text (state=complete), or a missing value: only equality makes sense
            if op in ("=", "==", "!="):
                return compare(str(actual).lower(), str(value).lower())
            return False
        return compare(actual, value)

    return predicate


def _has(row: Row, key: str) -> bool:
    try:
        row.get(key)
        return True
    except KeyError:
        return False


# Finished, trained rows first: a pruned trial's accuracy is where it was stopped, not an end.
STATE_ORDER = {"complete": 0, "pruned": 1, "failed": 2, "infeasible": 3}


def sort_rows(rows: list[Row], spec: str = "state,val_acc") -> list[Row]:
    """Sort by 'KEY[:asc|:desc][,KEY...]'. Accuracies default to high first, everything else low
    first; state goes complete, pruned, failed, infeasible. Missing values go last; ties keep
    fewer parameters first."""
    rows = sorted(rows, key=lambda r: r.params if r.params is not None else math.inf)
    for part in reversed([p.strip() for p in spec.split(",") if p.strip()]):
        rows = _sort_by(rows, part)
    return rows


def _sort_by(rows: list[Row], spec: str) -> list[Row]:
    key, _, direction = spec.partition(":")
    if direction not in ("", "asc", "desc"):
        raise TinycnnError(f"--sort {spec!r}: the direction after ':' must be asc or desc.")
    if rows and not any(_has(r, key) for r in rows):
        raise TinycnnError(f"--sort {spec!r}: no column or setting named {key!r}. "
                           f"Known: {_available(rows)}.")
    descending = direction == "desc" or (direction == "" and key.endswith("_acc"))

    def value(row):
        try:
            v = row.get(key)
        except KeyError:
            return None
        return STATE_ORDER.get(v, len(STATE_ORDER)) if key == "state" else v

    present = [r for r in rows if value(r) is not None]
    missing = [r for r in rows if value(r) is None]
    try:
        present.sort(key=value, reverse=descending)
    except TypeError:  # mixed types in a setting column: compare as text
        present.sort(key=lambda r: str(value(r)), reverse=descending)
    return present + missing


def summary(runs: list[Run]) -> str:
    """'12 runs: 8 complete, 2 pruned, 2 infeasible'."""
    counts: dict = {}
    for r in runs:
        counts[r.state] = counts.get(r.state, 0) + 1
    parts = ", ".join(f"{n} {state}" for state, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    return f"{len(runs)} run(s): {parts}" if runs else "0 runs"
