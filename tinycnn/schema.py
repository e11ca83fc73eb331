"""What a run config holds, with the default of every key: merged under a config read back from a
run record, so a config.yaml written before a key existed still trains, reproduces and evaluates
(the missing key takes its default, which is what such a run did)."""

from omegaconf import DictConfig, OmegaConf, open_dict

# The recipe's keys (conf/train/*.yaml); tests check that conf/train/paper.yaml has exactly these.
TRAIN = {
    "lr": 0.002, "batch_size": 64, "epochs": 1,
    "optimizer": "adam", "momentum": 0.9, "nesterov": False, "weight_decay": 0.0,
    "schedule": "epoch_cosine", "T_max": 5, "eta_min": 1.0e-6, "warmup": 0.0, "final_lr": 0.0,
    "label_smoothing": 0.0, "ema": 0.0,
    "evals_per_epoch": 4, "eval_batch_size": 1000,
}
DATA = {"val_size": 5000, "split_seed": 0, "limit": None, "test_limit": None,
        "mean": 0.1307, "std": 0.3081}


def complete(cfg: DictConfig) -> DictConfig:
    """cfg with every train and data key it lacks set to its default (cfg is changed in place)."""
    for group, defaults in (("train", TRAIN), ("data", DATA)):
        node = cfg.get(group)
        if node is None:
            continue
        with open_dict(node):
            for key, value in defaults.items():
                if key not in node:
                    node[key] = value
    return cfg
