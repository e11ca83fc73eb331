"""Epochs as a search's fidelity: with pruner.fidelity=epochs a trial reports once an epoch, and
successive halving over epochs stops a hopeless 3-epoch trial at the end of its first epoch."""

import json
from pathlib import Path

import optuna

from conftest import run_cmd, sweep_cmd

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_a_three_epoch_sweep_prunes_at_the_end_of_epoch_one(tmp_path):
    url = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(storage=url, study_name="e", direction="maximize")
    study.enqueue_trial({"train.lr": 0.002})
    study.enqueue_trial({"train.lr": 1e-7})  # learns nothing
    p = run_cmd(sweep_cmd(tmp_path, "hydra/sweeper=tinycnn_optuna", "hydra.sweeper.study_name=e",
                          "train.lr=tag(log,interval(1e-8,1e-2))", "train.epochs=3",
                          "train.evals_per_epoch=2", "hydra.sweeper.n_trials=2",
                          "hydra.sweeper.pruner.name=halving",
                          "hydra.sweeper.pruner.fidelity=epochs"))
    assert p.returncode == 0, p.output
    done, pruned = optuna.load_study(study_name="e", storage=url).trials
    assert done.user_attrs["state"] == "complete" and sorted(done.intermediate_values) == [1, 2, 3]
    assert pruned.user_attrs["state"] == "pruned" and list(pruned.intermediate_values) == [1]
    m = json.loads((Path(pruned.user_attrs["dir"]) / "metrics.json").read_text())
    # two validation checks in epoch 1 (history), one report to Optuna: its end
    assert m["status"] == "pruned" and [h["epoch"] for h in m["history"]] == [0.5, 1.0]
    assert m["seconds"] > 0


def test_a_bad_fidelity_is_one_line(tmp_path):
    p = run_cmd(sweep_cmd(tmp_path, "sweeps=paper25k", "hydra.sweeper.pruner.fidelity=batches"))
    assert p.returncode == 1 and "hydra.sweeper.pruner.fidelity = 'batches': expected one of " \
        "checks, epochs" in p.output and "Traceback" not in p.output
