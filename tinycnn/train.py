"""The training loop: one plain PyTorch function, batches cut from a randperm."""

import logging
import math
import time

import torch
import torch.nn.functional as F
from tqdm import tqdm

from tinycnn.augment import SEED_OFFSET, active as augment_active, augment
from tinycnn.checks import number, whole
from tinycnn.errors import Diverged
from tinycnn.recipe import EMA, check_recipe, lr_at, make_optimizer

log = logging.getLogger("tinycnn")


def check_train_cfg(t) -> None:
    number("train.lr", t.lr, 0, above_low=True)  # inf refused here, not found out by training
    for key in ("batch_size", "epochs", "eval_batch_size"):
        whole(f"train.{key}", t[key], 1)
    whole("train.evals_per_epoch", t.evals_per_epoch, 0)
    number("train.T_max", t.T_max, 0, above_low=True)
    number("train.eta_min", t.eta_min, 0)
    check_recipe(t)


@torch.no_grad()
def evaluate(model, data, x, y, batch_size: int = 1000) -> float:
    """Accuracy on (x, y) in fixed-order batches. With BatchNorm(track_running_stats=False) the
    batch statistics take part, so batch size and order are fixed for repeatable numbers."""
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        correct += (model(data.normalise(x[i:i + batch_size])).argmax(1) == y[i:i + batch_size]).sum()
    model.train()
    return correct.item() / max(len(x), 1)


def _progress_line(epoch: int, epochs: int, step: int, total: int, seconds: float, loss: float,
                   acc: float, val_acc) -> str:
    """What a run says at each validation check where no progress bar can be drawn (a pipe,
    nohup, CI): one plain line."""
    val = "" if val_acc is None else f"  val {100 * val_acc:.2f}%"
    return (f"epoch {epoch}/{epochs}  step {step:,}/{total:,} ({100 * step / total:.0f}%)  "
            f"{seconds:.1f} s  loss {loss:.3f}  train {100 * acc:.2f}%{val}")


def train(model, data, t, seed: int, on_eval=None) -> dict:
    """Train `model` on data.train_* with recipe `t` (conf/train). Returns the last epoch's running
    train accuracy and loss (as the paper reports), the wall time, and the model to evaluate: the
    EMA of the weights when t.ema is set, else `model` itself.

    on_eval(step, epoch, model) is called evals_per_epoch times per epoch, the last at the end of
    each epoch; it may raise (a pruned Optuna trial) to stop training, and returns the validation
    accuracy. Progress: a bar on a terminal, else one plain line per check (or per epoch).
    """
    opt = make_optimizer(model, t)
    ema = EMA(model, t.ema) if t.ema else None
    g = torch.Generator().manual_seed(seed)
    aug = t.get("augment") if augment_active(t.get("augment")) else None
    g_aug = torch.Generator().manual_seed(seed + SEED_OFFSET) if aug is not None else None
    n, bs = len(data.train_x), t.batch_size
    n_batches = math.ceil(n / bs)
    total = n_batches * t.epochs
    evals = t.evals_per_epoch if len(data.val_x) else 0
    eval_at = {math.ceil((k + 1) * n_batches / evals) for k in range(evals)} if evals else set()
    step, start = 0, time.perf_counter()
    model.train()
    for epoch in range(t.epochs):
        perm = torch.randperm(n, generator=g).to(data.train_x.device)
        loss_sum = torch.zeros((), device=data.train_x.device)
        correct = torch.zeros((), dtype=torch.long, device=data.train_x.device)
        bar = tqdm(range(n_batches), desc=f"epoch {epoch + 1}/{t.epochs}", unit="batch",
                   disable=None, leave=False, dynamic_ncols=True)
        for b in bar:
            idx = perm[b * bs:(b + 1) * bs]
            x = data.train_x[idx]  # (B, C, H, W) uint8
            if aug is not None:
                x = augment(x, aug, g_aug, data.mean)
            x, y = data.normalise(x), data.train_y[idx]  # (B, C, H, W) float, (B,)
            logits = model(x)  # (B, 10)
            loss = F.cross_entropy(logits, y, label_smoothing=t.label_smoothing)
            lr = lr_at(t, step, total, n_batches)
            for group in opt.param_groups:
                group["lr"] = lr
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if ema is not None:
                ema.update(model)
            step += 1
            loss_sum += loss.detach() * len(idx)
            correct += (logits.argmax(1) == y).sum()
            if b % 50 == 0 or b + 1 == n_batches:  # a host sync every 50 batches, not every one
                seen = min((b + 1) * bs, n)
                avg = loss_sum.item() / seen
                if not math.isfinite(avg):
                    raise Diverged(f"training diverged: the loss became {avg} by step {step} "
                                   f"(epoch {epoch + 1}); try a lower train.lr (now {t.lr})")
                bar.set_postfix(loss=f"{avg:.3f}", acc=f"{correct.item() / seen:.3f}")
            checked = b + 1 in eval_at and on_eval is not None
            val_acc = on_eval(step, epoch + (b + 1) / n_batches,
                              model if ema is None else ema.model) if checked else None
            if bar.disable and (checked or (b + 1 == n_batches and not eval_at)):
                seen = min((b + 1) * bs, n)
                log.info("%s", _progress_line(epoch + 1, t.epochs, step, total,
                                              time.perf_counter() - start, loss_sum.item() / seen,
                                              correct.item() / seen, val_acc))
        bar.close()
    return {"train_acc": correct.item() / n, "train_loss": loss_sum.item() / n,
            "seconds": time.perf_counter() - start, "steps": step,
            "model": model if ema is None else ema.model}
