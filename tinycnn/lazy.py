"""torch, imported only when a process is about to use it (`--cfg job`, `--help`, `tinycnn
compare` and a sweep's pool start without it), and imported safely."""

import signal
import sys
import threading

STOPS = (signal.SIGINT, signal.SIGTERM)


def import_torch():
    """`import torch`, with Ctrl-C and SIGTERM held until it is done, then delivered to their
    handlers in place. torch's import runs Python called from C++ (pybind11), where a
    KeyboardInterrupt cannot unwind: a stop landing there aborts the process ("terminate called
    after throwing an instance of 'pybind11::error_already_set'", SIGABRT), whatever it was
    doing left unrecorded. (Only the main thread can set handlers; elsewhere, a plain import.)"""
    if "torch" in sys.modules or threading.current_thread() is not threading.main_thread():
        import torch
        return torch
    held = []
    previous = {s: signal.signal(s, lambda signum, frame: held.append(signum)) for s in STOPS}
    try:
        import torch
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for s in dict.fromkeys(held):
            signal.raise_signal(s)
    return torch


def load_runner():
    """tinycnn.runner.run, torch imported as above."""
    import_torch()
    from tinycnn.runner import run
    return run
