"""Sweep throughput on this machine, side by side in one invocation: `python -m tinycnn.bench_sweep`.

The same seeded draw of networks from sweeps/paper25k.yaml (all within its budget) is trained
by each way of running a search, on the data as configured (default: all 55,000 training
images, 1 epoch; --limit N for fewer):

  (a) shell loop   `python run.py <the network's overrides>` once per network, one after another
                   (what a user without a sweeper does; no pruning possible)
  (b) 1 worker     `python run.py -m sweeps=paper25k hydra.sweeper.n_workers=1`
  (c) N workers    the same with hydra.sweeper.n_workers=N (--workers, e.g. 2 or 1,2,4,8)

(b) and (c) run with and without paper25k's median pruner. Each sweep starts from a copy of one
warm-up study (--warmup networks trained first without pruning), so the pruner has curves to
compare with as in a long search; the networks are enqueued in the same order everywhere.

Per way: trained trials per hour (complete + pruned, from the command's start, process start-up
included, since a shell loop pays it per network and a sweep once) and the time from the start
to the first trial whose validation accuracy reaches --threshold. Then the overhead of a trial
outside training, split by where it goes (from each trial's metrics.json "timing" and the
study's timestamps). Timed-out ways (--minutes) count the trials finished within the time.
"""

import argparse
import datetime
import json
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

from tinycnn.pool import Pool

REPO = Path(__file__).resolve().parent.parent


def sweep_cmd(folder: Path, *args: str) -> list:
    return [sys.executable, str(REPO / "run.py"), "-m", "sweeps=paper25k",
            f"hydra.sweeper.storage=sqlite:///{folder}/optuna.db", f"hydra.sweep.dir={folder}/runs",
            *args]


def timed(cmd: list, limit_s: float | None, log: Path) -> float:
    """Run cmd (its own process group); SIGINT it after limit_s, as Ctrl-C would. Wall seconds."""
    t0 = time.perf_counter()
    pool = Pool()  # the way tinycnn runs processes side by side, here one at a time
    with open(log, "w") as out:
        child = pool.start(cmd, "bench", handshake=False, cwd=REPO, stdout=out,
                           stderr=subprocess.STDOUT)
        try:
            code = child.popen.wait(timeout=limit_s)
        except subprocess.TimeoutExpired:
            pool.stop()  # one SIGINT, as Ctrl-C would: a sweep closes its running trials
            code = 0
        except KeyboardInterrupt:
            pool.stop()
            raise
    if code:
        sys.exit(f"bench_sweep: this failed (exit {code}):\n{' '.join(cmd)}\n"
                 f"{log.read_text()[-3000:]}")
    return time.perf_counter() - t0


def load_trials(folder: Path, first: int) -> list:
    study = optuna.load_study(study_name="paper25k", storage=f"sqlite:///{folder}/optuna.db")
    return [t for t in study.trials if t.number >= first and t.state.is_finished()
            and t.user_attrs.get("state") in ("complete", "pruned")]


def feasible_networks(n: int, seed: int, overrides: list) -> list:
    """n random points of sweeps/paper25k.yaml whose network fits its budget, as
    (Optuna params, the overrides that train it with run.py)."""
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
                found.append((dict(trial.params),
                              [d.override(trial.params[d.name]) for d in dims.values()]))
        except ConfigError:
            pass
        study.tell(trial, 0.0)
    return found


def enqueue(folder: Path, networks: list) -> None:
    study = optuna.create_study(storage=f"sqlite:///{folder}/optuna.db", study_name="paper25k",
                                direction="maximize", load_if_exists=True)
    for params, _ in networks:
        study.enqueue_trial(params)


def copy_study(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True)
    with sqlite3.connect(src / "optuna.db") as a, sqlite3.connect(dst / "optuna.db") as b:
        a.backup(b)  # includes what is still in the write-ahead log


def shell_loop(folder: Path, networks: list, overrides: list, limit_s, threshold) -> dict:
    """(a): one `python run.py` per network until done or out of time."""
    start, first_hit, done, outside = time.perf_counter(), None, 0, []
    for k, (_, net) in enumerate(networks):
        left = None if limit_s is None else limit_s - (time.perf_counter() - start)
        if left is not None and left <= 0:
            break
        t = time.perf_counter()
        run_dir = folder / f"run_{k}"
        timed([sys.executable, str(REPO / "run.py"), *overrides, *net,
               f"hydra.run.dir={run_dir}"], left, folder / f"run_{k}.log")
        metrics = run_dir / "metrics.json"
        if not metrics.exists():  # stopped by the time limit
            break
        m = json.loads(metrics.read_text())
        done += 1
        outside.append(time.perf_counter() - t - m["seconds"])
        if first_hit is None and (m.get("val_acc") or 0) >= threshold:
            first_hit = time.perf_counter() - start
    wall = time.perf_counter() - start if limit_s is None else limit_s
    return {"n": done, "pruned": 0, "wall": wall, "first_hit": first_hit,
            "outside": statistics.mean(outside) if outside else None}


