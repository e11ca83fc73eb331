"""Optuna studies as tinycnn uses them: open a storage from a URL, build a pruner from its
settings, and let a training job report to its trial (which may live in another process or on
another machine: everything goes through the storage, never through shared memory).

A storage URL may hold a password (postgresql://user:PASSWORD@host/db). It is shown and
recorded only masked (mask); trial jobs reach the storage through the environment variable
SECRET_ENV (job_storage), so the password is in no file a sweep writes.
"""

import functools
import logging
import os
import re
import threading
import warnings
from collections.abc import Callable, Mapping

import optuna
from omegaconf import DictConfig, OmegaConf

from tinycnn.errors import ConfigError

log = logging.getLogger(__name__)

PRUNERS = {"none": optuna.pruners.NopPruner, "median": optuna.pruners.MedianPruner,
           "hyperband": optuna.pruners.HyperbandPruner}
# The settings each pruner takes from hydra.sweeper.pruner (the others there are ignored).
PRUNER_SETTINGS = {"none": (),
                   "median": ("n_startup_trials", "n_warmup_steps", "interval_steps",
                              "n_min_trials"),
                   "hyperband": ("min_resource", "max_resource", "reduction_factor")}
JOURNAL_SUFFIX = ".log"
# Seconds to wait for a database server to accept a connection and log in (hydra.sweeper.
# connect_timeout, tinycnn compare --connect-timeout): a host that never answers is an error
# after this long, not a hang.
CONNECT_TIMEOUT = 10
# The environment variable through which trial jobs get a storage URL that holds a password.
SECRET_ENV = "TINYCNN_STORAGE_URL"
MASK = "***"
_PASSWORD = re.compile(r"^(?P<head>[A-Za-z][\w+.-]*://[^:/@]*:)(?P<password>.*)(?P<tail>@[^@]*)$")


class StorageError(ConfigError):
    """An Optuna storage that cannot be opened; the message names it with its password masked."""


def password(url: str) -> str | None:
    m = _PASSWORD.match(str(url))
    return m["password"] if m and m["password"] and m["password"] != MASK else None


def mask(url: str) -> str:
    """The URL as it may be shown or recorded: postgresql://user:***@host/db."""
    m = _PASSWORD.match(str(url))
    return f"{m['head']}{MASK}{m['tail']}" if m and m["password"] else str(url)


def redact(text: str, url: str) -> str:
    """`text` (a message, an override) with the password of `url` masked wherever it appears."""
    secret = password(url)
    if not secret:
        return text
    return str(text).replace(url, mask(url)).replace(f":{secret}@", f":{MASK}@")


def job_storage(url: str) -> str:
    """What a trial job gets as its optuna.storage: the URL itself, or, when it holds a password,
    an interpolation of SECRET_ENV, which is set here (launched jobs inherit the environment:
    in this process, joblib's workers, Slurm's --export=ALL). Hydra then records the
    interpolation, never the password."""
    if not password(url):
        return url
    os.environ[SECRET_ENV] = url
    return "${oc.env:" + SECRET_ENV + "}"


def storage_url(url: str) -> str:
    """The same storage named so that every process agrees on it, whatever its working folder:
    a relative SQLite path or journal file becomes absolute. Other URLs are returned as given."""
    url = str(url).strip()
    if f":{MASK}@" in url:  # a recorded URL (multirun.yaml): the password is in SECRET_ENV
        full = os.environ.get(SECRET_ENV, "")
        if mask(full) != url:
            raise StorageError(f"optuna storage {url}: the password is not recorded; pass the "
                               f"full URL (--storage, hydra.sweeper.storage) or set {SECRET_ENV} "
                               "to it")
        url = full
    if not url:
        raise ConfigError("optuna storage = '': expected an RDB URL (sqlite:///outputs/optuna.db, "
                          "postgresql://user:pass@host/db, mysql+pymysql://...) or a journal "
                          f"file path ending in {JOURNAL_SUFFIX}")
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        path = url[len("sqlite:///"):]  # sqlite:///rel/path, sqlite:////abs/path
        return "sqlite:///" + os.path.abspath(os.path.expanduser(path))
    if "://" not in url and url.endswith(JOURNAL_SUFFIX):
        return os.path.abspath(os.path.expanduser(url))
    if "://" not in url:
        raise ConfigError(f"optuna storage = {url!r}: not a storage URL. Use sqlite:///PATH.db, "
                          "postgresql://..., mysql+pymysql://..., or a journal file path ending "
                          f"in {JOURNAL_SUFFIX} (several processes on one machine)")
    return url


