"""Optuna's sampler and pruner built from their settings (hydra.sweeper.sampler and .pruner):
the one place their names and settings are known, used by the sweeper and by a trial's job."""

from collections.abc import Mapping

import optuna
from omegaconf import DictConfig, OmegaConf

from tinycnn.errors import ConfigError

SAMPLERS = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
            "nsga2": optuna.samplers.NSGAIISampler}
# The settings each sampler takes from hydra.sweeper.sampler (besides seed).
SAMPLER_SETTINGS = {"tpe": ("n_startup_trials", "multivariate"), "random": (),
                    "nsga2": ("population_size",)}
PRUNERS = {"none": optuna.pruners.NopPruner, "median": optuna.pruners.MedianPruner,
           "hyperband": optuna.pruners.HyperbandPruner,
           "halving": optuna.pruners.SuccessiveHalvingPruner}
# The settings each pruner takes from hydra.sweeper.pruner (the others there are ignored).
PRUNER_SETTINGS = {"none": (),
                   "median": ("n_startup_trials", "n_warmup_steps", "interval_steps",
                              "n_min_trials"),
                   "hyperband": ("min_resource", "max_resource", "reduction_factor"),
                   "halving": ("min_resource", "reduction_factor", "min_early_stopping_rate")}
# What a pruner's step counts: every validation check (train.evals_per_epoch an epoch), or
# epochs (a trial reports at the end of each epoch only: a multi-epoch search's fidelity).
FIDELITIES = ("checks", "epochs")


def make_sampler(spec, seed) -> optuna.samplers.BaseSampler:
    """A sampler from {name: tpe|random|nsga2, <settings>} (hydra.sweeper.sampler), seeded with
    `seed` (None: fresh entropy)."""
    spec = dict(_plain(spec) or {})
    name = str(spec.get("name", "tpe")).lower()
    if name not in SAMPLERS:
        raise ConfigError(f"hydra.sweeper.sampler.name = {name!r}: unknown sampler; use one of "
                          f"{', '.join(SAMPLERS)}")
    kwargs = {k: spec[k] for k in SAMPLER_SETTINGS[name] if k in spec}
    try:
        return SAMPLERS[name](seed=seed, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"hydra.sweeper.sampler = {spec}: the {name} sampler refused its "
                          f"settings: {exc}") from None


def pruner_settings(spec) -> dict:
    """{name, <the settings that pruner takes>} out of hydra.sweeper.pruner, checked."""
    spec = dict(_plain(spec) or {})
    name = str(spec.pop("name", "none")).lower()
    if name not in PRUNERS:
        raise ConfigError(f"hydra.sweeper.pruner.name = {name!r}: unknown pruner; use one of "
                          f"{', '.join(PRUNERS)}")
    fidelity = str(spec.pop("fidelity", "checks")).lower()
    if fidelity not in FIDELITIES:
        raise ConfigError(f"hydra.sweeper.pruner.fidelity = {fidelity!r}: expected one of "
                          f"{', '.join(FIDELITIES)}")
    known = {k for keys in PRUNER_SETTINGS.values() for k in keys}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise ConfigError(f"hydra.sweeper.pruner.{unknown[0]}: not a pruner setting; the "
                          f"settings are {', '.join(sorted(known))}")
    return {"name": name, "fidelity": fidelity,
            **{k: spec[k] for k in PRUNER_SETTINGS[name] if k in spec}}


def make_pruner(spec) -> optuna.pruners.BasePruner:
    """A pruner from {name: none|median|hyperband, <settings>} (hydra.sweeper.pruner), e.g.
    {name: median, n_startup_trials: 5, n_warmup_steps: 0}. Steps are validation checks (train.evals_per_epoch per epoch)."""
    kwargs = pruner_settings(spec)
    name = kwargs.pop("name")
    kwargs.pop("fidelity")
    try:
        return PRUNERS[name](**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"hydra.sweeper.pruner = {_plain(spec)}: the {name} pruner refused "
                          f"its settings: {exc}") from None


def _plain(cfg):
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return dict(cfg) if isinstance(cfg, Mapping) else cfg