def sweep_way(folder: Path, warm: Path, networks: list, workers: int, prune: bool,
              overrides: list, limit_s, threshold, warmup: int) -> dict:
    """(b)/(c): a paper25k sweep of `workers` workers over the enqueued networks."""
    copy_study(warm, folder)
    enqueue(folder, networks)
    pruner = (["hydra.sweeper.pruner.name=median", "hydra.sweeper.pruner.n_startup_trials=0",
               f"hydra.sweeper.pruner.n_min_trials={warmup}"] if prune
              else ["hydra.sweeper.pruner.name=none"])
    started = datetime.datetime.now()
    wall = timed(sweep_cmd(folder, f"hydra.sweeper.n_trials={warmup + len(networks)}",
                           f"hydra.sweeper.n_workers={workers}", *pruner, *overrides),
                 limit_s, folder / "sweep.log")
    ts = load_trials(folder, warmup)
    hits = [t.datetime_complete for t in ts if t.user_attrs.get("state") == "complete"
            and (t.user_attrs.get("val_acc") or 0) >= threshold]
    return {"n": len(ts), "pruned": sum(t.user_attrs["state"] == "pruned" for t in ts),
            "wall": wall if limit_s is None else limit_s, "trials": ts,
            "first_hit": (min(hits) - started).total_seconds() if hits else None}


def overhead(r: dict) -> str:
    """Mean seconds per trained trial outside training, by where they go."""
    parts = {"sweeper+Hydra": [], "setup": [], "study": [], "data": [], "evaluate": [],
             "save": []}
    for t in r["trials"]:
        path = Path(t.user_attrs.get("dir", "")) / "metrics.json"
        if t.user_attrs.get("state") != "complete" or not path.exists():
            continue
        m = json.loads(path.read_text())
        timing = m.get("timing", {})
        job = sum(timing.values()) + m["seconds"]
        parts["sweeper+Hydra"].append(
            (t.datetime_complete - t.datetime_start).total_seconds() - job)
        for key, name in (("setup", "setup"), ("report", "study"), ("data", "data"),
                          ("evaluate", "evaluate"), ("save", "save")):
            parts[name].append(timing.get(key, 0.0))
    if not parts["setup"]:
        return "no complete trial to measure"
    mean = {k: statistics.mean(v) for k, v in parts.items()}
    return (f"{sum(mean.values()):.2f} s = " +
            ", ".join(f"{k} {v:.2f}" for k, v in mean.items()))


