"""One trial from ask to tell: its config composed and its model counted (infeasible ones told at
once, never trained; a network the study already trained told its twin's result), then, once its
job has run, told how it ended and recorded."""

import contextlib
import copy
import io
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import optuna
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from optuna.trial import TrialState

from tinycnn.errors import ConfigError
from tinycnn.record import read_metrics, write_record
from tinycnn.storage import job_storage

from . import _trials as trials
from ._overrides import apply_overrides
from ._search_space import format_value, quote
from ._errors import SweepError
from ._settings import COSTS


@dataclass
class Candidate:
    """A trial asked of Optuna and checked, ready to launch."""
    trial: optuna.Trial
    overrides: List[str]      # the trial's own: fixed ones and the searched values
    job: List[str]            # what the launcher gets: the above plus Optuna and folder settings
    dir: Path
    params: int
    params_by_block: Dict[str, int]
    baseline: bool
    costs: Dict[str, int]     # params, macs, peak_bytes, flash_bytes (tinycnn/costs.py)


class Judge:
    """Prepares and finishes the trials of one sweep (an OptunaSweep: its settings, space,
    config, counts and progress line)."""

    def __init__(self, sweep):
        self.sweep, self.s, self.space = sweep, sweep.s, sweep.space

    def job(self, n: int, overrides: List[str]) -> List[str]:
        """What the launcher gets for trial n: its overrides plus Optuna and folder settings."""
        s = self.s
        pruner = ",".join(f"{k}:{format_value(v)}" for k, v in s.pruner.items())
        return overrides + [
            f"++optuna.storage={quote(job_storage(s.storage_url))}",
            f"++optuna.study={quote(s.study_name)}",
            f"++optuna.trial={n}",
            f"++optuna.pruner={{{pruner}}}",
            f"hydra.sweep.subdir=trial_{n}",
        ] + ([f"hydra.sweeper.storage={quote(s.shown_url)}"]
             if s.shown_url != s.storage_url else [])  # a sweep file's URL, masked

    def prepare(self, study: optuna.Study, trial: optuna.Trial,
                seen: List[optuna.trial.FrozenTrial]) -> Optional[Candidate]:
        """Compose the trial's config and build its model: a Candidate, or None when it was
        infeasible or a repeat (told and recorded here, in a fraction of a second)."""
        t0 = time.perf_counter()
        n = trial.number
        searched = [d.override(trial.params[d.name]) for d in self.space.dims.values()]
        overrides = self.space.fixed + searched
        job = self.job(n, overrides)
        out_dir = self.sweep.sweep_dir / f"trial_{n}"
        baseline = bool(trial.user_attrs.get("baseline", False))
        twin = None if baseline else trials.twin(seen, overrides)
        if twin is not None:
            self._reuse(study, trial, twin, t0)
            return None
        cfg = self._compose(study, trial, searched, job, overrides)
        costs, table, reason = _count(cfg, self.s.budgets)
        params = costs.get("params")
        trials.record(trial, {"dir": str(out_dir), "overrides": overrides, "baseline": baseline,
                              **costs} if costs else
                      {"dir": str(out_dir), "overrides": overrides, "baseline": baseline,
                       "params": None},
                      # Optuna's constraint mechanism: > 0 is infeasible. TPE and NSGA-II rank
                      # infeasible trials after every feasible one, the least violating first,
                      # and best_trial(s) skip them; so the sampler learns where the budget
                      # lines run. One constraint per budget; not buildable: as far out as
                      # twice the parameter budget.
                      constraints(costs, self.s.budgets))
        if reason is None:
            return Candidate(trial, overrides, job, out_dir, params, table, baseline, costs)
        self._infeasible(study, trial, cfg, out_dir, overrides, costs, table, reason, t0)
        return None

    def _compose(self, study, trial, searched, job, overrides):
        try:
            if self.space.fast_compose:
                cfg = copy.deepcopy(self.space.base_cfg)
                apply_overrides(self.space.parser.parse_overrides(searched), cfg)
                return cfg
            return self.sweep.hydra_context.config_loader.load_sweep_config(self.sweep.config,
                                                                            list(job))
        except Exception as exc:
            reason = f"the config could not be composed: {_first_line(exc)}"
            self.sweep.fail(study, trial, reason)
            raise SweepError(f"trial {trial.number} with overrides {overrides}: {reason}. Check "
                             "the keys and values of the search space (hydra.sweeper.params, "
                             "command line).") from None

    def _infeasible(self, study, trial, cfg, out_dir, overrides, costs, table, reason, t0):
        """Told as COMPLETE with the worst value, not FAIL or PRUNED: samplers ignore failed
        trials (they would propose the same network again), while a complete trial with a
        violated constraint is what TPE/NSGA-II learn the feasible region from."""
        params = costs.get("params")
        values = [0.0 if o == "val_acc" else float(costs[o] if costs
                                                        else 2 * self.s.budgets.get(o, 1))
                  for o in self.s.objectives]
        trials.record(trial, {"state": "infeasible", "reason": reason})
        write_record(out_dir, cfg, {
            "status": "infeasible", **(costs or {"params": None}), "params_by_block": table,
            "train_acc": None, "val_acc": None, "test_acc": None, "seconds": 0.0,
            "seed": cfg.get("seed"), "overrides": overrides, "history": [], "error": reason,
            "trial": trial.number})
        study.tell(trial, values)
        self.sweep.counts["infeasible"] += 1
        self.sweep.progress(trial.number, "infeasible", None, params,
                            f"{reason} [{time.perf_counter() - t0:.2f} s]")

    def _reuse(self, study, trial, twin, t0: float) -> None:
        """The sampler proposed a network this study already trained with the very same
        overrides (TPE does, on categorical spaces): tell it the twin's result instead of
        training it again. Same config, same seed, same machine: the same numbers."""
        a = twin.user_attrs
        keys = ("params", "macs", "peak_bytes", "flash_bytes", "val_acc", "test_acc",
                "train_acc", "seconds", "dir", "overrides")
        trials.record(trial, {**{k: a.get(k) for k in keys}, "duplicate_of": twin.number,
                              "state": "complete"},
                      constraints({k: a.get(k) for k in COSTS}, self.s.budgets))
        study.tell(trial, list(twin.values))
        self.sweep.counts["complete"] += 1
        self.sweep.counts["duplicate"] += 1
        self.sweep.progress(trial.number, "complete", a.get("val_acc"), a.get("params"),
                            f"same config as trial {twin.number}: its result reused, not "
                            f"trained again [{time.perf_counter() - t0:.2f} s]")

    def finish(self, study: optuna.Study, c: Candidate, ret: JobReturn) -> None:
        trial, n = c.trial, c.trial.number
        out_dir = Path(str(ret.hydra_cfg.hydra.runtime.output_dir)) if ret.hydra_cfg else c.dir
        if out_dir != c.dir:
            trials.record(trial, {"dir": str(out_dir)})
        metrics = read_metrics(out_dir)
        value = _outcome(ret)
        complete = ret.status == JobStatus.COMPLETED and isinstance(value, (int, float)) \
            and math.isfinite(value)
        if complete:
            metrics["val_acc"] = float(value)  # what the job returned is what Optuna gets
        trials.record(trial, trials.results(metrics))
        if complete:
            trials.record(trial, {"state": "complete"})
            study.tell(trial, [float(value) if o == "val_acc" else float(c.costs[o])
                               for o in self.s.objectives])
            self.sweep.counts["complete"] += 1
            self.sweep.progress(n, "complete", float(value), c.params)
        elif ret.status == JobStatus.FAILED and isinstance(value, optuna.TrialPruned):
            trials.record(trial, {"state": "pruned"})
            study.tell(trial, state=TrialState.PRUNED)
            self.sweep.counts["pruned"] += 1
            self.sweep.progress(n, "pruned", metrics.get("val_acc"), c.params, str(value))
        else:
            reason = (f"{type(value).__name__}: {value}" if isinstance(value, BaseException)
                      else f"the job returned {value!r}, not a validation accuracy")
            if not metrics:  # failed before training: still leave a record in its folder
                write_record(out_dir, None, {
                    "status": "failed", "params": c.params, "params_by_block": c.params_by_block,
                    "val_acc": None, "test_acc": None, "overrides": c.overrides,
                    "error": reason, "trial": n})
            self.sweep.fail(study, trial, reason)


