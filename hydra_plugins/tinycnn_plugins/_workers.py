"""hydra.sweeper.n_workers=N: N copies of the sweep command work on one study at once.

Each worker is the same `python run.py -m ...` command with n_workers=1, so it is exactly an
independent worker (README, "Several processes, several machines"): it asks the study for a
trial, trains it in its own process, tells the study, and asks again the moment it is done. The
study in its storage is the only coordinator; nothing here hands out trials, so there is no
batch barrier and the same command on several machines against PostgreSQL still just adds
workers. This process only starts the workers, gives each its share of the cores, and stops them
all at Ctrl-C or when one fails.
"""

import copy
import datetime
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from typing import List

from tinycnn.stops import stop_requested, stop_signals
from tinycnn.threads import AUTO, cores

log = logging.getLogger(__name__)

WORKER_ENV = "TINYCNN_WORKER"   # "k/N" in a worker started here
STOP_GRACE_S = 120              # a stopped worker marks its trials failed, then exits
WORKER_ATTR = "worker"          # a trial's user attr: "host:pid" of the process that asked it


class WorkerFailed(Exception):
    pass


def n_workers(value) -> int:
    """hydra.sweeper.n_workers: a whole number >= 1, or auto (one worker per core)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return cores()
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        from ._sweep import SweepError
        raise SweepError(f"hydra.sweeper.n_workers = {value!r}: expected a whole number >= 1 "
                         f"(workers on this machine) or auto (one per core: {cores()} here)")
    return value


def worker_id(pid: int | None = None) -> str:
    """"host:pid": which process holds a trial (its user attr `worker`), so a pool can close the
    trials of a worker that died without closing them itself."""
    return f"{socket.gethostname()}:{os.getpid() if pid is None else pid}"


def worker_tag() -> str:
    """'[worker k/N] ' inside a worker started by run_workers, else ''."""
    tag = os.environ.get(WORKER_ENV)
    return f"[worker {tag}] " if tag else ""


def worker_command(argv: List[str], sweep_dir: str) -> List[str]:
    """This command as one worker runs it: n_workers=1 and the sweep folder this process
    resolved (its ${now:...} would otherwise differ per worker)."""
    own = ("hydra.sweeper.n_workers=", "hydra.sweep.dir=")
    kept = [a for a in argv[1:] if not a.lstrip("+~").startswith(own)]
    return [sys.executable, argv[0], *kept, "hydra.sweeper.n_workers=1",
            f"hydra.sweep.dir={sweep_dir}"]


def _in_worker() -> None:
    """Runs in each worker before it starts. SIGINT is what stops a worker, so it must not
    inherit an ignored SIGINT (a shell does that to background jobs). On Linux a worker also
    gets SIGINT when this process dies, even by kill -9, so no orphan goes on training;
    elsewhere an orphan finishes the study like any independent worker."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        import ctypes
        ctypes.CDLL(None).prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def run_pool(sweep, study) -> list:
    """The sweep's hook for n_workers > 1: start the workers on `study`, wait for them, fail the
    trials that a dead worker left RUNNING, and write the study's summary (the workers leave it
    to this process)."""
    from omegaconf import OmegaConf

    from ._sweep import SweepError, _state
    start = datetime.datetime.now()
    procs: List[subprocess.Popen] = []
    try:
        run_workers(sweep.n_workers, str(sweep.sweep_dir), procs,
                    threads_set=OmegaConf.select(sweep.config, "threads") not in (None, AUTO))
        stopped = None
    except (WorkerFailed, KeyboardInterrupt) as exc:
        stopped = exc
    close_orphans(sweep, study, procs)
    for t in study.get_trials(deepcopy=False):  # "this run" in the summary: the workers' trials
        if t.datetime_start and t.datetime_start >= start and t.state.is_finished():
            sweep.counts[_state(t)] += 1
            sweep.counts["duplicate"] += "duplicate_of" in t.user_attrs
    sweep._summary(study)
    if isinstance(stopped, KeyboardInterrupt):
        raise SweepError(f"sweep interrupted ({stopped}): the {sweep.n_workers} workers stopped "
                         "and their running trials are marked failed; the same command continues "
                         "the study") from None
    if stopped is not None:
        raise SweepError(str(stopped)) from None
    return []


