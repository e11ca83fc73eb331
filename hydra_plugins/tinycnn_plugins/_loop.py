"""The tinycnn_optuna sweeper at work: ask Optuna for a trial, compose its config, build the model
to count its parameters, launch the trials that fit the budget through Hydra's launcher, tell
Optuna how each ended.

The study lives in a storage (SQLite by default), never in this process, so several sweeps
running the same command against one storage share the work: Optuna numbers trials atomically,
each worker stops once the study holds n_trials, and every trial's job reports to its trial
through the storage (pruning works whatever launcher runs it).
"""

import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any, List, Optional

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import configure_log
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from tinycnn.heartbeat import Heartbeat, fail_stale_trials, supports_heartbeat
from tinycnn.lazy import import_torch
from tinycnn.stops import held, stop_requested, stop_signals
from tinycnn.record import write_text_atomic
from tinycnn.storage import storage_failure

from . import _report as report, _start as start, _trials as trials
from ._candidate import Candidate, Judge
from ._errors import SweepError
from ._identity import check_folder, identity
from ._settings import budget_text, read_settings
from ._workers import run_pool, worker_id, worker_tag

log = logging.getLogger(__name__)

# A sweep is judged broken only after this many failures, so one unlucky trial early on (1 of 1
# = 100%) does not stop it; after that, max_failure_rate decides.
MIN_FAILURES_TO_STOP = 3


