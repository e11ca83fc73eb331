"""Test accuracy of saved weights (a run's model.pt), without training.

The checkpoint is opened with weights_only=True, so a file from elsewhere cannot run code. The
paper's BatchNorm keeps no running statistics, so evaluation normalises each test batch by itself:
the batch size and the test subset matter, and are taken from the run's config.yaml beside the
weights when there is one, so the recorded test accuracy is reproduced exactly.
"""

from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from tinycnn.errors import TinycnnError
from tinycnn.record import CONFIG, load_checkpoint, load_config

DEFAULT_EVAL_BATCH = 1000


@dataclass
class Evaluation:
    test_acc: float
    recorded_test_acc: float | None
    n_test: int
    batch_size: int
    params: int
    settings_from: str     # where the test subset and batch size came from


def _data_settings(path: Path, conf_dir) -> tuple[dict, int, str]:
    """(data config, eval batch size, where they came from) for the checkpoint at path."""
    run_cfg = path.parent / CONFIG
    cfg = load_config(run_cfg)  # None when there is none; DamagedRun when it is unreadable
    if cfg is not None:
        data = cfg.get("data") or {}
        batch = (cfg.get("train") or {}).get("eval_batch_size", DEFAULT_EVAL_BATCH)
        return dict(data), int(batch), f"the run's {run_cfg}"
    try:
        from tinycnn.presets import default_preset, find_conf_dir, load_preset
        conf = find_conf_dir(conf_dir)
        data = load_preset(conf, "data", default_preset(conf, "data") or "mnist") or {}
        train = load_preset(conf, "train", default_preset(conf, "train") or "paper") or {}
        batch = int(train.get("eval_batch_size", DEFAULT_EVAL_BATCH))
        return data, batch, f"the defaults in {conf}"
    except TinycnnError:
        return {}, DEFAULT_EVAL_BATCH, "built-in defaults (no config.yaml beside the weights)"


def evaluate_checkpoint(path, data_root=None, test_limit=None, batch_size=None, device="cpu",
                        conf_dir=None) -> Evaluation:
    """Rebuild the network from the checkpoint's own model config, load the weights, test them."""
    from tinycnn.lazy import import_torch
    torch = import_torch()

    from tinycnn.data import load_data, root_here
    from tinycnn.schema import complete
    from tinycnn.model import build_model
    from tinycnn.train import evaluate

    path = Path(path)
    ckpt = load_checkpoint(path)  # raises TinycnnError for anything but a tinycnn checkpoint
    model = build_model(ckpt["model"])
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise TinycnnError(f"{path}: the weights do not fit the model config stored with them "
                           f"({str(exc).splitlines()[0]}); the file is damaged.") from None

    data, batch, source = _data_settings(path, conf_dir)
    root = data_root or data.get("root")
    root = (None if data_root else root_here(root)) or root
    stats = ckpt.get("data") or {}
    # the run's data set as recorded (a record older than a key: that key's default)
    data_cfg = complete(OmegaConf.create({"data": {k: v for k, v in data.items() if k != "root"}
                                          })).data
    data_cfg.merge_with({
        "root": str(root or "./data"),
        "val_size": 0, "split_seed": 0, "limit": 1,  # only the test images are needed
        "test_limit": test_limit if test_limit is not None else data.get("test_limit"),
        "mean": stats.get("mean", data.get("mean")),
        "std": stats.get("std", data.get("std")),
    })
    if data_cfg.test_limit == 0:
        data_cfg.test_limit = None
    batch = batch_size or batch
    mnist = load_data(data_cfg, torch.device(device))
    model.to(device)
    acc = evaluate(model, mnist, mnist.test_x, mnist.test_y, batch)
    recorded = (ckpt.get("metrics") or {}).get("test_acc")
    return Evaluation(acc, recorded, len(mnist.test_x), batch, model.num_params, source)


def report(e: Evaluation, path) -> str:
    line = (f"{path}: test accuracy {100 * e.test_acc:.2f}% ({e.test_acc:.6f}) on {e.n_test:,} "
            f"test images, {e.params:,} params, eval batch {e.batch_size} (settings from "
            f"{e.settings_from})")
    if e.recorded_test_acc is None:
        return line + "\nno test accuracy was recorded with these weights."
    same = "the same" if e.recorded_test_acc == e.test_acc else \
        f"a difference of {e.test_acc - e.recorded_test_acc:+.6f}"
    return line + f"\nrecorded at training: {e.recorded_test_acc:.6f}: {same}."
