"""The tinycnn_optuna sweeper at work: ask Optuna for a trial, compose its config, build the model
to count its parameters, launch the trials that fit the budget through Hydra's launcher, tell
Optuna how each ended.

The study lives in a storage (SQLite by default), never in this process, so several sweeps
running the same command against one storage share the work: Optuna numbers trials atomically,
each worker stops once the study holds n_trials, and every trial's job reports to its trial
through the storage (pruning works whatever launcher runs it).
"""

import contextlib
import copy
import io
import logging
import math
import os
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus, configure_log
from hydra.errors import CompactHydraException
from omegaconf import DictConfig, ListConfig, OmegaConf
from optuna.trial import TrialState

from tinycnn.errors import ConfigError
from tinycnn.lazy import import_torch
from tinycnn.record import read_metrics, write_record
from tinycnn.study import Heartbeat, StorageError, fail_stale_trials, job_storage, make_pruner, \
    mask, open_storage, pruner_settings, redact, retried_from, storage_failure, storage_url, \
    supports_heartbeat

from ._overrides import apply_overrides
from ._search_space import SpaceError, format_value, parse_space, quote
from tinycnn.stops import held, stop_requested, stop_signals

from ._workers import WORKER_ATTR, n_workers, run_pool, worker_id, worker_tag

log = logging.getLogger(__name__)

OBJECTIVES = {"val_acc": "maximize", "params": "minimize"}
SAMPLERS = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
            "nsga2": optuna.samplers.NSGAIISampler}
# The settings each sampler takes from hydra.sweeper.sampler (besides seed).
SAMPLER_SETTINGS = {"tpe": ("n_startup_trials", "multivariate"), "random": (),
                    "nsga2": ("population_size",)}
# A sweep is judged broken only after this many failures, so one unlucky trial early on (1 of 1
# = 100%) does not stop it; after that, max_failure_rate decides.
MIN_FAILURES_TO_STOP = 3
RESULTS_FILE = "optimization_results.yaml"


class SweepError(CompactHydraException, ConfigError):
    """Printed by Hydra as its message alone (no traceback); also a tinycnn ConfigError."""


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


