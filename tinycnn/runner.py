"""One run: check the config, train, evaluate, and leave the complete run record in out_dir."""

import logging
import math
import os
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from tinycnn.costs import training_bytes
from tinycnn.data import check_data_cfg, data_bytes, train_size, worker_data
from tinycnn.model import build_model, format_param_table, plan
from tinycnn.provenance import code_version, machine, versions
from tinycnn.record import (METRICS, WEIGHTS, config_key, save_checkpoint, write_config,
                            write_metrics)
from tinycnn.schema import complete
from tinycnn.train import check_train_cfg, evaluate, train
from tinycnn import threads
from tinycnn.augment import check_augment
from tinycnn.checks import fail, whole
from tinycnn.errors import ConfigError, TinycnnError

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


def check_run_cfg(cfg) -> None:
    """The top-level settings: a seed of 1.5 is refused, not truncated to 1."""
    whole("seed", cfg.get("seed"), 0, " (e.g. seed=0)")
    threads.check(cfg.get("threads"))


def free_memory(device: torch.device) -> int | None:
    """Bytes free for a run: the GPU's free memory, or the host's MemAvailable from
    /proc/meminfo; None where it cannot be read (then nothing is refused)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return kb * 1024


def check_memory(cfg, available: int | None, where: str = "") -> None:
    """Refuse, before anything is allocated, a config whose training needs more memory than
    `available` bytes (tinycnn/costs.py's estimate), naming the batch size to change."""
    if available is None:
        return
    p, t = plan(cfg.model), cfg.train
    # an evaluation batch holds at most the largest split it evaluates (val or test)
    n_eval = min(t.eval_batch_size, max(cfg.data.val_size,
                                        cfg.data.get("test_limit") or cfg.data.train_size))
    parts = training_bytes(p.forward_floats(), p.total, t.batch_size, n_eval,
                           data_bytes(cfg.data))
    need = sum(parts.values())
    if need <= available:
        return
    by_train = parts["train"] >= parts["eval"]  # the larger part names the key to change
    part, key, other = ("train", "batch_size", "eval_batch_size") if by_train \
        else ("eval", "eval_batch_size", "batch_size")
    per_image = parts[part] // (t.batch_size if by_train else n_eval)
    fits = (available - need + parts[part]) // per_image
    gib = lambda b: f"{b / 2 ** 30:,.2f} GiB"  # noqa: E731
    fail(f"train.{key}", t[key], f"training would need about {gib(need)} of memory "
         f"({gib(parts['train'])} of activations kept for backward at batch {t.batch_size:,}, "
         f"{gib(parts['eval'])} for an evaluation batch of {n_eval:,}, {gib(parts['fixed'])} "
         f"of weights and data), more than the {gib(available)} available here{where}; "
         + (f"use train.{key} <= {fits:,} (or a smaller train.{other})" if fits >= 1 else
            f"even train.{key}=1 does not fit: use a smaller train.{other} or a smaller network"))


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
    model, device, reporter, study_s = _set_up(cfg)
    if reporter is not None:  # a sweep's trial: its run.log says what it is (console: one line)
        log.info("overrides: %s", " ".join(overrides))
    log.info("%s", format_param_table(model))
    write_config(out_dir, cfg)
    record = _new_record(cfg, model, device, overrides)
    # Where a trial's time goes besides training (python -m tinycnn.bench_sweep prints it).
    record["timing"] = {"setup": time.perf_counter() - t0 - study_s, "report": study_s}
    data = _data(cfg, device, record)
    model.to(device)
    started = time.perf_counter()
    try:
        result = train(model, data, cfg.train, cfg.seed,
                       on_eval=_validation(cfg, data, record, reporter))
    except BaseException as exc:
        pruned = type(exc).__name__ == "TrialPruned"
        h = record["history"]
        # seconds: training until the stop, so a pruned or failed trial's cost shows too
        record.update(status="pruned" if pruned else "failed", test_acc=None,
                      val_acc=h[-1]["val_acc"] if h else None,
                      seconds=time.perf_counter() - started)
        if not pruned:
            record["error"] = f"{type(exc).__name__}: {exc}"
        write_metrics(out_dir, record)
        raise
    return _finish(cfg, out_dir, data, result, record)


def _unsaved(out_dir: Path, record: dict, exc: OSError) -> TinycnnError:
    """A record that could not be written (no half-written file is left: record.py writes each
    atomically): metrics.json records the run failed if that much fits, and the error says so."""
    why = exc.strerror or str(exc)
    record.update(status="failed", error=f"OSError: {why} (saving the run)")
    record["test_acc"] = None
    try:
        write_metrics(out_dir, record)
        kept = f"{out_dir / METRICS} records the run as failed"
    except OSError:
        kept = "no record could be written"
    return TinycnnError(f"the run trained but its weights and record could not be saved in "
                        f"{out_dir} ({why}); {kept}. Free some space (or choose another "
                        "hydra.run.dir) and run it again")


def _set_up(cfg):
    """Check the config and build the model (seeded), the device and the trial's reporter:
    nothing here touches the data. Returns them and the seconds spent opening the trial."""
    complete(cfg)  # a config recorded before a key existed gets that key's default
    check_run_cfg(cfg)
    torch.manual_seed(cfg.seed)  # weight init
    model = build_model(cfg.model)
    check_train_cfg(cfg.train)
    check_data_cfg(cfg.data)
    check_augment(cfg.train.get("augment"), cfg.data)
    n_train = train_size(cfg.data)
    if cfg.train.batch_size > n_train:  # refused before a 10 GB batch is allocated
        fail("train.batch_size", cfg.train.batch_size, f"larger than the training split "
             f"({n_train:,} images); use at most {n_train:,} (or fewer held out: data.val_size)")
    device = pick_device(str(cfg.device))
    check_memory(cfg, free_memory(device), "" if device.type == "cpu" else f" on {device}")
    log.info("%s", threads.apply(cfg.get("threads")))
    if device.type != "cpu":  # CPU kernels are deterministic as they are; on this torch the
        # switch also imports torch._inductor (1.5 s in every process), so only where it matters
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
    t = time.perf_counter()
    reporter = _trial_reporter(cfg)  # opening the Optuna trial, when there is one
    return model, device, reporter, time.perf_counter() - t


def _new_record(cfg, model, device, overrides) -> dict:
    """metrics.json as it starts: what was run, where, with which versions."""
    record = {"status": "running", "data": cfg.data.get("name"), **model.costs.totals(),
              "params_by_block": model.param_table(), "seed": cfg.seed,
              "epochs": cfg.train.epochs, "device": str(device), "config_key": config_key(cfg),
              "overrides": list(overrides), "history": [], "versions": versions(),
              "code": code_version(),
              "machine": machine(device)}
    if cfg.get("optuna") and cfg.optuna.get("trial") is not None:
        record["trial"] = int(cfg.optuna.trial)
    return record


def _data(cfg, device, record):
    """MNIST as this process holds it: a sweep worker loads it once for all its trials."""
    data, loaded_in = worker_data(cfg.data, device)
    record["timing"]["data"] = loaded_in or 0.0
    record["worker"] = {"pid": os.getpid(), "threads": torch.get_num_threads(),
                        "data": "reused" if loaded_in is None else "loaded"}
    log.info("data: %s", "the images this process loaded for an earlier run" if loaded_in is None
             else f"{cfg.data.get('name', 'MNIST')} loaded in {loaded_in:.2f} s")
    return data


def _validation(cfg, data, record, reporter):
    """The training loop's on_eval: a validation check, added to the history and reported to
    the Optuna trial (which may raise TrialPruned)."""
    total_steps = math.ceil(len(data.train_x) / cfg.train.batch_size) * cfg.train.epochs
    timing = record["timing"]
    # pruner.fidelity=epochs: the trial reports once an epoch (step = the epoch), so Hyperband or
    # successive halving over epochs stop most trials after one or two
    by_epoch = reporter is not None and \
        (OmegaConf.select(cfg, "optuna.pruner.fidelity") or "checks") == "epochs"

    def on_eval(step, epoch, net):
        val_acc = evaluate(net, data, data.val_x, data.val_y, cfg.train.eval_batch_size)
        record["history"].append({"step": step, "epoch": round(epoch, 4), "val_acc": val_acc})
        if reporter is not None:
            # Optuna's step is the check's number (1, 2, ...), not the batch: trials with
            # different batch sizes are then compared at the same point of their training.
            whole_epoch = abs(epoch - round(epoch)) < 1e-9
            if by_epoch and not whole_epoch:
                return val_acc
            t = time.perf_counter()
            try:
                reporter(round(epoch) if by_epoch else len(record["history"]), val_acc,
                         final=step == total_steps)
            finally:
                timing["report"] += time.perf_counter() - t
        return val_acc
    return on_eval


def _finish(cfg, out_dir: Path, data, result: dict, record: dict) -> dict:
    """Evaluate the trained model (the last validation check is reused), save the checkpoint,
    then metrics.json: its presence means the run is complete."""
    model = result.pop("model")  # the EMA of the weights when train.ema is set
    timing = record["timing"]
    t = time.perf_counter()
    h = record["history"]
    last_eval_at_end = h and h[-1]["step"] == result["steps"]
    val_acc = h[-1]["val_acc"] if last_eval_at_end else (
        evaluate(model, data, data.val_x, data.val_y, cfg.train.eval_batch_size)
        if len(data.val_x) else None)
    log.info("evaluating: %s%s test images", "" if last_eval_at_end or not len(data.val_x)
             else f"{len(data.val_x):,} validation and ", f"{len(data.test_x):,}")
    test_acc = evaluate(model, data, data.test_x, data.test_y, cfg.train.eval_batch_size)
    timing["evaluate"] = time.perf_counter() - t
    t = time.perf_counter()
    record.update(status="complete", train_acc=result["train_acc"], val_acc=val_acc,
                  test_acc=test_acc, train_loss=result["train_loss"], seconds=result["seconds"])
    try:
        save_checkpoint(out_dir / WEIGHTS, model, cfg.model, cfg.data, record)
        timing["save"] = time.perf_counter() - t  # the checkpoint; metrics.json is written next
        write_metrics(out_dir, record)
    except OSError as exc:  # a full disk, a quota, a folder gone: every write is atomic
        raise _unsaved(out_dir, record, exc) from None
    fmt = lambda a: "n/a" if a is None else f"{100 * a:.2f}%"  # noqa: E731
    log.info(f"train {fmt(record['train_acc'])}  val {fmt(val_acc)}  test {fmt(test_acc)}  "
             f"({record['seconds']:.1f} s training, {model.num_params:,} params)  -> {out_dir}")
    return record
