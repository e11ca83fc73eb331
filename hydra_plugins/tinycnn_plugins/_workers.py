"""hydra.sweeper.n_workers=N: N copies of the sweep command work on one study at once.

Each worker is the same `python run.py -m ...` command with n_workers=1, so it is exactly an
independent worker (README, "Several processes, several machines"): it asks the study for a
trial, trains it in its own process, tells the study, and asks again the moment it is done. The
study in its storage is the only coordinator; nothing here hands out trials, so there is no
batch barrier and the same command on several machines against PostgreSQL still just adds
workers. This process only starts the workers (tinycnn.pool), gives each its share of the cores,
stops them all at Ctrl-C or when one fails, and replaces one that dies: its trial is failed and
its configuration enqueued again, the other workers' trials untouched.
"""

import copy
import datetime
import logging
import os
import socket
import sys
from typing import List

from tinycnn.pool import Child, Pool, exit_note
from tinycnn.stops import stop_signals
from tinycnn.threads import AUTO, cores

log = logging.getLogger(__name__)

WORKER_ENV = "TINYCNN_WORKER"   # "k/N" in a worker started here
# Dead workers (kill -9, the OOM killer, a segfault) replaced by new ones in one sweep; after
# that the sweep goes on with the workers it has left.
RESTARTS = 3


class WorkerFailed(Exception):
    pass


def worker_id(pid: int | None = None) -> str:
    """"host:pid": which process holds a trial (its user attr `worker`), so a pool can close the
    trials of a worker that died without closing them itself."""
    return f"{socket.gethostname()}:{os.getpid() if pid is None else pid}"


def worker_tag() -> str:
    """'[worker k/N] ' inside a worker started by run_pool, else ''."""
    tag = os.environ.get(WORKER_ENV)
    return f"[worker {tag}] " if tag else ""


def worker_command(argv: List[str], sweep_dir: str) -> List[str]:
    """This command as one worker runs it: n_workers=1 and the sweep folder this process
    resolved (its ${now:...} would otherwise differ per worker)."""
    own = ("hydra.sweeper.n_workers=", "hydra.sweep.dir=")
    kept = [a for a in argv[1:] if not a.lstrip("+~").startswith(own)]
    return [sys.executable, argv[0], *kept, "hydra.sweeper.n_workers=1",
            f"hydra.sweep.dir={sweep_dir}"]


