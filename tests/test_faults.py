"""Hostile but reasonable input, each answered with one line, fast, and nothing left half-done:
bad top-level values, damaged MNIST, unreachable storages, a killed worker, Ctrl-C. (The
PostgreSQL server's own faults and the password checks are in test_postgres.py.)"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from conftest import compose_cfg, stop_in_torch_env
from test_sweep import OPTUNA, REPO, load, run, sub_env, sweep_cmd
from tinycnn.data import load_data
from tinycnn.errors import ConfigError, TinycnnError
from tinycnn.runner import run as run_config


@pytest.mark.parametrize("override, says", [
    ("seed=1.5", "seed = 1.5: expected a whole number >= 0"),
    ("seed=abc", "seed = 'abc': expected a whole number >= 0"),
    ("seed=-1", "seed = -1: expected a whole number >= 0"),
    ("threads=abc", "threads = 'abc': expected auto (one per idle core), a whole number"),
    ("threads=-1", "threads = -1: expected auto (one per idle core), a whole number"),
    ("data.split_seed=abc", "data.split_seed = 'abc': expected a whole number >= 0"),
])
def test_bad_top_level_values_are_refused_before_any_data(tmp_path, override, says):
    cfg = compose_cfg(override, "data.root=/nonexistent")  # refused before data is looked for
    with pytest.raises(ConfigError) as err:
        run_config(cfg, tmp_path)
    assert str(err.value).startswith(says)


def test_rejected_plain_run_is_one_line_and_leaves_no_folder(tmp_path):
    out = tmp_path / "outputs" / "day" / "time"
    p = subprocess.run([sys.executable, str(REPO / "run.py"), "seed=1.5", f"hydra.run.dir={out}"],
                       cwd=REPO, env=sub_env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and p.stderr.strip().splitlines() == [
        "tinycnn: seed = 1.5: expected a whole number >= 0 (e.g. seed=0)"], p.stderr
    assert list((tmp_path / "outputs").iterdir()) == []  # outputs/DATE/TIME removed, DATE too


def _mnist_copy(tmp_path, mnist_root, keep):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in keep:
        (raw / name).symlink_to(Path(mnist_root) / "MNIST" / "raw" / name)
    return raw


def test_missing_and_truncated_mnist_files_are_named(tmp_path, mnist_root):
    data = compose_cfg(f"data.root={tmp_path}").data
    FILES = list(data.files)  # noqa: N806
    raw = _mnist_copy(tmp_path, mnist_root, FILES[:2])
    with pytest.raises(TinycnnError, match="t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte "
                                           "missing"):
        load_data(data)
    for name in FILES[2:]:
        (raw / name).symlink_to(Path(mnist_root) / "MNIST" / "raw" / name)
    (raw / FILES[1]).unlink()
    (raw / FILES[1]).write_bytes((Path(mnist_root) / "MNIST" / "raw" / FILES[1]).read_bytes()[:500])
    with pytest.raises(TinycnnError, match=f"mnist file {raw / FILES[1]} is damaged: 500 bytes"):
        load_data(data)


class SilentServer:
    """Accepts TCP connections on 127.0.0.1 and never says a word."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port, self.held = self.sock.getsockname()[1], []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                return


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("fault", ["refused port", "silent host"])
def test_unreachable_storage_is_one_masked_line_within_the_timeout(tmp_path, fault):
    port = SilentServer().port if fault == "silent host" else _free_port()
    url = f"postgresql://me:topsecret@127.0.0.1:{port}/db"
    says = "timeout expired" if fault == "silent host" else "Connection refused"
    for cmd, limit in (
            (sweep_cmd(tmp_path, *OPTUNA, "train.lr=interval(1e-3,1e-2)",
                       f"hydra.sweeper.storage={url}", "hydra.sweeper.connect_timeout=2"), 2),
            ([sys.executable, "-m", "tinycnn", "compare", "t", "--storage", url,
              "--connect-timeout", "2"], 2)):
        t0 = time.monotonic()
        p = run(cmd, timeout=120)
        took = time.monotonic() - t0
        lines = p.stderr.strip().splitlines()
        assert p.returncode in (1, 2) and len(lines) == 1, p.output
        assert "postgresql://me:***@127.0.0.1" in lines[0] and says in lines[0], lines
        assert "topsecret" not in p.output
        assert took < limit + 15  # the process start (torch, hydra) plus at most the timeout


