"""Optuna storages as tinycnn names and opens them: one boundary for every call that opens a
storage (a sweep, its trials' jobs, `tinycnn compare`), turning its failures into one line.

A storage URL may hold a password (postgresql://user:PASSWORD@host/db). It is shown and
recorded only masked (mask); trial jobs reach the storage through the environment variable
SECRET_ENV (job_storage), so the password is in no file a sweep writes.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re

from tinycnn.errors import ConfigError
from tinycnn.journal import journal_problem
from tinycnn.locking import file_lock

# optuna is imported where a storage is opened: the sweeper's settings read CONNECT_TIMEOUT
# from here whenever Hydra starts.

log = logging.getLogger(__name__)

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
def _open(url: str, connect_timeout: float,
          heartbeat: tuple | None) -> optuna.storages.BaseStorage:
    if "://" not in url:  # a journal file: append-only log with a file lock, no database needed
        os.makedirs(os.path.dirname(url), exist_ok=True)
        problem = journal_problem(url)  # a cut last line: refused, never appended to
        if problem:
            raise StorageError(problem)
        from optuna.storages.journal import JournalFileBackend, JournalStorage
        return JournalStorage(JournalFileBackend(url))
    from tinycnn.heartbeat import heartbeat_kwargs
    kwargs = heartbeat_kwargs(heartbeat)
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
        with storage.engine.connect() as conn:  # a damaged page is found now, not mid-sweep
            problems = [row[0] for row in conn.exec_driver_sql("PRAGMA quick_check(3)")]
    if problems != ["ok"]:
        raise StorageError(damaged(path, " ".join("; ".join(problems).split())[:200]))
    return storage


def _rdb(url: str, **kwargs) -> optuna.storages.RDBStorage:
    """RDBStorage, retried only when workers started together on a new database race to create
    its tables ("table studies already exists"): the loser finds them made on its next try. A
    server that cannot be reached fails at once (after at most the connect timeout)."""
    import random
    import time

    import optuna
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
    _check_escaped(url)
    try:
        return _open(url, float(connect_timeout), heartbeat)
    except ImportError as exc:  # the URL's database driver is not installed
        raise StorageError(f"cannot open the Optuna storage {mask(url)}: its database driver is "
                           f"not installed ({redact(_first_line(exc), url)}). postgresql:// "
                           "uses psycopg 3: pip install 'tinycnn[postgres]'; "
                           "postgresql+psycopg2:// needs psycopg2-binary; mysql+pymysql:// "
                           "needs pymysql.") from None
    except StorageError:
        raise
    except Exception as exc:
        why = storage_failure(exc, url) or redact(_driver_message(exc), url)
        raise StorageError(f"cannot open the Optuna storage {mask(url)}: {why}") from None


ESCAPES = "@ as %40, : as %3A, / as %2F, ? as %3F, # as %23, % as %25"


def _check_escaped(url: str) -> None:
    """A password must reach the database as written: one holding a character the URL syntax
    reserves, unescaped, is cut or misread by the URL parser, whose message would then quote
    part of it. Refused here, in words that quote none of it."""
    secret = password(url)
    if not secret:
        return
    from urllib.parse import unquote

    from sqlalchemy.engine import make_url
    try:
        parsed = make_url(url).password
    except Exception:
        parsed = None
    if parsed is None or str(parsed) != unquote(secret):
        raise StorageError(f"cannot open the Optuna storage {mask(url)}: the URL cannot be read "
                           "as user:password@host (a character in the password, such as @, is "
                           f"one the URL syntax reserves); escape them in the password: {ESCAPES} "
                           "(python -c \"import urllib.parse; print(urllib.parse.quote(input(), "
                           "safe=''))\" prints it escaped)")


def storage_failure(exc: BaseException, url: str) -> str | None:
    """The cause, in one line, when `exc` is the storage failing (the server went away, the disk
    is full, a lock timed out, the file is damaged, a value is too long for its column), else
    None. Optuna wraps such errors in a StorageInternalError whose message blames "invalid data
    in the commit"; the cause is in its chain."""
    import optuna
    if isinstance(exc, StorageError):
        return str(exc)
    chain, cause = [], exc
    while cause is not None and len(chain) < 20:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    driver = next((c for c in chain if type(c).__module__.startswith("sqlalchemy")), None)
    if driver is None and not isinstance(exc, optuna.exceptions.StorageInternalError):
        if "://" not in url and any(isinstance(c, (json.JSONDecodeError, UnicodeDecodeError))
                                    or str(c) == "Invalid log format." for c in chain):
            return journal_problem(storage_url(url)) or "the journal cannot be read"
        return None
    text = redact(_driver_message(driver or exc), url)
    if any(m in text for m in SQLITE_DAMAGED) and url.startswith("sqlite:///"):
        return damaged(storage_url(url)[len("sqlite:///"):], text)
    secret = password(url) or ""
    if "password authentication failed" in text and any(c in secret for c in "@:/?#%"):
        text += (f"; if the password holds any of @ : / ? # %, write them escaped in the URL: "
                 f"{ESCAPES}")
    too_long = re.search(r"value too long for type character varying\((\d+)\)", text)
    if too_long:
        return (f"{text}: a study name, searched key or attribute key is longer than the "
                f"storage's column for it (at most {too_long[1]} characters)")
    return text


SQLITE_DAMAGED = ("database disk image is malformed", "file is not a database")


def damaged(path: str, why: str) -> str:
    return (f"the SQLite file {path} is damaged ({why}). Keep a copy of it, then recover what "
            f"can be read into a new file: sqlite3 {path} .recover | sqlite3 RECOVERED.db, and "
            "point hydra.sweeper.storage (or --storage) at sqlite:///RECOVERED.db; or start "
            "afresh in another file")


@contextlib.contextmanager
def storage_calls(url: str, doing: str):
    """Calls into an Optuna storage (creating or loading a study, its attributes, compare's
    reads) run inside this: a storage failure from any of them becomes one StorageError line
    naming the storage (password masked), what was being done, and the cause (storage_failure,
    which the sweep loop and a trial's reporter apply to ask, tell and report too)."""
    try:
        yield
    except StorageError:
        raise
    except Exception as exc:
        why = storage_failure(exc, url)
        if why is None:
            raise
        raise StorageError(f"the Optuna storage {mask(url)} failed {doing}: "
                           f"{why.rstrip('. ')}") from None


def _driver_message(exc: BaseException) -> str:
    """The database's own words, on one line: SQLAlchemy wraps them as
    "(psycopg.OperationalError) connection failed: ...\n(Background on this error at: ...)"."""
    orig = getattr(exc, "orig", None)
    text = " ".join(str(orig if orig is not None else exc).split())
    text = re.sub(r"\s*\(Background on this error at: [^)]*\)", "", text)
    return (text or type(exc).__name__)[:400]


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