def close_orphans(sweep, study, procs: List[subprocess.Popen]) -> None:
    """Once every worker has ended: a trial still RUNNING under one of their `worker` ids was
    left by a worker that died (kill -9, the kernel's OOM killer, a crash) or was killed after
    STOP_GRACE_S. No process will close it, so it is marked failed here, at once, rather than
    after a heartbeat's grace period (or, in a journal storage, never). Then, as when a
    heartbeat finds it stale: the storage's retry callback enqueues its configuration again
    (heartbeats on), or else a baseline is enqueued again, as after a Ctrl-C."""
    import optuna
    from optuna.trial import TrialState

    from tinycnn.study import supports_heartbeat
    ended = {worker_id(p.pid): p for p in procs if p.returncode is not None}
    orphans = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
               if t.user_attrs.get(WORKER_ATTR) in ended]
    if not orphans:
        return
    storage = sweep.storage
    retry = storage.get_heartbeat_stale_trial_callback() if supports_heartbeat(storage) else None
    study_id = storage.get_study_id_from_name(study.study_name)
    for t in orphans:
        p = ended[t.user_attrs[WORKER_ATTR]]
        reason = f"its worker (pid {p.pid}) {exit_note(p.returncode)} while the trial ran"
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        sweep._fail(study, optuna.Trial(study, trial_id), reason, count=False)
        if retry is not None:
            failed = copy.deepcopy(storage.get_trial(trial_id))  # the retry starts afresh
            for key in ("state", "reason", WORKER_ATTR):
                failed.user_attrs.pop(key, None)
            retry(study, failed)
        elif t.user_attrs.get("baseline"):  # the comparison every sweep reports is still made
            study.enqueue_trial(dict(t.params), user_attrs={"baseline": True})
        log.warning("trial %d marked failed: %s%s", t.number, reason,
                    "; its configuration is enqueued again" if retry else "")


def exit_note(code: int) -> str:
    """How a worker ended: 'stopped with exit code 1', 'was killed by SIGKILL'."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            pass
    return f"stopped with exit code {code}"


def run_workers(n: int, sweep_dir: str, procs: List[subprocess.Popen],
                threads_set: bool) -> None:
    """Start n workers (appended to procs) and wait for them all to end. Ctrl-C (or SIGTERM)
    here stops them all: each gets one SIGINT and marks its running trials failed. A worker
    that fails stops the others; raises WorkerFailed naming it."""
    threads = max(1, cores() // n)
    env = dict(os.environ)
    if not threads_set:  # torch takes its thread count from these (threads=N still wins)
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = worker_command(sys.argv, sweep_dir)
    log.info("%d workers on this study, %s each (%d cores here)", n,
             "threads as set" if threads_set else f"{threads} thread(s)", cores())
    # SIGTERM (and SIGINT, even where a shell ignores it for background jobs) stop the workers.
    with stop_signals():
        try:
            for k in range(n):
                # Own session: a Ctrl-C at the terminal reaches this process only, which passes
                # exactly one SIGINT on (a second one could cut a worker's clean-up short).
                procs.append(subprocess.Popen(cmd, env={**env, WORKER_ENV: f"{k + 1}/{n}"},
                                              start_new_session=True, preexec_fn=_in_worker))
            _wait(procs)
        except BaseException:
            _stop(procs)
            raise


def _wait(procs: List[subprocess.Popen]) -> None:
    while True:
        if stop_requested():
            raise KeyboardInterrupt("stop requested")
        codes = [p.poll() for p in procs]
        bad = [(k, c) for k, c in enumerate(codes) if c not in (None, 0)]
        if bad:
            k, code = bad[0]
            raise WorkerFailed(f"worker {k + 1}/{len(procs)} {exit_note(code)} (its messages "
                               "are above); the other workers were stopped too")
        if all(c == 0 for c in codes):
            return
        time.sleep(0.2)


def _stop(procs: List[subprocess.Popen]) -> None:
    running = [p for p in procs if p.poll() is None]
    for p in running:
        p.send_signal(signal.SIGINT)
    deadline = time.monotonic() + STOP_GRACE_S
    for p in running:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("worker pid %d did not stop within %d s: killed", p.pid, STOP_GRACE_S)
            p.kill()
            p.wait()