class OptunaSweep:
    def __init__(self, settings: dict) -> None:
        self.given = settings
        self.counts: Counter = Counter()   # this worker's trials by state
        self.errors: List[str] = []        # this worker's failures, for the stop message
        self.interrupted: List[int] = []   # trials failed by Ctrl-C
        self.heartbeat: Optional[Heartbeat] = None
        self.asked: List[optuna.Trial] = []

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)
        self.sweep_dir = Path(os.path.abspath(str(config.hydra.sweep.dir)))
        self.job_idx = 0

    def interrupted_note(self) -> str:
        done = ", ".join(map(str, self.interrupted))
        return (f"trial(s) {done} recorded failed ('interrupted'). " if done else "") + \
            "Run the same command again to continue the study."

    def summary(self, study: optuna.Study) -> dict:
        return report.write_summary(study, self.s, self.counts, self.sweep_dir)

    def sweep(self, arguments: List[str]) -> Any:
        self.s = s = read_settings(self.given)
        start.hide_secret(self.config, s)
        self.space = start.read_space(self.config, s, arguments)
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial comes from here
        if not worker_tag():  # a pool's workers share their parent's folder and study
            check_folder(self.sweep_dir, s)
        ident = identity(self.config, s, self.space)
        study, self.storage, created = start.open_study(s, self.space, ident)
        if created:
            start.enqueue_baseline(self.config, self.space, study)
        self._recover()
        write_text_atomic(self.sweep_dir / "multirun.yaml", OmegaConf.to_yaml(self.config))
        have = trials.taken(study)
        if not worker_tag():  # a pool's workers would repeat the line its parent logged
            log.info("study %r (%s) in %s: %d of %d trials there; %d dimensions, budget %s, "
                     "sampler %s, pruner %s; trial folders in %s", s.study_name,
                     ", ".join(s.objectives), s.shown_url, have, s.n_trials,
                     len(self.space.dims), budget_text(s.budgets), s.sampler.get("name", "tpe"),
                     s.pruner.get("name", "none"), self.sweep_dir)
        try:
            return self._run(study, have)
        except Exception as exc:
            lost = storage_failure(exc, s.storage_url)
            if lost is None:
                raise
            raise SweepError(self._lost_storage(lost)) from None
        finally:
            if self.heartbeat:
                self.heartbeat.close()

    def _lost_storage(self, why: str) -> str:
        """One line for a storage that failed mid-sweep (a database server that went away)."""
        after = (f"a worker finds them stale after grace_period ({self.s.heartbeat[1]} s) "
                 "and runs them again" if self.heartbeat
                 else "with no heartbeats here they stay RUNNING and count toward n_trials")
        return (f"{worker_tag()}the Optuna storage {self.s.shown_url} failed mid-sweep: "
                f"{why.rstrip('. ')}; trials running now may be left RUNNING: once the storage "
                f"is back, the same command continues the study ({after}).")

    def _recover(self) -> None:
        """Heartbeats for this worker's trials, and the trials of killed workers failed and
        retried (Optuna's heartbeat + RetryHeartbeatStaleTrialCallback); RDB storages only."""
        if supports_heartbeat(self.storage):
            self.heartbeat = Heartbeat(self.storage, self.s.study_name)
        elif self.s.heartbeat and "://" not in self.s.storage_url:
            log.info("journal storage: Optuna keeps no heartbeats there, so a trial whose "
                     "worker was killed stays RUNNING and counts toward n_trials (use SQLite or "
                     "PostgreSQL to have it retried)")

    def _run(self, study: optuna.Study, have: int) -> Any:
        if have >= self.s.n_trials:
            log.info("nothing to do: the study already holds n_trials=%d trials (raise "
                     "hydra.sweeper.n_trials to continue it)", self.s.n_trials)
        elif self.s.n_workers > 1:
            return run_pool(self, study)
        # Ctrl-C, SIGTERM (a scheduler, `kill`) or the pool's SIGINT to its worker.
        with stop_signals():
            try:
                # torch comes in here, before the first trial is asked: a stop inside its import
                # would abort the process with the trial RUNNING; held, it is raised after it.
                import_torch()
                results = self._loop(study)
            except BaseException as exc:  # a stop between trials: close what this one asked
                self._close_asked(study, exc)
                if worker_tag() and isinstance(exc, KeyboardInterrupt):
                    # Told to stop by its pool, whose process says so on stderr: here one line
                    # for the log, exit 130 (tinycnn_sweeper).
                    log.info("%sstopped (%s); its running trial is marked failed", worker_tag(),
                             exc)
                raise
        if not worker_tag():  # in a pool the process that started the workers sums up
            self.summary(study)
        return results

    def _close_asked(self, study: optuna.Study, exc: BaseException) -> None:
        running = {t.number for t in study.get_trials(deepcopy=False,
                                                       states=(TrialState.RUNNING,))}
        why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        for trial in self.asked:
            if trial.number in running:
                self.fail(study, trial, f"interrupted ({why})")

    def _loop(self, study: optuna.Study) -> list:
        judge = Judge(self)
        results = []
        while True:
            # A stop lands in the training only: during the bookkeeping around it (asking,
            # recording, telling: storage calls a KeyboardInterrupt could cut in two) it is
            # held, and raised at the end of the block with this worker's trials noted.
            with held():
                configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
                # a killed worker's trials, and one that lost the storage before its first
                # beat, retried
                fail_stale_trials(study, self.storage, (trials.WORKER_ATTR, self.s.heartbeat[1])
                                  if self.s.heartbeat else None)
                if self.heartbeat:
                    self.heartbeat.clear()  # the last batch is told
                batch = self._next_batch(study, judge)
            if not batch:
                break
            returns = self._launch(study, batch)
            with held():
                configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
                for c, ret in zip(batch, returns):
                    judge.finish(study, c, ret)
                results.append(returns)
                self._check_failure_rate(study)
        return results

    def _launch(self, study: optuna.Study, batch: List[Candidate]) -> list:
        try:
            # Job numbers follow trial numbers where they can (Hydra logs "#num").
            first = batch[0].trial.number
            consecutive = [c.trial.number for c in batch] == list(range(first,
                                                                        first + len(batch)))
            returns = self.launcher.launch([c.job for c in batch], initial_job_idx=(
                first if consecutive else self.job_idx))
        except BaseException as exc:  # Ctrl-C or a launcher failure: leave no trial RUNNING
            why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            for c in batch:
                self.fail(study, c.trial, f"interrupted ({why})",
                          count=not isinstance(exc, KeyboardInterrupt))
                self.interrupted.append(c.trial.number)
                if c.baseline:  # the comparison every sweep reports must still be made
                    study.enqueue_trial(dict(c.trial.params), user_attrs={"baseline": True})
            raise
        self.job_idx += len(batch)
        return returns

    def _next_batch(self, study: optuna.Study, judge: Judge) -> List[Candidate]:
        """Up to n_jobs trials that fit the budget; infeasible ones are told on the way."""
        batch: List[Candidate] = []
        dists = {d.name: d.distribution for d in self.space.dims.values()}
        while len(batch) < self.s.n_jobs:
            if stop_requested():
                raise KeyboardInterrupt("stop requested")
            seen = study.get_trials(deepcopy=False)
            if trials.study_full(study, self.s.n_trials, seen):
                break
            trial = study.ask(dists)  # (held: see _loop)
            self.asked.append(trial)  # a stop must find the new trial here
            if self.heartbeat:
                self.heartbeat.add(trial.number)
            # whose, should it die; set after the first beat, so a trial without it that stays
            # RUNNING was never beaten for (fail_stale_trials' unclaimed)
            trials.record(trial, {trials.WORKER_ATTR: worker_id()})
            # A new trial's number counts the trials before it (Optuna numbers them atomically
            # and hands out enqueued ones first). Enqueued ones were asked for: always run.
            enqueued = trial.number < len(seen)
            if not enqueued and trial.number >= self.s.n_trials + len(trials.retried(seen)):
                # Another worker asked in the same instant and the study was full: Optuna cannot
                # take a trial back, so this one is closed as failed, marked surplus.
                trials.record(trial, {"surplus": True})
                self.fail(study, trial, f"surplus: the study already held n_trials="
                          f"{self.s.n_trials} when this worker asked (another worker took the "
                          "last one)", count=False)
                self.counts["surplus"] += 1
                break
            candidate = judge.prepare(study, trial, seen)
            if candidate is not None:
                batch.append(candidate)
        return batch

    def fail(self, study, trial, reason: str, count: bool = True) -> None:
        trials.fail(study, trial, reason)
        if count:
            self.counts["failed"] += 1
            self.errors.append(f"trial {trial.number}: {reason}")
            self.progress(trial.number, "failed", None, trial.user_attrs.get("params"), reason)

    def progress(self, n: int, state: str, val_acc, params, note: str = "") -> None:
        report.progress(self.counts, n, state, val_acc, params, note)

    def _check_failure_rate(self, study: optuna.Study) -> None:
        failed = self.counts["failed"]
        launched = failed + self.counts["complete"] + self.counts["pruned"]
        if failed >= min(MIN_FAILURES_TO_STOP, self.s.n_trials) and \
                failed > self.s.max_failure_rate * launched:
            self.summary(study)
            last = "\n  ".join(self.errors[-3:])
            raise SweepError(
                f"sweep stopped: {failed} of the {launched} trials this run launched failed, "
                f"more than max_failure_rate={self.s.max_failure_rate:g} allows. The last "
                f"failures:\n  {last}\nEach trial folder's metrics.json has its error; fix the "
                "cause and run the same command again to continue the study (or raise "
                "hydra.sweeper.max_failure_rate).")