@pytest.mark.slow
def test_a_download_server_that_never_answers_is_one_line_within_the_time_limit(tmp_path):
    """No network needed: every URL goes through a proxy (the environment's https_proxy and
    http_proxy, which urllib honours) that accepts connections and never answers. torchvision
    tries its MNIST mirrors one after another; all together they get TINYCNN_DOWNLOAD_TIMEOUT
    (here 4 s), not that much each (it used to be 30 s each, about a minute of silence)."""
    limit = 4
    proxy = f"http://127.0.0.1:{SilentServer().port}"
    env = sub_env(TINYCNN_DOWNLOAD_TIMEOUT=str(limit), http_proxy=proxy, https_proxy=proxy,
                  HTTP_PROXY=proxy, HTTPS_PROXY=proxy)
    for key in ("no_proxy", "NO_PROXY"):
        env.pop(key, None)
    empty = tmp_path / "data"
    p = subprocess.Popen([sys.executable, str(REPO / "run.py"), f"data.root={empty}",
                          "data.val_size=100", f"hydra.run.dir={tmp_path / 'run'}"], cwd=REPO,
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    said = None
    for line in p.stdout:  # the line before the download: what, where to, the time limit
        if "downloading" in line:
            said = (line.strip(), time.monotonic())
    err = p.stderr.read()
    took = time.monotonic() - said[1] if said else None
    p.wait(timeout=60)
    assert said and said[0] == (
        f"mnist: not in {empty}/MNIST/raw or {empty}/MNIST; downloading it with torchvision "
        f"into {empty}/MNIST (an error after {limit} s without an answer)"), said
    lines = err.strip().splitlines()
    assert p.returncode == 1 and len(lines) == 1, err
    assert lines[0].startswith(f"tinycnn: mnist is not in {empty}/MNIST/raw or {empty}/MNIST and "
                               "could not be downloaded (") and "timed out" in lines[0], lines
    assert took < 2 * limit, took  # from the line to the end, start-up aside
    assert not (tmp_path / "run").exists()  # rejected before training: no run folder


def test_a_bad_download_time_limit_is_one_line(monkeypatch):
    from tinycnn.data import DOWNLOAD_TIMEOUT, download_timeout
    monkeypatch.delenv("TINYCNN_DOWNLOAD_TIMEOUT", raising=False)
    assert download_timeout() == DOWNLOAD_TIMEOUT == 30
    monkeypatch.setenv("TINYCNN_DOWNLOAD_TIMEOUT", "2.5")
    assert download_timeout() == 2.5
    for bad in ("abc", "0", "-1", "inf"):
        monkeypatch.setenv("TINYCNN_DOWNLOAD_TIMEOUT", bad)
        with pytest.raises(TinycnnError, match=f"^TINYCNN_DOWNLOAD_TIMEOUT = '{bad}': expected "
                                               "a number of seconds > 0"):
            download_timeout()


def _wait_for(predicate, timeout=120):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError("timed out waiting")


def _running(tmp_path) -> bool:
    """A trial is training: its record says so (the runner writes config.yaml, then trains)."""
    return any((tmp_path / "run").glob("trial_*/config.yaml"))


@pytest.mark.slow
def test_killed_worker_trial_is_failed_and_retried_by_the_next_worker(tmp_path):
    cmd = sweep_cmd(tmp_path, *OPTUNA, "train.lr=interval(1e-3,1e-2)", "hydra.sweeper.n_trials=1",
                    "hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=2",
                    "data.limit=20000", "threads=1")
    worker = subprocess.Popen(cmd, cwd=REPO, env=sub_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: _running(tmp_path))
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    assert [t.state for t in load(tmp_path, "t").trials] == [TrialState.RUNNING]
    time.sleep(3)  # past the grace period
    # The same command on less data (quicker): a change the study records, so it is accepted
    # explicitly (tests/test_storage_faults.py refuses it without).
    p = run(cmd[:-2] + ["threads=1", "hydra.sweeper.accept_changes=true"])
    assert p.returncode == 0, p.output
    killed, retry = load(tmp_path, "t").trials
    assert killed.state == TrialState.FAIL and retry.state == TrialState.COMPLETE
    assert retry.params == killed.params and retry.user_attrs["baseline"] is True
    assert retry.system_attrs["failed_trial"] == 0
    assert "1 failed with their worker and retried (trials 0)" in p.output


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM],  # Ctrl-C; kill, a scheduler
                         ids=["SIGINT", "SIGTERM"])
