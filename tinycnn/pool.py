"""Trainings side by side, one process each: the sweeper's workers, confirm's runs, bench_sweep's
commands.

Each process is a fresh interpreter started in its own session (a Ctrl-C at the terminal reaches
the parent only, which passes exactly one SIGINT on: a second one could cut a child's clean-up
short), with its share of the threads. On Linux a child also gets SIGINT when the parent dies,
even by kill -9, so no orphan goes on training.

A child says it is ready (`say_ready`, through a pipe) once its own stop handling is in place.
Until then it holds nothing worth closing, and a stop of the pool kills it outright rather than
interrupting it somewhere (say, while Hydra composes its config) where it would print a
traceback. A child that dies (kill -9, the OOM killer, a segfault) is noticed at the next poll.
"""

import importlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tinycnn.stops import stop_requested, stop_signals

log = logging.getLogger(__name__)

READY_ENV = "TINYCNN_READY_FD"  # in a child: the pipe to write one byte to once ready
STOP_GRACE_S = 120              # a stopped child closes what it holds, then exits
POLL_S = 0.2


@dataclass
class Child:
    name: str
    popen: subprocess.Popen
    ready_fd: int
    ready: bool = False
    code: int | None = field(default=None)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll_ready(self) -> bool:
        if not self.ready and self.ready_fd >= 0:
            try:
                got = os.read(self.ready_fd, 1)
            except BlockingIOError:
                return False
            self.ready = got == b"1"
            os.close(self.ready_fd)
            self.ready_fd = -1
        return self.ready


def say_ready() -> None:
    """In a child started by a Pool: its stop handling is in place (see the module's docstring)."""
    fd = os.environ.pop(READY_ENV, None)
    if fd:
        try:
            os.write(int(fd), b"1")
            os.close(int(fd))
        except OSError:
            pass


def call_command(func: str, *args) -> list:
    """The command that runs `func` ("package.module:function") on JSON-able args in a fresh
    interpreter, as a Pool's child: exit 0 when it returns, 130 when it was stopped, 1 when it
    raised (the function records its own failure; confirm's runs write it in metrics.json)."""
    return [sys.executable, "-m", "tinycnn.pool", func, json.dumps(list(args))]


def _call(argv: list) -> int:
    say_ready()  # a stop from here on is Python's KeyboardInterrupt, caught below
    try:
        module, name = argv[0].split(":")
        getattr(importlib.import_module(module), name)(*json.loads(argv[1]))
    except KeyboardInterrupt:
        return 130
    except Exception:
        return 1
    return 0


def exit_note(code: int) -> str:
    """How a child ended: 'stopped with exit code 1', 'was killed by SIGKILL'."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            pass
    return f"stopped with exit code {code}"


def _in_child() -> None:
    """Runs in each child before it starts. SIGINT is what stops a child, so it must not inherit
    an ignored SIGINT (a shell does that to background jobs)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        import ctypes
        ctypes.CDLL(None).prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class Pool:
    """Children started with start(), waited for with wait(), all stopped with stop()."""

    def __init__(self, threads: int | None = None, env: dict | None = None):
        self.env = dict(os.environ if env is None else env)
        if threads is not None:  # torch takes its thread count from these
            self.env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        self.children: list[Child] = []

    def start(self, cmd: list, name: str, env: dict | None = None, handshake: bool = True,
              **popen) -> Child:
        """Start cmd as child `name`. handshake=False: a command that never says it is ready
        (any program); it is taken as ready from the start."""
        if not handshake:
            p = subprocess.Popen(cmd, env={**self.env, **(env or {})}, start_new_session=True,
                                 preexec_fn=_in_child, **popen)
            child = Child(name, p, -1, ready=True)
            self.children.append(child)
            return child
        r, w = os.pipe()
        os.set_blocking(r, False)
        try:
            p = subprocess.Popen(cmd, env={**self.env, **(env or {}), READY_ENV: str(w)},
                                 pass_fds=(w,), start_new_session=True, preexec_fn=_in_child,
                                 **popen)
        finally:
            os.close(w)
        child = Child(name, p, r)
        self.children.append(child)
        return child

    def running(self) -> list[Child]:
        return [c for c in self.children if c.code is None]

    def wait(self) -> list[Child]:
        """Block until at least one running child has ended and return those that did (each
        once, with .code set). A stop request raises KeyboardInterrupt."""
        while True:
            if stop_requested():
                raise KeyboardInterrupt("stop requested")
            ended = []
            for c in self.running():
                c.poll_ready()
                c.code = c.popen.poll()
                if c.code is not None:
                    ended.append(c)
            if ended or not self.running():
                return ended
            time.sleep(POLL_S)

    def run(self, jobs: list, slots: int, on_end: Callable[[Child], None]) -> None:
        """Run jobs [(name, command)], `slots` at a time, calling on_end(child) as each ends
        (on_end may raise to stop them all). Ctrl-C or SIGTERM stops them all and raises
        KeyboardInterrupt."""
        todo = list(jobs)
        with stop_signals():
            try:
                while todo or self.running():
                    while todo and len(self.running()) < slots:
                        name, cmd = todo.pop(0)
                        self.start(cmd, name)
                    for c in self.wait():
                        on_end(c)
            except BaseException:
                self.stop()
                raise

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """One SIGINT to each ready child, then up to grace_s for all to end (killed after);
        a child not yet ready is killed at once (it holds nothing yet)."""
        running = [c for c in self.running() if c.popen.poll() is None]
        for c in running:
            c.popen.send_signal(signal.SIGINT if c.poll_ready() else signal.SIGKILL)
        deadline = time.monotonic() + grace_s
        for c in running:
            try:
                c.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s (pid %d) did not stop within %d s: killed", c.name, c.pid,
                            grace_s)
                c.popen.kill()
                c.popen.wait()
        for c in self.children:
            c.code = c.popen.poll()
            if c.ready_fd >= 0:
                os.close(c.ready_fd)
                c.ready_fd = -1


if __name__ == "__main__":
    sys.exit(_call(sys.argv[1:]))
