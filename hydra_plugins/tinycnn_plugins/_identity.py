"""What a study holds: its search space and the settings that decide what a trial means (the data
set and its size and split, the epochs and every recipe and model key not searched, the budgets,
the objectives, the sweep file). Recorded in the study when it is created; a sweep into it that
differs is refused before any trial is asked, or, with hydra.sweeper.accept_changes=true,
continued and the change recorded. And one sweep folder holds one study."""

import datetime
from pathlib import Path
from typing import Any, Dict, List

from omegaconf import DictConfig, OmegaConf
from optuna.distributions import CategoricalDistribution

from tinycnn.checks import shown
from tinycnn.record import sweep_study, sweeper_record
from tinycnn.storage import mask, storage_url

from ._errors import SweepError

IDENTITY, CHANGES = "identity", "changes"  # the study's user attributes
# Where the run happens, not what it means: never compared.
NOT_COMPARED = ("data.root",)
SHOWN_DIFFERENCES = 4


def identity(config: DictConfig, s, space) -> Dict[str, Any]:
    """The study's identity for this sweep: {space, fixed, budgets, objectives, sweep_file}; the
    fixed settings are the composed config's data, model and train keys (command-line overrides
    included), less the searched ones."""
    plain = OmegaConf.to_container(config, resolve=False)
    plain.pop("hydra", None)
    resolved = OmegaConf.to_container(OmegaConf.create(plain), resolve=True,
                                      throw_on_missing=False)
    fixed = {}
    for group in ("data", "model", "train"):
        _flatten(resolved.get(group), group, fixed)
    searched = {d.name: d.spec for d in space.dims.values()}
    for key in list(fixed):
        if key in NOT_COMPARED or any(key == n or key.startswith(n + ".") for n in searched):
            del fixed[key]
    return {"space": searched, "fixed": fixed, "budgets": dict(s.budgets),
            "objectives": list(s.objectives),
            "sweep_file": config.hydra.runtime.choices.get("sweeps")}


def _flatten(node, prefix: str, into: dict) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            _flatten(v, f"{prefix}.{k}", into)
    else:
        into[prefix] = node


def differences(old: Dict[str, Any], new: Dict[str, Any]) -> List[str]:
    """'key: old -> new' for every difference, searched keys first."""
    out = []
    for part, label in (("space", "searched "), ("fixed", ""), ("budgets", "budget "),
                        ("objectives", ""), ("sweep_file", "")):
        a, b = old.get(part), new.get(part)
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b), key=str):
                was, now = (_get(a, key, old, part), _get(b, key, new, part))
                if was != now:
                    out.append(f"{label}{key}: {_v(was)} -> {_v(now)}")
        elif a != b:
            out.append(f"{part}: {_v(a)} -> {_v(b)}")
    return out


def _get(values: dict, key: str, ident: dict, part: str):
    if key in values:
        return values[key]
    return "(searched)" if part == "fixed" and key in (ident.get("space") or {}) else "(none)"


def _v(value) -> str:
    return shown(value, 40) if not isinstance(value, str) or len(value) > 40 else value


def check(study, s, ident: Dict[str, Any], space) -> None:
    """Refuse a sweep whose space or fixed settings differ from what the study holds (before any
    trial is asked), or record the change when hydra.sweeper.accept_changes is true. A study
    from before identities were recorded is compared on its space alone."""
    attrs = study.user_attrs
    old = attrs.get(IDENTITY)
    if old is None:
        legacy = attrs.get("search_space")
        old = {**ident, "space": legacy} if isinstance(legacy, dict) else None
    if old is None or not isinstance(old, dict):
        study.set_user_attr(IDENTITY, ident)
        return
    diffs = differences(old, ident)
    if not diffs:
        return
    listed = "; ".join(diffs[:SHOWN_DIFFERENCES]) + (
        f"; and {len(diffs) - SHOWN_DIFFERENCES} more" if len(diffs) > SHOWN_DIFFERENCES else "")
    where = f"study {shown(s.study_name, 60)} in {s.shown_url}"
    changed = _changed_choices(study, space)
    if changed:
        raise SweepError(f"{where} holds trials of another sweep ({listed}); Optuna cannot "
                         f"change the choices of {', '.join(changed)} within one study: use a "
                         "new hydra.sweeper.study_name")
    if not s.accept_changes:
        raise SweepError(f"{where} holds trials of another sweep: {listed}. Use a new "
                         "hydra.sweeper.study_name, or continue this study knowingly with "
                         "hydra.sweeper.accept_changes=true (the change is recorded in it)")
    log = list(attrs.get(CHANGES) or [])
    log.append({"at": datetime.datetime.now().isoformat(timespec="seconds"),
                "differences": diffs})
    study.set_user_attr(CHANGES, log)
    study.set_user_attr(IDENTITY, ident)


def _changed_choices(study, space) -> List[str]:
    """Searched keys whose choice list differs from the one the study's trials used."""
    seen: Dict[str, Any] = {}
    for t in study.get_trials(deepcopy=False):
        for name, dist in t.distributions.items():
            seen.setdefault(name, dist)
    return [d.name for d in space.dims.values()
            if isinstance(d.distribution, CategoricalDistribution) and d.name in seen
            and seen[d.name] != d.distribution]


# --- one sweep folder, one study ---------------------------------------------------------------

def check_folder(sweep_dir: Path, s) -> None:
    """The sweep folder must hold no other study's trials (they would be overwritten): checked
    before the study is touched (that it is writable: tinycnn.folders, before the sweep)."""
    if not (sweep_dir / "multirun.yaml").is_file():
        return
    name, storage = sweep_study(sweeper_record(sweep_dir)) or (None, "")
    same_storage = storage in (mask(s.storage), s.shown_url) or _absolute(storage) == s.shown_url
    if name != s.study_name or not same_storage:
        held = f"study {shown(name, 60)} in {storage}" if name else "a sweep of another kind"
        raise SweepError(f"hydra.sweep.dir = {sweep_dir}: the folder holds {held}, whose "
                         "trial folders this sweep would overwrite; give it its own folder "
                         "(hydra.sweep.dir=...), or continue that study there")


def _absolute(storage: str) -> str:
    try:
        return mask(storage_url(storage))
    except Exception:
        return storage