def test_a_stop_is_one_line_and_the_baseline_is_enqueued_again(tmp_path, sig):
    cmd = sweep_cmd(tmp_path, *OPTUNA, "train.lr=interval(1e-3,1e-2)", "hydra.sweeper.n_trials=2",
                    "data.limit=20000", "threads=1")
    worker = subprocess.Popen(cmd, cwd=REPO, env=sub_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: _running(tmp_path))
    time.sleep(1)
    worker.send_signal(sig)
    out, err = worker.communicate(timeout=60)
    assert worker.returncode == 130 and "Traceback" not in out + err
    assert err.strip().splitlines()[-1].startswith(
        "tinycnn: interrupted; trial(s) 0 recorded failed ('interrupted')")
    trials = load(tmp_path, "t").trials
    assert trials[0].state == TrialState.FAIL and trials[1].state == TrialState.WAITING
    assert trials[0].user_attrs["reason"] == f"interrupted (KeyboardInterrupt: {sig.name})"
    assert trials[1].user_attrs["baseline"] is True
    assert trials[1].system_attrs["fixed_params"] == trials[0].params  # what enqueue stores


def test_a_stop_while_torch_loads_is_held_until_torch_is_in(tmp_path):
    """tinycnn.lazy.import_torch, the one way tinycnn loads torch on demand (run.py, the sweeper,
    confirm's workers, reproduce, evaluate): a Ctrl-C landing inside the import is raised only
    once torch is in, never inside it (where, in Python called from C++, it aborts)."""
    code = ("import sys\nfrom tinycnn.lazy import import_torch\ntry:\n    import_torch()\n"
            "except KeyboardInterrupt:\n"
            "    print('after' if 'torch.nn' in sys.modules else 'inside')\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=stop_in_torch_env(tmp_path),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout == "after\n", p.stdout + p.stderr


def test_a_stop_while_torch_loads_comes_before_any_trial(tmp_path):
    """torch's import runs Python called from C++: a KeyboardInterrupt raised in there cannot
    unwind and aborts the process ("terminate called after throwing ...", SIGABRT), its trial
    left RUNNING. So a sweep loads torch before it asks for a trial, holding a stop back until
    torch is in: a Ctrl-C during the import is a clean stop with no trial asked."""
    p = subprocess.run(sweep_cmd(tmp_path, *OPTUNA, "train.lr=interval(1e-3,1e-2)"), cwd=REPO,
                       env=stop_in_torch_env(tmp_path), capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 130 and "Traceback" not in p.stdout + p.stderr, p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith("tinycnn: interrupted"), p.stderr
    trials = load(tmp_path, "t").trials
    assert [t.state for t in trials] == [TrialState.WAITING], trials  # the baseline, not asked


def test_a_ctrl_c_while_a_plain_run_loads_torch_is_one_line_and_leaves_no_folder(tmp_path):
    """The same Ctrl-C inside torch's import, in `python run.py`: held until the import is done,
    then one line, exit 130, and no outputs/DATE/TIME folder for a run that never started."""
    out = tmp_path / "outputs" / "day" / "time"
    p = subprocess.run([sys.executable, str(REPO / "run.py"), f"hydra.run.dir={out}"], cwd=REPO,
                       env=stop_in_torch_env(tmp_path), capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 130 and p.stderr.strip().splitlines() == [
        "tinycnn: interrupted before training started; nothing was recorded"], p.stderr
    assert list((tmp_path / "outputs").iterdir()) == []


@pytest.mark.slow
def test_a_trial_asked_by_a_worker_that_lost_the_storage_is_failed_and_retried(tmp_path):
    """A worker asked for a trial, then lost the storage before its first heartbeat (a server
    stopped in that instant): the trial has no heartbeat, so Optuna never finds it stale. The
    next sweep fails it once the grace period has passed and runs its configuration again."""
    from optuna.distributions import FloatDistribution
    from tinycnn.storage import open_storage
    storage = open_storage(f"sqlite:///{tmp_path}/optuna.db", heartbeat=(1, 2, 3))
    study = optuna.create_study(study_name="t", storage=storage, direction="maximize")
    orphan = study.ask({"train.lr": FloatDistribution(1e-3, 1e-2)})  # never claimed nor beaten
    time.sleep(2.5)  # past the grace period
    p = run(sweep_cmd(tmp_path, *OPTUNA, "train.lr=interval(1e-3,1e-2)", "threads=1",
                      "hydra.sweeper.n_trials=1", "hydra.sweeper.heartbeat_interval=1",
                      "hydra.sweeper.grace_period=2"))
    assert p.returncode == 0, p.output
    trials = load(tmp_path, "t").trials
    assert trials[0].state == TrialState.FAIL
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == orphan.number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
    assert retry[0].params == orphan.params
    assert not [t for t in trials if t.state == TrialState.RUNNING]