class OptunaSweep:
    def __init__(self, settings: Dict[str, Any]) -> None:
        self.s = {k: _plain(v) for k, v in settings.items()}
        self.counts: Counter = Counter()   # this worker's trials by state
        self.errors: List[str] = []        # this worker's failures, for the stop message
        self.interrupted: List[int] = []   # trials failed by Ctrl-C
        self.heartbeat: Optional[Heartbeat] = None

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)
        self.sweep_dir = Path(os.path.abspath(str(config.hydra.sweep.dir)))
        self.job_idx = 0

    # ------------------------------------------------------------------ settings
    def _settings(self) -> None:
        s = self.s
        try:
            self.n_trials = _whole(s, "n_trials", 1)
            self.n_jobs = _whole(s, "n_jobs", 1)
            self.n_workers = n_workers(s.get("n_workers", 1))
            self.max_params = _whole(s, "max_params", 1)
            rate = s.get("max_failure_rate")
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
                raise SweepError(f"hydra.sweeper.max_failure_rate = {rate!r}: expected a number "
                                 "from 0 (stop at the first failures) to 1 (never stop)")
            self.max_failure_rate = float(rate)
            self.study_name = str(s.get("study_name") or "").strip()
            if not self.study_name:
                raise SweepError("hydra.sweeper.study_name is empty: name the study (a sweep "
                                 "continues the study of that name in the storage)")
            objectives = s.get("objectives") or []
            objectives = [objectives] if isinstance(objectives, str) else list(objectives)
            bad = [o for o in objectives if o not in OBJECTIVES]
            if bad or "val_acc" not in objectives or len(set(objectives)) != len(objectives):
                why = (f"{bad[0]!r} is not an objective" if bad else
                       "val_acc must be among them, once each")
                hint = (" (test accuracy is recorded for every trial but never optimised: the "
                        "test set is for reporting only)" if "test_acc" in bad else "")
                raise SweepError(f"hydra.sweeper.objectives = {objectives}: {why}{hint}. Use "
                                 "[val_acc] (maximise validation accuracy) or [val_acc, params] "
                                 "(also minimise parameters: a Pareto front).")
            self.objectives = objectives
            self.directions = [OBJECTIVES[o] for o in objectives]
            self.storage_url = storage_url(s.get("storage") or "")
            self.shown_url = mask(self.storage_url)  # what logs and files may show
            self.connect_timeout = s.get("connect_timeout", 10)
            if isinstance(self.connect_timeout, bool) or not isinstance(
                    self.connect_timeout, (int, float)) or not self.connect_timeout > 0:
                raise SweepError(f"hydra.sweeper.connect_timeout = {self.connect_timeout!r}: "
                                 "expected a positive number of seconds")
            self.heartbeat_spec = None
            self.max_retry = _whole({"max_retry": s.get("max_retry", 3)}, "max_retry", 0)
            if s.get("heartbeat_interval") is not None:
                interval = _whole(s, "heartbeat_interval", 1)
                grace = _whole(s, "grace_period", interval + 1)
                self.heartbeat_spec = (interval, grace, self.max_retry)
            self.pruner_spec = pruner_settings(s.get("pruner"))
            self.pruner = make_pruner(self.pruner_spec)
            if len(objectives) > 1 and not isinstance(self.pruner, optuna.pruners.NopPruner):
                raise SweepError(f"hydra.sweeper.pruner.name = {self.pruner_spec.get('name')!r} "
                                 f"with objectives {objectives}: Optuna cannot prune a "
                                 "multi-objective study. Use pruner.name=none, or "
                                 "objectives=[val_acc].")
            self.sampler_spec = dict(s.get("sampler") or {"name": "tpe"})
            self._sampler(self.sampler_spec.get("seed"))  # fail now on a bad name or setting
        except ConfigError as exc:
            if isinstance(exc, SweepError):
                raise
            raise SweepError(str(exc)) from None

    def _sampler(self, seed: Optional[int]) -> optuna.samplers.BaseSampler:
        spec = self.sampler_spec
        name = str(spec.get("name", "tpe")).lower()
        if name not in SAMPLERS:
            raise SweepError(f"hydra.sweeper.sampler.name = {name!r}: unknown sampler; use one "
                             f"of {', '.join(SAMPLERS)}")
        kwargs = {k: spec[k] for k in SAMPLER_SETTINGS[name] if k in spec}
        try:
            return SAMPLERS[name](seed=seed, **kwargs)
        except (TypeError, ValueError) as exc:
            raise SweepError(f"hydra.sweeper.sampler = {spec}: the {name} sampler refused its "
                             f"settings: {exc}") from None

    def _space(self, arguments: List[str]) -> None:
        try:
            self.dims, self.fixed, fixed_from_params = parse_space(self.s.get("params") or {},
                                                                   arguments)
        except SpaceError as exc:
            raise SweepError(str(exc)) from None
        if not self.dims:
            raise SweepError("nothing to search: hydra.sweeper.params is empty and the command "
                             "line has no sweep (e.g. train.lr=interval(1e-4,1e-2)). Pick a "
                             "space with sweeps=NAME (see sweeps/), or add one.")
        choices = self.config.hydra.runtime.choices
        for d in self.dims.values():
            if d.name == "hydra" or d.name.startswith("hydra."):
                raise SweepError(f"{d.key}={d.spec}: Hydra's own settings cannot be searched")
            if d.key.startswith("+") or d.name in choices:
                continue
            if OmegaConf.select(self.config, d.name, default=_MISSING) is _MISSING:
                raise SweepError(f"{d.key}={d.spec}: {d.name!r} is not a key of the config "
                                 "(print it with `python run.py --cfg job`); to add a new key, "
                                 f"write +{d.name}")
        # Checking a trial needs only its model config: when the search touches values only
        # (no config group), the trial's overrides are applied to a copy of the composed master
        # config (see _overrides.py), not composed the full Hydra way (~0.3 s a trial).
        self.parser = OverridesParser.create()
        extra = self.parser.parse_overrides(fixed_from_params)
        self.fast_compose = not any(d.name in choices for d in self.dims.values()) and not any(
            o.key_or_group in choices for o in extra)
        if self.fast_compose:
            base = OmegaConf.to_container(self.config, resolve=False)
            base.pop("hydra", None)
            self.base_cfg = OmegaConf.create(base)
            OmegaConf.set_struct(self.base_cfg, True)
            try:
                apply_overrides(extra, self.base_cfg)
            except Exception as exc:
                raise SweepError(f"hydra.sweeper.params: {_first_line(exc)}") from None
        if OmegaConf.select(self.config, "data.val_size") == 0:
            raise SweepError("data.val_size = 0: a sweep selects networks by validation "
                             "accuracy, so it needs a validation split held out of the training "
                             "images. Set data.val_size to a positive number (default 5000); "
                             "the test set is never used for selection.")

    # ------------------------------------------------------------------ study
    def _hide_secret(self) -> None:
        """Mask the storage's password in the config that multirun.yaml and every job's
        .hydra/ record (hydra.sweeper.storage, and hydra.overrides.hydra, from which the
        launcher composes each job)."""
        from omegaconf import read_write
        url = self.storage_url
        raw = str(self.s.get("storage") or "")
        with read_write(self.config.hydra):
            self.config.hydra.sweeper.storage = mask(raw)
            hydra_overrides = self.config.hydra.overrides.hydra
            for i, o in enumerate(hydra_overrides):
                hydra_overrides[i] = redact(redact(o, raw), url)

    def interrupted_note(self) -> str:
        done = ", ".join(map(str, self.interrupted))
        return (f"trial(s) {done} recorded failed ('interrupted'). " if done else "") + \
            "Run the same command again to continue the study."

    def _open_study(self) -> optuna.Study:
        try:
            storage = open_storage(self.storage_url, self.connect_timeout, self.heartbeat_spec)
        except StorageError as exc:
            raise SweepError(f"hydra.sweeper.storage: {exc}") from None
        self.storage = storage
        seed = self.sampler_spec.get("seed")
        try:
            # Creating is atomic in the storage: exactly one of several workers started at once
            # creates the study. That one seeds its sampler and enqueues the paper's preset.
            study = optuna.create_study(storage=storage, sampler=self._sampler(seed),
                                        pruner=self.pruner, study_name=self.study_name,
                                        directions=self.directions)
            self.created = True
        except optuna.exceptions.DuplicatedStudyError:
            # Joining a study (a second worker, or a re-run continuing it): draw from fresh
            # entropy, or two workers with one seed would propose the very same networks.
            study = optuna.load_study(study_name=self.study_name, storage=storage,
                                      sampler=self._sampler(None), pruner=self.pruner)
            self.created = False
        have = [d.name.lower() for d in study.directions]
        if have != self.directions:
            names = {v: k for k, v in OBJECTIVES.items()}
            raise SweepError(
                f"study {self.study_name!r} in {self.shown_url} was created for "
                f"{[names.get(d, d) for d in have]} ({', '.join(have)}); this sweep asks for "
                f"hydra.sweeper.objectives = {self.objectives}. Use another "
                "hydra.sweeper.study_name, or the study's objectives.")
        space = {d.name: d.spec for d in self.dims.values()}
        old = study.user_attrs.get("search_space")
        if old is not None and old != space:
            log.warning("study %r was searched over another space before; Optuna's sampler now "
                        "learns from both (use a new hydra.sweeper.study_name to start afresh)",
                        self.study_name)
        study.set_user_attr("search_space", space)
        study.set_user_attr("fixed_overrides", self.fixed)
        study.set_user_attr("max_params", self.max_params)
        study.set_user_attr("objectives", self.objectives)
        return study

    def _enqueue_baseline(self, study: optuna.Study) -> None:
        """The config's own values (for paper25k the paper's network) as the first trial, if
        the space has them."""
        choices = self.config.hydra.runtime.choices
        params, missing = {}, []
        for d in self.dims.values():
            value = choices[d.name] if d.name in choices else OmegaConf.select(
                self.config, d.name, default=_MISSING)
            if isinstance(value, (DictConfig, ListConfig)):
                value = OmegaConf.to_container(value, resolve=True)
            if value is _MISSING or not d.contains(value):
                missing.append(f"{d.name}={'(unset)' if value is _MISSING else value!r}")
            else:
                params[d.name] = d.external(value)
        if missing:
            log.info("baseline not enqueued: the config's own value is outside the space for %s",
                     ", ".join(missing))
            return
        study.enqueue_trial(params, user_attrs={"baseline": True}, skip_if_exists=True)
        log.info("baseline: the config's own values are enqueued as the first trial")

    # ------------------------------------------------------------------ sweep
    def sweep(self, arguments: List[str]) -> Any:
        self._settings()
        self._hide_secret()
        self._space(arguments)
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial comes from here
        study = self._open_study()
        if self.created:
            self._enqueue_baseline(study)
        self._recover(study)
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, self.sweep_dir / "multirun.yaml")
        have = _taken(study)
        if not worker_tag():  # a pool's workers would repeat the line its parent logged
            log.info("study %r (%s) in %s: %d of %d trials there; %d dimensions, budget %s "
                     "params, sampler %s, pruner %s; trial folders in %s", self.study_name,
                     ", ".join(self.objectives), self.shown_url, have, self.n_trials,
                     len(self.dims), f"{self.max_params:,}", self.sampler_spec.get("name", "tpe"),
                     self.pruner_spec.get("name", "none"), self.sweep_dir)
        try:
            return self._run(study, have)
        except Exception as exc:
            lost = storage_failure(exc, self.storage_url)
            if lost is None:
                raise
            raise SweepError(self._lost_storage(lost)) from None
        finally:
            if self.heartbeat:
                self.heartbeat.close()

    def _lost_storage(self, why: str) -> str:
        """One line for a storage that failed mid-sweep (a database server that went away)."""
        after = (f"a worker finds them stale after grace_period ({self.heartbeat_spec[1]} s) "
                 "and runs them again" if self.heartbeat
                 else "with no heartbeats here they stay RUNNING and count toward n_trials")
        return (f"{worker_tag()}the Optuna storage {self.shown_url} failed mid-sweep: "
                f"{why.rstrip('. ')}; trials running now may be left RUNNING: once the storage "
                f"is back, the same command continues the study ({after}).")

    def _run(self, study: optuna.Study, have: int) -> Any:
        if have >= self.n_trials:
            log.info("nothing to do: the study already holds n_trials=%d trials (raise "
                     "hydra.sweeper.n_trials to continue it)", self.n_trials)
        elif self.n_workers > 1:
            return run_pool(self, study)
        self.asked: List[optuna.Trial] = []
        # Ctrl-C, SIGTERM (a scheduler, `kill`) or the pool's SIGINT to its worker.
        with stop_signals():
            try:
                # torch comes in here, before the first trial is asked: a stop inside its import
                # would abort the process with the trial RUNNING; held, it is raised after it.
                import_torch()
                results = self._loop(study)
            except BaseException as exc:  # a stop between trials: close what this one asked
                self._close_asked(study, exc)
                if worker_tag() and isinstance(exc, KeyboardInterrupt):  # told to stop: one line
                    raise SweepError(f"{worker_tag()}stopped ({exc}); its running trial is "
                                     "marked failed") from None
                raise
        if not worker_tag():  # in a pool the process that started the workers sums up
            self._summary(study)
        return results

    def _close_asked(self, study: optuna.Study, exc: BaseException) -> None:
        running = {t.number for t in study.get_trials(deepcopy=False,
                                                       states=(TrialState.RUNNING,))}
        why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        for trial in self.asked:
            if trial.number in running:
                self._fail(study, trial, f"interrupted ({why})")

    def _loop(self, study: optuna.Study) -> list:
        results = []
        while True:
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
            fail_stale_trials(study, self.storage)  # a killed worker's trials, retried
            if self.heartbeat:
                self.heartbeat.clear()  # the last batch is told
            batch = self._next_batch(study)
            if not batch:
                break
            try:
                # Job numbers follow trial numbers where they can (Hydra logs "#num").
                first = batch[0].trial.number
                consecutive = [c.trial.number for c in batch] == list(range(first, first +
                                                                            len(batch)))
                returns = self.launcher.launch([c.job for c in batch], initial_job_idx=(
                    first if consecutive else self.job_idx))
            except BaseException as exc:  # Ctrl-C or a launcher failure: leave no trial RUNNING
                why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                for c in batch:
                    self._fail(study, c.trial, f"interrupted ({why})",
                               count=not isinstance(exc, KeyboardInterrupt))
                    self.interrupted.append(c.trial.number)
                    if c.baseline:  # the comparison every sweep reports must still be made
                        study.enqueue_trial(dict(c.trial.params), user_attrs={"baseline": True})
                raise
            self.job_idx += len(batch)
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
            for c, ret in zip(batch, returns):
                self._finish(study, c, ret)
            results.append(returns)
            self._check_failure_rate(study)
        return results

    def _recover(self, study: optuna.Study) -> None:
        """Heartbeats for this worker's trials, and the trials of killed workers failed and
        retried (Optuna's heartbeat + RetryHeartbeatStaleTrialCallback); RDB storages only."""
        if supports_heartbeat(self.storage):
            self.heartbeat = Heartbeat(self.storage, self.study_name)
        elif self.heartbeat_spec and "://" not in self.storage_url:
            log.info("journal storage: Optuna keeps no heartbeats there, so a trial whose "
                     "worker was killed stays RUNNING and counts toward n_trials (use SQLite or "
                     "PostgreSQL to have it retried)")

    def _next_batch(self, study: optuna.Study) -> List[Candidate]:
        """Up to n_jobs trials that fit the budget; infeasible ones are told on the way."""
        batch: List[Candidate] = []
        dists = {d.name: d.distribution for d in self.dims.values()}
        while len(batch) < self.n_jobs:
            if stop_requested():
                raise KeyboardInterrupt("stop requested")
            trials = study.get_trials(deepcopy=False)
            retried = _retried(trials)  # trials a retry replaces do not count toward n_trials
            if study_full(study, self.n_trials, trials):
                break
            with held():  # a Ctrl-C now must find the new trial in self.asked
                trial = study.ask(dists)
                self.asked.append(trial)
                trial.set_user_attr(WORKER_ATTR, worker_id())  # whose it is, should it die
                if self.heartbeat:
                    self.heartbeat.add(trial.number)
            # A new trial's number counts the trials before it (Optuna numbers them atomically
            # and hands out enqueued ones first). Enqueued ones were asked for: always run.
            enqueued = trial.number < len(trials)
            if not enqueued and trial.number >= self.n_trials + len(retried):
                # Another worker asked in the same instant and the study was full: Optuna cannot
                # take a trial back, so this one is closed as failed, marked surplus.
                trial.set_user_attr("surplus", True)
                self._fail(study, trial, f"surplus: the study already held n_trials="
                           f"{self.n_trials} when this worker asked (another worker took the "
                           "last one)", count=False)
                self.counts["surplus"] += 1
                break
            candidate = self._prepare(study, trial, trials)
            if candidate is not None:
                batch.append(candidate)
        return batch

    def _prepare(self, study: optuna.Study, trial: optuna.Trial,
                 trials: List[optuna.trial.FrozenTrial]) -> Optional[Candidate]:
        """Compose the trial's config and build its model: a Candidate, or None when it was
        infeasible (told and recorded here, in a fraction of a second, never trained)."""
        t0 = time.perf_counter()
        n = trial.number
        searched = [d.override(trial.params[d.name]) for d in self.dims.values()]
        overrides = self.fixed + searched
        pruner = ",".join(f"{k}:{format_value(v)}" for k, v in self.pruner_spec.items())
        job = overrides + [
            f"++optuna.storage={quote(job_storage(self.storage_url))}",
            f"++optuna.study={quote(self.study_name)}",
            f"++optuna.trial={n}",
            f"++optuna.pruner={{{pruner}}}",
            f"hydra.sweep.subdir=trial_{n}",
        ] + ([f"hydra.sweeper.storage={quote(self.shown_url)}"]
             if self.shown_url != self.storage_url else [])  # a sweep file's URL, masked
        out_dir = self.sweep_dir / f"trial_{n}"
        baseline = bool(trial.user_attrs.get("baseline", False))
        twin = None if baseline else _twin(trials, overrides)
        if twin is not None:
            self._reuse(study, trial, twin, t0)
            return None
        try:
            if self.fast_compose:
                cfg = copy.deepcopy(self.base_cfg)
                apply_overrides(self.parser.parse_overrides(searched), cfg)
            else:
                cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(job))
        except Exception as exc:
            reason = f"the config could not be composed: {_first_line(exc)}"
            self._fail(study, trial, reason)
            raise SweepError(f"trial {n} with overrides {overrides}: {reason}. Check the keys "
                             "and values of the search space (hydra.sweeper.params, command "
                             "line).") from None

        from tinycnn.model import count_params
        params, table, reason = None, {}, None
        try:
            params, table = count_params(cfg.model)  # from the config alone: nothing allocated
            if params > self.max_params:
                reason = (f"over budget: {params:,} parameters > max_params "
                          f"{self.max_params:,}")
        except ConfigError as exc:
            reason = f"invalid model: {exc}"
        except Exception as exc:  # the planner missed a check: still never train it
            reason = f"invalid model: {type(exc).__name__}: {exc}"
        if reason is None and OmegaConf.select(cfg, "data.val_size") == 0:
            reason = "data.val_size = 0: no validation accuracy to optimise"
        for key, value in {"dir": str(out_dir), "overrides": overrides, "baseline": baseline,
                           "params": params}.items():
            trial.set_user_attr(key, value)
        if params is not None:
            # Optuna's constraint mechanism: > 0 is infeasible. TPE and NSGA-II rank infeasible
            # trials after every feasible one, the least violating first, and best_trial(s)
            # skip them; so the sampler learns where the budget line runs.
            _constrain(trial, "over_budget", params - self.max_params)
        if reason is None:
            return Candidate(trial, overrides, job, out_dir, params, table, baseline)

        # Infeasible. Told as COMPLETE with the worst value, not FAIL or PRUNED: samplers ignore
        # failed trials (they would propose the same network again), while a complete trial
        # with a violated constraint is what TPE/NSGA-II learn the feasible region from.
        if params is None:
            # Not buildable: as far out as a network of twice the budget.
            _constrain(trial, "invalid", float(self.max_params))
        values = [0.0 if o == "val_acc" else float(params if params is not None
                                                        else 2 * self.max_params)
                  for o in self.objectives]
        trial.set_user_attr("state", "infeasible")
        trial.set_user_attr("reason", reason)
        write_record(out_dir, cfg, {
            "status": "infeasible", "params": params, "params_by_block": table,
            "train_acc": None, "val_acc": None, "test_acc": None, "seconds": 0.0,
            "seed": cfg.get("seed"), "overrides": overrides, "history": [], "error": reason,
            "trial": n})
        study.tell(trial, values)
        self.counts["infeasible"] += 1
        self._progress(trial.number, "infeasible", None, params,
                       f"{reason} [{time.perf_counter() - t0:.2f} s]")
        return None

    def _reuse(self, study, trial, twin, t0: float) -> None:
        """The sampler proposed a network this study already trained with the very same
        overrides (TPE does, on categorical spaces): tell it the twin's result instead of
        training it again. Same config, same seed, same machine: the same numbers."""
        a = twin.user_attrs
        for key in ("params", "val_acc", "test_acc", "train_acc", "seconds", "dir", "overrides"):
            trial.set_user_attr(key, a.get(key))
        trial.set_user_attr("duplicate_of", twin.number)
        trial.set_user_attr("state", "complete")
        _constrain(trial, "over_budget", a["params"] - self.max_params)
        study.tell(trial, list(twin.values))
        self.counts["complete"] += 1
        self.counts["duplicate"] += 1
        self._progress(trial.number, "complete", a.get("val_acc"), a.get("params"),
                       f"same config as trial {twin.number}: its result reused, not trained "
                       f"again [{time.perf_counter() - t0:.2f} s]")

    def _finish(self, study: optuna.Study, c: Candidate, ret: JobReturn) -> None:
        trial, n = c.trial, c.trial.number
        out_dir = Path(str(ret.hydra_cfg.hydra.runtime.output_dir)) if ret.hydra_cfg else c.dir
        if out_dir != c.dir:
            trial.set_user_attr("dir", str(out_dir))
        metrics = read_metrics(out_dir)
        value = _outcome(ret)
        complete = ret.status == JobStatus.COMPLETED and isinstance(value, (int, float)) \
            and math.isfinite(value)
        if complete:
            metrics["val_acc"] = float(value)  # what the job returned is what Optuna gets
        for key in ("val_acc", "test_acc", "train_acc", "seconds"):
            trial.set_user_attr(key, metrics.get(key))
        if complete:
            trial.set_user_attr("state", "complete")
            values = [float(value) if o == "val_acc" else float(c.params)
                      for o in self.objectives]
            study.tell(trial, values)
            self.counts["complete"] += 1
            self._progress(n, "complete", float(value), c.params)
        elif ret.status == JobStatus.FAILED and isinstance(value, optuna.TrialPruned):
            trial.set_user_attr("state", "pruned")
            study.tell(trial, state=TrialState.PRUNED)
            self.counts["pruned"] += 1
            self._progress(n, "pruned", metrics.get("val_acc"), c.params, str(value))
        else:
            reason = (f"{type(value).__name__}: {value}" if isinstance(value, BaseException)
                      else f"the job returned {value!r}, not a validation accuracy")
            if not metrics:  # failed before training: still leave a record in its folder
                write_record(out_dir, None, {
                    "status": "failed", "params": c.params, "params_by_block": c.params_by_block,
                    "val_acc": None, "test_acc": None, "overrides": c.overrides,
                    "error": reason, "trial": n})
            self._fail(study, trial, reason)

    def _fail(self, study, trial, reason: str, count: bool = True) -> None:
        trial.set_user_attr("state", "failed")
        trial.set_user_attr("reason", reason)
        study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        if count:
            self.counts["failed"] += 1
            self.errors.append(f"trial {trial.number}: {reason}")
            self._progress(trial.number, "failed", None, trial.user_attrs.get("params"), reason)

    def _progress(self, n: int, state: str, val_acc, params, note: str = "") -> None:
        c = self.counts
        acc = "   -  " if val_acc is None else f"{val_acc:.4f}"
        size = "-" if params is None else f"{params:,}"
        log.info("%strial %d %-10s val_acc %s  params %7s | this run: %d complete, %d pruned, "
                 "%d failed, %d infeasible%s", worker_tag(), n, state, acc, size, c["complete"],
                 c["pruned"], c["failed"], c["infeasible"], f" | {note}" if note else "")

    def _check_failure_rate(self, study: optuna.Study) -> None:
        failed = self.counts["failed"]
        launched = failed + self.counts["complete"] + self.counts["pruned"]
        if failed >= min(MIN_FAILURES_TO_STOP, self.n_trials) and \
                failed > self.max_failure_rate * launched:
            self._summary(study)
            last = "\n  ".join(self.errors[-3:])
            raise SweepError(
                f"sweep stopped: {failed} of the {launched} trials this run launched failed, "
                f"more than max_failure_rate={self.max_failure_rate:g} allows. The last "
                f"failures:\n  {last}\nEach trial folder's metrics.json has its error; fix the "
                "cause and run the same command again to continue the study (or raise "
                "hydra.sweeper.max_failure_rate).")

    # ------------------------------------------------------------------ records
    def _summary(self, study: optuna.Study) -> dict:
        """optimization_results.yaml from the study's state, and the log lines. Workers sharing
        a sweep folder take turns (a file lock) to read the study and replace the file
        atomically, so the file left is the last worker's, read after every other one's end."""
        from tinycnn.record import write_text_atomic
        from tinycnn.study import file_lock
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        with file_lock(str(self.sweep_dir / f".{RESULTS_FILE}.lock")):
            summary = self._summary_of(study)
            write_text_atomic(self.sweep_dir / RESULTS_FILE,
                              OmegaConf.to_yaml(OmegaConf.create(summary)))
        self._log_summary(summary)
        return summary

    def _summary_of(self, study: optuna.Study) -> dict:
        trials = study.get_trials(deepcopy=False)
        states = Counter(_state(t) for t in trials)
        done = [t for t in trials if _state(t) == "complete"]
        summary: Dict[str, Any] = {
            "name": "tinycnn_optuna", "study_name": self.study_name, "storage": self.shown_url,
            "objectives": self.objectives, "max_params": self.max_params,
            "n_trials": self.n_trials, "trials_in_study": len(trials),
            "study": {k: states.get(k, 0) for k in
                      ("complete", "pruned", "failed", "infeasible", "surplus", "running",
                       "waiting")},
            "this_run": {k: self.counts.get(k, 0) for k in
                         ("complete", "pruned", "failed", "infeasible", "surplus", "duplicate")},
            "duplicates_reused": sum("duplicate_of" in t.user_attrs for t in trials),
            # trials of killed workers, failed by their heartbeat and run again
            "retried": sorted(_retried(trials)),
        }
        base = next((t for t in trials if t.user_attrs.get("baseline")), None)
        summary["baseline"] = _brief(base) if base else None
        if done:
            best = max(done, key=lambda t: (t.user_attrs.get("val_acc") or 0.0,
                                            -(t.user_attrs.get("params") or 0)))
            summary["best"] = _brief(best)
            summary["best_params"] = dict(best.params)
            summary["best_value"] = best.user_attrs.get("val_acc")
            if base is not None and _state(base) == "complete":
                summary["gain_over_baseline"] = round(
                    summary["best_value"] - base.user_attrs.get("val_acc"), 6)
        if len(self.objectives) > 1:
            front = [t for t in study.best_trials if _state(t) == "complete"]
            summary["pareto_front"] = [_brief(t) for t in sorted(front, key=lambda t: t.number)]
        return summary

    def _log_summary(self, summary: dict) -> None:
        st = summary["study"]
        log.info("study %r: %d trials (n_trials %d): %d complete, %d pruned, %d failed, "
                 "%d infeasible (never trained)%s%s%s", self.study_name,
                 summary["trials_in_study"], self.n_trials, st["complete"], st["pruned"], st["failed"], st["infeasible"],
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
        log.info("results: %s", self.sweep_dir / RESULTS_FILE)


_MISSING = object()


def _constrain(trial: optuna.Trial, key: str, value: float) -> None:
    """trial.set_constraint, quiet for a retried trial: its copy of the failed trial's attributes
    already holds the same constraint, and Optuna would warn that it keeps that one.

    Also the list of constraint values under the system attribute "constraints", Optuna's
    format before 5.0 and the one optuna-dashboard (0.21) reads to show a trial as infeasible;
    Optuna 5 writes "constraints:KEY" only. Optuna reads both, so its samplers see each
    violation twice: every trial alike, which leaves feasibility and the order unchanged.
    Written through the storage's public methods (Optuna 5.0 has no public Trial method for
    a system attribute)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The constraint value is ignored")
        trial.set_constraint(key, value)
    storage = trial.storage
    trial_id = storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(trial.study.study_name), trial.number)
    attrs = storage.get_trial_system_attrs(trial_id)
    values = [v for k, v in attrs.items() if k.startswith("constraints:")]
    storage.set_trial_system_attr(trial_id, "constraints", values)


def study_full(study: optuna.Study, n_trials: int, trials=None) -> bool:
    """Whether the study holds n_trials trials: all but those enqueued and not yet started, and
    but those that a retry replaces."""
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    return sum(t.state != TrialState.WAITING for t in trials) - len(_retried(trials)) >= n_trials


def _taken(study: optuna.Study) -> int:
    """Trials that count toward n_trials: all but those enqueued and not yet started."""
    return len(study.get_trials(deepcopy=False, states=(
        TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)))


def _twin(trials: List[optuna.trial.FrozenTrial],
          overrides: List[str]) -> Optional[optuna.trial.FrozenTrial]:
    """The first of `trials` (the study as read before this ask) that trained to completion
    with exactly these overrides."""
    for t in trials:
        if t.state == TrialState.COMPLETE and t.user_attrs.get("state") == "complete" \
                and t.user_attrs.get("overrides") == overrides \
                and "duplicate_of" not in t.user_attrs:
            return t
    return None


def _retried(trials: List[optuna.trial.FrozenTrial]) -> set:
    """Numbers of the trials that a retry (a trial with retried_from) replaces."""
    return {t.system_attrs["retry_history"][-1] for t in trials if retried_from(t) is not None}


def _state(t: optuna.trial.FrozenTrial) -> str:
    if t.user_attrs.get("surplus"):
        return "surplus"
    if t.state == TrialState.RUNNING or t.state == TrialState.WAITING:
        return t.state.name.lower()  # a retry inherits its failed original's user attrs
    return t.user_attrs.get("state") or {"FAIL": "failed"}.get(t.state.name, t.state.name.lower())


def _brief(t: optuna.trial.FrozenTrial) -> dict:
    a = t.user_attrs
    return {"trial": t.number, "state": _state(t), "val_acc": a.get("val_acc"),
            "test_acc": a.get("test_acc"), "params": a.get("params"), "dir": a.get("dir"),
            "values": dict(t.params)}


def _pct(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _whole(s: dict, key: str, low: int) -> int:
    v = s.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise SweepError(f"hydra.sweeper.{key} = {v!r}: expected a whole number >= {low}")
    return v


def _plain(v):
    return OmegaConf.to_container(v, resolve=True) if isinstance(v, DictConfig) or \
        OmegaConf.is_list(v) else v


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
