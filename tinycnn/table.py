"""How compare and confirm show rows: a text table that fits the terminal, markdown, csv and
json (accuracies in percent for people, as fractions for programs)."""

import csv
import io
import json
import os

from tinycnn.compare import FIELDS, Row, short_name
from tinycnn.errors import TinycnnError
from tinycnn.results import display_path

FORMATS = ("table", "markdown", "csv", "json")


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
        body.append([str(i)] * ranked + [
            _trials(r), r.state, f"{r.params:,}" if r.params is not None else "-",
            *(_cost_cells(r) if costs else []),
            _pct(r.stats["val_acc"]), _pct(r.stats["test_acc"]),
            *(_int8_cells(r) if int8 else []),
            f"{r.seconds:.1f}" if r.seconds is not None else "-", str(r.n),
            *[_setting_text(r.settings.get(k)) for k in settings], _note(r), where])
    return header, body


WIDTH = 120  # the default table's width: a terminal, a CI log, a pasted issue


def fit_table(rows: list[Row], settings: list[str], width: int = WIDTH,
              drop: bool = True, ranked: bool = False) -> tuple[str, list[str]]:
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
    kept, note_width = list(settings), 32
    while True:
        text = format_table(rows, kept, ranked, dirs_under=common, note_width=note_width)
        excess = max(len(line) for line in text.splitlines()) - width
        if excess <= 0 or not drop:
            break
        if kept:
            kept.remove(drop_order.pop(0))
        elif note_width > 12:  # no setting left to drop: shorter notes
            note_width = max(12, note_width - excess)
        else:
            break
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
            # relative to the working folder when below it, as the table shows them
            "dir": display_path(r.dir) if r.dir else None,
            "dirs": [display_path(x.dir) if x.dir else None for x in r.runs],
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
