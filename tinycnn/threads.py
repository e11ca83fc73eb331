"""How many CPU threads torch uses in a run: the `threads` setting's one rule.

torch's own default is one thread per core, and its OpenMP threads spin while they wait: with one
other busy process on a 2-core machine, a 2-thread training runs 4-6x slower than a 1-thread one.
`threads: auto` (the default) therefore counts the cores that are idle when the run starts and
takes one thread per idle core (at least one). `docs/benchmarks.md` has the measurements
(`python -m tinycnn.bench --threads`).
"""

import os
import time

from tinycnn.checks import fail

AUTO = "auto"
SAMPLE_S = 0.2  # how long /proc/stat is watched to count busy cores: long enough for a
                # scheduler tick (4 ms) to be noise, short next to any training


def cores() -> int:
    """The cores this process may run on (taskset, cgroup cpusets), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def check(value) -> None:
    """`threads` is auto, null (torch's default: one per core) or a whole number >= 1."""
    if value is None or value == AUTO:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        fail("threads", value, "expected auto (one per idle core), a whole number of CPU "
             "threads >= 1, or null (torch's default: one per core)")


def _cpu_times() -> tuple[int, int] | None:
    """(idle, total) jiffies of all cores from /proc/stat's first line; None where there is none."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return idle, sum(fields[:8])  # user..steal; guest time is already counted in user


def busy_cores(sample_s: float = SAMPLE_S) -> float:
    """How many cores other processes keep busy now: /proc/stat over sample_s (this process is
    asleep meanwhile), else the 1-minute load average, else 0."""
    before = _cpu_times()
    if before is not None:
        time.sleep(sample_s)
        after = _cpu_times()
        total = after[1] - before[1]
        if total > 0:
            n = os.cpu_count() or 1  # /proc/stat counts every core of the machine
            return n * (1 - (after[0] - before[0]) / total)
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


_auto: list = []  # this process's auto count, measured once: a sweep's trials all get the same


def resolve(value) -> tuple[int | None, str]:
    """(threads to set, or None to leave torch's default; how that was decided, for the log).
    auto honours OMP_NUM_THREADS when it is set (a sweep's pool sets it for its workers), and
    is counted once per process."""
    check(value)
    if value is None:
        return None, "torch's default, one per core"
    if value != AUTO:
        return int(value), "as set"
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env), "auto: OMP_NUM_THREADS"
    if not _auto:
        n = cores()
        idle = min(n, max(0.0, (os.cpu_count() or n) - busy_cores()))
        _auto.append((max(1, round(idle)), f"auto: {idle:.1f} of {n} cores idle"))
    return _auto[0]


def apply(value) -> str:
    """Set torch's thread count by the rule above; returns a line for the run's log."""
    import torch
    n, how = resolve(value)
    if n is not None:
        torch.set_num_threads(n)
    return f"threads: {torch.get_num_threads()} ({how})"
