"""Killed workers: heartbeats for the trials a worker holds, and Optuna's recovery of the trials
of a worker that stopped beating (RDB storages only)."""

import contextlib
import datetime
import logging
import threading
import warnings

import optuna
from optuna.trial import TrialState

log = logging.getLogger(__name__)


@contextlib.contextmanager
def quiet_experimental():
    """Optuna's heartbeats and retries are marked experimental (Optuna 5.0): tinycnn relies on
    them knowingly, so their ExperimentalWarning is not shown for the block."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def retry_callback(max_retry: int) -> optuna.storages.RetryHeartbeatStaleTrialCallback:
    """Optuna's callback that enqueues a failed trial's configuration again (up to max_retry
    times), for a stale trial (the storage calls it) or a dead pool worker's (the pool does)."""
    with quiet_experimental():
        return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)


def heartbeat_kwargs(heartbeat: tuple | None) -> dict:
    if not heartbeat:
        return {}
    interval, grace, max_retry = heartbeat
    # Optuna warns that heartbeats are experimental and meant for Study.optimize; tinycnn asks
    # and tells, and beats itself (Heartbeat below), which is what optimize does inside. The
    # warnings come from later calls (each ask), so they are filtered for the process, here only.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    return {"heartbeat_interval": int(interval), "grace_period": int(grace),
            "heartbeat_stale_trial_callback": retry_callback(max_retry)}


def supports_heartbeat(storage) -> bool:
    return isinstance(storage, optuna.storages.RDBStorage) and \
        storage.get_heartbeat_interval() is not None


def fail_stale_trials(study: optuna.Study, storage, unclaimed: tuple | None = None) -> None:
    """Optuna's own recovery: trials whose heartbeat stopped longer than the grace period ago
    (their worker was killed) are marked FAIL, and the storage's
    RetryHeartbeatStaleTrialCallback enqueues each one's parameters again.

    unclaimed=(attribute, grace period s): also trials RUNNING for longer than the grace period
    without that user attribute, which a worker sets right after the trial's first heartbeat: a
    worker that lost the storage between asking for a trial and its first beat leaves one that
    Optuna never finds stale (it has no heartbeat at all)."""
    if supports_heartbeat(storage):
        with quiet_experimental():
            optuna.storages.fail_stale_trials(study)
            if unclaimed:
                _fail_unclaimed(study, storage, *unclaimed)


def _fail_unclaimed(study: optuna.Study, storage, attr: str, grace: float) -> None:
    now = datetime.datetime.now()
    study_id = storage.get_study_id_from_name(study.study_name)
    retry = storage.get_heartbeat_stale_trial_callback()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if attr in t.user_attrs or t.datetime_start is None or \
                (now - t.datetime_start).total_seconds() <= grace:
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        try:
            storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:  # another worker was quicker
            continue
        log.info("trial %d was asked by a worker that lost the storage before it could claim "
                 "it: failed, and its configuration run again", t.number)
        if retry is not None:
            retry(study, storage.get_trial(trial_id))


def retried_from(trial: optuna.trial.FrozenTrial) -> int | None:
    """The number of the trial a retry replaces (None: not a retry)."""
    with quiet_experimental():
        return optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)


class Heartbeat:
    """Records a heartbeat, every heartbeat_interval seconds from a thread, for the trials this
    worker holds RUNNING (added as they are asked), while it lives. A worker killed with
    kill -9 stops beating, and the next worker's fail_stale_trials recovers its trials."""

    def __init__(self, storage, study_name: str):
        self.storage, self.trial_ids = storage, set()
        self.study_id = storage.get_study_id_from_name(study_name)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="tinycnn-heartbeat")
        self.thread.start()

    def add(self, number: int) -> None:
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)
        self.storage.record_heartbeat(trial_id)  # at once: a trial never beaten is never stale
        self.trial_ids.add(trial_id)

    def clear(self) -> None:
        self.trial_ids = set()

    def _run(self) -> None:
        while not self.stop.wait(self.storage.get_heartbeat_interval()):
            for trial_id in list(self.trial_ids):
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception as exc:  # the next beat may get through; grace covers a few
                    log.debug("heartbeat for trial id %s failed: %s", trial_id, exc)

    def close(self) -> None:
        self.stop.set()
