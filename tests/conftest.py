"""Shared test setup: the real config composed by Hydra, shrunk to a small MNIST subset, and real
subprocesses that each use one thread.

One thread per process: tests run next to each other and next to other work, and with torch's
default (one thread per core) a busy core makes OpenMP spin: a 1-second training takes 15 s.
"""

import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
from hydra import compose, initialize_config_dir

REPO = Path(__file__).resolve().parent.parent
# Tests read MNIST from TINYCNN_DATA (CI points it at a local copy) or ./data, downloading if absent.
SMALL = ["data.limit=512", "data.val_size=256", "data.test_limit=500", "train.evals_per_epoch=2",
         "train.batch_size=64"]


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """In-process training (tinycnn.runner.run in a test) uses one thread too."""
    torch.set_num_threads(1)


def sub_env(**extra: str) -> dict:
    """The environment for a test's subprocess: one thread, this checkout importable, MNIST from
    TINYCNN_DATA (or ./data), Hydra's short error messages."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])))
    env.setdefault("TINYCNN_DATA", str(REPO / "data"))
    env.update(extra)
    return env


STOP_IN_TORCH = """import os, signal, sys
class StopInTorch:  # Ctrl-C in the middle of `import torch`, where torch.distributed comes in
    def find_spec(self, name, path=None, target=None):
        if name == "torch.distributed":
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
sys.meta_path.insert(0, StopInTorch())
"""


def stop_in_torch_env(tmp_path) -> dict:
    """sub_env() plus a sitecustomize.py on the path that sends each process SIGINT once, in the
    middle of `import torch` (as torch.distributed comes in: a point in Python, so the stop
    raises rather than aborts, and shows whether it was held until the import was done)."""
    hook = tmp_path / "stop_in_torch"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(STOP_IN_TORCH)
    env = sub_env()
    env["PYTHONPATH"] = os.pathsep.join([str(hook), env["PYTHONPATH"]])
    return env


def compose_cfg(*overrides: str, small: bool = True):
    """conf/config.yaml composed as run.py would, with `overrides` (small data unless small=False)."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=[*(SMALL if small else []), *overrides])


def run_cmd(cmd, cwd=REPO, env=None, timeout=600) -> subprocess.CompletedProcess:
    """Run cmd to the end in a real subprocess (sub_env unless env); .output = stdout + stderr."""
    p = subprocess.run(cmd, cwd=cwd, env=env or sub_env(), capture_output=True, text=True,
                       timeout=timeout)
    p.output = p.stdout + p.stderr
    return p


def run_py(*args: str, cwd=REPO, env=None, timeout=600) -> subprocess.CompletedProcess:
    """`python run.py ARGS` in a real subprocess (text output)."""
    return run_cmd([sys.executable, str(REPO / "run.py"), *args], cwd=cwd, env=env,
                   timeout=timeout)


def sweep_cmd(tmp_path, *args: str, out: str = "run") -> list:
    """`python run.py -m` on small data with its study in tmp_path/optuna.db and its folders in
    tmp_path/OUT; one worker (a reproducible order of trials) unless args set n_workers (the
    later override wins)."""
    return [sys.executable, str(REPO / "run.py"), "-m", *SMALL, "hydra.sweeper.n_workers=1",
            f"hydra.sweeper.storage=sqlite:///{tmp_path}/optuna.db",
            f"hydra.sweep.dir={tmp_path}/{out}", *args]


@pytest.fixture(scope="session")
def mnist_root() -> str:
    return os.environ.get("TINYCNN_DATA", str(REPO / "data"))


# --- shared results: trained or swept once per session, read by many tests --------------------
# Read-only: a test that changes one copies it first (shutil.copytree into its tmp_path).
SHARED = ("small_grid", "small_sweep")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items):
    """pytest -n 2 (pytest-xdist) gives each worker its own session: the tests that read a shared
    grid or sweep go to one worker (--dist loadgroup), so each is made once."""
    for item in items:
        if any(name in SHARED for name in getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.xdist_group("shared_sweeps"))


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, one_thread) -> Path:
    """A finished run folder (config.yaml, metrics.json, model.pt) of `compose_cfg()`: the paper's
    network and recipe on the SMALL data, seed 0, trained in-process."""
    from tinycnn.runner import run
    folder = tmp_path_factory.mktemp("trained_run")
    run(compose_cfg(), folder)
    return folder


# The shared grid and search train on fewer images still (the grid: one check per epoch).
TINY = ["data.limit=256", "data.val_size=256", "data.test_limit=500", "train.evals_per_epoch=1"]


@pytest.fixture(scope="session")
def small_grid(tmp_path_factory) -> Path:
    """A real Hydra multirun (`python run.py -m`, the basic sweeper) on TINY data: seeds 0, 1 x
    train.lr 0.002 (the paper's), 0.004 -> job folders 0..3 = (0, 0.002), (0, 0.004), (1, 0.002),
    (1, 0.004), in outputs/multirun/2030-01-01/12-00-00 under a folder of its own."""
    root = tmp_path_factory.mktemp("grid")
    out = root / "multirun" / "2030-01-01" / "12-00-00"
    p = run_py("-m", *TINY, "seed=0,1", "train.lr=0.002,0.004", f"hydra.sweep.dir={out}",
               cwd=root)
    assert p.returncode == 0, p.output[-4000:]
    assert sorted(x.name for x in out.iterdir() if x.is_dir()) == ["0", "1", "2", "3"]
    return out


class Sweep(NamedTuple):
    folder: Path  # .../sweep: trial_0 ... trial_4 and optimization_results.yaml
    url: str      # the SQLite storage holding the study
    study: str
    args: list    # run.py's arguments after -m, storage and folder aside: repeat it with these
    output: str   # what the sweep printed (stdout + stderr)


@pytest.fixture(scope="session")
def small_sweep(tmp_path_factory) -> Sweep:
    """A finished Optuna search through the tinycnn_optuna sweeper (sweeps/paper25k, one worker,
    no pruning) of 5 trials on TINY data, with the recipe's own checks per epoch (a winner
    exported with the paper's recipe then repeats its run exactly): trial 0 is the paper's
    network; over-budget proposals are recorded infeasible, never trained (with sampler seed 0:
    trials 0, 3, 4 trained, 1, 2 infeasible)."""
    root = tmp_path_factory.mktemp("small_sweep")
    url = f"sqlite:///{root / 'optuna.db'}"
    args = ["sweeps=paper25k", *TINY[:3], "hydra.sweeper.n_trials=5",
            "hydra.sweeper.n_workers=1", "hydra.sweeper.pruner.name=none",
            "hydra.sweeper.study_name=small"]
    p = run_py("-m", *args, f"hydra.sweeper.storage={url}", f"hydra.sweep.dir={root / 'sweep'}",
               cwd=root)
    assert p.returncode == 0, p.output[-4000:]
    return Sweep(root / "sweep", url, "small", args, p.output)
