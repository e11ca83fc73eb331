"""Sweep speed on this machine: `python -m tinycnn.bench_sweep` (see --help).

Everything is measured through real `python run.py -m sweeps=paper25k ...` runs on throwaway
SQLite studies in a temporary folder:

1. Infeasible trials: with max_params=1000 every network of the space is over budget, so none is
   trained. Cost per trial = Optuna's ask -> tell (TPE sampling, the trial's config, building the
   model, writing its record and the study).
2. Trained trials per hour of paper25k on the data as configured (default: all 55,000 training
   images, 1 epoch), with and without pruning, on the same networks: W + T networks of the space
   that fit the budget are drawn at random (seeded). A study trains the first W without pruning
   (the warm-up) and is copied twice; one copy trains the other T without pruning, the other the
   same T with paper25k's median pruner, which compares them with the warm-up's curves as it
   would in a long sweep. Rate = T / (last tell - first ask of those T trials) * 3600; the
   process start-up (~5-10 s, once per sweep) is left out. Infeasible trials, which cost only
   item 1 each, are not part of this rate; random draws of paper25k are about half infeasible,
   and TPE learns to propose fewer.
"""

import argparse
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

REPO = Path(__file__).resolve().parent.parent


def sweep(folder: Path, *args: str) -> float:
    """Run one paper25k sweep with its study in folder/optuna.db; returns the wall seconds."""
    cmd = [sys.executable, str(REPO / "run.py"), "-m", "sweeps=paper25k",
           f"hydra.sweeper.storage=sqlite:///{folder}/optuna.db",
           f"hydra.sweep.dir={folder}/runs/{time.time_ns()}", *args]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if p.returncode:
        sys.exit(f"bench_sweep: the sweep failed:\n{' '.join(cmd)}\n{p.stdout[-3000:]}"
                 f"{p.stderr[-3000:]}")
    return time.perf_counter() - t0


def trials(folder: Path, first: int = 0) -> list:
    study = optuna.load_study(study_name="paper25k", storage=f"sqlite:///{folder}/optuna.db")
    return [t for t in study.trials if t.number >= first and t.datetime_complete]


def copy_study(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True)
    with sqlite3.connect(src / "optuna.db") as a, sqlite3.connect(dst / "optuna.db") as b:
        a.backup(b)  # includes what is still in the write-ahead log


def rate(ts: list) -> dict:
    start = min(t.datetime_start for t in ts)
    end = max(t.datetime_complete for t in ts)
    hours = (end - start).total_seconds() / 3600
    states = [t.user_attrs.get("state") for t in ts]
    return {"n": len(ts), "per_hour": len(ts) / hours, "complete": states.count("complete"),
            "pruned": states.count("pruned"),
            "mean_s": statistics.mean((t.datetime_complete - t.datetime_start).total_seconds()
                                      for t in ts)}


def feasible_networks(n: int, seed: int, overrides: list) -> list:
    """n random points of sweeps/paper25k.yaml whose network fits its budget (Optuna params)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from hydra_plugins.tinycnn_plugins._search_space import parse_space
    from tinycnn.errors import ConfigError
    from tinycnn.model import count_params

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["sweeps=paper25k", *overrides],
                      return_hydra_config=True)
    dims, _, _ = parse_space(OmegaConf.to_container(cfg.hydra.sweeper.params), [])
    budget = cfg.hydra.sweeper.max_params
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    found = []
    while len(found) < n:
        trial = study.ask({d.name: d.distribution for d in dims.values()})
        model_cfg = OmegaConf.create(OmegaConf.to_container(cfg.model))
        for d in dims.values():
            if d.name.startswith("model."):
                OmegaConf.update(model_cfg, d.name[len("model."):], trial.params[d.name])
        try:
            if count_params(model_cfg)[0] <= budget:
                found.append(dict(trial.params))
        except ConfigError:
            pass
        study.tell(trial, 0.0)
    return found


def enqueue(folder: Path, networks: list) -> None:
    study = optuna.create_study(storage=f"sqlite:///{folder}/optuna.db", study_name="paper25k",
                                direction="maximize", load_if_exists=True)
    for params in networks:
        study.enqueue_trial(params)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m tinycnn.bench_sweep", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--infeasible", type=int, default=40,
                    help="number of infeasible trials to time (default 40)")
    ap.add_argument("--warmup", type=int, default=3,
                    help="networks trained first, for the pruner to compare with (default 3)")
    ap.add_argument("--trials", type=int, default=4,
                    help="networks timed with and without pruning after the warm-up (default 4)")
    ap.add_argument("--seed", type=int, default=0, help="seed for drawing the networks")
    ap.add_argument("--skip-training", action="store_true",
                    help="only time infeasible trials (seconds instead of minutes)")
    ap.add_argument("overrides", nargs="*",
                    help="extra overrides for every sweep, e.g. data.limit=5000 for a quick look")
    a = ap.parse_args(argv)
    os.environ.setdefault("TINYCNN_DATA", str(REPO / "data"))
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, optuna {optuna.__version__}; load average "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}")

    with tempfile.TemporaryDirectory(prefix="tinycnn-bench-") as tmp:
        tmp = Path(tmp)
        wall = sweep(tmp / "infeasible", f"hydra.sweeper.n_trials={a.infeasible}",
                     "hydra.sweeper.max_params=1000", *a.overrides)
        ts = trials(tmp / "infeasible")
        each = [(t.datetime_complete - t.datetime_start).total_seconds() for t in ts]
        span = (max(t.datetime_complete for t in ts) - min(t.datetime_start for t in ts))
        print(f"infeasible trial (paper25k, max_params=1000, {len(ts)} trials): ask->tell "
              f"median {statistics.median(each):.3f} s, max {max(each):.3f} s; "
              f"{span.total_seconds() / len(ts):.3f} s per trial from the first ask to the last "
              f"tell; whole command {wall:.1f} s including start-up")
        if a.skip_training:
            return

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        networks = feasible_networks(a.warmup + a.trials, a.seed, a.overrides)
        warm = tmp / "warm"
        warm.mkdir()
        enqueue(warm, networks[:a.warmup])
        wall = sweep(warm, f"hydra.sweeper.n_trials={a.warmup}", "hydra.sweeper.pruner.name=none",
                     *a.overrides)
        print(f"warm-up: {a.warmup} networks trained without pruning in {wall:.0f} s")
        total = a.warmup + a.trials
        for name, args in (("no pruning", ["hydra.sweeper.pruner.name=none"]),
                           ("median pruner", ["hydra.sweeper.pruner.name=median",
                                              "hydra.sweeper.pruner.n_startup_trials=0",
                                              f"hydra.sweeper.pruner.n_min_trials={a.warmup}"])):
            folder = tmp / name.replace(" ", "_")
            copy_study(warm, folder)
            enqueue(folder, networks[a.warmup:])
            sweep(folder, f"hydra.sweeper.n_trials={total}", *args, *a.overrides)
            r = rate(trials(folder, first=a.warmup))
            print(f"paper25k, {name:<13}: {r['n']} networks ({r['complete']} complete, "
                  f"{r['pruned']} pruned) -> {r['per_hour']:.0f} trained trials/hour, "
                  f"{r['mean_s']:.1f} s each")

if __name__ == "__main__":
    main()
