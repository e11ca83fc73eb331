"""What a trial records in the study (its user attributes and constraints, from its run's record)
and how the sweeper reads it back: a trial's state as tinycnn names it, the retries, whether the
study holds n_trials.

User attributes of a trial: dir, overrides, baseline, params, val_acc, test_acc, train_acc,
seconds, state (complete | pruned | failed | infeasible), reason, worker ("host:pid" of the
process that asked it), duplicate_of, surplus. Constraints (> 0: infeasible): over_budget,
invalid.
"""

import warnings
from typing import Any, Dict, List, Optional

import optuna
from optuna.trial import FrozenTrial, TrialState

from tinycnn.heartbeat import retried_from

WORKER_ATTR = "worker"
RESULT_KEYS = ("val_acc", "test_acc", "train_acc", "seconds")


def record(trial: optuna.Trial, attrs: Dict[str, Any],
           constraints: Optional[Dict[str, float]] = None) -> None:
    """Write a trial's user attributes and constraints (this process asked it)."""
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    for key, value in (constraints or {}).items():
        _constrain(trial, key, value)


def results(metrics: Dict[str, Any]) -> Dict[str, Any]:
    """A run's record (metrics.json) as the attributes its trial keeps."""
    return {key: metrics.get(key) for key in RESULT_KEYS}


def fail(study: optuna.Study, trial: optuna.Trial, reason: str) -> None:
    record(trial, {"state": "failed", "reason": reason})
    study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)


def fail_orphan(study: optuna.Study, storage, number: int, reason: str) -> FrozenTrial:
    """Fail a trial another process asked and can no longer close (a dead worker's). Optuna 5.0
    has no public way to get a Trial for it (optuna.Trial's constructor is internal), so its
    attributes go through the storage's public methods and the study is told by number.
    Returns the trial as failed."""
    trial_id = storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(study.study_name), number)
    for key, value in (("state", "failed"), ("reason", reason)):
        storage.set_trial_user_attr(trial_id, key, value)
    study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
    return storage.get_trial(trial_id)


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


def state(t: FrozenTrial) -> str:
    """complete | pruned | failed | infeasible | surplus | running | waiting."""
    if t.user_attrs.get("surplus"):
        return "surplus"
    if t.state == TrialState.RUNNING or t.state == TrialState.WAITING:
        return t.state.name.lower()  # a retry inherits its failed original's user attrs
    return t.user_attrs.get("state") or {"FAIL": "failed"}.get(t.state.name, t.state.name.lower())


def retried(trials: List[FrozenTrial]) -> set:
    """Numbers of the trials that a retry (a trial with retried_from) replaces."""
    return {t.system_attrs["retry_history"][-1] for t in trials if retried_from(t) is not None}


def study_full(study: optuna.Study, n_trials: int,
               trials: Optional[List[FrozenTrial]] = None) -> bool:
    """Whether the study holds n_trials trials: those enqueued and not yet started, and those a
    retry replaces, do not count."""
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    return sum(t.state != TrialState.WAITING for t in trials) - len(retried(trials)) >= n_trials


def taken(study: optuna.Study) -> int:
    """Trials that count toward n_trials: all but those enqueued and not yet started."""
    return len(study.get_trials(deepcopy=False, states=(
        TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)))


def twin(trials: List[FrozenTrial], overrides: List[str]) -> Optional[FrozenTrial]:
    """The first of `trials` (the study as read before this ask) that trained to completion
    with exactly these overrides."""
    for t in trials:
        if t.state == TrialState.COMPLETE and t.user_attrs.get("state") == "complete" \
                and t.user_attrs.get("overrides") == overrides \
                and "duplicate_of" not in t.user_attrs:
            return t
    return None
