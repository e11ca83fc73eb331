"""What a run config holds, with the default of every key: merged under a config read back from a
run record, so a config.yaml written before a key existed still trains, reproduces and evaluates
(the missing key takes its default, which is what such a run did).

The defaults are conf/'s own (the default presets of train, train/augment, data and data/split):
written once, there. This module only knows which keys older records already had.
"""

import functools

from omegaconf import DictConfig, OmegaConf, open_dict

# The keys a record had before the data group and augmentation existed (2026-11-30): a record
# without the later keys ran with their MNIST / no-augmentation defaults.
LEGACY = {"train": {"lr", "batch_size", "epochs", "optimizer", "momentum", "nesterov",
                    "weight_decay", "schedule", "T_max", "eta_min", "warmup", "final_lr",
                    "label_smoothing", "ema", "evals_per_epoch", "eval_batch_size"},
          "data": {"root", "val_size", "split_seed", "limit", "test_limit", "mean", "std"}}


@functools.cache
def defaults() -> dict:
    """{"train": {...}, "data": {...}}: the default presets as conf/config.yaml composes them."""
    from tinycnn.presets import default_preset, find_conf_dir, load_preset
    conf = find_conf_dir(None)
    train = load_preset(conf, "train", default_preset(conf, "train") or "paper") or {}
    train["augment"] = load_preset(conf, "train/augment", "none") or {}
    data = {**(load_preset(conf, "data/split", "default") or {}),
            **(load_preset(conf, "data", default_preset(conf, "data") or "mnist") or {})}
    data.pop("root", None)  # where the files are is the machine's, never a default to fill in
    return {"train": train, "data": data}


def complete(cfg: DictConfig) -> DictConfig:
    """cfg with every train and data key it lacks set to its default (cfg is changed in place)."""
    for group, values in defaults().items():
        node = cfg.get(group)
        if node is None:
            continue
        with open_dict(node):
            for key, value in values.items():
                if key not in node:
                    node[key] = value
                elif isinstance(value, dict) and isinstance(node[key], DictConfig):
                    for k, v in value.items():
                        if k not in node[key]:
                            node[key][k] = v
    return cfg


def implied(config: dict) -> dict:
    """A plain config without the keys newer than LEGACY that hold their defaults: what older
    records left out. Runs of one configuration, recorded before and after a key was added,
    then share a config_key and show no difference in a table."""
    out = dict(config)
    for group, old in LEGACY.items():
        node = out.get(group)
        if not isinstance(node, dict):
            continue
        node = dict(node)
        for key, value in defaults()[group].items():
            if key not in old and key in node and _same(node[key], value):
                del node[key]
        out[group] = node
    return out


def _same(a, b) -> bool:
    to = lambda v: OmegaConf.to_container(v) if OmegaConf.is_config(v) else v  # noqa: E731
    return to(a) == to(b)
