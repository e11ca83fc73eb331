"""Budgets and objectives beyond parameters: MACs, peak activation bytes and flash bytes checked
before training, one Optuna constraint each; a Pareto search on MACs that compare marks."""

import json

import optuna
import pytest

from conftest import run_cmd, sweep_cmd
from tinycnn import cli

optuna.logging.set_verbosity(optuna.logging.WARNING)
PAPER = {"params": 21_614, "macs": 756_880, "peak_bytes": 12_544, "flash_bytes": 21_748}
WORDS = {"macs": "MACs", "peak_bytes": "peak activation bytes (int8)",
         "flash_bytes": "flash bytes (int8)"}


@pytest.mark.parametrize("cost", ["macs", pytest.param("peak_bytes", marks=pytest.mark.slow),
                                  pytest.param("flash_bytes", marks=pytest.mark.slow)])
def test_each_budget_makes_a_trial_infeasible_and_its_constraint_names_it(tmp_path, cost):
    limit = PAPER[cost] - 1  # the paper's network, one over the budget
    p = run_cmd(sweep_cmd(tmp_path, "sweeps=paper25k", "hydra.sweeper.n_trials=1",
                          "hydra.sweeper.study_name=b", f"hydra.sweeper.max_{cost}={limit}"))
    assert p.returncode == 0, p.output
    [t] = optuna.load_study(study_name="b", storage=f"sqlite:///{tmp_path}/optuna.db").trials
    assert t.user_attrs["state"] == "infeasible"
    assert t.user_attrs["reason"] == (f"over budget: {PAPER[cost]:,} {WORDS[cost]} > "
                                      f"max_{cost} {limit:,}")
    assert t.constraints[f"over_{cost}"] == 1 and t.constraints["over_budget"] < 0
    assert {k: t.user_attrs[k] for k in PAPER} == PAPER
    m = json.loads((tmp_path / "run" / "trial_0" / "metrics.json").read_text())
    assert m["status"] == "infeasible" and m[cost] == PAPER[cost]
    assert "Launching" not in p.output  # never trained
    assert f"budget 25,000 params, {limit:,} {cost}" in p.output


def test_a_bad_budget_is_one_line(tmp_path):
    p = run_cmd(sweep_cmd(tmp_path, "sweeps=paper25k", "hydra.sweeper.max_macs=-5"))
    assert p.returncode == 1 and "hydra.sweeper.max_macs = -5: expected a whole number >= 1" \
        in p.output and "Traceback" not in p.output


def test_a_pareto_search_on_macs_and_compare_marks_its_front(tmp_path, capsys):
    p = run_cmd(sweep_cmd(tmp_path, "sweeps=paper25k", "hydra.sweeper.n_trials=5",
                          "hydra.sweeper.study_name=m", "hydra.sweeper.objectives=[val_acc,macs]",
                          "hydra.sweeper.sampler.name=random", "hydra.sweeper.pruner.name=none",
                          "hydra.sweeper.max_params=60000"))
    assert p.returncode == 0, p.output
    study = optuna.load_study(study_name="m", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    done = [t for t in study.trials if t.user_attrs.get("state") == "complete"]
    assert len(done) >= 3 and all(t.values[1] == t.user_attrs["macs"] for t in done)
    # the front by hand: no other trial at least as accurate with no more MACs
    front = {t.number for t in done if not any(
        q.values[0] >= t.values[0] and q.values[1] <= t.values[1] and q.values != t.values
        for q in done)}
    for source in (str(tmp_path / "run"), "m"):  # the folder and the study say the same
        code = cli.main(["compare", source, "--storage", f"sqlite:///{tmp_path}/optuna.db",
                         "--format", "json"])
        rows = json.loads(capsys.readouterr()[0])
        assert code == 0 and {r["trial"] for r in rows if r["pareto"]} == front
    code = cli.main(["compare", str(tmp_path / "run"), "--plot", str(tmp_path / "m.png"),
                     "--x", "macs"])
    err = capsys.readouterr()[1]
    assert code == 0 and (tmp_path / "m.png").stat().st_size > 10_000


def test_a_plain_run_checks_the_budgets_it_is_given(tmp_path):
    from conftest import run_py
    p = run_py("model=paper", "+model.max_peak_bytes=2500", f"hydra.run.dir={tmp_path}/r")
    assert p.returncode == 1 and p.stderr.strip().splitlines() == [
        "tinycnn: model.max_peak_bytes = 2,500: this network needs 12,544 peak bytes, over the "
        "budget; refused before it was built"]
    p = run_py("model=paper", "model.blocks.res2.repeat=10000", f"hydra.run.dir={tmp_path}/r")
    hint = "+model.max_params=9380678"
    assert p.returncode == 1 and hint in p.stderr  # a hint that works as written
    p = run_py("model=paper", "model.blocks.res2.repeat=10000", hint, "--cfg", "job")
    assert p.returncode == 0, p.stderr
