"""A training job reporting to its Optuna trial, which may live in another process or on another
machine: everything goes through the storage, never through shared memory.

The storage's rules are in tinycnn.storage, the sampler and pruner in tinycnn.sampling and
heartbeats in tinycnn.heartbeat; the names below are re-exported for the modules that read a
study (tinycnn.results, tinycnn.runner).
"""

import logging
from collections.abc import Callable

import optuna
from omegaconf import DictConfig, OmegaConf

from tinycnn.sampling import make_pruner  # noqa: F401 (re-exported)
from tinycnn.storage import (CONNECT_TIMEOUT, StorageError, mask, open_storage,  # noqa: F401
                             storage_failure, storage_url)

log = logging.getLogger(__name__)


def trial_reporter(optuna_cfg) -> Callable[[int, float], None] | None:
    """The runner's on_eval hook inside an Optuna trial, else None.

    optuna_cfg is the job's `optuna` node that the sweeper adds: {storage, study, trial (number),
    pruner}. The returned function reports val_acc at `step` to the trial through the storage and
    raises optuna.TrialPruned when the pruner says so. A multi-objective study cannot prune or
    take intermediate values, and a trial that is already finished (a recorded trial's
    config.yaml run again) is not touched: both get None.

    Optuna 5.0 has no public way to get a Trial object for a trial another process asked (its
    constructor is documented as internal), so this does what Trial.report and
    Trial.should_prune do, through public calls: the storage's set_trial_intermediate_value and
    the pruner's prune(study, frozen trial).
    """
    cfg = OmegaConf.to_container(optuna_cfg, resolve=True) \
        if isinstance(optuna_cfg, DictConfig) else optuna_cfg
    if not cfg:
        return None
    storage = open_storage(cfg["storage"])
    study = optuna.load_study(study_name=str(cfg["study"]), storage=storage,
                              pruner=make_pruner(cfg.get("pruner")))
    if len(study.directions) > 1:
        return None
    number = int(cfg["trial"])
    study_id = storage.get_study_id_from_name(study.study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
    if storage.get_trial(trial_id).state.is_finished():
        log.warning("Optuna trial %d of study %r is already finished: training without reporting "
                    "to it", number, study.study_name)
        return None

    def report(step: int, val_acc: float, final: bool = False) -> None:
        try:
            storage.set_trial_intermediate_value(trial_id, int(step), float(val_acc))
            # At the last check training is over: pruning would only throw the result away.
            prune = not final and study.pruner.prune(study, storage.get_trial(trial_id))
        except Exception as exc:
            lost = storage_failure(exc, cfg["storage"])
            if lost is None:
                raise
            raise StorageError(f"the Optuna storage {mask(cfg['storage'])} failed while trial "
                               f"{number} reported its check {step}: {lost}") from None
        if prune:
            raise optuna.TrialPruned(f"pruned at check {step} (val_acc {val_acc:.4f})")

    return report
