"""One run: check the config, train, evaluate, and leave the complete run record in out_dir."""

import logging
import math
import os
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from tinycnn.data import check_data_cfg, worker_data
from tinycnn.model import build_model, format_param_table
from tinycnn.record import config_key, plain, save_checkpoint, versions, write_json_atomic, \
    write_text_atomic
from tinycnn.train import check_train_cfg, evaluate, train
from tinycnn.errors import ConfigError

log = logging.getLogger("tinycnn")


def pick_device(name: str) -> torch.device:
    """auto: CUDA, then Apple's MPS, then CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
        torch.empty(0, device=device)
    except Exception:
        raise ConfigError(f"device = {name!r}: not available here; use auto, cpu, cuda, cuda:N "
                          "or mps") from None
    return device


def place(model, device: torch.device):
    """The model on `device`; on the CPU in channels-last layout, which makes one epoch of these
    small convolutions ~16% faster there (python -m tinycnn.bench; same maths, the sums in
    another order). Not measured on GPUs yet, so left as it is there."""
    if device.type == "cpu":
        return model.to(device, memory_format=torch.channels_last)
    return model.to(device)


def _trial_reporter(cfg):
    optuna_cfg = cfg.get("optuna")
    if not optuna_cfg:
        return None
    from tinycnn.study import trial_reporter  # only trials inside an Optuna sweep need it
    return trial_reporter(optuna_cfg)


def run(cfg, out_dir, overrides=()) -> dict:
    """Train and evaluate the config `cfg` (conf/config.yaml composed); returns metrics.json's dict.

    Everything that can be checked is checked before any data is loaded. Progress goes to the
    "tinycnn" logger (Hydra sends it to the console and the run folder's run.log).
    """
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed = int(cfg.seed)
    torch.manual_seed(seed)  # weight init
    model = build_model(cfg.model)
    check_train_cfg(cfg.train)
    check_data_cfg(cfg.data)
    device = pick_device(str(cfg.device))
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    t = time.perf_counter()
    reporter = _trial_reporter(cfg)
    study_s = time.perf_counter() - t  # opening the Optuna trial, when there is one
    log.info("%s", format_param_table(model))

    resolved = plain(cfg)
    resolved.pop("hydra", None)
    write_text_atomic(out_dir / "config.yaml", OmegaConf.to_yaml(resolved))
    record = {"status": "running", "params": model.num_params,
              "params_by_block": model.param_table(), "seed": seed, "epochs": cfg.train.epochs,
              "device": str(device), "config_key": config_key(cfg), "overrides": list(overrides),
              "history": [], "versions": versions()}
    if cfg.get("optuna") and cfg.optuna.get("trial") is not None:
        record["trial"] = int(cfg.optuna.trial)

    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)
    # Where a trial's time goes besides training (python -m tinycnn.bench_sweep prints it).
    timing = record["timing"] = {"setup": time.perf_counter() - t0 - study_s,
                                 "report": study_s}
    data, loaded_in = worker_data(cfg.data, device)  # a sweep worker loads MNIST once
    timing["data"] = loaded_in or 0.0
    record["worker"] = {"pid": os.getpid(), "threads": torch.get_num_threads(),
                        "data": "reused" if loaded_in is None else "loaded"}
    log.info("data: %s", "the images this process loaded for an earlier run" if loaded_in is None
             else f"MNIST loaded in {loaded_in:.2f} s")
    model = place(model, device)

    total_steps = math.ceil(len(data.train_x) / cfg.train.batch_size) * cfg.train.epochs

    def on_eval(step, epoch, val_acc):
        record["history"].append({"step": step, "epoch": round(epoch, 4), "val_acc": val_acc})
        if reporter is not None:
            t = time.perf_counter()
            try:
                reporter(step, val_acc, final=step == total_steps)
            finally:
                timing["report"] += time.perf_counter() - t

    try:
        result = train(model, data, cfg.train, seed, on_eval=on_eval)
    except BaseException as exc:
        pruned = type(exc).__name__ == "TrialPruned"
        record.update(status="pruned" if pruned else "failed", test_acc=None,
                      val_acc=record["history"][-1]["val_acc"] if record["history"] else None)
        if not pruned:
            record["error"] = f"{type(exc).__name__}: {exc}"
        write_json_atomic(out_dir / "metrics.json", record)
        raise
    t = time.perf_counter()
    h = record["history"]
    last_eval_at_end = h and h[-1]["step"] == result["steps"]
    val_acc = h[-1]["val_acc"] if last_eval_at_end else (
        evaluate(model, data, data.val_x, data.val_y, cfg.train.eval_batch_size)
        if len(data.val_x) else None)
    test_acc = evaluate(model, data, data.test_x, data.test_y, cfg.train.eval_batch_size)
    timing["evaluate"] = time.perf_counter() - t
    t = time.perf_counter()
    record.update(status="complete", train_acc=result["train_acc"], val_acc=val_acc,
                  test_acc=test_acc, train_loss=result["train_loss"], seconds=result["seconds"])
    save_checkpoint(out_dir / "model.pt", model, cfg.model, cfg.data, record)
    timing["save"] = time.perf_counter() - t  # the checkpoint; metrics.json is written next
    write_json_atomic(out_dir / "metrics.json", record)  # last: its presence means complete
    fmt = lambda a: "n/a" if a is None else f"{100 * a:.2f}%"  # noqa: E731
    log.info(f"train {fmt(record['train_acc'])}  val {fmt(val_acc)}  test {fmt(test_acc)}  "
        f"({record['seconds']:.1f} s training, {model.num_params:,} params)  -> {out_dir}")
    return record
