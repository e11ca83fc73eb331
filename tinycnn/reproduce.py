"""Rerun a recorded run from its own config.yaml and hold the new numbers against the recorded ones.

Same machine, same seed: the numbers must be identical (training is seeded and deterministic).
Another machine or library version may differ in the last digits; a tolerance says how much is fine.
"""

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from omegaconf import OmegaConf

from tinycnn.data import root_here
from tinycnn.errors import TinycnnError
from tinycnn.record import CONFIG, DamagedRun, read_metrics, read_run

COMPARED = ("train_acc", "val_acc", "test_acc", "train_loss")


@dataclass
class Reproduction:
    recorded: dict
    new: dict
    out_dir: Path
    identical: bool
    worst: tuple          # (metric, |difference|) of the largest difference, or (None, 0.0)
    within: bool          # every difference within the tolerance (and the same parameter count)
    notes: list


def _default_out(root: Path = Path("outputs/reproduce")) -> Path:
    out = root / datetime.now().strftime("%Y-%m-%d") / datetime.now().strftime("%H-%M-%S")
    n = 1
    while out.exists():  # two reproductions in one second
        n += 1
        out = out.with_name(f"{out.name.split('_')[0]}_{n}")
    return out


def reproduce(run_dir, out_dir=None, tolerance: float = 0.002, data_root=None) -> Reproduction:
    """Train RUN_DIR/config.yaml again into out_dir and compare its metrics with RUN_DIR's."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).is_file():
        raise TinycnnError(f"{run_dir} is not a run folder: it has no config.yaml (expected a "
                           "folder under outputs/ written by `python run.py`).")
    try:
        recorded_run = read_run(run_dir)
    except DamagedRun as exc:
        raise TinycnnError(f"{run_dir}: cannot read the recorded metrics: {exc}.") from None
    recorded = read_metrics(run_dir)
    notes = []
    if recorded_run.state == "infeasible":
        raise TinycnnError(f"{run_dir} was infeasible ({recorded_run.reason or 'never trained'}): "
                           "there are no trained numbers to reproduce.")
    if recorded_run.state == "pruned":
        notes.append("the recorded run was stopped early by the Optuna pruner; the rerun trains "
                     "to the end, so its numbers are expected to differ")

    cfg = OmegaConf.load(run_dir / CONFIG)
    if "optuna" in cfg:  # a rerun must not report to (or be pruned by) the study
        cfg.pop("optuna")
    if data_root is not None:
        cfg.data.root = str(data_root)
    elif here := root_here(cfg.data.root):
        notes.append(f"data.root {cfg.data.root} does not exist here; using TINYCNN_DATA={here}")
        cfg.data.root = here

    used = (recorded.get("worker") or {}).get("threads")
    if cfg.get("threads") in (None, "auto") and isinstance(used, int) and used > 0:
        cfg.threads = used  # thread counts change the last digits: rerun with the recorded one
    from tinycnn.lazy import load_runner
    run = load_runner()
    out_dir = Path(out_dir) if out_dir is not None else _default_out()
    try:
        new = run(cfg, out_dir, overrides=recorded.get("overrides") or [])
    except TinycnnError as exc:
        again = ", as the recorded run did" if recorded_run.state == "failed" else ""
        raise TinycnnError(f"the rerun in {out_dir} failed{again}: {exc}") from None

    if recorded.get("device") and recorded.get("device") != new.get("device"):
        notes.append(f"recorded on {recorded['device']}, rerun on {new.get('device')}")
    old_torch = (recorded.get("versions") or {}).get("torch")
    new_torch = (new.get("versions") or {}).get("torch")
    if old_torch != new_torch:
        notes.append(f"recorded with torch {old_torch}, rerun with torch {new_torch}")

    where = _machine_note(recorded.get("machine"), new.get("machine"))
    if where:
        notes.append(where)

    diffs = {}
    for key in COMPARED:
        a, b = recorded.get(key), new.get(key)
        if a is None and b is None:
            continue
        diffs[key] = abs(a - b) if a is not None and b is not None else float("inf")
    same_net = recorded.get("params") == new.get("params") and \
        recorded.get("params_by_block") == new.get("params_by_block")
    identical = same_net and all(d == 0 for d in diffs.values())
    if not identical and "machine" not in recorded:
        notes.append("the record does not name the CPU it ran on (written before tinycnn "
                     "recorded `machine`); on a CPU whose kernels differ (AVX2, AVX512) the last "
                     "bits differ, and an epoch of training turns them into different numbers")
    worst = max(diffs.items(), key=lambda kv: kv[1]) if diffs else (None, 0.0)
    within = same_net and all(d <= tolerance for d in diffs.values())
    return Reproduction(recorded, new, out_dir, identical, worst, within, notes)


def _machine_note(old: dict | None, new: dict | None) -> str | None:
    """A note when the rerun's machine is not the recorded one, or None."""
    if not old or not new or old == new:
        return None
    def name(m):
        return f"{m.get('cpu')} ({m.get('cpu_kernels')} kernels)" + \
            (f", {m['gpu']}" if m.get("gpu") else "")
    note = f"recorded on {name(old)}, rerun on {name(new)}"
    if old.get("cpu_kernels") != new.get("cpu_kernels"):
        note += ("; other CPU kernels give other last bits, and an epoch of training turns them "
                 "into different numbers")
    return note


def _fmt(key, value) -> str:
    if value is None:
        return "-"
    if key == "params":
        return f"{value:,}"
    if key == "seconds":
        return f"{value:.1f}"
    return f"{value:.6f}"


def report(r: Reproduction, tolerance: float) -> str:
    """Recorded vs new, side by side, then one verdict line."""
    rows = [("metric", "recorded", "new", "difference")]
    for key in ("params",) + COMPARED + ("seconds",):
        a, b = r.recorded.get(key), r.new.get(key)
        if key == "seconds":
            diff = "(wall time, not compared)"
        elif a is None or b is None:
            diff = "same" if a == b else "missing"
        else:
            diff = "0" if a == b else f"{b - a:+.6f}" if key != "params" else f"{b - a:+,}"
        rows.append((key, _fmt(key, a), _fmt(key, b), diff))
    w = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [f"{a:<{w[0]}}  {b:>{w[1]}}  {c:>{w[2]}}  {d}" for a, b, c, d in rows]
    lines.insert(1, "-" * max(len(line) for line in lines))
    lines += [f"note: {n}" for n in r.notes]
    if r.identical:
        lines.append(f"identical: the rerun in {r.out_dir} reproduces every recorded number "
                     "exactly.")
    elif r.within:
        lines.append(f"reproduced within tolerance {tolerance}: largest difference "
                     f"{r.worst[1]:.6f} in {r.worst[0]} (rerun in {r.out_dir}).")
    else:
        what = "a different network" if r.recorded.get("params") != r.new.get("params") \
            else f"{r.worst[0]} differs by {r.worst[1]:.6f}"
        lines.append(f"NOT reproduced: {what}, beyond tolerance {tolerance} (rerun in "
                     f"{r.out_dir}).")
    return "\n".join(lines)