def infeasible(tmp: Path, n: int, overrides: list) -> None:
    """Cost of a trial that is never trained: with max_params=1000 every network of paper25k
    is over budget. Ask -> tell: TPE sampling, the trial's config, building the model, its
    record and the study writes."""
    folder = tmp / "infeasible"
    folder.mkdir()
    wall = timed(sweep_cmd(folder, f"hydra.sweeper.n_trials={n}", "hydra.sweeper.n_workers=1",
                           "hydra.sweeper.max_params=1000", *overrides), None,
                 tmp / "infeasible.log")
    study = optuna.load_study(study_name="paper25k", storage=f"sqlite:///{folder}/optuna.db")
    each = [(t.datetime_complete - t.datetime_start).total_seconds() for t in study.trials]
    print(f"infeasible trial (paper25k, max_params=1000, {len(each)} trials): ask->tell median "
          f"{statistics.median(each):.3f} s, max {max(each):.3f} s; whole command {wall:.1f} s "
          "including start-up")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m tinycnn.bench_sweep", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--networks", type=int, default=6,
                    help="networks each way trains (default 6; with --minutes, as many as fit)")
    ap.add_argument("--warmup", type=int, default=3,
                    help="networks trained first, for the pruner to compare with (default 3)")
    ap.add_argument("--workers", default="2",
                    help="worker counts for (c), comma-separated, e.g. 1,2,4,8 (default 2)")
    ap.add_argument("--minutes", type=float, default=None,
                    help="run each way this long instead of through a fixed list of networks")
    ap.add_argument("--limit", type=int, default=None,
                    help="train on the first N training images (default: all 55,000)")
    ap.add_argument("--device", default="cpu", help="device for every run (default cpu)")
    ap.add_argument("--threshold", type=float, default=0.97,
                    help="validation accuracy for 'time to first trial above' (default 0.97)")
    ap.add_argument("--seed", type=int, default=0, help="seed for drawing the networks")
    ap.add_argument("--infeasible", type=int, default=0,
                    help="first time N trials that are never trained (over budget; default 0)")
    ap.add_argument("--no-shell", action="store_true", help="skip (a), the shell loop")
    ap.add_argument("--no-pruning", action="store_true", help="skip the runs with the pruner")
    ap.add_argument("overrides", nargs="*", help="extra overrides for every run")
    a = ap.parse_args(argv)
    workers = sorted({1, *(int(w) for w in a.workers.split(","))})  # (b) is always measured
    overrides = [f"device={a.device}", *a.overrides]
    if a.limit:
        overrides.append(f"data.limit={a.limit}")
    limit_s = None if a.minutes is None else 60 * a.minutes
    os.environ.setdefault("TINYCNN_DATA", str(REPO / "data"))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, optuna {optuna.__version__}, device {a.device}; "
          f"load average at start {', '.join(f'{x:.1f}' for x in os.getloadavg())}")

    count = a.networks if limit_s is None else max(a.networks, int(a.minutes * 60))
    networks = feasible_networks(a.warmup + count, a.seed, overrides)
    rows = []
    with tempfile.TemporaryDirectory(prefix="tinycnn-bench-") as tmp:
        tmp = Path(tmp)
        if a.infeasible:
            infeasible(tmp, a.infeasible, overrides)
        warm = tmp / "warm"
        warm.mkdir()
        enqueue(warm, networks[:a.warmup])
        wall = timed(sweep_cmd(warm, f"hydra.sweeper.n_trials={a.warmup}",
                               "hydra.sweeper.pruner.name=none", *overrides), None,
                     tmp / "warm.log")
        print(f"warm-up: {a.warmup} networks trained without pruning in {wall:.0f} s "
              f"(load average now {os.getloadavg()[0]:.1f})")
        todo = networks[a.warmup:]
        if not a.no_shell:
            (tmp / "shell").mkdir()
            rows.append(("(a) shell loop", False, shell_loop(tmp / "shell", todo, overrides,
                                                             limit_s, a.threshold)))
            report(rows[-1])
        for n in workers:
            for prune in (False, True)[:1 if a.no_pruning else 2]:
                name = f"({'b' if n == 1 else 'c'}) {n} worker{'s' * (n > 1)}"
                r = sweep_way(tmp / f"w{n}{'p' * prune}", warm, todo, n, prune, overrides,
                              limit_s, a.threshold, a.warmup)
                rows.append((name, prune, r))
                report(rows[-1])
    summary(rows, a.threshold)


def rate(r: dict) -> float:
    return r["n"] / r["wall"] * 3600


def report(row) -> None:
    name, prune, r = row
    hit = "never" if r["first_hit"] is None else f"{r['first_hit']:.0f} s"
    line = (f"{name:<16} {'pruning' if prune else 'no pruning':<10}: {r['n']} trials "
            f"({r['pruned']} pruned) in {r['wall']:.0f} s -> {rate(r):6.1f} trained trials/hour; "
            f"first above threshold after {hit}")
    if "trials" in r and not prune:
        line += f"\n    per trial outside training: {overhead(r)}"
    elif r.get("outside") is not None:
        line += f"\n    per run outside training (process start-up included): {r['outside']:.2f} s"
    print(line + f"  [load {os.getloadavg()[0]:.1f}]", flush=True)


def summary(rows, threshold) -> None:
    shell = next((r for name, p, r in rows if name.startswith("(a)")), None)
    one = {p: r for name, p, r in rows if name.startswith("(b)")}
    print(f"\nratios (trained trials per hour; first above {threshold:g}):")
    for name, prune, r in rows:
        parts = []
        if shell and rate(shell):
            parts.append(f"vs (a) {rate(r) / rate(shell):.2f}x")
        if prune in one and rate(one[prune]):
            parts.append(f"vs (b) {rate(r) / rate(one[prune]):.2f}x")
        print(f"  {name:<16} {'pruning' if prune else 'no pruning':<10}: {', '.join(parts)}")
    many = [(int(name.split()[1]), r) for name, p, r in rows if name.startswith("(c)") and not p]
    if many and False in one:
        n, top = max(many, key=lambda x: x[0])
        ratio = lambda r: f"{rate(top) / rate(r):.2f}x" if r and rate(r) else "n/a"  # noqa: E731
        print(f"speedup: {n} workers vs 1 worker {ratio(one[False])}, vs shell loop "
              f"{ratio(shell)} (trained trials per hour)")

if __name__ == "__main__":
    main()
