"""The sweeper's settings: their defaults (TinycnnOptunaConf, what Hydra stores as
hydra/sweeper=tinycnn_optuna; every setting can be overridden as hydra.sweeper.<name>, and
sweeps/*.yaml set them per search) and, checked once, the typed values a sweep runs with
(Settings).

Hydra imports this module whenever any app starts (through tinycnn_sweeper.py), so it stays
light: optuna and the storage rules are imported only when settings are read.
"""

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import DictConfig, OmegaConf

from tinycnn.checks import shown
from tinycnn.errors import ConfigError
from tinycnn.storage import CONNECT_TIMEOUT
from tinycnn.threads import cores

from ._errors import SweepError

log = logging.getLogger(__name__)

OBJECTIVES = {"val_acc": "maximize", "params": "minimize", "macs": "minimize",
              "peak_bytes": "minimize", "flash_bytes": "minimize"}
# What a network costs (tinycnn/costs.py), each a budget max_<cost> and an objective; the words
# a refusal uses for each.
COSTS = {"params": "parameters", "macs": "MACs", "peak_bytes": "peak activation bytes (int8)",
         "flash_bytes": "flash bytes (int8)"}


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
    name: str = "none"                 # none | median | hyperband | halving (successive halving)
    fidelity: str = "checks"           # a step is a validation check | epochs: one per epoch
    n_startup_trials: int = 5          # median: complete trials (infeasible ones count) first
    n_warmup_steps: int = 0            # median: steps of each trial before it may be pruned
    interval_steps: int = 1            # median
    n_min_trials: int = 1              # median: trained trials that reached a step, to judge it
    min_resource: int = 1              # hyperband
    max_resource: Any = "auto"         # hyperband: steps of a full trial, or auto
    reduction_factor: int = 3          # hyperband, halving
    min_early_stopping_rate: int = 0   # halving: the first rung is min_resource * 3^this


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
    # loaded one), and more than the cores is capped to the cores; 1 = this process trains the
    # trials itself.
    n_workers: Any = "auto"
    max_params: int = 25000     # budget: bigger networks are recorded infeasible, never trained
    # Budgets for a device (null: none), each checked from the config alone like max_params:
    # MACs per image, peak int8 activation bytes at batch 1, int8 weight bytes (tinycnn/costs.py)
    max_macs: Optional[int] = None
    max_peak_bytes: Optional[int] = None
    max_flash_bytes: Optional[int] = None
    # val_acc, and any of params, macs, peak_bytes, flash_bytes: a Pareto search
    objectives: List[str] = field(default_factory=lambda: ["val_acc"])
    sampler: SamplerConf = field(default_factory=SamplerConf)
    pruner: PrunerConf = field(default_factory=PrunerConf)
    max_failure_rate: float = 0.5  # stop once more than this share of launched trials failed
    # s: a database server that does not answer is an error then (also compare's default)
    connect_timeout: float = CONNECT_TIMEOUT
    # Killed workers (RDB storages: SQLite, PostgreSQL, MySQL): each worker records a heartbeat
    # for its running trials every heartbeat_interval s; a trial silent for grace_period s is
    # marked failed by the next worker that looks, and its configuration is run again (up to
    # max_retry times; also for a pool's worker that dies). null switches heartbeats off.
    heartbeat_interval: Optional[int] = 60
    grace_period: Optional[int] = 180
    max_retry: int = 3
    # A study records its space and the settings that decide what a trial means; a sweep that
    # differs is refused unless this is true (then the study records the change).
    accept_changes: bool = False
    params: Optional[Dict[str, Any]] = field(default_factory=dict)  # key -> sweep grammar


@dataclass(frozen=True)
class Settings:
    """What a sweep runs with, checked (read_settings)."""
    study_name: str
    storage: str                # as given (may hold a password)
    storage_url: str            # absolute, every process agrees on it
    shown_url: str              # what logs and files may show: the password masked
    n_trials: int
    n_jobs: int
    n_workers: int
    max_params: int
    budgets: Dict[str, int]     # cost -> its limit, the budgets set ({"params": 25000, ...})
    max_failure_rate: float
    objectives: List[str]
    directions: List[str]
    connect_timeout: float
    heartbeat: Optional[tuple]  # (interval s, grace period s, max_retry), or None: off
    max_retry: int
    sampler: Dict[str, Any]
    pruner: Dict[str, Any]      # {name, the settings that pruner takes}
    params: Dict[str, Any]
    accept_changes: bool = False


def defaults() -> Dict[str, Any]:
    return {f.name: (f.default_factory() if f.default_factory is not dataclasses.MISSING
                     else f.default) for f in dataclasses.fields(TinycnnOptunaConf)}


def read_settings(given: Dict[str, Any]) -> Settings:
    """hydra.sweeper's settings (missing ones take their default), checked: a bad one raises
    SweepError, one line naming it."""
    s = {**defaults(), **{k: _plain(v) for k, v in given.items()}}
    try:
        return _read(s)
    except ConfigError as exc:
        if isinstance(exc, SweepError):
            raise
        raise SweepError(str(exc)) from None


