"""The training recipe as data: schedules, optimisers, weight decay, label smoothing, EMA."""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import REPO, compose_cfg
from tinycnn import cli
from tinycnn.errors import ConfigError
from tinycnn.evaluate import evaluate_checkpoint
from tinycnn.model import build_model
from tinycnn.recipe import EMA, lr_at, make_optimizer
from tinycnn.runner import run
from tinycnn.schema import defaults

TRAIN = defaults()["train"]  # conf/train/paper.yaml and conf/train/augment/none.yaml
from tinycnn.train import check_train_cfg

# Run records made by main before the recipe was data (95669f7), one per kind of CPU kernels:
# other kernels give other last bits, and two epochs turn them into other numbers. old_run came
# from the CI machine of the time, whose kernels were not recorded; AVX2, and every lower set
# forced here (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA), give numbers other than its, so it is
# taken for AVX512. old_run_avx2: the same code and command on an AVX2 AMD EPYC.
OLD_RUNS = {"AVX2": REPO / "tests" / "fixtures" / "old_run_avx2"}
OLD_RUN = OLD_RUNS.get(torch.backends.cpu.get_cpu_capability(), REPO / "tests/fixtures/old_run")


def recipe(**changes):
    return OmegaConf.create({**TRAIN, **changes})


# --- schedules: first, middle and last step, worked out by hand -----------------------------------

TOTAL = 101  # steps 0..100; the middle of the decay is step 50 when there is no warm-up


def test_constant_and_epoch_cosine():
    t = recipe(schedule="constant", lr=0.01)
    assert [lr_at(t, s, TOTAL, TOTAL) for s in (0, 50, 100)] == [0.01, 0.01, 0.01]
    # the paper's: per epoch, T_max 5 epochs; one epoch of 101 steps stays at exactly lr
    t = recipe(schedule="epoch_cosine", lr=0.002, T_max=5, eta_min=1e-6)
    assert [lr_at(t, s, 3 * TOTAL, TOTAL) for s in (0, 50, 100)] == [0.002] * 3
    third = lr_at(t, 2 * TOTAL, 3 * TOTAL, TOTAL)  # epoch 2 of T_max 5
    f = (1 + math.cos(math.pi * 2 / 5)) / 2
    assert third == pytest.approx(1e-6 + (0.002 - 1e-6) * f, rel=1e-12)


def test_warmup_cosine_and_linear():
    for schedule in ("warmup_cosine", "warmup_linear"):
        t = recipe(schedule=schedule, lr=0.1, warmup=0.1, final_lr=0.0)  # 10 warm-up steps
        assert lr_at(t, 0, TOTAL, TOTAL) == pytest.approx(0.01)   # 1/10 of the way up
        assert lr_at(t, 9, TOTAL, TOTAL) == pytest.approx(0.1)    # the peak ends the warm-up
        assert lr_at(t, 10, TOTAL, TOTAL) == pytest.approx(0.1)
        assert lr_at(t, 100, TOTAL, TOTAL) == pytest.approx(0.0)  # decayed to final_lr * lr
    mid = 10 + 45  # halfway through the 91 decay steps 10..100
    assert lr_at(recipe(schedule="warmup_cosine", lr=0.1, warmup=0.1), mid, TOTAL, TOTAL) \
        == pytest.approx(0.05)
    assert lr_at(recipe(schedule="warmup_linear", lr=0.1, warmup=0.1), mid, TOTAL, TOTAL) \
        == pytest.approx(0.05)
    early = 10 + 18  # a fifth of the decay: cosine is still above linear there
    assert lr_at(recipe(schedule="warmup_cosine", lr=0.1, warmup=0.1), early, TOTAL, TOTAL) \
        == pytest.approx(0.1 * (1 + math.cos(math.pi / 5)) / 2)
    t = recipe(schedule="warmup_linear", lr=0.1, warmup=0.0, final_lr=0.1)
    assert [lr_at(t, s, TOTAL, TOTAL) for s in (0, 50, 100)] == pytest.approx([0.1, 0.055, 0.01])


def test_onecycle():
    t = recipe(schedule="onecycle", lr=0.05, warmup=0.2, final_lr=0.0)  # peak at step 20
    assert lr_at(t, 0, TOTAL, TOTAL) == pytest.approx(0.05 / 25)  # torch's div_factor
    assert lr_at(t, 10, TOTAL, TOTAL) == pytest.approx((0.05 / 25 + 0.05) / 2)
    assert lr_at(t, 20, TOTAL, TOTAL) == pytest.approx(0.05)
    assert lr_at(t, 60, TOTAL, TOTAL) == pytest.approx(0.025)
    assert lr_at(t, 100, TOTAL, TOTAL) == pytest.approx(0.0)


def test_schedule_reaches_the_optimiser_every_step(tmp_path):
    """A run with warmup_linear ends at final_lr * lr: the optimiser saw the per-step lr."""
    cfg = compose_cfg("train.schedule=warmup_linear", "train.warmup=0.25", "train.lr=0.004",
                      "train.final_lr=0.5")
    seen = []
    real_step = torch.optim.Adam.step

    def spy(self, *a, **k):
        seen.append(self.param_groups[0]["lr"])
        return real_step(self, *a, **k)

    torch.optim.Adam.step = spy
    try:
        run(cfg, tmp_path)
    finally:
        torch.optim.Adam.step = real_step
    assert len(seen) == 8  # 512 images, batch 64
    assert seen[0] == pytest.approx(0.002) and seen[1] == pytest.approx(0.004)
    assert seen[-1] == pytest.approx(0.002)


# --- optimisers and weight decay ----------------------------------------------------------------

