"""The `threads` rule (tinycnn/threads.py): auto counts the cores other processes keep busy."""

import subprocess
import sys
import time

import pytest

from tinycnn import threads
from tinycnn.errors import ConfigError


@pytest.fixture
def fresh_auto(monkeypatch):
    """auto measured anew (it is counted once per process), without the tests' OMP_NUM_THREADS."""
    monkeypatch.setattr(threads, "_auto", [])
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


def test_a_busy_core_is_counted_and_auto_leaves_it_alone(fresh_auto):
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)  # running before the count starts
        assert threads.busy_cores() >= 0.8
        n, how = threads.resolve("auto")
    finally:
        busy.kill()
        busy.wait()
    assert 1 <= n <= max(1, threads.cores() - 1) and how.startswith("auto: ")
    assert f"of {threads.cores()} cores idle" in how


def test_auto_is_counted_once_per_process(fresh_auto):
    first = threads.resolve("auto")
    assert threads.resolve("auto") == first


def test_auto_takes_omp_num_threads_when_set(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.resolve("auto") == (3, "auto: OMP_NUM_THREADS")


def test_explicit_and_torch_default_settings():
    assert threads.resolve(2) == (2, "as set")
    assert threads.resolve(None) == (None, "torch's default, one per core")


@pytest.mark.parametrize("bad", [0, -1, 1.5, "two", True])
def test_a_bad_setting_is_one_line_naming_it(bad):
    with pytest.raises(ConfigError, match=r"^threads = .*: expected auto \(one per idle core\)"):
        threads.check(bad)


def test_a_run_records_the_threads_it_used(tmp_path):
    import json

    from conftest import SMALL, run_py
    p = run_py("model=paper", *SMALL, "threads=1", f"hydra.run.dir={tmp_path}/run")
    assert p.returncode == 0, p.output
    assert p.stdout.startswith("threads: 1 (as set)\n")
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["worker"]["threads"] == 1
    # a bad value is one line before anything loads: tests/test_faults.py (threads=abc, -1)
