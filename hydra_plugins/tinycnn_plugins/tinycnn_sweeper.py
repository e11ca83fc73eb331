"""`hydra/sweeper=tinycnn_optuna`: an Optuna (>= 4) sweeper with a parameter budget.

Hydra imports this module whenever any app starts, so it stays light: the settings and a thin
class; the work (and the import of optuna and torch) is in _sweep.py, loaded only by a sweep.
Every setting can be overridden as hydra.sweeper.<name>; sweeps/*.yaml set them per search.
"""

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper

from tinycnn import pool, stops

from ._workers import WORKER_ENV

if os.environ.get(WORKER_ENV):
    # A pool's worker (see _workers.py): Hydra imports this module before it composes the config,
    # and from here on a stop only requests one, which the sweep sees before its first trial. A
    # stop before this point finds the worker not ready, and the pool kills it outright: either
    # way no Hydra traceback, and no trial asked yet.
    stops.note_stops()
    pool.say_ready()


@dataclass
class SamplerConf:
    name: str = "tpe"                  # tpe | random | nsga2
    seed: Optional[int] = 0            # seeds the worker that creates the study; see README
    n_startup_trials: int = 10         # tpe: random trials before it starts modelling
    multivariate: bool = False         # tpe: model the dimensions jointly
    population_size: int = 50          # nsga2


@dataclass
class PrunerConf:
    # Steps are training batches (the runner reports val_acc train.evals_per_epoch times an
    # epoch). Only the settings of the chosen pruner are used.
    name: str = "none"                 # none | median | hyperband
    n_startup_trials: int = 5          # median: complete trials (infeasible ones count) first
    n_warmup_steps: int = 0            # median: steps of each trial before it may be pruned
    interval_steps: int = 1            # median
    n_min_trials: int = 1              # median: trained trials that reached a step, to judge it
    min_resource: int = 1              # hyperband
    max_resource: Any = "auto"         # hyperband: steps of a full trial, or auto
    reduction_factor: int = 3          # hyperband


@dataclass
class TinycnnOptunaConf:
    _target_: str = "hydra_plugins.tinycnn_plugins.tinycnn_sweeper.TinycnnOptunaSweeper"
    study_name: str = "tinycnn"
    # Any Optuna storage: sqlite:///PATH (relative paths are made absolute), postgresql://...,
    # mysql+pymysql://..., or a journal file path ending in .log.
    storage: str = "sqlite:///outputs/optuna.db"
    n_trials: int = 20          # trials in the study in all: a re-run continues up to this many
    n_jobs: int = 1             # trials per batch handed to the launcher (hydra/launcher=joblib)
    # Workers on this machine, each taking its next trial as soon as its last ends, each with
    # cores // n_workers threads unless `threads` is set; auto = one per core (README "Sweep
    # speed": 1.22x to 1.40x one worker on an idle 2-core machine on full data, 6.4x on a
    # loaded one); 1 = this process trains the trials itself.
    n_workers: Any = "auto"
    max_params: int = 25000     # budget: bigger networks are recorded infeasible, never trained
    objectives: List[str] = field(default_factory=lambda: ["val_acc"])  # or [val_acc, params]
    sampler: SamplerConf = field(default_factory=SamplerConf)
    pruner: PrunerConf = field(default_factory=PrunerConf)
    max_failure_rate: float = 0.5  # stop once more than this share of launched trials failed
    connect_timeout: float = 10    # s: a database server that does not answer is an error then
    # Killed workers (RDB storages: SQLite, PostgreSQL, MySQL): each worker records a heartbeat
    # for its running trials every heartbeat_interval s; a trial silent for grace_period s is
    # marked failed by the next worker that looks, and its configuration is run again (up to
    # max_retry times). null switches heartbeats off.
    heartbeat_interval: Optional[int] = 60
    grace_period: Optional[int] = 180
    max_retry: int = 3
    params: Optional[Dict[str, Any]] = field(default_factory=dict)  # key -> sweep grammar


ConfigStore.instance().store(group="hydra/sweeper", name="tinycnn_optuna",
                             node=TinycnnOptunaConf, provider="tinycnn")


class TinycnnOptunaSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self.impl: Any = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        from tinycnn import console

        from ._sweep import OptunaSweep

        console.tidy = True  # one line per trial on the console; the rest in its run.log
        self.impl = OptunaSweep(self.settings)
        self.impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        import sys

        from ._sweep import SweepError
        try:
            return self.impl.sweep(arguments)
        except SweepError as exc:  # its message is complete: no "HYDRA_FULL_ERROR" hint after it
            print(exc, file=sys.stderr)
            raise SystemExit(1) from None
        except KeyboardInterrupt:  # the trials it was running are recorded failed by then
            print(f"tinycnn: interrupted; {self.impl.interrupted_note()}", file=sys.stderr)
            raise SystemExit(130) from None
