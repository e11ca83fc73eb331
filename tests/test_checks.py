"""The one validation layer (tinycnn/checks.py): every config value refused in one line that names
the key, the value and what would be accepted, before data is loaded or a network is built."""

import math

import pytest

from conftest import compose_cfg
from tinycnn import checks
from tinycnn.errors import ConfigError
from tinycnn.runner import run


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
