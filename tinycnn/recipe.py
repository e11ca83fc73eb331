"""The training recipe as data (conf/train/*.yaml): optimiser, learning-rate schedule, EMA.

Written once, used by the training loop and the benchmark. The schedule is a plain function of
the step, as in nanoGPT's get_lr(it): a new schedule is one branch.
"""

import copy
import math

import torch
from torch import nn

from tinycnn.checks import choice, flag, number
from tinycnn.errors import ConfigError

OPTIMIZERS = ("adam", "adamw", "sgd")
# epoch_cosine is the paper's: cosine annealing stepped once per epoch (T_max, eta_min), so
# within one epoch the lr is constant. The others are stepped every batch, with lr the peak.
SCHEDULES = ("epoch_cosine", "onecycle", "warmup_cosine", "warmup_linear", "constant")
ONECYCLE_DIV = 25.0  # onecycle starts at lr / 25, as torch's OneCycleLR (div_factor)


def check_recipe(t) -> None:
    """Fail before any data is loaded if the recipe cannot work."""
    choice("train.optimizer", t.optimizer, OPTIMIZERS)
    choice("train.schedule", t.schedule, SCHEDULES)
    number("train.weight_decay", t.weight_decay, 0)
    number("train.momentum", t.momentum, 0, 1, below_high=True)
    for key in ("warmup", "final_lr", "label_smoothing"):
        number(f"train.{key}", t[key], 0, 1)
    flag("train.nesterov", t.nesterov)
    if t.nesterov and (t.optimizer != "sgd" or t.momentum == 0):
        raise ConfigError(f"train.nesterov = true with optimizer {t.optimizer} and momentum "
                          f"{t.momentum}: Nesterov needs optimizer sgd and momentum > 0")
    if t.ema is not None:
        number("train.ema", t.ema, 0, 1, below_high=True,
               hint=" (a decay, e.g. 0.99), or 0 or null for no EMA")


def make_optimizer(model: nn.Module, t) -> torch.optim.Optimizer:
    """The optimiser of recipe t. weight_decay applies to conv and linear weights only: norms'
    scales and all biases (the 0- and 1-d tensors) are left alone."""
    params = [p for p in model.parameters() if p.requires_grad]
    if t.weight_decay:
        groups = [{"params": [p for p in params if p.ndim > 1], "weight_decay": t.weight_decay},
                  {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
    else:
        groups = params  # one group, exactly as the paper's recipe has always run
    if t.optimizer == "adam":
        return torch.optim.Adam(groups, lr=t.lr)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=t.lr, weight_decay=0.0)  # decay set per group
    return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, nesterov=t.nesterov)


def lr_at(t, step: int, total: int, steps_per_epoch: int) -> float:
    """The learning rate for optimiser step `step` (0-based) of `total`."""
    peak, final = t.lr, t.lr * t.final_lr
    if t.schedule == "constant":
        return peak
    if t.schedule == "epoch_cosine":
        # CosineAnnealingLR's closed form at the epoch; lr * 1 + eta_min * 0 is exactly lr in
        # the first epoch, so the paper's one-epoch recipe trains at exactly t.lr.
        f = (1 + math.cos(math.pi * (step // steps_per_epoch) / t.T_max)) / 2
        return peak * f + t.eta_min * (1 - f)
    warm = round(t.warmup * total)
    if step < warm:
        if t.schedule == "onecycle":  # cosine rise from lr / 25 to lr
            f = (1 - math.cos(math.pi * step / warm)) / 2
            return peak / ONECYCLE_DIV + (peak - peak / ONECYCLE_DIV) * f
        return peak * (step + 1) / warm  # linear warm-up from lr / warm to lr
    p = (step - warm) / max(total - warm - 1, 1)  # 0 at the peak, 1 at the last step
    if t.schedule == "warmup_linear":
        return peak + (final - peak) * p
    return final + (peak - final) * (1 + math.cos(math.pi * p)) / 2  # onecycle, warmup_cosine


class EMA:
    """An exponential moving average of the weights (buffers copied as they are).

    The decay warms up as min(decay, (1 + n) / (10 + n)) so the random initial weights do not
    linger in the average of a one-epoch run (0.999^860 would still weigh them 42%).
    """

    def __init__(self, model: nn.Module, decay: float):
        self.model = copy.deepcopy(model)  # never backpropagated: update() runs under no_grad
        self.decay, self.updates = decay, 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        self.updates += 1
        for e, p in zip(self.model.parameters(), model.parameters()):
            e.lerp_(p, 1 - d)
        for e, b in zip(self.model.buffers(), model.buffers()):
            e.copy_(b)
