"""Optuna studies as tinycnn uses them: open a storage from a URL, build a pruner from its
settings, and let a training job report to its trial (which may live in another process or on
another machine: everything goes through the storage, never through shared memory).
"""

import functools
import logging
import os
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


def storage_url(url: str) -> str:
    """The same storage named so that every process agrees on it, whatever its working folder:
    a relative SQLite path or journal file becomes absolute. Other URLs are returned as given."""
    url = str(url).strip()
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
def _open(url: str) -> optuna.storages.BaseStorage:
    if "://" not in url:  # a journal file: append-only log with a file lock, no database needed
        os.makedirs(os.path.dirname(url), exist_ok=True)
        from optuna.storages.journal import JournalFileBackend, JournalStorage
        return JournalStorage(JournalFileBackend(url))
    if not url.startswith("sqlite:") or url == "sqlite:///:memory:":
        return _rdb(url)
    path = url[len("sqlite:///"):]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    # Several processes write one file and SQLite locks it whole: wait for the lock (60 s)
    # rather than fail after the default 5 s while another worker commits.
    with _file_lock(path + ".init-lock"):
        storage = _rdb(url, engine_kwargs={"connect_args": {"timeout": 60}})
        _sqlite_wal(storage.engine)
    return storage


def _rdb(url: str, **kwargs) -> optuna.storages.RDBStorage:
    """RDBStorage, retried: workers started together on a new database race to create its
    tables ("table studies already exists"); the loser finds them made on its next try."""
    import random
    import time
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, **kwargs)
        except Exception as exc:  # sqlalchemy's OperationalError / IntegrityError
            if attempt == 4 or type(exc).__module__.split(".")[0] != "sqlalchemy":
                raise
            time.sleep(0.2 + random.random())


class _file_lock:
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


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage for `url` (see storage_url); one object per URL and process."""
    return _open(storage_url(url))


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
    {name: median, n_startup_trials: 5, n_warmup_steps: 0}. Steps are training batches."""
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
        trial.report(float(val_acc), int(step))
        # At the last check training is over: pruning would only throw the result away.
        if not final and trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step} (val_acc {val_acc:.4f})")

    return report
