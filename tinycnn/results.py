"""Collect finished runs from where they were recorded: Hydra job folders or Optuna studies.

A source is one of
  - a run folder (outputs/DATE/TIME, holding metrics.json and config.yaml),
  - a folder of run folders (a multirun sweep, outputs/multirun/DATE/TIME, or all of outputs/),
  - an Optuna study name (looked up in --storage),
  - an Optuna storage URL, .db or .log file (all its studies).
Every source becomes a list of Run rows. A damaged run folder (no or corrupt metrics.json) is
skipped with a reason, so one broken job never hides the rest of a sweep.
"""

import functools
import json
import os
from pathlib import Path


from hydra_plugins.tinycnn_plugins.tinycnn_sweeper import TinycnnOptunaConf
from tinycnn.errors import TinycnnError
from tinycnn.record import CONFIG, DamagedRun, Run, config_key_of, field_problem, is_run_dir, \
    job_number, load_config, read_metrics, read_run, settings as _settings, standing, \
    sweep_study, sweeper_record

DEFAULT_STORAGE = TinycnnOptunaConf.storage  # where a sweep keeps its study unless told
_OPTUNA_STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed",
                  "RUNNING": "running", "WAITING": "waiting"}
_MAX_DEPTH = 4  # outputs/multirun/DATE/TIME/<n>: `compare outputs` finds every run


def display_path(p) -> str:
    """A path relative to the working folder when it lies below it (shorter, and what the user
    typed), else as it is; '-' for none."""
    if p is None:
        return "-"
    try:
        rel = os.path.relpath(p)
        return rel if not rel.startswith("..") else str(p)
    except ValueError:
        return str(p)


class Sources:
    """Runs read from one or more sources, with what was skipped and what the sources said."""

    def __init__(self):
        self.runs: list[Run] = []
        self.skipped: list[tuple[Path, str]] = []   # (folder, why)
        self.described: list[str] = []              # one line per source, for the user
        self.budgets: list[int] = []                # the studies' budgets (max_params), if recorded
        self.limits: dict = {}                      # every budget the studies had: {cost: [limits]}
        self.costs: list[str] = []                  # the costs a study minimised (objectives)


def _job_dirs(folder: Path, depth: int = 0) -> list[Path]:
    found = []
    children = sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
                      key=lambda p: (job_number(p) is None, job_number(p) or 0, p.name))
    for child in children:
        if is_run_dir(child):
            found.append(child)
        elif depth + 1 < _MAX_DEPTH:
            found.extend(_job_dirs(child, depth + 1))
    return found


def read_folder(folder: Path, into: Sources) -> None:
    """Add the runs of a run folder or of a sweep folder; damaged ones go to into.skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TinycnnError(f"{folder} is not a folder.")
    jobs = [folder] if is_run_dir(folder) else _job_dirs(folder)
    if not jobs:
        raise TinycnnError(f"no runs in {folder}: expected run folders holding metrics.json and "
                           "config.yaml (what `python run.py` writes under outputs/), or a sweep "
                           "folder of them (outputs/multirun/DATE/TIME).")
    read = 0
    for job in jobs:
        try:
            into.runs.append(read_run(job, source=str(folder)))
            read += 1
        except DamagedRun as exc:
            into.skipped.append((job, str(exc)))
    into.described.append(f"{folder}: {read} run(s)" +
                          (f", {len(jobs) - read} skipped" if read < len(jobs) else ""))


def _sweep_folders(folder: Path, depth: int = 0) -> list[Path]:
    """Sweep folders at or below `folder`: those Hydra wrote a multirun.yaml in, or holding run
    folders; a sweep's own folders are not searched further."""
    try:
        children = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        return []
    if (folder / "multirun.yaml").is_file() or any(is_run_dir(c) for c in children):
        return [folder]
    if depth >= _MAX_DEPTH:
        return []
    return [s for c in children for s in _sweep_folders(c, depth + 1)]


