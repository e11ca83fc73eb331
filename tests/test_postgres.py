"""PostgreSQL for real: a throwaway server (tests/pg_server.py) on 127.0.0.1, the README's
recipe run command for command (two workers at once, pruning, a resume), the password kept out
of every file and the console, and the server's own faults as one line."""

import shutil
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import pg_server
from test_sweep import REPO, SMALL, sub_env

try:
    import psycopg  # noqa: F401  (the `postgres` extra)
    _MISSING = None if pg_server.binaries() else ("PostgreSQL server binaries (initdb, pg_ctl) "
                                                  "not found: apt-get install postgresql")
except ImportError:
    _MISSING = "psycopg 3 is not installed: pip install -e '.[postgres]'"
pytestmark = pytest.mark.skipif(_MISSING is not None, reason=_MISSING or "")


@pytest.fixture(scope="module")
def pg():
    server = pg_server.Server(pg_server.binaries()).start()
    yield server
    server.stop()


def sweep(pg, tmp_path, out, *args, url=None):
    """The README's command, python run.py -m SWEEP hydra.sweeper.storage=postgresql://..., on a
    one-dimensional space (train.lr) so that the test decides which trials run."""
    # One worker per command: the test starts its two workers itself, and the first sweep's
    # trials must run one after the other for the pruner to have a finished trial to compare.
    return [sys.executable, str(REPO / "run.py"), "-m", "hydra/sweeper=tinycnn_optuna",
            "hydra.sweeper.n_workers=1", "hydra.sweeper.pruner.name=median",
            f"hydra.sweeper.storage={url or pg.url()}", *SMALL, "threads=1",
            f"hydra.sweep.dir={tmp_path}/{out}", "hydra.sweeper.study_name=pg", *args]


def run(cmd, timeout=300):
    p = subprocess.run(cmd, cwd=REPO, env=sub_env(), capture_output=True, text=True,
                       timeout=timeout)
    p.output = p.stdout + p.stderr
    return p


