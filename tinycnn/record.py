"""The run record: resolved config, metrics.json and weights, written so a crash never leaves a
half-written file (each goes to a temporary file first, then os.replace puts it in place)."""

import hashlib
import io
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from tinycnn.checks import shown
from tinycnn.errors import TinycnnError
from tinycnn.schema import implied

CHECKPOINT_FORMAT = "tinycnn"
CHECKPOINT_VERSION = 1

# What a run record says about a configuration; the one place that defines it.
# Never written to a run's config.yaml: Hydra's own node (kept in .hydra/) and the Optuna
# sweeper's bookkeeping node `optuna` (storage, study, trial number, pruner; the storage may
# carry a password, and the record has the trial number as metrics.json's "trial").
NOT_RECORDED = ("hydra", "optuna")
# Where and how a run ran, not what it trained: runs that differ only in these are one
# configuration (one config_key; seed repeats of it are grouped by `tinycnn compare`).
RUN_ONLY = ("seed", "device", "threads", "data.root")
# Training settings that change what is reported (how often and in what batches validation
# runs), not what is trained: a recipe is the same recipe whatever these are.
EVAL_ONLY = ("evals_per_epoch", "eval_batch_size")


# A run's status in metrics.json, and a trial's in the study: the one list.
STATUSES = ("complete", "pruned", "failed", "infeasible", "running", "waiting")
CONFIG, METRICS, WEIGHTS = "config.yaml", "metrics.json", "model.pt"  # a run folder's record
DEPLOY = "deploy.json"  # tinycnn deploy's figures, beside them


def write_record(out_dir, cfg, metrics: dict) -> None:
    """A run folder's config.yaml (from cfg, when given) and metrics.json, each atomically;
    config_key is added to metrics from cfg. Used for runs that never trained (infeasible,
    failed before training), whose config may hold what only a running job resolves."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg is not None:
        try:
            resolved = record_config(cfg)
            metrics["config_key"] = config_key(resolved)
        except Exception:  # an interpolation only a running job can resolve
            resolved = {k: v for k, v in OmegaConf.to_container(cfg, resolve=False).items()
                        if k not in NOT_RECORDED}
        write_text_atomic(out_dir / CONFIG, OmegaConf.to_yaml(resolved))
    write_json_atomic(out_dir / METRICS, metrics)


def read_metrics(out_dir) -> dict:
    """A run folder's metrics.json as a dict; {} when it is absent or unreadable (a run that
    stopped before it wrote one). Readers that must say why use results.read_run."""
    return _read_json(Path(out_dir) / METRICS)


def read_deploy(out_dir) -> dict:
    """deploy.json of a run folder; {} when there is none or it cannot be read."""
    return _read_json(Path(out_dir) / DEPLOY)


def _read_json(path: Path) -> dict:
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return d if isinstance(d, dict) else {}


def _atomic(path: Path, write) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a record is for everyone to read
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_json_atomic(path, obj) -> None:
    _atomic(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def write_bytes_atomic(path, data: bytes) -> None:
    _atomic(path, lambda f: f.write(data))


def write_text_atomic(path, text: str) -> None:
    _atomic(path, lambda f: f.write(text.encode()))


def plain(cfg) -> dict:
    """A resolved, plain-dict copy of a config (DictConfig or dict)."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return json.loads(json.dumps(cfg))


def record_config(cfg) -> dict:
    """The config as a run folder's config.yaml holds it: resolved, without NOT_RECORDED. The
    nodes are dropped before resolving, so an `optuna.storage: ${oc.env:...}` is never read."""
    if isinstance(cfg, DictConfig):
        return plain(OmegaConf.masked_copy(cfg, [k for k in cfg if k not in NOT_RECORDED]))
    return {k: v for k, v in plain(cfg).items() if k not in NOT_RECORDED}


