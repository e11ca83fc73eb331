"""Turn runs into a comparison table: seeds grouped, Pareto front and paper baseline marked.

Complete runs of one config that differ only by seed (same config_key) become one row with the
mean and standard deviation over seeds. A row is Pareto-optimal when no other complete row has at
least its validation accuracy with at most its parameters (and is strictly better in one).
"""

import csv
import io
import json
import math
import operator
import os
import re
from statistics import mean, stdev

from tinycnn.errors import TinycnnError
from tinycnn.record import Run, recipe, standing
from tinycnn.results import display_path

FORMATS = ("table", "markdown", "csv", "json")
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


def mark_pareto(rows: list[Row]) -> None:
    """Mark the complete rows that no other complete row beats on val_acc (up) and params (down)."""
    scored = [r for r in rows if r.state == "complete" and r.val_acc is not None
              and r.params is not None]
    for r in scored:
        r.pareto = not any(q.val_acc >= r.val_acc and q.params <= r.params and
                           (q.val_acc > r.val_acc or q.params < r.params) for q in scored)


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
        raise TinycnnError(f"cannot read --where {expr!r}: write KEY OP VALUE with OP one of "
                           "= != < <= > >=, e.g. --where 'params<20000' --where state=complete.")
    key, op, raw = m.groups()
    value = _literal(raw)
    if key.endswith("_acc") and isinstance(value, (int, float)) and value > 1:
        value = value / 100
    if rows and not any(_has(r, key) for r in rows):
        raise TinycnnError(f"--where {expr!r}: no column or setting named {key!r}. "
                           f"Known: {_available(rows)}.")
    compare = _OPS[op]

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


# --- output --------------------------------------------------------------------------------------

def _pct(stat) -> str:
    m, s = stat
    if m is None:
        return "-"
    return f"{100 * m:.2f}" + (f" ± {100 * s:.2f}" if s is not None else "")


def _note(row: Row) -> str:
    words = (["pareto"] if row.pareto else []) + \
        (["paper"] if row.paper else ["baseline"] if row.baseline else [])
    if row.repeats:
        words.append(f"{row.repeats} same-seed repeat{'s' if row.repeats > 1 else ''}")
    if row.reason and row.state in ("failed", "infeasible"):
        reason = " ".join(str(row.reason).split()).replace("model.blocks.", "")
        words.append(reason if len(reason) <= 64 else reason[:63] + "…")
    return ", ".join(words)


def _trials(row: Row) -> str:
    numbers = [str(r.trial) for r in row.runs if r.trial is not None]
    if not numbers:
        return "-"
    return ",".join(numbers) if len(numbers) <= 3 else ",".join(numbers[:3]) + ",…"