@pytest.mark.parametrize("name, cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW),
                                       ("sgd", torch.optim.SGD)])
def test_each_optimiser_trains(name, cls, tmp_path):
    overrides = [f"train.optimizer={name}", "train.schedule=onecycle", "train.warmup=0.2"]
    if name == "sgd":
        overrides += ["train.lr=0.05", "train.nesterov=true"]
    cfg = compose_cfg(*overrides)
    opt = make_optimizer(build_model(cfg.model), cfg.train)
    assert type(opt) is cls
    if name == "sgd":
        assert opt.defaults["momentum"] == 0.9 and opt.defaults["nesterov"] is True
    m = run(cfg, tmp_path)
    assert m["status"] == "complete" and m["val_acc"] > 0.3  # learning, far from chance (0.1)


def test_weight_decay_skips_norms_and_biases():
    model = build_model(compose_cfg().model)
    t = recipe(optimizer="adamw", weight_decay=0.5, lr=0.1)
    opt = make_optimizer(model, t)
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] for p in g["params"]}
    for name, p in model.named_parameters():
        assert (id(p) in decayed) == (p.ndim > 1 and "norm" not in name.lower()), name
    # and in effect: with zero gradients only the conv and linear weights shrink
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for name, p in model.named_parameters():
        changed = not torch.equal(p, before[name])
        assert changed == (p.ndim > 1), name


def test_bad_recipe_values_name_the_key():
    for key, value, words in [("optimizer", "lion", "adam, adamw, sgd"),
                              ("schedule", "cosine", "onecycle"),
                              ("warmup", 1.5, ">= 0 and <= 1"),
                              ("label_smoothing", -0.1, ">= 0 and <= 1"),
                              ("ema", 1.0, ">= 0 and < 1"),
                              ("weight_decay", float("nan"), ">= 0")]:
        with pytest.raises(ConfigError, match=f"train.{key} = .*{words}"):
            check_train_cfg(recipe(**{key: value}))
    with pytest.raises(ConfigError, match="Nesterov needs optimizer sgd"):
        check_train_cfg(recipe(nesterov=True))


def test_label_smoothing_changes_the_loss(trained_run, tmp_path):
    a = json.loads((trained_run / "metrics.json").read_text())  # compose_cfg(): no smoothing
    b = run(compose_cfg("train.label_smoothing=0.1"), tmp_path / "b")
    assert b["train_loss"] > a["train_loss"]  # smoothed targets: the loss cannot reach 0


# --- EMA ------------------------------------------------------------------------------------------

def test_ema_against_a_hand_computed_average():
    net = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.constant_(net.weight, 1.0)
    ema = EMA(net, decay=0.5)
    expected = 1.0
    for step, w in enumerate([3.0, 5.0, 9.0]):
        net.weight.data.fill_(w)
        ema.update(net)
        d = min(0.5, (1 + step) / (10 + step))
        expected = d * expected + (1 - d) * w
    assert ema.model.weight.item() == pytest.approx(expected)
    assert net.weight.item() == 9.0  # the live weights are untouched


def test_ema_weights_are_evaluated_and_saved(trained_run, tmp_path):
    plain = json.loads((trained_run / "metrics.json").read_text())  # compose_cfg(): no EMA
    m = run(compose_cfg("train.ema=0.9"), tmp_path / "ema")
    saved = torch.load(tmp_path / "ema/model.pt", weights_only=True)["state_dict"]
    live = torch.load(trained_run / "model.pt", weights_only=True)["state_dict"]
    # same seed, same batches: only the averaging differs, so the saved weights must too
    assert plain["train_loss"] == m["train_loss"]
    assert not torch.equal(saved["classifier.mlp.0.weight"], live["classifier.mlp.0.weight"])
    # the recorded test accuracy is that of the saved (EMA) weights
    assert evaluate_checkpoint(tmp_path / "ema/model.pt").test_acc == m["test_acc"]


# --- old records ----------------------------------------------------------------------------------

def test_paper_preset_has_every_recipe_key():
    from tinycnn.schema import LEGACY
    keys = set(OmegaConf.load(REPO / "conf/train/paper.yaml"))
    assert keys | {"augment"} == set(TRAIN) and LEGACY["train"] <= keys


def test_old_record_reproduces_and_evaluates(tmp_path, capsys):
    """A run record from before the recipe keys existed: same numbers, to the last digit."""
    old = tmp_path / "old_run"
    shutil.copytree(OLD_RUN, old)
    assert "optimizer" not in OmegaConf.load(old / "config.yaml").train
    code = cli.main(["reproduce", str(old), "--out", str(tmp_path / "again"), "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0 and "identical" in out, out + err
    recorded = json.loads((old / "metrics.json").read_text())
    new = json.loads((tmp_path / "again/metrics.json").read_text())
    for key in ("train_acc", "val_acc", "test_acc", "train_loss", "history"):
        assert new[key] == recorded[key], key
    assert OmegaConf.load(tmp_path / "again/config.yaml").train.optimizer == "adam"
    assert evaluate_checkpoint(old / "model.pt").test_acc == recorded["test_acc"]
    code = cli.main(["evaluate", str(old / "model.pt")])
    out, _ = capsys.readouterr()
    assert code == 0 and "the same" in out


def test_train_paper_matches_the_old_record(tmp_path):
    """`train=paper` through today's code gives the numbers today's main recorded."""
    recorded = json.loads((OLD_RUN / "metrics.json").read_text())
    cfg = compose_cfg(*recorded["overrides"], small=False)
    cfg.data.root = compose_cfg().data.root
    m = run(cfg, tmp_path)
    for key in ("params", "train_acc", "val_acc", "test_acc", "train_loss", "history"):
        assert m[key] == recorded[key], key