def latest_sweep(outputs: Path = Path("outputs")) -> Path:
    """The sweep folder under outputs/multirun, at any depth (DATE/TIME, or a name given with
    hydra.sweep.dir), that changed last: a new trial folder or result file changes it."""
    root = Path(outputs) / "multirun"
    sweeps = [s for s in (_sweep_folders(root) if root.is_dir() else []) if _job_dirs(s)]
    if not sweeps:
        raise TinycnnError(f"no sweeps under {root} (searched every folder in it): run one "
                           "(`python run.py -m ...`) or name a run folder, sweep folder or Optuna "
                           "study to read.")
    return max(sweeps, key=lambda s: (s.stat().st_mtime, str(s)))


# --- Optuna studies -----------------------------------------------------------------------------

def open_storage(url: str, connect_timeout: float | None = None):
    """An Optuna storage for url (tinycnn.study's rules), without creating a database or journal
    file that does not exist yet: reading results must never leave an empty study behind."""
    from tinycnn.storage import CONNECT_TIMEOUT, open_storage as open_study_storage, storage_url
    url = storage_url(url)
    local = url[len("sqlite:///"):] if url.startswith("sqlite:///") else \
        url if "://" not in url else None
    if local is not None and local != ":memory:" and not Path(local).is_file():
        raise TinycnnError(f"no Optuna storage at {local}: the file does not exist. Pass the "
                           "storage the sweep used (--storage URL, e.g. "
                           "sqlite:///outputs/optuna.db).")
    return open_study_storage(url, connect_timeout or CONNECT_TIMEOUT)


def study_names(storage) -> list[str]:
    import optuna
    return optuna.study.get_all_study_names(storage)


def _run_from_trial(trial, study_name: str) -> Run:
    ua = trial.user_attrs
    state = ua.get("state") or _OPTUNA_STATES.get(trial.state.name, trial.state.name.lower())
    val = ua.get("val_acc")
    if val is None and state == "complete" and trial.values:
        val = trial.values[0]  # never for infeasible trials: their 0.0 is not an accuracy
    folder = Path(ua["dir"]) if ua.get("dir") else None
    if folder is not None and folder.exists():
        folder = folder.resolve()  # as folder sources spell it, to match the same run
    config, metrics = None, {}
    if folder is not None and folder.is_dir():
        try:
            config = load_config(folder / CONFIG)
        except DamagedRun:
            pass  # the study's own record is enough for a row
        metrics = read_metrics(folder)
    key = metrics.get("config_key") or config_key_of(config) or \
        "params:" + json.dumps(trial.params, sort_keys=True, default=str)
    params = ua.get("params")
    return Run(
        trial=trial.number,
        state=state,
        params=params if isinstance(params, int) else metrics.get("params"),
        **{k: ua.get(k, metrics.get(k)) for k in ("macs", "peak_bytes", "flash_bytes")},
        val_acc=val,
        test_acc=ua.get("test_acc"),
        train_acc=ua.get("train_acc"),
        seconds=ua.get("seconds"),
        seed=(config or {}).get("seed", metrics.get("seed")),
        dir=folder,
        config=config,
        config_key=key,
        settings=_settings(config) if config else dict(trial.params),
        overrides=list(ua.get("overrides") or []),
        params_by_block=metrics.get("params_by_block"),
        baseline=bool(ua.get("baseline", False)),
        reason=ua.get("reason"),
        source=study_name,
    )


def _read_study(name: str | None, storage_url: str, into: Sources,
               connect_timeout: float | None = None) -> None:
    """Add every trial of study `name` in storage_url (all studies there when name is None)."""
    from tinycnn.storage import mask, storage_calls
    storage = open_storage(storage_url, connect_timeout)
    with storage_calls(storage_url, "while its trials were read"):  # a server gone mid-read
        _read_trials(name, storage, mask(storage_url), into)


