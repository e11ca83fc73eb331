"""Shared test setup: the real config composed by Hydra, shrunk to a small MNIST subset."""

import os
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

REPO = Path(__file__).resolve().parent.parent
# Tests read MNIST from TINYCNN_DATA (CI points it at a local copy) or ./data, downloading if absent.
SMALL = ["data.limit=512", "data.val_size=256", "data.test_limit=500", "train.evals_per_epoch=2",
         "train.batch_size=64"]


def compose_cfg(*overrides: str, small: bool = True):
    """conf/config.yaml composed as run.py would, with `overrides` (small data unless small=False)."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=[*(SMALL if small else []), *overrides])


def run_py(*args: str, cwd=REPO, env=None, timeout=600):
    """Run `python run.py ARGS` in a real subprocess; returns CompletedProcess (text)."""
    import subprocess
    return subprocess.run([sys.executable, str(REPO / "run.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def mnist_root() -> str:
    return os.environ.get("TINYCNN_DATA", str(REPO / "data"))
