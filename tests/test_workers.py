"""hydra.sweeper.n_workers: real `python run.py -m` pools on small MNIST subsets and real SQLite
studies; the workers are real processes, found again through the pid in each trial's record."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from conftest import REPO, run_cmd, sub_env, sweep_cmd
from hydra_plugins.tinycnn_plugins._errors import SweepError
from hydra_plugins.tinycnn_plugins._settings import read_settings
from tinycnn.threads import cores

OPTUNA = ["hydra/sweeper=tinycnn_optuna", "hydra.sweeper.study_name=t"]
SPACE = ["train.lr=tag(log,interval(1e-4,1e-2))", "model.blocks.res1.scale=range(0.0,4.01,0.5)"]


def study(tmp_path):
    return optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path}/optuna.db")


def records(tmp_path, out="run") -> dict:
    """trial number -> its metrics.json, for every trial folder of the sweep."""
    return {int(f.parent.name[6:]): json.loads(f.read_text())
            for f in (tmp_path / out).glob("trial_*/metrics.json")}


def running(tmp_path) -> int:
    """RUNNING trials, read without creating the database as optuna.load_study would."""
    try:
        with sqlite3.connect(f"file:{tmp_path}/optuna.db?mode=ro", uri=True) as db:
            return db.execute("SELECT count(*) FROM trials WHERE state = 'RUNNING'").fetchone()[0]
    except sqlite3.Error:  # not there yet
        return 0


def holders(tmp_path, launched: bool = False) -> list:
    """The pids of the workers holding RUNNING trials (their `worker` attr, "host:pid");
    launched: only trials on their way to the launcher (`dir`, `overrides`, `baseline`
    recorded)."""
    with sqlite3.connect(f"file:{tmp_path}/optuna.db?mode=ro", uri=True) as db:
        rows = db.execute("SELECT a.value_json FROM trial_user_attributes a JOIN trials t "
                          "USING (trial_id) WHERE t.state = 'RUNNING' AND a.key = 'worker'"
                          + (" AND EXISTS (SELECT 1 FROM trial_user_attributes d WHERE "
                             "d.trial_id = t.trial_id AND d.key = 'baseline')" if launched else ""))
        return [int(json.loads(v).rsplit(":", 1)[1]) for (v,) in rows]


def children(pid: int) -> list:
    """The processes whose parent is pid (Linux: read from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def pool_on_two_trials(tmp_path, *args: str, stderr=subprocess.STDOUT) -> subprocess.Popen:
    """A two-worker sweep of 40 small trials, returned once both workers are on a trial. In its
    own process group, as a terminal's foreground job: Ctrl-C is SIGINT to that group. stderr:
    with stdout unless told (subprocess.PIPE: apart)."""
    cmd = sweep_cmd(tmp_path, *OPTUNA, *SPACE, "data.limit=2048", "hydra.sweeper.n_trials=40",
                    "hydra.sweeper.n_workers=2", *args)
    p = subprocess.Popen(cmd, cwd=REPO, env=sub_env(), stdout=subprocess.PIPE,
                         stderr=stderr, text=True, start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and p.poll() is None and running(tmp_path) < 2:
        time.sleep(0.2)
    assert p.poll() is None, p.communicate()[0]
    return p


SETTINGS = {"study_name": "t", "storage": "sqlite:///x.db", "n_trials": 5, "n_jobs": 1,
            "max_params": 25000, "objectives": ["val_acc"], "sampler": {"name": "tpe"},
            "pruner": {"name": "none"}, "max_failure_rate": 0.5, "params": {}}


def test_n_workers_setting_is_checked():
    s = SETTINGS
    assert read_settings({**s, "n_workers": "auto"}).n_workers == cores()
    for bad in (0, "many", 1.5):
        with pytest.raises(SweepError, match=f"n_workers = {bad!r}: expected a whole number >= "
                                             "1 .* or auto"):
            read_settings({**s, "n_workers": bad})


def test_more_workers_than_cores_are_capped_to_the_cores(tmp_path, caplog):
    """n_workers=1000 starts one worker per core, not a thousand processes, and says so once."""
    line = (f"hydra.sweeper.n_workers = 1000: capped to {cores()}, the cores here (more workers "
            "than cores only slow each other down)")
    s = SETTINGS
    assert read_settings({**s, "n_workers": 1000}).n_workers == cores()
    assert caplog.messages == [line]
    assert read_settings({**s, "n_workers": cores()}).n_workers == cores()  # no line
    assert caplog.messages == [line]


@pytest.mark.slow
def test_a_sweep_with_more_workers_than_cores_starts_one_per_core(tmp_path):
    line = (f"hydra.sweeper.n_workers = 1000: capped to {cores()}, the cores here (more workers "
            "than cores only slow each other down)")
    p = run_cmd(sweep_cmd(tmp_path, *OPTUNA, *SPACE, "hydra.sweeper.n_trials=2",
                          "hydra.sweeper.n_workers=1000"), timeout=300)
    assert p.returncode == 0, p.output
    assert p.output.count(line) == 1, p.output
    if cores() > 1:
        assert f"{cores()} workers on this study" in p.output, p.output
    assert len({m["worker"]["pid"] for m in records(tmp_path).values()}) <= cores()


# a faster sibling: test_sweep.py::test_two_workers_share_one_study_without_duplicates
@pytest.mark.slow
def test_workers_share_the_study_each_loads_data_once_with_its_share_of_threads(tmp_path):
    """Two workers, eight trials: every trial number once, trained once, by one of two processes
    that each read MNIST once and run on cores // 2 threads."""
    env = sub_env()
    del env["OMP_NUM_THREADS"], env["MKL_NUM_THREADS"]  # the pool must set the threads itself
    # 2,048 images: trials long enough (~1 s) that a worker starting a few seconds after the
    # other (a loaded machine) still gets some of the eight.
    p = run_cmd(sweep_cmd(tmp_path, *OPTUNA, *SPACE, "data.limit=2048", "hydra.sweeper.n_trials=8",
                          "hydra.sweeper.n_workers=2"), env=env)
    assert p.returncode == 0, p.output
    trials = study(tmp_path).trials
    real = [t for t in trials if not t.user_attrs.get("surplus")]
    assert [t.number for t in real] == list(range(8))  # none lost
    assert all(t.state == TrialState.COMPLETE for t in real)
    assert not any(t.state == TrialState.RUNNING for t in trials)
    recs = records(tmp_path)
    assert sorted(recs) == list(range(8))  # each trained once, in its own folder
    assert all(m["trial"] == n and m["status"] == "complete" for n, m in recs.items())
    ran = [line.split("] trial ")[1].split()[0] for line in p.output.splitlines()
           if "[worker " in line and " complete " in line]
    assert sorted(map(int, ran)) == list(range(8))  # no trial launched twice

    pids = {m["worker"]["pid"] for m in recs.values()}
    assert len(pids) == 2 and os.getpid() not in pids
    for pid in pids:
        mine = [m["worker"]["data"] for _, m in sorted(recs.items()) if m["worker"]["pid"] == pid]
        assert mine.count("loaded") == 1 and mine[0] == "loaded", mine  # then reused
    assert {m["worker"]["threads"] for m in recs.values()} == {max(1, cores() // 2)}
    logs = [(Path(t.user_attrs["dir"]) / "run.log").read_text() for t in real]
    assert sum("mnist loaded in" in log for log in logs) == 2  # a trial's lines: its run.log
    assert "study 't': 8 trials" in p.output  # one summary, from the process that started them


@pytest.mark.slow
def test_a_worker_takes_its_next_trial_while_another_still_trains(tmp_path):
    """No batch barrier: trial 0 trains 40 epochs; the other worker meanwhile finishes short
    trials one after another."""
    s = optuna.create_study(storage=f"sqlite:///{tmp_path}/optuna.db", study_name="t",
                            direction="maximize")
    s.enqueue_trial({"train.epochs": 40, "train.lr": 0.002})
    for lr in (0.001, 0.003, 0.004, 0.005):
        s.enqueue_trial({"train.epochs": 1, "train.lr": lr})
    p = run_cmd(sweep_cmd(tmp_path, *OPTUNA, "train.epochs=choice(1,40)",
                          "train.lr=interval(0.001,0.005)", "hydra.sweeper.n_trials=5",
                          "hydra.sweeper.n_workers=2"))
    assert p.returncode == 0, p.output
    long, *short = study(tmp_path).trials
    assert all(t.state == TrialState.COMPLETE for t in [long, *short])
    during = [t for t in short if long.datetime_start < t.datetime_start and
              t.datetime_complete < long.datetime_complete]
    # At least one short trial started after another had ended, all while trial 0 trained.
    assert any(b.datetime_start >= a.datetime_complete for a in during for b in during), \
        [(t.number, t.datetime_start, t.datetime_complete) for t in [long, *short]]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the workers in /proc")
@pytest.mark.parametrize("to", ["group", pytest.param("parent", marks=pytest.mark.slow)])
def test_ctrl_c_stops_every_worker_and_leaves_nothing_running(tmp_path, to):
    """Ctrl-C (SIGINT to the terminal's process group) or SIGINT to the sweep's process alone:
    the same one line on stderr as a one-worker sweep, naming the trials failed, and exit 130
    (it used to be a line per worker and the pool's own, exit 1)."""
    p = pool_on_two_trials(tmp_path, stderr=subprocess.PIPE)
    workers = children(p.pid)
    assert len(workers) == 2
    if to == "group":
        os.killpg(p.pid, signal.SIGINT)
    else:
        os.kill(p.pid, signal.SIGINT)
    out, err = p.communicate(timeout=120)
    trials = study(tmp_path).trials
    stopped = [t for t in trials if t.state == TrialState.FAIL]
    assert p.returncode == 130 and err.strip().splitlines() == [
        f"tinycnn: interrupted; trial(s) {', '.join(str(t.number) for t in stopped)} recorded "
        "failed ('interrupted'). Run the same command again to continue the study."], err + out
    assert len(trials) < 40 and not [t for t in trials if t.state == TrialState.RUNNING]
    assert 1 <= len(stopped) <= 2 and all(
        t.user_attrs["reason"].startswith("interrupted (KeyboardInterrupt") for t in stopped), \
        ([t.user_attrs.get("reason") for t in stopped], out)
    assert not any(alive(pid) for pid in workers)
    assert "Traceback" not in out + err


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the workers in /proc")
@pytest.mark.parametrize("heartbeat", ["null", pytest.param("60", marks=pytest.mark.slow)])
def test_a_worker_killed_hard_is_replaced_and_the_sweep_finishes(tmp_path, heartbeat):
    """kill -9 (or the OOM killer) gives a worker no chance to close its trial: the pool's
    process fails it at once (not after a heartbeat's grace period, 180 s), enqueues its
    configuration again as Optuna's retry callback does for a stale trial, and starts a new
    worker; the other worker's trials are untouched and the sweep still finishes n_trials."""
    s = optuna.create_study(storage=f"sqlite:///{tmp_path}/optuna.db", study_name="t",
                            direction="maximize")
    s.enqueue_trial({"train.lr": 0.002, "model.blocks.res1.scale": 1.0},
                    user_attrs={"baseline": True})
    p = pool_on_two_trials(tmp_path, f"hydra.sweeper.heartbeat_interval={heartbeat}",
                           "hydra.sweeper.n_trials=10")
    # Frozen (SIGSTOP) while it holds a RUNNING trial that was launched (all its attributes
    # recorded), not in the instant between two trials or between asking and launching.
    victim, deadline = children(p.pid)[0], time.monotonic() + 60
    while True:
        os.kill(victim, signal.SIGSTOP)
        if victim in holders(tmp_path, launched=True) or time.monotonic() > deadline:
            break
        os.kill(victim, signal.SIGCONT)
        time.sleep(0.05)
    os.kill(victim, signal.SIGKILL)
    out = p.communicate(timeout=300)[0]
    assert p.returncode == 0, out
    trials = [t for t in study(tmp_path).trials if not t.user_attrs.get("surplus")]
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)], out
    orphan, = [t for t in trials if t.state == TrialState.FAIL]  # the others' untouched
    assert orphan.user_attrs["worker"].endswith(f":{victim}")
    assert orphan.user_attrs["reason"] == (f"its worker (pid {victim}) was killed by SIGKILL "
                                           "while the trial ran")
    retry, = [t for t in trials if "failed_trial" in t.system_attrs]
    assert retry.system_attrs["failed_trial"] == orphan.number
    assert retry.params == orphan.params and retry.user_attrs["state"] == "complete"
    assert retry.user_attrs.get("baseline") == orphan.user_attrs.get("baseline")
    assert retry.user_attrs["worker"] != orphan.user_attrs["worker"]
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == 10  # n_trials
    line, = [x for x in out.splitlines() if "marked failed" in x]
    assert line.endswith(f"trial {orphan.number} marked failed: its worker (pid {victim}) was "
                         "killed by SIGKILL while the trial ran; its configuration is enqueued "
                         "again; a new worker takes its place (1 of 3 replacements)"), line
    assert f"1 failed with their worker and retried (trials {orphan.number})" in out
    assert "Traceback" not in out


BLOCK_AT = """import os, sys, time
class BlockAt:  # a pool's worker waits at the import of AT until it is told to stop
    def find_spec(self, name, path=None, target=None):
        if name == os.environ["BLOCK_AT"]:
            sys.meta_path.remove(self)
            from tinycnn import stops
            open(os.path.join(os.environ["BLOCK_DIR"], str(os.getpid())), "w").close()
            t0 = time.monotonic()
            while not stops.stop_requested() and time.monotonic() - t0 < 120:
                time.sleep(0.01)
if os.environ.get("TINYCNN_WORKER"):
    sys.meta_path.insert(0, BlockAt())
"""


# tinycnn.pool: imported by the sweeper plugin just before the worker says it is ready (Hydra
# loads the plugin itself without sys.meta_path); loop: once Hydra has composed the config.
@pytest.mark.parametrize("at", ["tinycnn.pool", pytest.param(
    "hydra_plugins.tinycnn_plugins._loop", marks=pytest.mark.slow)],
    ids=["before ready", "while Hydra sets up"])
def test_a_stop_while_workers_start_is_clean(tmp_path, at):
    """Ctrl-C while the workers are still starting, at two fixed points (a handshake: each
    worker waits there, and says so in a file, until the stop reaches it): no traceback, no
    trial asked, nothing RUNNING."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(BLOCK_AT)
    env = sub_env(BLOCK_AT=at, BLOCK_DIR=str(hook))
    env["PYTHONPATH"] = os.pathsep.join([str(hook), env["PYTHONPATH"]])
    p = subprocess.Popen(sweep_cmd(tmp_path, *OPTUNA, *SPACE, "hydra.sweeper.n_workers=2"),
                         cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while len(list(hook.glob("[0-9]*"))) < 2 and time.monotonic() < deadline \
            and p.poll() is None:
        time.sleep(0.05)
    assert len(list(hook.glob("[0-9]*"))) == 2, p.communicate(timeout=60)[0]
    os.killpg(p.pid, signal.SIGINT)
    out = p.communicate(timeout=180)[0]
    assert p.returncode == 130 and [x for x in out.splitlines() if "interrupted" in x] == [
        "tinycnn: interrupted; Run the same command again to continue the study."], out
    assert "Traceback" not in out, out
    assert running(tmp_path) == 0
    if Path(f"{tmp_path}/optuna.db").exists():
        assert all(t.state == TrialState.WAITING for t in study(tmp_path).trials)


def test_a_stop_while_a_trial_is_asked_is_raised_after_it_is_noted():
    """The signal arrives while the worker is inside deferred_signals (creating a trial) and
    another thread is alive (the heartbeat's): the stop waits for the block's end."""
    from tinycnn.stops import held, stop_requested, stop_signals
    noted = []
    with stop_signals():
        other = threading.Thread(target=time.sleep, args=(2,), daemon=True)
        other.start()
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
            with held():
                os.kill(os.getpid(), signal.SIGTERM)
                # Python runs the handler in this thread, in the block: wait until it has (a
                # handshake on the request it sets, not a guessed sleep).
                while not stop_requested():
                    pass
                noted.append("trial")
        assert noted == ["trial"] and stop_requested()
    assert not stop_requested()  # the next sweep in this process starts afresh


def test_a_failing_worker_stops_the_sweep(tmp_path):
    p = run_cmd(sweep_cmd(tmp_path, *OPTUNA, "train.lr=choice(-1.0,-2.0)",  # every job fails
                          "hydra.sweeper.n_trials=20", "hydra.sweeper.n_workers=2"))
    assert p.returncode == 1, p.output
    assert "stopped with exit code 1" in p.output and "the other workers were stopped" in p.output
    trials = study(tmp_path).trials
    assert len(trials) < 20 and all(t.state == TrialState.FAIL for t in trials)


@pytest.mark.slow
def test_trials_as_submitit_jobs_report_prune_and_finish(tmp_path):
    """The README's Slurm recipe through submitit's local executor: each trial is a submitit
    job in its own process, reporting to the study through the storage."""
    s = optuna.create_study(storage=f"sqlite:///{tmp_path}/optuna.db", study_name="t",
                            direction="maximize")
    for lr in (0.002, 1e-7, 0.003):  # 1e-7 learns nothing: pruned at its first check
        s.enqueue_trial({"train.lr": lr})
    p = run_cmd(sweep_cmd(tmp_path, *OPTUNA, "train.lr=tag(log,interval(1e-8,1e-2))",
                          "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
                          "hydra.sweeper.n_trials=3", "hydra.sweeper.pruner.name=median",
                          "hydra.sweeper.pruner.n_startup_trials=1"), timeout=600)
    assert p.returncode == 0, p.output
    done, pruned, last = study(tmp_path).trials
    assert done.state == last.state == TrialState.COMPLETE and len(done.intermediate_values) == 2
    assert pruned.state == TrialState.PRUNED and pruned.user_attrs["state"] == "pruned"
    recs = records(tmp_path)
    assert recs[1]["status"] == "pruned" and recs[2]["status"] == "complete"
    assert len({m["worker"]["pid"] for m in recs.values()}) == 3  # one process per job
    assert "study 't': 3 trials (n_trials 3): 2 complete, 1 pruned" in p.output


def test_data_is_loaded_once_per_process_per_data_setting():
    import tinycnn.data as data
    from conftest import compose_cfg
    # limit=333: no other test's setting, so whatever this process loaded before, this loads
    first, took = data.worker_data(compose_cfg("data.limit=333").data)
    loads = data.loads
    again, reused = data.worker_data(compose_cfg("data.limit=333", "seed=5").data)  # not data
    assert took is not None and reused is None and data.loads == loads
    assert again.train_x is first.train_x  # the very same tensors, not a copy
    other, reused = data.worker_data(compose_cfg("data.limit=333", "data.mean=0.5").data)
    assert reused is None and other.mean == 0.5 and other.train_x is first.train_x
    smaller, took = data.worker_data(compose_cfg("data.limit=256").data)  # other images
    assert took is not None and data.loads == loads + 1 and len(smaller.train_x) == 256


def test_the_process_pool_notices_a_dead_child_and_runs_the_rest():
    """tinycnn.pool, the one way tinycnn runs processes side by side (the sweeper's workers,
    confirm's runs): a child killed outright is reported as such, the others run to the end."""
    from tinycnn.pool import Pool, call_command, exit_note
    ended = {}
    die = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    Pool().run([("dies", [sys.executable, "-c", die]),
                ("fails", [sys.executable, "-c", "raise SystemExit(3)"]),
                ("calls", call_command("os:getcwd")),
                ("raises", call_command("os:getcwd", "no arguments taken"))],
               2, lambda c: ended.__setitem__(c.name, c.code))
    assert ended == {"dies": -signal.SIGKILL, "fails": 3, "calls": 0, "raises": 1}
    assert exit_note(-signal.SIGKILL) == "was killed by SIGKILL"