def constraints(costs: Dict[str, Any], budgets: Dict[str, int]) -> Dict[str, float]:
    """One Optuna constraint per budget, cost minus limit (> 0: over it; the parameter budget's
    is named over_budget, as before the others existed); a network that cannot be built is as
    far out as twice the parameter budget."""
    if not costs or costs.get("params") is None:
        return {"invalid": float(budgets["params"])}
    return {("over_budget" if c == "params" else f"over_{c}"): costs[c] - limit
            for c, limit in budgets.items()}


def _count(cfg, budgets: Dict[str, int]):
    """(the costs: params, macs, peak_bytes, flash_bytes; the per-block parameter table; why the
    trial is infeasible or None), from the config alone: nothing allocated."""
    from tinycnn.model import count_costs
    costs, table, reason = {}, {}, None
    try:
        counted = count_costs(cfg.model)
        costs, table = counted.totals(), counted.params_by_block
        over = [f"{costs[c]:,} {COSTS[c]} > max_{c} {limit:,}" for c, limit in budgets.items()
                if costs[c] > limit]
        if over:
            reason = "over budget: " + "; ".join(over)
    except ConfigError as exc:
        reason = f"invalid model: {exc}"
    except Exception as exc:  # the planner missed a check: still never train it
        reason = f"invalid model: {type(exc).__name__}: {exc}"
    if reason is None and OmegaConf.select(cfg, "data.val_size") == 0:
        reason = "data.val_size = 0: no validation accuracy to optimise"
    return costs, table, reason


def _outcome(ret: JobReturn) -> Any:
    """What the job returned, or the exception it raised. JobReturn.return_value re-raises a
    failure after writing "Error executing job with overrides: ..." to stderr; the sweeper logs
    its own line per trial, so that one is dropped."""
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            return ret.return_value
        except BaseException as exc:  # the job's own exception (TrialPruned, Diverged, ...)
            return exc


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
