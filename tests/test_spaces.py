"""Every shipped search space composes, has its baseline as trial 0, and its proposals build."""

import optuna
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import REPO
from hydra_plugins.tinycnn_plugins._search_space import parse_space
from tinycnn.errors import ConfigError
from tinycnn.model import count_params
from tinycnn.train import check_train_cfg

SPACES = sorted(p.stem for p in (REPO / "sweeps").glob("*.yaml"))
BASELINES = {"paper25k": 21_614, "wide25k": 21_614, "stack25k": 23_850, "stack5k": 4_390,
             "refine25k": 20_362, "refine5k": 4_442, "mcu": 2_498, "mnist1k": 978}


def composed(space: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=[f"sweeps={space}"], return_hydra_config=True)


def test_the_spaces_shipped():
    assert {"paper25k", "stack25k", "stack5k"} <= set(SPACES)


@pytest.mark.parametrize("space", SPACES)
def test_space_composes_and_its_baseline_is_a_point_of_it(space):
    cfg = composed(space)
    sweeper = cfg.hydra.sweeper
    assert sweeper.study_name == space
    dims, _, _ = parse_space(OmegaConf.to_container(sweeper.params), [])
    outside = [d.name for d in dims.values()
               if not d.contains(OmegaConf.select(cfg, d.name))]
    assert not outside, f"the config's own values are not in the space: {outside}"
    params, _ = count_params(cfg.model)
    assert params == BASELINES[space] and params <= sweeper.max_params
    check_train_cfg(cfg.train)


@pytest.mark.parametrize("space", SPACES)
def test_proposals_build(space):
    """300 random proposals: nearly all must be valid networks and recipes (the over-budget
    ones are fine: the sampler learns the budget line; an invalid one teaches it nothing)."""
    cfg = composed(space)
    dims, _, _ = parse_space(OmegaConf.to_container(cfg.hydra.sweeper.params), [])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    base = OmegaConf.create({k: OmegaConf.to_container(cfg[k], resolve=True)
                             for k in ("model", "train")})
    valid = fits = 0
    n = 300
    for _ in range(n):
        trial = study.ask({d.name: d.distribution for d in dims.values()})
        c = base.copy()
        for name, value in trial.params.items():
            OmegaConf.update(c, name, value, merge=False)
        try:
            params, _ = count_params(c.model)
            check_train_cfg(c.train)
        except ConfigError:
            continue
        valid += 1
        fits += params <= cfg.hydra.sweeper.max_params
    print(f"{space}: {valid / n:.0%} of {n} random proposals build, {fits / n:.0%} within budget")
    assert valid / n >= 0.95
    assert fits > 0