def _setting_text(value) -> str:
    """A setting as the human formats show it: floats to 4 significant digits (0.0348, not
    0.034787724087021056); json and csv keep every digit."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else json.dumps(value) if isinstance(value, (list, dict)) \
        else str(value)


def table_cells(rows: list[Row], settings: list[str], ranked: bool = False,
                dirs_under: str | None = None) -> tuple[list[str], list[list[str]]]:
    """Header and text cells for the human formats (accuracies in percent); ranked: a first
    column numbering the rows 1, 2, ...; dirs_under: run folders shown relative to it."""
    costs = any(r.macs is not None for r in rows)  # runs recorded before costs have none
    int8 = any(r.int8_n for r in rows)  # tinycnn deploy --int8 ran on some
    header = ["rank"] * ranked + ["trial", "state", "params", *COST_COLUMNS * costs, "val %",
                                  "test %", *INT8_COLUMNS * int8, "sec", "seeds",
                                  *[short_name(k) for k in settings], "note", "dir"]
    body = []
    for i, r in enumerate(rows, 1):
        where = display_path(r.dir)
        if dirs_under and r.dir is not None:
            where = os.path.relpath(str(r.dir), dirs_under)
        body.append([str(i)] * ranked + [_trials(r), r.state,
                     f"{r.params:,}" if r.params is not None else "-",
                     *(_cost_cells(r) if costs else []),
                     _pct(r.stats["val_acc"]), _pct(r.stats["test_acc"]),
                     *(_int8_cells(r) if int8 else []),
                     f"{r.seconds:.1f}" if r.seconds is not None else "-", str(r.n),
                     *[_setting_text(r.settings.get(k)) for k in settings], _note(r), where])
    return header, body


WIDTH = 120  # the default table's width: a terminal, a CI log, a pasted issue


def fit_table(rows: list[Row], settings: list[str], width: int = WIDTH,
              drop: bool = True) -> tuple[str, list[str]]:
    """The table in `width` columns: run folders relative to their common parent, notes cut,
    and as many setting columns as fit (in their order; all of them when not `drop`, as when a
    user named them). Returns the text and footnote lines (the parent, the columns left out)."""
    dirs = [str(r.dir) for r in rows if r.dir is not None]
    common = os.path.commonpath(dirs) if dirs else None
    if common and len(dirs) == 1:
        common = os.path.dirname(common)
    notes = []
    if common:
        notes.append(f"dir: under {display_path(common)}")
    # Left out first: the columns with the fewest distinct values (one value and some rows
    # without it says least), the later of two alike.
    distinct = {k: len({_setting_text(r.settings.get(k)) for r in rows
                        if r.settings.get(k) is not None}) for k in settings}
    drop_order = sorted(settings, key=lambda k: (distinct[k], -settings.index(k)))
    kept = list(settings)
    while True:
        text = format_table(rows, kept, dirs_under=common, note_width=32)
        if max(len(line) for line in text.splitlines()) <= width or not kept or not drop:
            break
        kept.remove(drop_order.pop(0))
    if len(kept) < len(settings):
        hidden = [short_name(k) for k in settings if k not in kept]
        notes.append(f"{len(hidden)} setting column(s) not shown to fit {width} columns "
                     f"({', '.join(hidden[:6])}{', ...' if len(hidden) > 6 else ''}): --wide "
                     "shows all, --settings picks")
    return text, notes


COST_COLUMNS = ("MACs", "peak KB", "flash KB")
INT8_COLUMNS = ("int8 test %", "int8 µs")
NUMERIC = {"rank", "params", *COST_COLUMNS, "val %", "test %", *INT8_COLUMNS, "sec", "seeds"}


def _int8_cells(r: Row) -> list[str]:
    if not r.int8_n:
        return ["-", "-"]
    return [_pct(r.int8_stats["test_acc"]), f"{r.int8_us:.0f}"]


def _cost_cells(r: Row) -> list[str]:
    macs = "-" if r.macs is None else f"{r.macs / 1e6:.2f}M" if r.macs >= 1e6 \
        else f"{r.macs / 1e3:.0f}k"
    kb = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    return [macs, kb(r.peak_kb), kb(r.flash_kb)]


def format_table(rows: list[Row], settings: list[str], ranked: bool = False,
                 dirs_under: str | None = None, note_width: int | None = None) -> str:
    header, body = table_cells(rows, settings, ranked, dirs_under)
    if note_width:
        at = header.index("note")
        for cells in body:
            if len(cells[at]) > note_width:
                cells[at] = cells[at][:note_width - 1] + "…"
    widths = [max(len(c) for c in col) for col in zip(header, *body)]
    lines = []
    for cells in [header, *body]:
        parts = [c.rjust(w) if h in NUMERIC else c.ljust(w)
                 for c, w, h in zip(cells, widths, header)]
        lines.append("  ".join(parts).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_markdown(rows: list[Row], settings: list[str], ranked: bool = False) -> str:
    header, body = table_cells(rows, settings, ranked)
    esc = lambda c: c.replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if h in NUMERIC else "---" for h in header) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in cells) + " |" for cells in body]
    return "\n".join(lines)


def records(rows: list[Row], settings: list[str]) -> list[dict]:
    """Plain dicts for json/csv: accuracies as fractions, *_std over seeds (null for one seed)."""
    out = []
    for r in rows:
        out.append({
            "trial": r.trial, "trials": [x.trial for x in r.runs], "state": r.state,
            "params": r.params, "macs": r.macs, "peak_kb": r.peak_kb, "flash_kb": r.flash_kb,
            "int8_val_acc": r.int8_val_acc, "int8_test_acc": r.int8_test_acc,
            "int8_us": r.int8_us, "int8_seeds": r.int8_n,
            "val_acc": r.val_acc, "val_acc_std": r.stats["val_acc"][1],
            "test_acc": r.test_acc, "test_acc_std": r.stats["test_acc"][1],
            "train_acc": r.train_acc, "seconds": r.seconds,
            "n": r.n, "seeds": [x.seed for x in r.seed_runs], "repeats": r.repeats,
            "pareto": r.pareto, "baseline": r.baseline, "paper": r.paper,
            "settings": {k: r.settings.get(k) for k in settings},
            "reason": r.reason, "source": r.runs[0].source,
            "dir": str(r.dir) if r.dir else None,
            "dirs": [str(x.dir) if x.dir else None for x in r.runs],
        })
    return out


def format_rows(rows: list[Row], fmt: str, settings: list[str]) -> str:
    if fmt == "table":
        return format_table(rows, settings)
    if fmt == "markdown":
        return format_markdown(rows, settings)
    recs = records(rows, settings)
    if fmt == "json":
        return json.dumps(recs, indent=2, default=str)
    if fmt == "csv":
        return csv_text(recs, settings, lists=("trials", "seeds", "dirs"), empty=FIELDS,
                        last=("dir",))
    raise TinycnnError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}.")


def csv_text(recs: list[dict], settings: list[str], lists=(), empty=(), last=()) -> str:
    """Records as CSV: their fields (`empty` when there are none), the settings as columns of
    their own, `last` at the end; list fields joined by spaces."""
    fields = [k for k in (recs[0] if recs else empty) if k != "settings" and k not in last]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fields + settings + list(last), extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    for rec in recs:
        flat = {**rec, **rec["settings"]}
        for k in lists:
            flat[k] = " ".join(str(x) for x in rec[k])
        writer.writerow(flat)
    return buf.getvalue().rstrip("\n")


def summary(runs: list[Run]) -> str:
    """'12 runs: 8 complete, 2 pruned, 2 infeasible'."""
    counts: dict = {}
    for r in runs:
        counts[r.state] = counts.get(r.state, 0) + 1
    parts = ", ".join(f"{n} {state}" for state, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    return f"{len(runs)} run(s): {parts}" if runs else "0 runs"

