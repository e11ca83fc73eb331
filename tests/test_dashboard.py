"""optuna-dashboard reads a tinycnn study as tinycnn means it: over-budget trials infeasible (not
complete trials scoring 0), through the dashboard's own HTTP API; and a pruned trial's cost."""

import json
from pathlib import Path
from wsgiref.util import setup_testing_defaults

import optuna
import pytest

from conftest import run_cmd, sweep_cmd

optuna.logging.set_verbosity(optuna.logging.WARNING)
dashboard = pytest.importorskip("optuna_dashboard")  # the `dashboard` extra (in `test`)


def api(app, path: str):
    """GET path from the dashboard's WSGI app, as its web page does; the JSON it answers."""
    environ, answer = {}, {}
    setup_testing_defaults(environ)
    environ.update(PATH_INFO=path, QUERY_STRING="after=0")
    body = b"".join(app(environ, lambda status, headers, exc_info=None:
                        answer.update(status=status)))
    assert answer["status"].startswith("200"), body[:300]
    return json.loads(body)


def test_the_dashboard_shows_over_budget_trials_as_infeasible(tmp_path):
    url = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(storage=url, study_name="d", direction="maximize")
    for lr, width in ((0.002, 8), (1e-7, 8), (0.002, 16)):  # trains; learns nothing; too big
        study.enqueue_trial({"train.lr": lr, "model.blocks.initial.layers.0.out": width})
    p = run_cmd(sweep_cmd(tmp_path, "hydra/sweeper=tinycnn_optuna", "hydra.sweeper.study_name=d",
                          "train.lr=tag(log,interval(1e-8,1e-2))",
                          "model.blocks.initial.layers.0.out=choice(8,16)",
                          "hydra.sweeper.max_params=21614", "hydra.sweeper.n_trials=3",
                          "hydra.sweeper.pruner.name=median",
                          "hydra.sweeper.pruner.n_startup_trials=1"))
    assert p.returncode == 0, p.output

    app = dashboard.wsgi(optuna.storages.RDBStorage(url))
    [summary] = api(app, "/api/studies")["study_summaries"]
    detail = api(app, f"/api/studies/{summary['study_id']}")
    by_number = {t["number"]: t for t in detail["trials"]}
    assert by_number[0]["constraints"] == [0.0]           # the paper: exactly on the budget
    assert by_number[2]["constraints"][0] > 0              # over it: infeasible in the dashboard
    assert by_number[2]["user_attrs"] and by_number[2]["state"] == "Complete"
    assert [t["number"] for t in detail["best_trials"]] == [0]  # never the infeasible one
    assert by_number[1]["state"] == "Pruned"

    # the pruned trial's cost is recorded: its record and its trial attributes carry seconds
    pruned = optuna.load_study(study_name="d", storage=url).trials[1]
    record = json.loads((Path(pruned.user_attrs["dir"]) / "metrics.json").read_text())
    assert record["status"] == "pruned" and record["seconds"] > 0
    assert pruned.user_attrs["seconds"] == record["seconds"]
