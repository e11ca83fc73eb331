"""Turn one recorded trial into presets: conf/model/NAME.yaml (and conf/train/NAME.yaml when its
training recipe is not the default one), then prove the preset builds the very same network."""

import re
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from tinycnn.errors import TinycnnError
from tinycnn.model import build_model, format_param_table
from tinycnn.presets import default_preset, load_preset, preset_yaml
from tinycnn.record import EVAL_ONLY, recipe
from tinycnn.record import write_text_atomic
from tinycnn.record import Run
from tinycnn.results import Sources, display_path

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@dataclass
class Exported:
    model_path: Path
    train_path: Path | None
    experiment_path: Path | None
    table: str          # the per-block parameter table of the preset, as built back from the file
    params: int
    command: str        # how to train it
    notes: list


def pick_trial(found: Sources, trial: int | None, where: str) -> Run:
    """The run numbered `trial` among the sources (the only run when trial is None)."""
    runs = found.runs
    if trial is None:
        if len(runs) == 1:
            return runs[0]
        raise TinycnnError(f"{where} holds {len(runs)} runs; choose one with --trial N "
                           f"(trial numbers there: {_numbers(runs)}).")
    matches = [r for r in runs if r.trial == trial]
    skipped = [p for p, _ in found.skipped if p.name == str(trial)]
    if not matches:
        extra = f" (its folder {skipped[0]} is damaged: see the warning above)" if skipped else ""
        raise TinycnnError(f"there is no trial {trial} in {where}{extra}; trial numbers there: "
                           f"{_numbers(runs)}.")
    if len(matches) > 1:
        folders = ", ".join(str(r.dir) for r in matches)
        raise TinycnnError(f"trial {trial} appears {len(matches)} times in {where} ({folders}); "
                           "name a single sweep folder or study with --from.")
    return matches[0]


def _numbers(runs: list[Run]) -> str:
    numbers = sorted({r.trial for r in runs if r.trial is not None})
    if not numbers:
        return "none"
    if numbers == list(range(numbers[0], numbers[-1] + 1)) and len(numbers) > 3:
        return f"{numbers[0]}-{numbers[-1]}"
    return ", ".join(map(str, numbers))


def _compose(conf_dir: Path, overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base=None):
            return compose(config_name="config", overrides=overrides)
    except HydraException as exc:
        raise TinycnnError(f"Hydra could not compose the config with {' '.join(overrides)}: "
                           f"{exc}") from None


def trial_config(run: Run, conf_dir: Path) -> tuple[dict, list]:
    """The trial's resolved config: its job folder's config.yaml, else rebuilt from overrides."""
    if run.config is not None:
        return run.config, []
    if not run.overrides:
        raise TinycnnError(f"trial {run.trial}: its job folder ({run.dir}) with config.yaml is not "
                           "here and the study recorded no overrides to rebuild it from; run "
                           "export on the machine that ran the trial.")
    cfg = OmegaConf.to_container(_compose(conf_dir, list(run.overrides)), resolve=True)
    return cfg, [f"the job folder {run.dir} is not here: rebuilt the config from the trial's "
                 f"overrides ({' '.join(run.overrides)})"]


def _preset(conf_dir: Path, group: str, name: str | None) -> dict | None:
    return load_preset(conf_dir, group, name) if name else None


def _unexported_differences(config: dict, name: str, conf_dir: Path, default_train: dict | None,
                            train_differs: bool) -> list[str]:
    """Notes on what the trial did differently that the presets do not carry: evaluation-only
    train settings, and data settings (subsets used to search fast)."""
    notes = []
    train_cfg = config.get("train")
    if isinstance(train_cfg, dict) and not train_differs and train_cfg != default_train:
        changed = [f"train.{k}={train_cfg.get(k)}" for k in EVAL_ONLY
                   if train_cfg.get(k) != (default_train or {}).get(k)]
        notes.append(f"the trial's evaluation settings differ from the default ({' '.join(changed)}"
                     "); they do not change the network, so no train preset was written")
    default_data = _preset(conf_dir, "data", default_preset(conf_dir, "data"))
    data_cfg = config.get("data")
    if isinstance(data_cfg, dict) and default_data is not None:
        changed = [f"data.{k}={data_cfg[k]}" for k in data_cfg
                   if k != "root" and default_data.get(k) != data_cfg[k]]
        if changed:
            notes.append(f"the trial trained with {' '.join(changed)}; `model={name}` trains on "
                         "the default data")
    return notes


def _percent(x) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _follows_data(model_cfg: dict, data_cfg: dict) -> dict:
    """The model preset with its input channels, image size and classes written as the data's
    (${data.channels}, ...) where they are the trial's data set's: it then follows data=NAME."""
    out = dict(model_cfg)
    for key, of_data in (("in_channels", "channels"), ("image_size", "image_size"),
                         ("num_classes", "classes")):
        if of_data in data_cfg and out.get(key) == data_cfg[of_data]:
            out[key] = "${data." + of_data + "}"
    return out