def _read_trials(name: str | None, storage, storage_url: str, into: Sources) -> None:
    import optuna
    names = study_names(storage)
    if name is not None and name not in names:
        known = ", ".join(names) if names else "none"
        raise TinycnnError(f"no study named {name!r} in {storage_url} (studies there: {known}). "
                           "Pass --storage if the sweep used another storage.")
    if not names:
        raise TinycnnError(f"the Optuna storage {storage_url} holds no studies.")
    for study_name in ([name] if name is not None else names):
        study = optuna.load_study(study_name=study_name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        for t in trials:
            bad = field_problem(t.user_attrs, "user attribute")
            if bad:  # written by hand or another tool: skipped and counted, not fatal
                into.skipped.append((Path(f"{study_name}/trial_{t.number}"), bad))
            else:
                into.runs.append(_run_from_trial(t, study_name))
        budget = study.user_attrs.get("max_params")
        if isinstance(budget, int) and budget not in into.budgets:
            into.budgets.append(budget)
        _note_study(into, study.user_attrs.get("budgets"), study.user_attrs.get("objectives"))
        into.described.append(f"study {study_name!r} in {storage_url}: {len(trials)} trial(s)")


def _note_study(into: Sources, budgets, objectives) -> None:
    """What a study was searched under: its budgets and the costs it minimised."""
    for cost, limit in (budgets or {}).items() if isinstance(budgets, dict) else ():
        if isinstance(limit, int) and limit not in into.limits.setdefault(cost, []):
            into.limits[cost].append(limit)
    for o in objectives if isinstance(objectives, list) else ():
        if o != "val_acc" and o not in into.costs:
            into.costs.append(o)


def _note_sweep(sweeper: dict | None, into: Sources) -> None:
    """A sweep folder's budgets and objectives, from its sweeper_record."""
    if not sweeper or "max_params" not in sweeper:  # not one of the tinycnn sweeper's
        return
    budgets = {k[4:]: v for k, v in sweeper.items() if k.startswith("max_")
               and k != "max_failure_rate" and k != "max_retry" and isinstance(v, int)}
    if isinstance(budgets.get("params"), int) and budgets["params"] not in into.budgets:
        into.budgets.append(budgets["params"])
    _note_study(into, budgets, sweeper.get("objectives"))


def collect(sources: list[str], storage: str = DEFAULT_STORAGE,
            outputs: Path = Path("outputs"), connect_timeout: float | None = None) -> Sources:
    """Read every source (see module docstring); no source means the latest sweep folder.
    connect_timeout: seconds to wait for a database server (default study.CONNECT_TIMEOUT)."""
    into = Sources()
    read_study = functools.partial(_read_study, connect_timeout=connect_timeout)
    if not sources:
        sweep = latest_sweep(outputs)
        into.described.append(f"(no source given: reading the latest sweep, {sweep})")
        read_folder(sweep, into)
        sweeper = sweeper_record(sweep)
        _note_sweep(sweeper, into)
        study = sweep_study(sweeper)
        if study is not None:
            into.described.append(
                f"this sweep ran trials of the Optuna study {study[0]!r} ({study[1]}); a study "
                f"continued over several sweeps is read whole by naming it: {study[0]}")
        return into
    for text in sources:
        path = Path(text)
        if path.is_dir():
            read_folder(path, into)
            _note_sweep(sweeper_record(path), into)
        elif path.is_file() and path.name == "metrics.json":
            read_folder(path.parent, into)
        elif path.is_file() and path.suffix in (".db", ".sqlite", ".sqlite3"):
            read_study(None, f"sqlite:///{path}", into)
        elif path.is_file() and path.suffix == ".log":
            read_study(None, str(path), into)
        elif "://" in text:
            read_study(None, text, into)
        elif "/" in text or path.suffix in (".db", ".sqlite", ".sqlite3", ".log", ".json"):
            raise TinycnnError(f"{text} does not exist (expected a run folder, a sweep folder, an "
                               "Optuna storage file, or a study name).")
        else:
            read_study(text, storage, into)
    # A sweep folder and its study name the same job folders: count each run once, the one
    # that stands for it by record.standing (whichever source was named first).
    seen: dict = {}
    for run in sorted(into.runs, key=standing):
        if run.dir is None or run.dir not in seen:
            seen[run.dir or id(run)] = run
        else:
            seen[run.dir].baseline |= run.baseline  # only the study knows it enqueued the paper
    into.runs = [r for r in into.runs if seen.get(r.dir or id(r)) is r]
    return into
