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