def export_trial(run: Run, name: str, conf_dir: Path, force: bool = False,
                 where: str = "", confirmed: dict | None = None,
                 experiment: bool = False) -> Exported:
    """Write conf/model/<name>.yaml (+ conf/train/<name>.yaml if the recipe was not the default,
    + conf/experiment/<name>.yaml selecting both when `experiment`)."""
    if not _NAME.match(name):
        raise TinycnnError(f"--name {name!r}: use letters, digits, '_', '-' or '.', so that "
                           f"`model={name}` works on Hydra's command line.")
    config, notes = trial_config(run, conf_dir)
    if run.state != "complete":
        notes.append(f"trial {run.trial} is {run.state}, not complete: exporting its config anyway")
    model_cfg, train_cfg = config.get("model"), config.get("train")
    if not isinstance(model_cfg, dict):
        raise TinycnnError(f"trial {run.trial}: its config has no model section to export.")
    trial_net = build_model(model_cfg)  # a config that cannot build is not worth a preset

    data_cfg = config.get("data") if isinstance(config.get("data"), dict) else {}
    data_name = data_cfg.get("name")
    other_data = data_name is not None and data_name != default_preset(conf_dir, "data")
    default_train_name = default_preset(conf_dir, "train")
    default_train = _preset(conf_dir, "train", default_train_name)
    train_differs = isinstance(train_cfg, dict) and recipe(train_cfg) != recipe(default_train)
    notes += _unexported_differences(config, name, conf_dir, default_train, train_differs)

    model_path = conf_dir / "model" / f"{name}.yaml"
    train_path = conf_dir / "train" / f"{name}.yaml" if train_differs else None
    experiment_path = conf_dir / "experiment" / f"{name}.yaml" if experiment else None
    for path in (model_path, train_path, experiment_path):
        if path is not None and path.exists() and not force:
            raise TinycnnError(f"{path} already exists; pass --force to overwrite it, or choose "
                               "another --name.")

    header = (f"Exported by `tinycnn export` from trial {run.trial} of {where or run.source}\n"
              + (f"run folder: {display_path(run.dir)}\n" if run.dir else "") +
              f"{run.state}: val {_percent(run.val_acc)}, test {_percent(run.test_acc)}, "
              f"{trial_net.num_params:,} params (seed {run.seed})\n")
    if confirmed is not None:
        header += (f"confirmed over {confirmed['seeds']} seeds (tinycnn confirm, rank 1 by mean "
                   f"validation accuracy): val {_percent(confirmed['val_acc_mean'])} ± "
                   f"{_percent(confirmed['val_acc_std'])}, test "
                   f"{_percent(confirmed['test_acc_mean'])} ± "
                   f"{_percent(confirmed['test_acc_std'])}\n")
    command = f"python run.py +experiment={name}" if experiment else \
        f"python run.py model={name}" + (f" train={name}" if train_differs else "") + \
        (f" data={data_name}" if other_data else "")
    header += f"train it: {command}"
    previous = {p: p.read_text() for p in (model_path, train_path, experiment_path)
                if p is not None and p.exists()}
    written = []
    try:
        model_path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(model_path, preset_yaml(_follows_data(model_cfg, data_cfg), header))
        written.append(model_path)
        if train_path is not None:
            train_path.parent.mkdir(parents=True, exist_ok=True)
            differs = sorted(k for k in train_cfg if (default_train or {}).get(k) != train_cfg[k])
            write_text_atomic(train_path, preset_yaml(
                train_cfg, header + f"\ndiffers from train={default_train_name} in: "
                f"{', '.join(differs)}"))
            written.append(train_path)
        if experiment_path is not None:
            experiment_path.parent.mkdir(parents=True, exist_ok=True)
            comment = "".join(f"# {line}\n" for line in header.splitlines())
            write_text_atomic(experiment_path, "# @package _global_\n" + comment +
                              "defaults:\n" + f"  - override /model: {name}\n" +
                              (f"  - override /train: {name}\n" if train_path else "") +
                              # an experiment names its data set, the default one too
                              (f"  - override /data: {data_name}\n" if data_name else ""))
            written.append(experiment_path)
        # Read the presets back the way run.py will, and check they build the same network.
        composed = _compose(conf_dir, [f"+experiment={name}"] if experiment_path else
                            [f"model={name}"] + ([f"train={name}"] if train_path else []) +
                            ([f"data={data_name}"] if other_data else []))
        rebuilt = build_model(composed.model)
        recorded = run.params_by_block or trial_net.param_table()
        if rebuilt.param_table() != recorded or rebuilt.param_table() != trial_net.param_table():
            raise TinycnnError(
                f"the exported preset builds a different network: {rebuilt.param_table()} "
                f"instead of the trial's {recorded}; nothing was exported.")
        if OmegaConf.to_container(composed.model, resolve=True) != model_cfg:
            raise TinycnnError("the exported model preset does not read back as the trial's model "
                               "config (a config group default may be overriding it); nothing "
                               "was exported.")
        if train_path is not None and OmegaConf.to_container(composed.train, resolve=True) \
                != train_cfg:
            raise TinycnnError("the exported train preset does not read back as the trial's "
                               "recipe; nothing was exported.")
    except BaseException:
        for path in written:  # leave conf/ as it was
            if path in previous:
                write_text_atomic(path, previous[path])
            else:
                path.unlink(missing_ok=True)
        raise
    return Exported(model_path, train_path, experiment_path, format_param_table(rebuilt),
                    rebuilt.num_params, command, notes)
