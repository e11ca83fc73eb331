"""The one validation layer (tinycnn/checks.py): every config value refused in one line that names
the key, the value and what would be accepted, before data is loaded or a network is built."""

import math
import re
import time
from pathlib import Path

import pytest

from conftest import compose_cfg, run_py
from tinycnn import checks
from tinycnn.errors import ConfigError
from tinycnn.runner import check_memory, run

GIB = 2 ** 30


@pytest.mark.parametrize("override, says", [
    ("train.lr=inf", "train.lr = inf: expected a finite number > 0"),
    ("train.lr=nan", "train.lr = nan: expected a finite number > 0"),
    ("train.lr=0", "train.lr = 0: expected a finite number > 0"),
    ("train.batch_size=0", "train.batch_size = 0: expected a whole number >= 1"),
    ("train.epochs=1.5", "train.epochs = 1.5: expected a whole number >= 1"),
    ("train.momentum=1", "train.momentum = 1: expected a finite number >= 0 and < 1"),
    ("train.ema=1.0", "train.ema = 1.0: expected a finite number >= 0 and < 1 (a decay"),
    ("train.label_smoothing=-0.1", "train.label_smoothing = -0.1: expected a finite number >= 0"),
    ("train.optimizer=lion", "train.optimizer = 'lion': expected one of adam, adamw, sgd"),
    ("train.nesterov=1", "train.nesterov = 1: expected true or false"),
    ("data.std=0", "data.std = 0: expected a finite number > 0"),
    ("data.limit=0", "data.limit = 0: expected a whole number >= 1 (images), or null"),
    ("data.val_size=60000", "data.val_size = 60000: expected a whole number from 0 to 59,999"),
    ("seed=true", "seed = True: expected a whole number >= 0 (e.g. seed=0)"),
    ("model.negative_slope=inf", "model.negative_slope = inf: expected a finite number"),
    ("train.batch_size=1000000", "train.batch_size = 1000000: larger than the training split "
                                 "(512 images); use at most 512"),
])
def test_a_bad_value_is_one_line_before_any_data(tmp_path, override, says):
    cfg = compose_cfg(override, "data.root=/nonexistent")  # refused before data is looked for
    with pytest.raises(ConfigError) as err:
        run(cfg, tmp_path / "run")
    assert str(err.value).startswith(says) and "\n" not in str(err.value)


def test_the_checks_return_what_they_accept():
    assert checks.whole("k", 3) == 3 and checks.number("k", 2) == 2.0
    assert checks.number("k", 0.5, 0, 1, below_high=True) == 0.5
    assert checks.choice("k", "a", ("a", "b")) == "a" and checks.flag("k", False) is False
    for bad in (True, math.inf, "1"):
        with pytest.raises(ConfigError, match=r"^k = .*: expected a finite number$"):
            checks.number("k", bad)
    with pytest.raises(ConfigError, match=r"^m\.kernal = 3: unknown field; the fields here are "
                                          r"groups, kernel, out$"):
        checks.known("m", {"kernal": 3}, {"out", "kernel", "groups"})


def test_a_run_too_big_for_the_memory_is_refused_naming_the_batch_that_fits():
    """The paper's network at a batch of the whole training split needs ~26 GiB: refused with
    4 GiB free, naming the largest batch that fits, which then passes (and one more fails)."""
    cfg = compose_cfg("train.batch_size=55000", small=False)
    with pytest.raises(ConfigError) as err:
        check_memory(cfg, 4 * GIB)
    line = str(err.value)
    # 62,434 floats an image (forward_floats, bounded in test_costs.py), kept and their
    # gradients, 4 bytes each, 55,000 images
    assert "\n" not in line and line.startswith(
        "train.batch_size = 55000: training would need about 25.95 GiB of memory "
        f"({8 * 62434 * 55000 / GIB:.2f} GiB of activations kept for backward at batch 55,000, "
        "0.23 GiB for an evaluation batch of 1,000, "), line
    assert "more than the 4.00 GiB available here; use train.batch_size <= " in line, line
    fits = int(re.search(r"batch_size <= ([\d,]+)", line)[1].replace(",", ""))
    assert 1000 < fits < 55000
    check_memory(compose_cfg(f"train.batch_size={fits}", small=False), 4 * GIB)
    with pytest.raises(ConfigError):
        check_memory(compose_cfg(f"train.batch_size={fits + 1}", small=False), 4 * GIB)
    # An evaluation batch is at most the largest split it evaluates: 10^9 counts as 60,000.
    with pytest.raises(ConfigError, match=r"^train.eval_batch_size = 1000000000: .* for an "
                                          r"evaluation batch of 60,000, .* use "
                                          r"train.eval_batch_size <= "):
        check_memory(compose_cfg("train.eval_batch_size=1000000000", small=False), 4 * GIB)
    check_memory(cfg, None)  # free memory unknown (no /proc/meminfo): no check


@pytest.mark.parametrize("model", sorted(p.stem for p in (Path(__file__).parent.parent / "conf"
                                                          / "model").glob("*.yaml")))
@pytest.mark.parametrize("data", ["mnist", "cifar10"])
def test_no_preset_is_refused_with_two_gib_free(model, data):
    for train in ("paper", model if model.startswith("best") else "paper"):
        check_memory(compose_cfg(f"model={model}", f"train={train}", f"data={data}",
                                 small=False), 2 * GIB)


def test_a_run_too_big_for_any_machine_is_one_line_before_any_data(tmp_path):
    """A thousand residual blocks at a batch of the whole split: ~2 TB, refused by `python
    run.py` in one line, exit 1, before any data is read, no run folder left."""
    t0 = time.monotonic()
    p = run_py("model.blocks.res2.repeat=1000", "train.batch_size=55000", "data.root=/nonexistent",
               f"hydra.run.dir={tmp_path / 'run'}", timeout=120)
    took = time.monotonic() - t0
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 1 and len(lines) == 1, p.output
    assert lines[0].startswith("tinycnn: train.batch_size = 55000: training would need about "), \
        lines
    assert "available here; use train.batch_size <= " in lines[0], lines
    assert not (tmp_path / "run").exists() and took < 60