def _read(s: Dict[str, Any]) -> Settings:
    import optuna

    from tinycnn.sampling import make_pruner, make_sampler, pruner_settings
    from tinycnn.storage import mask, storage_url
    rate = s["max_failure_rate"]
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
        raise SweepError(f"hydra.sweeper.max_failure_rate = {rate!r}: expected a number from 0 "
                         "(stop at the first failures) to 1 (never stop)")
    study_name = str(s["study_name"] or "").strip()
    if not study_name:
        raise SweepError("hydra.sweeper.study_name is empty: name the study (a sweep continues "
                         "the study of that name in the storage)")
    if len(study_name) > NAME_LIMIT:
        raise SweepError(f"hydra.sweeper.study_name = {shown(study_name)}: Optuna's storages "
                         f"hold at most {NAME_LIMIT} characters in the column studies.study_name; "
                         "use a shorter name")
    accept = s.get("accept_changes")
    if not isinstance(accept, bool):
        raise SweepError(f"hydra.sweeper.accept_changes = {shown(accept)}: expected true or "
                         "false")
    objectives = _objectives(s["objectives"])
    timeout = s["connect_timeout"]
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise SweepError(f"hydra.sweeper.connect_timeout = {timeout!r}: expected a positive "
                         "number of seconds")
    max_retry = _whole(s, "max_retry", 0)
    heartbeat = None
    if s["heartbeat_interval"] is not None:
        interval = _whole(s, "heartbeat_interval", 1)
        grace = _whole(s, "grace_period", interval + 1)
        heartbeat = (interval, grace, max_retry)
    pruner = pruner_settings(s["pruner"])
    if len(objectives) > 1 and not isinstance(make_pruner(pruner), optuna.pruners.NopPruner):
        raise SweepError(f"hydra.sweeper.pruner.name = {pruner['name']!r} with objectives "
                         f"{objectives}: Optuna cannot prune a multi-objective study. Use "
                         "pruner.name=none, or objectives=[val_acc].")
    sampler = dict(s["sampler"] or {"name": "tpe"})
    make_sampler(sampler, sampler.get("seed"))  # fail now on a bad name or setting
    url = storage_url(s["storage"] or "")
    return Settings(
        study_name=study_name, storage=str(s["storage"] or ""), storage_url=url,
        shown_url=mask(url), n_trials=_whole(s, "n_trials", 1), n_jobs=_whole(s, "n_jobs", 1),
        n_workers=n_workers(s["n_workers"]), max_params=_whole(s, "max_params", 1),
        budgets={c: _whole(s, f"max_{c}", 1) for c in COSTS
                 if c == "params" or s.get(f"max_{c}") is not None},
        max_failure_rate=float(rate), objectives=objectives,
        directions=[OBJECTIVES[o] for o in objectives], connect_timeout=float(timeout),
        heartbeat=heartbeat, max_retry=max_retry, sampler=sampler, pruner=pruner,
        params=dict(s["params"] or {}), accept_changes=accept)


# Optuna's RDB schema: study names, parameter names and attribute keys are VARCHAR(512).
NAME_LIMIT = 512


def budget_text(budgets: Dict[str, int]) -> str:
    """'25,000 params' or '25,000 params, 30,000,000 macs, 2,500 peak_bytes'."""
    return ", ".join(f"{limit:,} {c}" for c, limit in budgets.items())


def _objectives(given) -> List[str]:
    objectives = [given] if isinstance(given, str) else list(given or [])
    bad = [o for o in objectives if o not in OBJECTIVES]
    if bad or "val_acc" not in objectives or len(set(objectives)) != len(objectives):
        why = (f"{bad[0]!r} is not an objective" if bad else
               "val_acc must be among them, once each")
        hint = (" (test accuracy is recorded for every trial but never optimised: the test "
                "set is for reporting only)" if "test_acc" in bad else "")
        raise SweepError(f"hydra.sweeper.objectives = {objectives}: {why}{hint}. Use [val_acc] "
                         "(maximise validation accuracy), or val_acc with any of "
                         f"{', '.join(COSTS)} (also minimise those: a Pareto front).")
    return objectives


def n_workers(value) -> int:
    """hydra.sweeper.n_workers: a whole number >= 1, or auto (one worker per core). More than
    the cores here is capped to the cores, with one line saying so: each worker is a process
    with at least one thread, so extra workers only take turns on the same cores (and each
    holds its own copy of the data); more trials at once come from more machines on one study
    (docs/storage.md)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return cores()
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SweepError(f"hydra.sweeper.n_workers = {value!r}: expected a whole number >= 1 "
                         f"(workers on this machine) or auto (one per core: {cores()} here)")
    if value > cores():
        log.warning("hydra.sweeper.n_workers = %d: capped to %d, the cores here (more workers "
                    "than cores only slow each other down)", value, cores())
        return cores()
    return value


def _whole(s: dict, key: str, low: int) -> int:
    v = s.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise SweepError(f"hydra.sweeper.{key} = {v!r}: expected a whole number >= {low}")
    return v


def _plain(v):
    return OmegaConf.to_container(v, resolve=True) if isinstance(v, DictConfig) or \
        OmegaConf.is_list(v) else v
