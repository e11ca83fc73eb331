"""What a sweep tells its user: one line per trial as it ends, and at the end the study's summary
in the log and in optimization_results.yaml."""

import logging
from collections import Counter
from pathlib import Path
from typing import Any, Dict

import optuna
from omegaconf import OmegaConf

from tinycnn.locking import file_lock
from tinycnn.record import write_text_atomic

from ._settings import Settings
from ._trials import retried, state
from ._workers import worker_tag

log = logging.getLogger(__name__)

RESULTS_FILE = "optimization_results.yaml"
def progress(counts: Counter, n: int, trial_state: str, val_acc, params, note: str = "") -> None:
    """The line for trial n, as it ends, with this run's counts so far."""
    c = counts
    acc = "   -  " if val_acc is None else f"{val_acc:.4f}"
    size = "-" if params is None else f"{params:,}"
    log.info("%strial %d %-10s val_acc %s  params %7s | this run: %d complete, %d pruned, "
             "%d failed, %d infeasible%s", worker_tag(), n, trial_state, acc, size, c["complete"],
             c["pruned"], c["failed"], c["infeasible"], f" | {note}" if note else "")


def write_summary(study: optuna.Study, s: Settings, counts: Counter, sweep_dir: Path) -> dict:
    """optimization_results.yaml from the study's state, and the log lines. Workers sharing a
    sweep folder take turns (a file lock) to read the study and replace the file atomically, so
    the file left is the last worker's, read after every other one's end."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(str(sweep_dir / f".{RESULTS_FILE}.lock")):
        summary = summary_of(study, s, counts)
        write_text_atomic(sweep_dir / RESULTS_FILE, OmegaConf.to_yaml(OmegaConf.create(summary)))
    log_summary(summary, s, sweep_dir)
    return summary


def summary_of(study: optuna.Study, s: Settings, counts: Counter) -> dict:
    trials = study.get_trials(deepcopy=False)
    states = Counter(state(t) for t in trials)
    done = [t for t in trials if state(t) == "complete"]
    summary: Dict[str, Any] = {
        "name": "tinycnn_optuna", "study_name": s.study_name, "storage": s.shown_url,
        "objectives": s.objectives, "max_params": s.max_params, "budgets": s.budgets,
        "n_trials": s.n_trials, "trials_in_study": len(trials),
        "study": {k: states.get(k, 0) for k in
                  ("complete", "pruned", "failed", "infeasible", "surplus", "running",
                   "waiting")},
        "this_run": {k: counts.get(k, 0) for k in
                     ("complete", "pruned", "failed", "infeasible", "surplus", "duplicate")},
        "duplicates_reused": sum("duplicate_of" in t.user_attrs for t in trials),
        # trials of killed workers, failed by their heartbeat (or the pool) and run again
        "retried": sorted(retried(trials)),
    }
    base = next((t for t in trials if t.user_attrs.get("baseline")), None)
    summary["baseline"] = brief(base) if base else None
    if done:
        best = max(done, key=lambda t: (t.user_attrs.get("val_acc") or 0.0,
                                        -(t.user_attrs.get("params") or 0)))
        summary["best"] = brief(best)
        summary["best_params"] = dict(best.params)
        summary["best_value"] = best.user_attrs.get("val_acc")
        if base is not None and state(base) == "complete":
            summary["gain_over_baseline"] = round(
                summary["best_value"] - base.user_attrs.get("val_acc"), 6)
    if len(s.objectives) > 1:
        front = [t for t in study.best_trials if state(t) == "complete"]
        summary["pareto_front"] = [brief(t) for t in sorted(front, key=lambda t: t.number)]
    return summary


def log_summary(summary: dict, s: Settings, sweep_dir: Path) -> None:
    st = summary["study"]
    log.info("study %r: %d trials (n_trials %d): %d complete, %d pruned, %d failed, "
             "%d infeasible (never trained)%s%s%s", s.study_name,
             summary["trials_in_study"], s.n_trials, st["complete"], st["pruned"], st["failed"],
             st["infeasible"],
             f"; {len(summary['retried'])} failed with their worker and retried (trials "
             f"{', '.join(map(str, summary['retried']))})" if summary["retried"] else "",
             f", {st['running']} running" if st["running"] else "",
             f"; {summary['duplicates_reused']} of the complete ones repeat an earlier "
             "network and reused its result" if summary["duplicates_reused"] else "")
    if summary.get("best"):
        b = summary["best"]
        line = (f"best: trial {b['trial']} val_acc {b['val_acc']:.4f} params "
                f"{b['params']:,} test_acc {_pct(b['test_acc'])} -> {b['dir']}")
        if summary["baseline"] and summary["baseline"]["state"] == "complete":
            a = summary["baseline"]
            line += (f"\nbaseline (the config's own values): trial {a['trial']} val_acc "
                     f"{a['val_acc']:.4f} params {a['params']:,}; best gains "
                     f"{100 * summary['gain_over_baseline']:+.2f} points")
        log.info(line)
    log.info("results: %s", sweep_dir / RESULTS_FILE)


def brief(t: optuna.trial.FrozenTrial) -> dict:
    a = t.user_attrs
    return {"trial": t.number, "state": state(t), "val_acc": a.get("val_acc"),
            "test_acc": a.get("test_acc"), "params": a.get("params"), "dir": a.get("dir"),
            "values": dict(t.params)}


def _pct(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"