def run_pool(sweep, study) -> list:
    """The sweep's hook for n_workers > 1: start the workers on `study`, wait for them, fail the
    trials that a dead worker left RUNNING, and write the study's summary (the workers leave it
    to this process)."""
    from omegaconf import OmegaConf
    from optuna.trial import TrialState

    from ._errors import SweepError
    from ._trials import WORKER_ATTR, state
    start = datetime.datetime.now()
    n = sweep.s.n_workers
    threads_set = OmegaConf.select(sweep.config, "threads") not in (None, AUTO)
    pool = Pool(threads=None if threads_set else max(1, cores() // n))
    try:
        run_workers(sweep, study, pool, threads_set)
        stopped = None
    except (WorkerFailed, KeyboardInterrupt) as exc:
        stopped = exc
    close_orphans(sweep, study, pool.children, say=True)
    for t in study.get_trials(deepcopy=False):  # "this run" in the summary: the workers' trials
        if t.datetime_start and t.datetime_start >= start and t.state.is_finished():
            sweep.counts[state(t)] += 1
            sweep.counts["duplicate"] += "duplicate_of" in t.user_attrs
    sweep.summary(study)
    if isinstance(stopped, KeyboardInterrupt):
        # The same one line and exit 130 as one worker's sweep (tinycnn_sweeper), naming the
        # trials the workers recorded failed; the workers themselves say nothing on stderr.
        ours = {worker_id(c.pid) for c in pool.children}
        sweep.interrupted += [t.number for t in study.get_trials(deepcopy=False,
                                                                  states=(TrialState.FAIL,))
                              if t.user_attrs.get(WORKER_ATTR) in ours
                              and str(t.user_attrs.get("reason", "")).startswith("interrupted")]
        raise stopped
    if stopped is not None:
        raise SweepError(str(stopped)) from None
    return []


def run_workers(sweep, study, pool: Pool, threads_set: bool) -> None:
    """Start n_workers workers in `pool` and wait for them all to end. Ctrl-C (or SIGTERM) here
    stops them all: each gets one SIGINT and marks its running trials failed. A worker that
    fails stops the others (raises WorkerFailed naming it); one that dies is replaced."""
    n = sweep.s.n_workers
    cmd = worker_command(sys.argv, str(sweep.sweep_dir))
    log.info("%d workers on this study, %s each (%d cores here)", n,
             "threads as set" if threads_set else f"{max(1, cores() // n)} thread(s)", cores())
    restarts = 0
    # SIGTERM (and SIGINT, even where a shell ignores it for background jobs) stop the workers.
    with stop_signals():
        try:
            for k in range(n):
                pool.start(cmd, f"worker {k + 1}/{n}", env={WORKER_ENV: f"{k + 1}/{n}"})
            while pool.running():
                for c in pool.wait():
                    if c.code > 0:
                        raise WorkerFailed(f"{c.name} {exit_note(c.code)} (its messages are "
                                           "above); the other workers were stopped too")
                    if c.code < 0:  # died: nothing it held was closed
                        restarts += _replace(sweep, study, pool, c, cmd, restarts)
        except BaseException:
            pool.stop()
            raise


def _replace(sweep, study, pool: Pool, dead: Child, cmd: List[str], restarts: int) -> int:
    """A worker died: fail its trials now (their configurations enqueued again), start a new
    worker in its place unless RESTARTS were used up or the study needs no more, and say so in
    one line. Returns the restarts used (0 or 1)."""
    from ._trials import study_full
    closed = close_orphans(sweep, study, [dead])
    numbers = ", ".join(str(n) for n, _ in closed)
    what = (f"{'trials' if len(closed) > 1 else 'trial'} {numbers} marked failed: its worker "
            f"(pid {dead.pid}) {exit_note(dead.code)} while the trial ran" if closed else
            f"{dead.name} (pid {dead.pid}) {exit_note(dead.code)} between trials")
    if any(retried for _, retried in closed):
        what += "; its configuration is enqueued again"
    if study_full(study, sweep.s.n_trials):
        log.warning("%s", what)
        return 0
    if restarts >= RESTARTS:
        log.warning("%s; not replaced (%d dead workers replaced already): the sweep goes on "
                    "with %d worker(s)", what, RESTARTS, len(pool.running()))
        return 0
    pool.start(cmd, dead.name, env={WORKER_ENV: dead.name.split()[-1]})
    log.warning("%s; a new worker takes its place (%d of %d replacements)", what,
                restarts + 1, RESTARTS)
    return 1


def close_orphans(sweep, study, ended: List[Child], say: bool = False) -> List[tuple]:
    """Trials still RUNNING under the `worker` id of an ended worker were left by one that died
    (kill -9, the kernel's OOM killer, a crash) or was killed after the pool's stop grace. No
    process will close them, so they are marked failed here, at once, rather than after a
    heartbeat's grace period (or, in a journal storage, never). Each one's configuration is
    enqueued again as Optuna's RetryHeartbeatStaleTrialCallback does for a stale trial (up to
    max_retry times), else a baseline is enqueued again, as after a Ctrl-C. Returns (number,
    enqueued again) for each; say: a line for each too."""
    from optuna.trial import TrialState

    from tinycnn.heartbeat import retry_callback

    from ._trials import WORKER_ATTR, fail_orphan
    by_id = {worker_id(c.pid): c for c in ended if c.popen.poll() is not None}
    orphans = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
               if t.user_attrs.get(WORKER_ATTR) in by_id]
    retry = retry_callback(sweep.s.max_retry)
    closed = []
    for t in orphans:
        c = by_id[t.user_attrs[WORKER_ATTR]]
        reason = f"its worker (pid {c.pid}) {exit_note(c.popen.returncode)} while the trial ran"
        failed = fail_orphan(study, sweep.storage, t.number, reason)
        retried = sweep.s.max_retry > len(t.system_attrs.get("retry_history", []))
        if retried:
            failed = copy.deepcopy(failed)  # the retry starts afresh
            for key in ("state", "reason", WORKER_ATTR):
                failed.user_attrs.pop(key, None)
            retry(study, failed)
        elif t.user_attrs.get("baseline"):  # the comparison every sweep reports is still made
            study.enqueue_trial(dict(t.params), user_attrs={"baseline": True})
        if say:
            log.warning("trial %d marked failed: %s%s", t.number, reason,
                        "; its configuration is enqueued again" if retried else "")
        closed.append((t.number, retried))
    return closed