@pytest.mark.slow
def test_readme_recipe_two_workers_pruning_resume_and_no_password_anywhere(pg, tmp_path):
    # A good and a hopeless trial first (lr 1e-7 learns nothing): the median pruner stops it.
    study = optuna.create_study(storage=pg.url(), study_name="pg", direction="maximize")
    study.enqueue_trial({"train.lr": 0.002})
    study.enqueue_trial({"train.lr": 1e-7})
    lr = "train.lr=tag(log,interval(1e-8,1e-2))"
    prune = ["hydra.sweeper.pruner.n_startup_trials=1", "hydra.sweeper.pruner.n_min_trials=1"]
    first = run(sweep(pg, tmp_path, "first", lr, *prune, "hydra.sweeper.n_trials=2"))
    assert first.returncode == 0, first.output
    good, hopeless = optuna.load_study(study_name="pg", storage=pg.url()).trials
    assert good.state == TrialState.COMPLETE and hopeless.state == TrialState.PRUNED

    # Resume with two workers at once on the same study: 4 trials in all, none left running.
    cmd = sweep(pg, tmp_path, "both", lr, *prune, "hydra.sweeper.n_trials=4")
    workers = [subprocess.Popen(cmd, cwd=REPO, env=sub_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    trials = [t for t in optuna.load_study(study_name="pg", storage=pg.url()).trials
              if not t.user_attrs.get("surplus")]
    assert len(trials) == 4 and not any(t.state == TrialState.RUNNING for t in trials)
    compare = subprocess.run([sys.executable, "-m", "tinycnn", "compare", "pg", "--storage",
                              pg.url(), "--no-group"], cwd=REPO, env=sub_env(),
                             capture_output=True, text=True, timeout=120)
    assert compare.returncode == 0 and "trial(s)" in compare.stderr, compare.stderr

    # The password: in no file the sweeps wrote and on no console, shown masked instead.
    console = first.output + "".join(outputs) + compare.stdout + compare.stderr
    assert pg_server.PASSWORD not in console and "tinycnn:***@127.0.0.1" in console
    written = [f for f in tmp_path.rglob("*") if f.is_file()]
    assert len(written) > 20  # multirun.yaml, results, .hydra/, config.yaml, run.log, ...
    leaks = [str(f) for f in written if pg_server.PASSWORD.encode() in f.read_bytes()]
    assert leaks == []
    results = (tmp_path / "both" / "optimization_results.yaml").read_text()
    assert "tinycnn:***@127.0.0.1" in results and "running: 0" in results


@pytest.mark.parametrize("case, says", [
    ("wrong password", 'password authentication failed for user "tinycnn"'),
    ("unknown database", 'database "nosuchdb" does not exist'),
])
def test_server_faults_are_one_masked_line(pg, tmp_path, case, says):
    url = pg.url(password="wrong-pw") if case == "wrong password" else pg.url(db="nosuchdb")
    secret = "wrong-pw" if case == "wrong password" else pg_server.PASSWORD
    for cmd in (sweep(pg, tmp_path, "x", "train.lr=interval(1e-3,1e-2)", url=url),
                [sys.executable, "-m", "tinycnn", "compare", "pg", "--storage", url]):
        t0 = time.monotonic()
        p = run(cmd, timeout=60)
        lines = p.stderr.strip().splitlines()
        assert p.returncode in (1, 2) and len(lines) == 1 and says in lines[0], p.output
        assert "tinycnn:***@127.0.0.1" in lines[0] and secret not in p.output
        assert time.monotonic() - t0 < 30


def test_a_server_restart_between_two_calls_costs_a_reconnect_not_the_sweep(pg):
    """A pooled connection outlives a restart of the server; it is checked before use
    (pool_pre_ping), where it used to fail the next call with Optuna's "invalid data in the
    commit" StorageInternalError."""
    from tinycnn.study import open_storage
    study = optuna.create_study(storage=open_storage(pg.url()), study_name="restart")
    study.enqueue_trial({"x": 1.0})
    assert len(study.get_trials()) == 1
    pg.pause()
    pg.resume()
    assert len(study.get_trials()) == 1  # the same storage object, a new connection


def test_a_trial_whose_server_goes_away_fails_with_the_servers_words(pg):
    """The training job's report to its trial: the driver's reason, not Optuna's "invalid data
    in the commit", and the password masked (metrics.json records this as the error)."""
    from tinycnn.study import StorageError, trial_reporter
    study = optuna.create_study(storage=pg.url(), study_name="report", direction="maximize")
    number = study.ask().number
    report = trial_reporter({"storage": pg.url(), "study": "report", "trial": number,
                             "pruner": {"name": "none"}})
    report(1, 0.5)
    pg.pause()
    try:
        with pytest.raises(StorageError) as err:
            report(2, 0.6)
    finally:
        pg.resume()
    says = str(err.value)
    assert says.startswith("the Optuna storage postgresql://tinycnn:***@127.0.0.1") and \
        f"failed while trial {number} reported its check 2: " in says, says
    assert "Connection refused" in says or "server closed the connection" in says, says
    assert pg_server.PASSWORD not in says


def test_a_compare_whose_server_goes_away_mid_read_is_one_line(pg, monkeypatch):
    """The server stops after the connection was made (as a crash would): `tinycnn compare`
    (and confirm and export, which read the same way) says so in one line with the driver's
    reason, not Optuna's "invalid data in the commit"."""
    from tinycnn import results
    from tinycnn.errors import TinycnnError
    optuna.create_study(storage=pg.url(), study_name="read")
    connected = results.open_storage

    def connect_then_crash(url, timeout=None):
        storage = connected(url, timeout)
        pg.pause()
        return storage
    monkeypatch.setattr(results, "open_storage", connect_then_crash)
    try:
        with pytest.raises(TinycnnError) as err:
            results.collect(["read"], storage=pg.url())
    finally:
        pg.resume()
    says = str(err.value)
    assert says.startswith("the Optuna storage postgresql://tinycnn:***@127.0.0.1") and \
        "failed while its trials were read: " in says and "\n" not in says, says
    assert "Connection refused" in says or "server closed the connection" in says, says
    assert pg_server.PASSWORD not in says and "invalid data" not in says


@pytest.mark.slow
def test_a_server_gone_mid_sweep_is_one_line_and_the_same_command_continues(pg, tmp_path):
    """The database stops while two workers train (as a crash would): every process says so in
    one line, nothing is half-written, and the same command finishes the study once the server
    is back; a trial caught RUNNING is found stale by its heartbeat and run again."""
    cmd = [*sweep(pg, tmp_path, "gone", "train.lr=tag(log,interval(1e-4,1e-2))",
                  "hydra.sweeper.study_name=gone", "hydra.sweeper.n_trials=16",
                  "hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=2",
                  "data.limit=2048"), "hydra.sweeper.n_workers=2"]
    p = subprocess.Popen(cmd, cwd=REPO, env=sub_env(), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)

    def complete() -> int:
        try:
            trials = optuna.load_study(study_name="gone", storage=pg.url()).trials
        except KeyError:  # not created yet
            return 0
        return sum(t.state == TrialState.COMPLETE for t in trials)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and p.poll() is None and complete() < 3:
        time.sleep(0.3)
    assert p.poll() is None, p.communicate()
    pg.pause()
    try:
        out, err = p.communicate(timeout=120)
    finally:
        pg.resume()
    assert p.returncode == 1, out + err
    assert "Traceback" not in out + err and pg_server.PASSWORD not in out + err
    last = err.strip().splitlines()[-1]  # the process that started the workers
    assert last.startswith("the Optuna storage postgresql://tinycnn:***@127.0.0.1") and \
        "failed mid-sweep: " in last and "Connection refused" in last, err
    assert "the same command continues the study" in last

    time.sleep(2)  # grace_period: the trials caught RUNNING are stale by the time it looks
    again = run(cmd)
    assert again.returncode == 0, again.output
    trials = optuna.load_study(study_name="gone", storage=pg.url()).trials
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    retried = [t for t in trials if t.system_attrs.get("failed_trial") is not None]
    assert "study 'gone': " in again.output and "trials (n_trials 16)" in again.output
    assert len(trials) - len(retried) - sum(bool(t.user_attrs.get("surplus")) for t in trials) \
        == 16  # the study is full: every retry replaces a trial the outage left RUNNING
    assert "Warning" not in again.output, again.output  # the retries' constraints: no warning


@pytest.mark.slow  # the same matrix offline, fast: test_storage_faults.py
def test_reserved_characters_in_passwords_escaped_connect_unescaped_never_leak(pg):
    """The password matrix on a real server: each password, percent-escaped in the URL, logs
    in; written as it is, it logs in where the URL still reads the same, and otherwise is one
    line that quotes no 3-character piece of it and says how to escape it."""
    import psycopg
    from urllib.parse import quote

    from psycopg import sql
    from test_storage_faults import PASSWORDS, fragments
    from tinycnn.storage import StorageError, open_storage
    with psycopg.connect(pg.url("postgres"), autocommit=True) as conn:
        for i, pw in enumerate(PASSWORDS):
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
                sql.Identifier(f"matrix{i}"), sql.Literal(pw)))
    outcomes = []
    for i, pw in enumerate(PASSWORDS):
        url = f"postgresql://matrix{i}:{{}}@127.0.0.1:{pg.port}/tinycnn"
        optuna.get_all_study_summaries(open_storage(url.format(quote(pw, safe="")), 5))
        try:
            open_storage(url.format(pw), 5)
            outcomes.append("works")
        except StorageError as exc:
            text = str(exc)
            assert f"matrix{i}:***@127.0.0.1" in text
            assert not any(f in text for f in fragments(pw)), text
            assert "@ as %40" in text and "% as %25" in text, text
            outcomes.append("refused")
    # '@' cannot be read unescaped; '%40' unescaped is read as '@': a wrong password
    assert outcomes == ["refused", "works", "works", "works", "works", "refused", "refused"]