@functools.lru_cache(maxsize=None)
def _open(url: str, connect_timeout: float, heartbeat: tuple | None) -> optuna.storages.BaseStorage:
    if "://" not in url:  # a journal file: append-only log with a file lock, no database needed
        os.makedirs(os.path.dirname(url), exist_ok=True)
        from optuna.storages.journal import JournalFileBackend, JournalStorage
        return JournalStorage(JournalFileBackend(url))
    kwargs = _heartbeat_kwargs(heartbeat)
    if not url.startswith("sqlite:") or url == "sqlite:///:memory:":
        # A server: libpq (psycopg 3 and 2) and PyMySQL all take connect_timeout in seconds.
        connect = {"connect_timeout": max(1, round(connect_timeout))} \
            if url.split(":", 1)[0].split("+")[0] in ("postgresql", "postgres", "mysql") else {}
        # pool_pre_ping: a pooled connection is checked before use, so a server restarted
        # between two calls (a 0.2 s PostgreSQL restart) costs a reconnect, not the sweep.
        return _rdb(url, engine_kwargs={"connect_args": connect, "pool_pre_ping": True},
                    **kwargs)
    path = url[len("sqlite:///"):]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    # Several processes write one file and SQLite locks it whole: wait for the lock (60 s)
    # rather than fail after the default 5 s while another worker commits.
    with file_lock(path + ".init-lock"):
        storage = _rdb(url, engine_kwargs={"connect_args": {"timeout": 60}}, **kwargs)
        _sqlite_wal(storage.engine)
    return storage


def _rdb(url: str, **kwargs) -> optuna.storages.RDBStorage:
    """RDBStorage, retried only when workers started together on a new database race to create
    its tables ("table studies already exists"): the loser finds them made on its next try. A
    server that cannot be reached fails at once (after at most the connect timeout)."""
    import random
    import time
    from sqlalchemy.exc import IntegrityError, ProgrammingError
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, **kwargs)
        except Exception as exc:
            race = isinstance(exc, (IntegrityError, ProgrammingError)) or \
                "already exists" in str(exc)
            if attempt == 4 or not race:
                raise
            time.sleep(0.2 + random.random())


class file_lock:
    """An exclusive lock on `path` for one block (POSIX; elsewhere the retries above serve)."""

    def __init__(self, path: str):
        self.path = path

    def __enter__(self):
        self.f = None
        try:
            import fcntl
            self.f = open(self.path, "a")
            fcntl.flock(self.f, fcntl.LOCK_EX)
        except (ImportError, OSError):  # no fcntl, or a read-only folder: reading needs no lock
            pass
        return self

    def __exit__(self, *exc):
        if self.f is not None:
            self.f.close()  # releases the lock


def _sqlite_wal(engine) -> None:
    """Write-ahead logging: readers never wait for a writer, and with synchronous=NORMAL a commit
    does not fsync (a power cut may lose the last commits, never corrupt the file). Optuna makes
    ~30 commits per trial, so this takes an infeasible trial from ~0.6 s to ~0.1 s. WAL needs
    all processes on one machine: for several machines use PostgreSQL or MySQL anyway."""
    from sqlalchemy import event

    def on_connect(dbapi_connection, _record):
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")

    event.listen(engine, "connect", on_connect)
    engine.dispose()  # connections opened by RDBStorage's own checks lack the pragma
    try:
        with engine.connect() as conn:  # persistent: stored in the database file
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    except Exception as exc:  # e.g. another process holds a lock right now; it is an optimisation
        log.debug("could not switch %s to WAL: %s", engine.url, exc)


def open_storage(url: str, connect_timeout: float = CONNECT_TIMEOUT,
                 heartbeat: tuple | None = None) -> optuna.storages.BaseStorage:
    """An Optuna storage for `url` (see storage_url); one object per URL and process. A storage
    that cannot be opened raises StorageError: one line naming it, the password masked.
    heartbeat=(interval s, grace period s, max_retry): see HEARTBEAT in the README."""
    url = storage_url(url)
    try:
        return _open(url, float(connect_timeout), heartbeat)
    except ImportError as exc:  # the URL's database driver is not installed
        raise StorageError(f"cannot open the Optuna storage {mask(url)}: its database driver is "
                           f"not installed ({redact(_first_line(exc), url)}). postgresql:// "
                           "uses psycopg 3: pip install 'tinycnn[postgres]'; "
                           "postgresql+psycopg2:// needs psycopg2-binary; mysql+pymysql:// "
                           "needs pymysql.") from None
    except Exception as exc:
        raise StorageError(f"cannot open the Optuna storage {mask(url)}: "
                           f"{redact(_driver_message(exc), url)}") from None


