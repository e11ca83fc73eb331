"""The budget check on hostile proposals: `python -m tinycnn.bench_budget` (printed, not a test).

1,000 proposals from a space whose channel widths reach 10^12 and block repeats 10^5 (log-uniform,
Optuna's own distributions and a seeded RandomSampler), each applied to the composed config the
way the sweeper does (sweep overrides on a copy of the master config) and counted by
tinycnn.model.count_params, which works from the config alone and allocates nothing. Target:
each proposal judged infeasible in < 20 ms, peak RSS within 50 MB of the start. The study's
own bookkeeping (SQLite commits) is left out: it is the same for every trial, and bench_sweep
measures it.
"""

import argparse
import copy
import resource
import statistics
import time
from pathlib import Path

import optuna
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from hydra_plugins.tinycnn_plugins._overrides import apply_overrides
from tinycnn.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
WIDTHS = ("initial.layers.0.out", "initial.layers.1.out", "res1.layers.0.out",
          "transition.layers.0.out", "res2.layers.0.out")
REPEATS = ("res1.repeat", "res2.repeat")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m tinycnn.bench_budget", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--proposals", type=int, default=1000)
    from hydra_plugins.tinycnn_plugins.tinycnn_sweeper import TinycnnOptunaConf
    ap.add_argument("--max-params", type=int, default=TinycnnOptunaConf.max_params)
    args = ap.parse_args(argv)
    from tinycnn.model import count_params  # the lead's config-only count

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config")
    base = OmegaConf.create({k: v for k, v in OmegaConf.to_container(cfg).items() if k != "hydra"})
    dists = {**{f"model.blocks.{k}": optuna.distributions.IntDistribution(1, 10**12, log=True)
                for k in WIDTHS},
             **{f"model.blocks.{k}": optuna.distributions.IntDistribution(0, 10**5)
                for k in REPEATS}}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    parser = OverridesParser.create()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    start_rss, times, infeasible = peak_rss_mb(), [], 0
    for _ in range(args.proposals):
        trial = study.ask(dists)
        t0 = time.perf_counter()
        c = copy.deepcopy(base)
        apply_overrides(parser.parse_overrides([f"{k}={v}" for k, v in trial.params.items()]), c)
        try:
            total, _ = count_params(c.model)
            infeasible += total > args.max_params
        except ConfigError:
            infeasible += 1
        times.append(time.perf_counter() - t0)
        study.tell(trial, 0.0)
    times.sort()
    print(f"{args.proposals} proposals (widths up to 10^12, repeats up to 10^5): {infeasible} "
          f"judged infeasible; per proposal median {1000 * statistics.median(times):.2f} ms, "
          f"99th percentile {1000 * times[int(0.99 * len(times))]:.2f} ms, "
          f"max {1000 * times[-1]:.2f} ms (target < 20 ms); peak RSS {peak_rss_mb():.0f} MB, "
          f"{peak_rss_mb() - start_rss:+.0f} MB over the start (target within 50 MB)")


if __name__ == "__main__":
    main()