def flatten(cfg, prefix: str = "") -> dict:
    """{"a": {"b": [1, {"c": 2}]}} -> {"a.b.0": 1, "a.b.1.c": 2}: keys as overrides spell them."""
    if isinstance(cfg, dict):
        items = cfg.items()
    elif isinstance(cfg, list):
        items = enumerate(cfg)
    else:
        return {prefix: cfg}
    out = {}
    for key, value in items:
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _identifying(key: str) -> bool:
    return not any(key == p or key.startswith(p + ".") for p in NOT_RECORDED + RUN_ONLY)


def settings(config: dict) -> dict:
    """The flattened settings that identify a configuration (see RUN_ONLY), e.g.
    {"model.blocks.res1.scale": 1.0, "train.lr": 0.002, ...}."""
    return {k: v for k, v in flatten(implied(config)).items() if _identifying(k)}


def config_key(cfg) -> str:
    """Hash of what determines the trained network and recipe (NOT_RECORDED and RUN_ONLY left
    out), so seed repeats of one config share a key."""
    c = implied(record_config(cfg))
    for key in RUN_ONLY:  # nested keys, dropped where they are ("data.root": c["data"]["root"])
        *parents, last = key.split(".")
        node = c
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return hashlib.sha1(json.dumps(c, sort_keys=True).encode()).hexdigest()[:12]


def recipe(train: dict | None) -> dict | None:
    """The training recipe proper: a train config without its EVAL_ONLY settings, and without
    the keys older recipes lacked where they hold their defaults (schema.implied)."""
    if train is None:
        return None
    return {k: v for k, v in implied({"train": train})["train"].items() if k not in EVAL_ONLY}


def save_checkpoint(path, model, model_cfg, data_cfg, metrics: dict) -> None:
    """Weights plus everything needed to rebuild them: opens with torch.load(weights_only=True)."""
    import torch  # here, not at the top: reading records (tinycnn compare) needs no torch
    ckpt = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "model": plain(model_cfg),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "params": model.num_params, "params_by_block": model.param_table(),
            "data": {k: float(v) if isinstance(v, (int, float)) else [float(x) for x in v]
                     for k, v in (("mean", data_cfg.mean), ("std", data_cfg.std))},
            "metrics": metrics}
    buf = io.BytesIO()  # serialised first: a full disk is then a plain OSError of the write
    torch.save(ckpt, buf)
    _atomic(path, lambda f: f.write(buf.getbuffer()))


def load_checkpoint(path) -> dict:
    """Load a tinycnn checkpoint safely (weights_only=True: no arbitrary code is unpickled)."""
    import torch
    path = Path(path)
    if not path.is_file():
        raise TinycnnError(f"{path}: no such file; expected a model.pt written by a tinycnn run")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        # Not torch's own message: it suggests weights_only=False, i.e. running foreign code.
        raise TinycnnError(f"{path} is not a tinycnn checkpoint: it is not a torch file, it is "
                           "damaged, or it holds objects that torch.load(weights_only=True) "
                           f"refuses ({type(exc).__name__}). Expected a model.pt from a tinycnn "
                           "run folder; tinycnn never unpickles arbitrary objects.") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT \
            or not {"model", "state_dict"} <= set(ckpt):
        raise TinycnnError(f"{path} is not a tinycnn checkpoint (it has no 'format: tinycnn' "
                           "header with model config and weights); expected a model.pt from a "
                           "tinycnn run folder.")
    if ckpt.get("version", 0) > CHECKPOINT_VERSION:
        raise TinycnnError(f"{path} is a tinycnn checkpoint of format version {ckpt['version']}; "
                           f"this tinycnn reads up to version {CHECKPOINT_VERSION}. Upgrade tinycnn.")
    return ckpt


# --- reading a run folder back ---------------------------------------------------------------

PRESET_GROUPS = ("model", "train", "data")