def storage_failure(exc: BaseException, url: str) -> str | None:
    """The database's own words when `exc` is the storage failing mid-study (the server went
    away, the disk is full, a lock timed out), else None. Optuna wraps such errors in a
    StorageInternalError whose message blames "invalid data in the commit"; the cause is in
    its chain."""
    if not isinstance(exc, optuna.exceptions.StorageInternalError) and \
            not type(exc).__module__.startswith("sqlalchemy"):
        return None
    cause = exc
    while cause is not None and not type(cause).__module__.startswith("sqlalchemy"):
        cause = cause.__cause__ or cause.__context__
    return redact(_driver_message(cause or exc), url)


def _driver_message(exc: BaseException) -> str:
    """The database's own words, on one line: SQLAlchemy wraps them as
    "(psycopg.OperationalError) connection failed: ...\n(Background on this error at: ...)"."""
    orig = getattr(exc, "orig", None)
    text = " ".join(str(orig if orig is not None else exc).split())
    text = re.sub(r"\s*\(Background on this error at: [^)]*\)", "", text)
    return (text or type(exc).__name__)[:400]


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# ------------------------------------------------------------------ killed workers (heartbeats)

def _heartbeat_kwargs(heartbeat: tuple | None) -> dict:
    if not heartbeat:
        return {}
    interval, grace, max_retry = heartbeat
    # Optuna warns that heartbeats are experimental and meant for Study.optimize; tinycnn asks
    # and tells, and beats itself (Heartbeat below), which is what optimize does inside.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
    return {"heartbeat_interval": int(interval), "grace_period": int(grace),
            "heartbeat_stale_trial_callback": retry}


def supports_heartbeat(storage) -> bool:
    return isinstance(storage, optuna.storages.RDBStorage) and \
        storage.get_heartbeat_interval() is not None


def fail_stale_trials(study: optuna.Study, storage) -> None:
    """Optuna's own recovery: trials whose heartbeat stopped longer than the grace period ago
    (their worker was killed) are marked FAIL, and the storage's
    RetryHeartbeatStaleTrialCallback enqueues each one's parameters again."""
    if supports_heartbeat(storage):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)


def retried_from(trial: optuna.trial.FrozenTrial) -> int | None:
    """The number of the trial a retry replaces (None: not a retry)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
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


def pruner_settings(spec) -> dict:
    """{name, <the settings that pruner takes>} out of hydra.sweeper.pruner, checked."""
    spec = dict(_plain(spec) or {})
    name = str(spec.pop("name", "none")).lower()
    if name not in PRUNERS:
        raise ConfigError(f"hydra.sweeper.pruner.name = {name!r}: unknown pruner; use one of "
                          f"{', '.join(PRUNERS)}")
    known = {k for keys in PRUNER_SETTINGS.values() for k in keys}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise ConfigError(f"hydra.sweeper.pruner.{unknown[0]}: not a pruner setting; the "
                          f"settings are {', '.join(sorted(known))}")
    return {"name": name, **{k: spec[k] for k in PRUNER_SETTINGS[name] if k in spec}}


def make_pruner(spec) -> optuna.pruners.BasePruner:
    """A pruner from {name: none|median|hyperband, <settings>} (hydra.sweeper.pruner), e.g.
    {name: median, n_startup_trials: 5, n_warmup_steps: 0}. Steps are validation checks (train.evals_per_epoch per epoch)."""
    kwargs = pruner_settings(spec)
    name = kwargs.pop("name")
    try:
        return PRUNERS[name](**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"hydra.sweeper.pruner = {_plain(spec)}: the {name} pruner refused "
                          f"its settings: {exc}") from None


def _plain(cfg):
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return dict(cfg) if isinstance(cfg, Mapping) else cfg


def trial_reporter(optuna_cfg) -> Callable[[int, float], None] | None:
    """The runner's on_eval hook inside an Optuna trial, else None.

    optuna_cfg is the job's `optuna` node that the sweeper adds: {storage, study, trial (number),
    pruner}. The returned function reports val_acc at `step` to the trial through the storage and
    raises optuna.TrialPruned when the pruner says so. A multi-objective study cannot prune or
    take intermediate values, and a trial that is already finished (a recorded trial's
    config.yaml run again) is not touched: both get None.
    """
    cfg = _plain(optuna_cfg)
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
    trial = optuna.Trial(study, trial_id)

    def report(step: int, val_acc: float, final: bool = False) -> None:
        try:
            trial.report(float(val_acc), int(step))
            # At the last check training is over: pruning would only throw the result away.
            prune = not final and trial.should_prune()
        except Exception as exc:
            lost = storage_failure(exc, cfg["storage"])
            if lost is None:
                raise
            raise StorageError(f"the Optuna storage {mask(cfg['storage'])} failed while trial "
                               f"{number} reported its check {step}: {lost}") from None
        if prune:
            raise optuna.TrialPruned(f"pruned at check {step} (val_acc {val_acc:.4f})")

    return report
