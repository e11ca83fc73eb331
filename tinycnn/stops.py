"""Stopping cleanly: the one way tinycnn handles Ctrl-C (SIGINT) and SIGTERM.

Two tools, used by torch's import (tinycnn.lazy), the sweeper, its worker pool and confirm:

- `stop_signals()`: for a block, the first SIGINT/SIGTERM raises KeyboardInterrupt and sets the
  stop request (`stop_requested()`); a second one is ignored, so it cannot cut short the clean-up
  the first one started (telling the study the running trial failed).
- `held()`: a stop arriving inside the block is delivered when the block ends, never inside it:
  a trial being created and noted as this worker's, or `import torch` (Python called from C++,
  where a KeyboardInterrupt cannot unwind and aborts the process).

Signals are held where Python runs their handler, not with a signal mask: with the mask the
kernel hands the signal to another thread (the heartbeat's), and Python still runs the handler
in the main thread, inside the block. Only the main thread can set handlers; elsewhere both
tools do nothing.
"""

import contextlib
import signal
import sys
import threading

STOPS = (signal.SIGINT, signal.SIGTERM)

# Set by the first stop. Python may swallow the KeyboardInterrupt a signal raises (when it lands
# in a finalizer: "Exception ignored in ..."), so loops also check stop_requested() before they
# start more work.
_stopping = False
_installed = 0               # depth of stop_signals blocks
_held = 0                    # depth of held blocks inside them
_pending: str | None = None  # the stop that arrived inside a held block, raised at its end


def stop_requested() -> bool:
    return _stopping


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _on_signal(signum, frame):
    global _stopping, _pending
    if _stopping:
        return
    _stopping = True
    if _held:
        _pending = signal.Signals(signum).name
        return
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _note_signal(signum, frame):
    """Before a process's stop handling is ready (a pool's worker while Hydra composes its
    config): a stop only sets the request, which the sweep checks before its first trial."""
    global _stopping
    _stopping = True


def note_stops() -> None:
    """From now on a stop only sets stop_requested(), until stop_signals() takes over."""
    if _main_thread() and not _installed:
        for s in STOPS:
            signal.signal(s, _note_signal)


@contextlib.contextmanager
def stop_signals():
    """For the block, SIGINT and SIGTERM stop this process as above; the previous handlers, the
    unraisable hook and a clear request are restored after."""
    global _stopping, _pending, _installed
    if not _main_thread():
        yield
        return
    hook = sys.unraisablehook

    def quiet_swallowed_stop(u):  # the request has it; no "Exception ignored" traceback
        if not (_stopping and isinstance(u.exc_value, KeyboardInterrupt)):
            hook(u)
    sys.unraisablehook = quiet_swallowed_stop
    previous = {s: signal.signal(s, _on_signal) for s in STOPS}
    _installed += 1
    try:  # a stop noted before the block (note_stops) is seen by the loop's stop_requested()
        yield
    finally:
        _installed -= 1
        for s, handler in previous.items():
            signal.signal(s, handler)
        sys.unraisablehook = hook
        _stopping, _pending = False, None


@contextlib.contextmanager
def held():
    """Hold SIGINT and SIGTERM for the block; one that arrived is delivered at its end (inside
    stop_signals as KeyboardInterrupt, elsewhere to the handlers there were before)."""
    global _held, _pending
    if not _main_thread():
        yield
        return
    if _installed:
        _held += 1
        try:
            yield
        finally:
            _held -= 1
        if not _held and _pending:
            name, _pending = _pending, None
            raise KeyboardInterrupt(name)
        return
    arrived: list = []
    previous = {s: signal.signal(s, lambda signum, frame: arrived.append(signum)) for s in STOPS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    for s in dict.fromkeys(arrived):
        signal.raise_signal(s)