@dataclass
class Run:
    """One trained (or attempted) configuration, whatever recorded it."""

    trial: int | None
    state: str
    params: int | None = None
    macs: int | None = None              # per image (tinycnn/costs.py)
    peak_bytes: int | None = None        # int8 activations, batch 1
    flash_bytes: int | None = None       # int8 weights and int32 biases
    val_acc: float | None = None
    test_acc: float | None = None
    train_acc: float | None = None
    seconds: float | None = None
    seed: int | None = None
    dir: Path | None = None
    config: dict | None = None           # resolved config, no hydra node
    config_key: str | None = None        # same for runs that differ only by seed
    settings: dict = field(default_factory=dict)  # {dotted.key: value}, to show differences
    overrides: list = field(default_factory=list)
    params_by_block: dict | None = None
    baseline: bool = False
    reason: str | None = None            # why failed / infeasible
    source: str = ""
    deploy: dict = field(default_factory=dict)  # deploy.json (tinycnn deploy), when there is one


class DamagedRun(TinycnnError):
    """A run folder whose record cannot be read."""


def load_config(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        cfg = OmegaConf.load(path)
        cfg = OmegaConf.to_container(cfg, resolve=False)
    except Exception as exc:
        raise DamagedRun(f"{path}: unreadable config.yaml ({exc})") from exc
    if not isinstance(cfg, dict):
        return None
    return {k: v for k, v in cfg.items() if k not in NOT_RECORDED}


def preset_choices(job: Path) -> dict:
    """{"model": "paper", "train": "paper", "data": "mnist"}: the presets Hydra composed the run
    from (its .hydra/hydra.yaml), so a table can say `model=small18k` and not only its widths."""
    import yaml
    path = job / ".hydra" / "hydra.yaml"
    if not path.is_file():
        return {}
    try:
        with path.open() as f:
            hydra = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        choices = hydra["hydra"]["runtime"]["choices"]
    except Exception:  # Hydra's own file: helpful when readable, never a reason to skip a run
        return {}
    return {g: choices[g] for g in PRESET_GROUPS if isinstance(choices.get(g), str)}


def config_key_of(config: dict | None) -> str | None:
    if config is None:
        return None
    try:
        return config_key(OmegaConf.create(config))
    except Exception:  # an unresolvable interpolation (an infeasible trial's raw config)
        return None


def job_number(path: Path) -> int | None:
    """Hydra's job folder <n>, or the Optuna sweeper's trial_<n>."""
    name = path.name.removeprefix("trial_")
    return int(name) if name.isdigit() else None


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and any((path / name).exists() for name in (METRICS, CONFIG, ".hydra"))


def read_run(path: Path, source: str = "") -> Run:
    """One run folder -> Run; raises DamagedRun saying why it cannot be read."""
    path = Path(path)
    metrics_path = path / METRICS
    if not metrics_path.is_file():
        raise DamagedRun("no metrics.json (still running, or stopped before it finished)")
    try:
        m = json.loads(metrics_path.read_text())
        if not isinstance(m, dict) or m.get("status") not in STATUSES:
            raise ValueError("not a tinycnn metrics record (no valid 'status')")
    except (ValueError, UnicodeDecodeError) as exc:
        raise DamagedRun(f"corrupt metrics.json ({exc})") from exc
    _check_fields(m)
    config = load_config(path / CONFIG)
    return Run(
        trial=m["trial"] if isinstance(m.get("trial"), int) else job_number(path),
        state=m["status"],
        params=m.get("params"),
        macs=m.get("macs"),
        peak_bytes=m.get("peak_bytes"),
        flash_bytes=m.get("flash_bytes"),
        val_acc=m.get("val_acc"),
        test_acc=m.get("test_acc"),
        train_acc=m.get("train_acc"),
        seconds=m.get("seconds"),
        seed=m.get("seed", (config or {}).get("seed")),
        dir=path.resolve(),
        config=config,
        config_key=m.get("config_key") or config_key_of(config),
        settings={**preset_choices(path), **(settings(config) if config else {})},
        overrides=list(m.get("overrides") or []),
        params_by_block=m.get("params_by_block"),
        reason=m.get("error"),
        source=source,
        deploy=read_deploy(path),
    )


# What each field of metrics.json must hold when present (null is always allowed): a record
# edited by hand or written by other code is refused in one line, never a traceback later.
_FIELDS = {"params": "a whole number >= 0", "seed": "a whole number >= 0",
           "macs": "a whole number >= 0", "peak_bytes": "a whole number >= 0",
           "flash_bytes": "a whole number >= 0",
           "trial": "a whole number >= 0", "seconds": "a number >= 0",
           "train_acc": "an accuracy from 0 to 1", "val_acc": "an accuracy from 0 to 1",
           "test_acc": "an accuracy from 0 to 1", "train_loss": "a number",
           "overrides": "a list of overrides", "params_by_block": "a table of blocks",
           "error": "a text", "config_key": "a text",
           # also in a study trial's user attributes (hydra_plugins/.../_trials.py)
           "dir": "a text", "state": "a text", "reason": "a text"}


def _field_ok(key: str, v) -> bool:
    num = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
    if key in ("params", "seed", "trial", "macs", "peak_bytes", "flash_bytes"):
        return num and isinstance(v, int) and v >= 0
    if key.endswith("_acc"):
        return num and 0 <= v <= 1
    if key == "seconds":
        return num and v >= 0
    if key == "train_loss":
        return not isinstance(v, bool) and isinstance(v, (int, float))  # nan: a diverged run
    if key == "overrides":
        return isinstance(v, list) and all(isinstance(o, str) for o in v)
    if key == "params_by_block":
        return isinstance(v, dict)
    return isinstance(v, str)


def field_problem(fields: dict, what: str = "metrics.json field") -> str | None:
    """"metrics.json field 'val_acc' = 'high': expected an accuracy from 0 to 1" for the first
    recorded field of the wrong kind (a run's metrics or a trial's user attributes), else None."""
    for key, want in _FIELDS.items():
        v = fields.get(key)
        if v is not None and not _field_ok(key, v):
            return f"{what} {key!r} = {shown(v, 40)}: expected {want}"
    return None


def _check_fields(m: dict) -> None:
    problem = field_problem(m)
    if problem:
        raise DamagedRun(problem)


# Which run stands for a configuration when several runs record it (a folder and a study naming
# the same job, a seed run twice): the one rule every reader applies.
_STANDING = {state: i for i, state in enumerate(STATUSES)}  # finished first, as listed


def standing(run: Run) -> tuple:
    """Sort key: the run that stands first. A finished run before an unfinished one, then the
    earliest trial (the one trained first; later ones repeat it), then the folder's name."""
    return (_STANDING.get(run.state, len(_STANDING)),
            run.trial if run.trial is not None else float("inf"), str(run.dir or ""))


def write_config(out_dir, cfg) -> None:
    """config.yaml: the resolved config as record_config gives it, atomically."""
    write_text_atomic(Path(out_dir) / CONFIG, OmegaConf.to_yaml(record_config(cfg)))


def write_metrics(out_dir, metrics: dict) -> None:
    """metrics.json, atomically: its presence with status complete means the run finished."""
    write_json_atomic(Path(out_dir) / METRICS, metrics)


# --- a sweep folder ------------------------------------------------------------------------------

def sweeper_record(folder: Path) -> dict | None:
    """hydra.sweeper as the multirun.yaml Hydra wrote in a sweep folder records it (unresolved),
    or None (no multirun.yaml, or one that cannot be read)."""
    try:
        cfg = OmegaConf.load(Path(folder) / "multirun.yaml")
        sweeper = OmegaConf.to_container(OmegaConf.select(cfg, "hydra.sweeper"), resolve=False)
    except Exception:
        return None
    return sweeper if isinstance(sweeper, dict) else None


def sweep_study(sweeper: dict | None) -> tuple[str, str] | None:
    """(study name, storage) when a sweep folder's sweeper_record is the Optuna sweeper's."""
    name, storage = (sweeper or {}).get("study_name"), (sweeper or {}).get("storage")
    return (str(name), str(storage)) if name and storage else None
