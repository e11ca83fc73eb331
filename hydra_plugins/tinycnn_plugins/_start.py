"""Opening a sweep: the password hidden in what Hydra records, the search space read and checked
against the config, the study created or joined in its storage, the baseline enqueued."""

import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, ListConfig, OmegaConf, read_write

from tinycnn.sampling import make_pruner, make_sampler
from tinycnn.checks import shown
from tinycnn.storage import StorageError, mask, open_storage, redact, storage_calls

from ._overrides import apply_overrides
from ._search_space import SpaceError, parse_space
from ._errors import SweepError
from ._identity import IDENTITY, check as check_identity
from ._settings import NAME_LIMIT, OBJECTIVES, Settings

log = logging.getLogger(__name__)

MISSING = object()


@dataclass
class Space:
    dims: Dict[str, Any]          # the searched dimensions, by name
    fixed: List[str]              # overrides every trial gets
    parser: OverridesParser
    base_cfg: Optional[DictConfig]  # the config to apply a trial's values to (fast_compose)

    @property
    def fast_compose(self) -> bool:
        return self.base_cfg is not None


def hide_secret(config: DictConfig, s: Settings) -> None:
    """Mask the storage's password in the config that multirun.yaml and every job's .hydra/
    record (hydra.sweeper.storage, and hydra.overrides.hydra, from which the launcher composes
    each job)."""
    with read_write(config.hydra):
        config.hydra.sweeper.storage = mask(s.storage)
        hydra_overrides = config.hydra.overrides.hydra
        for i, o in enumerate(hydra_overrides):
            hydra_overrides[i] = redact(redact(o, s.storage), s.storage_url)


def read_space(config: DictConfig, s: Settings, arguments: List[str]) -> Space:
    try:
        dims, fixed, fixed_from_params = parse_space(s.params, arguments)
    except SpaceError as exc:
        raise SweepError(str(exc)) from None
    if not dims:
        raise SweepError("nothing to search: hydra.sweeper.params is empty and the command "
                         "line has no sweep (e.g. train.lr=interval(1e-4,1e-2)). Pick a "
                         "space with sweeps=NAME (see sweeps/), or add one.")
    choices = config.hydra.runtime.choices
    for d in dims.values():
        if len(d.name) > NAME_LIMIT:
            raise SweepError(f"{shown(d.key, 60)}: Optuna's storages hold at most {NAME_LIMIT} "
                             "characters in the column trial_params.param_name; a searched key "
                             "must be shorter")
        if d.name == "hydra" or d.name.startswith("hydra."):
            raise SweepError(f"{d.key}={d.spec}: Hydra's own settings cannot be searched")
        if d.key.startswith("+") or d.name in choices:
            continue
        if OmegaConf.select(config, d.name, default=MISSING) is MISSING:
            raise SweepError(f"{d.key}={d.spec}: {d.name!r} is not a key of the config "
                             "(print it with `python run.py --cfg job`); to add a new key, "
                             f"write +{d.name}")
    if OmegaConf.select(config, "data.val_size") == 0:
        raise SweepError("data.val_size = 0: a sweep selects networks by validation "
                         "accuracy, so it needs a validation split held out of the training "
                         "images. Set data.val_size to a positive number (default 5000); "
                         "the test set is never used for selection.")
    # Checking a trial needs only its model config: when the search touches values only
    # (no config group), the trial's overrides are applied to a copy of the composed master
    # config (see _overrides.py), not composed the full Hydra way (~0.3 s a trial).
    parser = OverridesParser.create()
    extra = parser.parse_overrides(fixed_from_params)
    base = None
    if not any(d.name in choices for d in dims.values()) and not any(
            o.key_or_group in choices for o in extra):
        plain = OmegaConf.to_container(config, resolve=False)
        plain.pop("hydra", None)
        base = OmegaConf.create(plain)
        OmegaConf.set_struct(base, True)
        try:
            apply_overrides(extra, base)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise SweepError(f"hydra.sweeper.params: {first}") from None
    return Space(dims, fixed, parser, base)


def open_study(s: Settings, space: Space, ident: dict):
    """The study (created, or joined when it exists), its storage, and whether this process
    created it. A study that holds another sweep's trials is refused (_identity.check)."""
    try:
        storage = open_storage(s.storage_url, s.connect_timeout, s.heartbeat)
    except StorageError as exc:
        raise SweepError(f"hydra.sweeper.storage: {exc}") from None
    pruner = make_pruner(s.pruner)
    try:
        with storage_calls(s.storage_url, f"while study {shown(s.study_name, 60)} was opened"):
            study, created = _create_or_load(s, storage, pruner)
            have = [d.name.lower() for d in study.directions]
            if have != s.directions:
                names = {v: k for k, v in OBJECTIVES.items()}
                raise SweepError(
                    f"study {s.study_name!r} in {s.shown_url} was created for "
                    f"{[names.get(d, d) for d in have]} ({', '.join(have)}); this sweep asks for "
                    f"hydra.sweeper.objectives = {s.objectives}. Use another "
                    "hydra.sweeper.study_name, or the study's objectives.")
            if created:
                study.set_user_attr(IDENTITY, ident)
            else:
                check_identity(study, s, ident, space)
            for key, value in (("search_space", ident["space"]),
                               ("fixed_overrides", space.fixed), ("max_params", s.max_params),
                               ("budgets", s.budgets), ("objectives", s.objectives)):
                study.set_user_attr(key, value)
    except StorageError as exc:
        raise SweepError(str(exc)) from None
    return study, storage, created


def _create_or_load(s: Settings, storage, pruner):
    try:
        # Creating is atomic in the storage: exactly one of several workers started at once
        # creates the study. That one seeds its sampler and enqueues the paper's preset.
        return optuna.create_study(storage=storage, pruner=pruner, study_name=s.study_name,
                                   sampler=make_sampler(s.sampler, s.sampler.get("seed")),
                                   directions=s.directions), True
    except optuna.exceptions.DuplicatedStudyError:
        # Joining a study (a second worker, or a re-run continuing it): draw from fresh
        # entropy, or two workers with one seed would propose the very same networks.
        return optuna.load_study(study_name=s.study_name, storage=storage, pruner=pruner,
                                 sampler=make_sampler(s.sampler, None)), False


def enqueue_baseline(config: DictConfig, space: Space, study: optuna.Study) -> None:
    """The config's own values (for paper25k the paper's network) as the first trial, if the
    space has them."""
    choices = config.hydra.runtime.choices
    params, missing = {}, []
    for d in space.dims.values():
        value = choices[d.name] if d.name in choices else OmegaConf.select(
            config, d.name, default=MISSING)
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
        if value is MISSING or not d.contains(value):
            missing.append(f"{d.name}={'(unset)' if value is MISSING else value!r}")
        else:
            params[d.name] = d.external(value)
    if missing:
        log.info("baseline not enqueued: the config's own value is outside the space for %s",
                 ", ".join(missing))
        return
    study.enqueue_trial(params, user_attrs={"baseline": True}, skip_if_exists=True)
    log.info("baseline: the config's own values are enqueued as the first trial")
