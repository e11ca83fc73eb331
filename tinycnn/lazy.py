"""torch, imported only when a process is about to use it (`--cfg job`, `--help`, `tinycnn
compare` and a sweep's pool start without it), and imported safely."""

import sys

from tinycnn.stops import held


def import_torch():
    """`import torch`, with Ctrl-C and SIGTERM held until it is done, then delivered to their
    handlers in place. torch's import runs Python called from C++ (pybind11), where a
    KeyboardInterrupt cannot unwind: a stop landing there aborts the process ("terminate called
    after throwing an instance of 'pybind11::error_already_set'", SIGABRT), whatever it was
    doing left unrecorded."""
    if "torch" not in sys.modules:
        with held():
            import torch  # noqa: F401
    return sys.modules["torch"]


def load_runner():
    """tinycnn.runner.run, torch imported as above."""
    import_torch()
    from tinycnn.runner import run
    return run
