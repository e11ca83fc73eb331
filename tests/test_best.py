"""The shipped winners of the search (conf/experiment/best*.yaml) train to their floors."""

import pytest

from conftest import compose_cfg
from tinycnn.runner import run


@pytest.mark.slow
@pytest.mark.parametrize("name, budget, floor", [("best25k", 25_000, 0.990),
                                                 ("best5k", 5_000, 0.985),
                                                 ("best5k_r2", 5_000, 0.985)])
def test_winner_trains_to_its_floor_in_one_epoch(name, budget, floor, tmp_path):
    """One epoch on the full training split (55,000 images), seed 0, as `python run.py
    +experiment=NAME` does; the README's figures are means over >= 5 seeds."""
    cfg = compose_cfg(f"+experiment={name}", "seed=0", "threads=1", small=False)
    assert cfg.train.epochs == 1 and cfg.data.limit is None
    m = run(cfg, tmp_path)
    assert m["params"] <= budget
    assert m["test_acc"] >= floor, m["test_acc"]
