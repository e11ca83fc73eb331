"""Multirun and the tinycnn_optuna sweeper: real `python run.py -m` subprocesses on small MNIST
subsets, real SQLite (and journal) studies in tmp_path; plus the pieces (grammar, storage URLs,
the trial reporter) checked directly."""

import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from conftest import REPO, SMALL, compose_cfg, run_cmd as run, sub_env, sweep_cmd
from hydra_plugins.tinycnn_plugins._search_space import (SpaceError, format_value, parse_space,
                                                         quote)
from hydra_plugins.tinycnn_plugins._errors import SweepError
from hydra_plugins.tinycnn_plugins._settings import read_settings
from tinycnn.errors import ConfigError
from tinycnn.study import make_pruner, open_storage, storage_url, trial_reporter

optuna.logging.set_verbosity(optuna.logging.WARNING)


def load(tmp_path, name):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path}/optuna.db")


def metrics(folder) -> dict:
    return json.loads((Path(folder) / "metrics.json").read_text())


OPTUNA = ["hydra/sweeper=tinycnn_optuna", "hydra.sweeper.study_name=t"]


# ---------------------------------------------------------------- search-space grammar

def dims_of(**params):
    dims, fixed, _ = parse_space(params, [])
    return dims


def test_grammar_maps_to_optuna_distributions():
    d = dims_of(a="choice(3, 5, 7)", b="range(4, 33, 4)", c="range(0.0, 4.01, 0.5)",
                d="interval(0.5, 4)", e="int(interval(1, 64))", f="tag(log, interval(1e-4, 1e-2))",
                g="tag(log, int(interval(8, 64)))", h="1,2,3", i="choice(gap, flatten)")
    assert d["a"].distribution == CategoricalDistribution([3, 5, 7])
    assert d["b"].distribution == IntDistribution(4, 32, step=4)  # stop excluded, as in Hydra
    assert d["c"].distribution == FloatDistribution(0.0, 4.0, step=0.5)
    assert d["d"].distribution == FloatDistribution(0.5, 4.0)
    assert d["e"].distribution == IntDistribution(1, 64)
    assert d["f"].distribution == FloatDistribution(1e-4, 1e-2, log=True)
    assert d["g"].distribution == IntDistribution(8, 64, log=True)
    assert d["h"].distribution == CategoricalDistribution([1, 2, 3])
    assert d["i"].distribution == CategoricalDistribution(["gap", "flatten"])


def test_fixed_values_and_command_line_precedence():
    params = {"train.lr": "interval(1e-4, 1e-2)", "model.blocks.res1.scale": "choice(1.0, 2.5)",
              "data.limit": 512}
    dims, fixed, from_params = parse_space(
        params, ["sweeps=paper25k", "train.lr=0.003", "train.batch_size=choice(32,64)"])
    assert set(dims) == {"model.blocks.res1.scale", "train.batch_size"}  # lr fixed by the CLI
    assert fixed == ["data.limit=512", "sweeps=paper25k", "train.lr=0.003"]
    assert from_params == ["data.limit=512"]  # not in Hydra's master config: applied per trial


def test_override_text_parses_back_to_the_value():
    parser = OverridesParser.create()
    for value in ["gelu", "x y", "it's", "a\\", "postgresql://u:p@h/db?sslmode=require", "8",
                  1e-05, 3, 2.5, True, None]:
        assert parser.parse_override(f"k={format_value(value)}").value() == value
    dim = dims_of(k="choice([1,2],[3,4])")["k"]
    assert parser.parse_override(dim.override("[3,4]")).value() == [3, 4]
    assert quote("a'b") == "'a\\'b'"


def test_paper_values_are_points_of_the_space():
    d = dims_of(s="range(0.0, 4.01, 0.5)", k="choice(3, 5)", w="int(interval(4, 32))")
    assert d["s"].contains(2.5) and not d["s"].contains(2.25) and not d["s"].contains(4.5)
    assert d["k"].contains(5) and not d["k"].contains(5.5) and not d["k"].contains("5")
    assert d["w"].contains(12) and not d["w"].contains(40)


@pytest.mark.parametrize("spec, says", [
    ("interval(1e-3", "not valid sweep grammar"),
    ("interval(5, 1)", "interval is empty"),
    ("tag(log, interval(0, 1))", "log interval needs low > 0"),
    ("tag(loog, interval(1, 2))", "unknown tag 'loog'"),
])
def test_malformed_grammar_names_the_key_and_the_grammar(spec, says):
    with pytest.raises(SpaceError) as err:
        parse_space({"train.lr": spec}, [])
    assert "hydra.sweeper.params['train.lr']" in str(err.value) and says in str(err.value)
    assert "choice(a, b, ...)" in str(err.value)


# ---------------------------------------------------------------- settings, storage, reporter

def settings(**over):
    s = {"study_name": "t", "storage": "sqlite:///x.db", "n_trials": 5, "n_jobs": 1,
         "max_params": 25000, "objectives": ["val_acc"], "sampler": {"name": "tpe", "seed": 0},
         "pruner": {"name": "none"}, "max_failure_rate": 0.5, "params": {}}
    s.update(over)
    return s


@pytest.mark.parametrize("over, says", [
    ({"sampler": {"name": "cmaes"}}, "sampler.name = 'cmaes': unknown sampler; use one of tpe"),
    ({"pruner": {"name": "asha"}}, "pruner.name = 'asha': unknown pruner; use one of none"),
    ({"pruner": {"name": "median", "patience": 3}}, "pruner.patience: not a pruner setting"),
    ({"objectives": ["val_acc", "test_acc"]}, "test set is for reporting only"),
    ({"objectives": ["params"]}, "val_acc must be among them"),
    ({"objectives": ["val_acc", "params"], "pruner": {"name": "median"}},
     "cannot prune a multi-objective study"),
    ({"n_trials": 0}, "n_trials = 0: expected a whole number >= 1"),
    ({"max_failure_rate": 2}, "max_failure_rate = 2"),
    ({"storage": "outputs/optuna.db"}, "not a storage URL"),
])
def test_bad_settings_are_one_clear_error(over, says):
    with pytest.raises(SweepError) as err:
        read_settings(settings(**over))
    assert says in str(err.value)
    assert isinstance(err.value, ConfigError)


def test_storage_urls_agree_across_working_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage_url("sqlite:///outputs/optuna.db") == f"sqlite:///{tmp_path}/outputs/optuna.db"
    assert storage_url("sqlite:////abs/o.db") == "sqlite:////abs/o.db"
    assert storage_url("runs/study.log") == f"{tmp_path}/runs/study.log"
    assert storage_url("postgresql://u:p@host/db") == "postgresql://u:p@host/db"
    with pytest.raises(ConfigError):
        storage_url("study.db")


def test_reporter_reports_through_the_storage_and_prunes(tmp_path):
    url = f"sqlite:///{tmp_path}/o.db"
    assert trial_reporter(None) is None and trial_reporter({}) is None
    study = optuna.create_study(storage=url, study_name="s", direction="maximize",
                                pruner=make_pruner({"name": "median", "n_startup_trials": 1}))
    good = study.ask()
    spec = {"storage": url, "study": "s", "pruner": {"name": "median", "n_startup_trials": 1}}
    report = trial_reporter({**spec, "trial": good.number})
    report(10, 0.9)
    report(20, 0.95)
    study.tell(good, 0.95)
    bad = study.ask()
    report = trial_reporter({**spec, "trial": bad.number})
    report(20, 0.1, final=True)  # training is over at the last check: recorded, never pruned
    with pytest.raises(optuna.TrialPruned):
        report(10, 0.2)  # below the median (0.9) of finished trials at step 10
    assert load_trial(url, bad.number).intermediate_values == {10: 0.2, 20: 0.1}
    assert trial_reporter({**spec, "trial": good.number}) is None  # finished: not touched


def load_trial(url, number):
    return optuna.load_study(study_name="s", storage=url).trials[number]


# ---------------------------------------------------------------- multirun (subprocesses)

def test_grid_multirun(small_grid):
    jobs = {}
    for job in ("0", "1", "2", "3"):
        m = metrics(small_grid / job)
        assert m["status"] == "complete" and 0 < m["val_acc"] <= 1
        cfg = OmegaConf.load(small_grid / job / "config.yaml")
        jobs[job] = (cfg.seed, cfg.train.lr)
        assert m["seed"] == cfg.seed
    assert jobs == {"0": (0, 0.002), "1": (0, 0.004), "2": (1, 0.002), "3": (1, 0.004)}


def test_optuna_sweep_records_every_trial_and_resumes(small_sweep, tmp_path):
    """conftest's small_sweep (sweeps/paper25k, 5 trials) as recorded; then the same command,
    on a copy of its study, continued."""
    study = optuna.load_study(study_name="small", storage=small_sweep.url)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 5  # infeasible ones too
    base = study.trials[0]
    assert base.user_attrs["baseline"] is True  # the config's own values (the paper's network)
    own = compose_cfg("sweeps=paper25k", small=False)
    assert len(base.params) == 25 and base.params == {k: OmegaConf.select(own, k)
                                                      for k in base.params}
    trained = [t for t in study.trials if t.user_attrs["state"] == "complete"]
    assert base in trained and len(trained) >= 2
    for t in study.trials:
        a = t.user_attrs
        assert a["state"] in ("complete", "infeasible")  # pruner none, nothing fails
        assert Path(a["dir"]) == small_sweep.folder / f"trial_{t.number}"
        assert metrics(a["dir"])["trial"] == t.number
    for t in trained:
        a = t.user_attrs
        assert a["params"] > 0
        m = metrics(a["dir"])
        assert m["val_acc"] == a["val_acc"] == t.value
        assert m["test_acc"] == a["test_acc"] and a["seconds"] > 0
        # every check (train.evals_per_epoch) reported to the trial
        checks = [v for _, v in sorted(t.intermediate_values.items())]
        assert checks == [h["val_acc"] for h in m["history"]] and len(checks) >= 2
    results = OmegaConf.load(small_sweep.folder / "optimization_results.yaml")
    assert results.study.complete == len(trained) and results.baseline.trial == 0
    assert results.best_value == max(t.value for t in trained)
    assert "trial 0 complete" in small_sweep.output and "best: trial" in small_sweep.output

    # The same command with a larger n_trials continues the study: one more trial, number 5.
    shutil.copy(small_sweep.url.removeprefix("sqlite:///"), tmp_path / "optuna.db")
    args = [a.replace("n_trials=5", "n_trials=6") for a in small_sweep.args]
    again = [sys.executable, str(REPO / "run.py"), "-m", *args,
             f"hydra.sweeper.storage=sqlite:///{tmp_path}/optuna.db"]
    p = run([*again, f"hydra.sweep.dir={tmp_path}/again"])
    assert p.returncode == 0, p.output
    assert len(load(tmp_path, "small").trials) == 6
    assert sorted(x.name for x in (tmp_path / "again").glob("trial_*")) == ["trial_5"]
    # Already full: nothing to do.
    p = run([*again, f"hydra.sweep.dir={tmp_path}/full"])
    assert p.returncode == 0 and "nothing to do" in p.output
    assert len(load(tmp_path, "small").trials) == 6


def test_a_network_proposed_again_is_not_trained_again(tmp_path):
    # Two possible networks, four trials: at least two trials repeat an earlier one.
    p = run(sweep_cmd(tmp_path, *OPTUNA, "train.lr=choice(0.001,0.002)",
                      "hydra.sweeper.n_trials=4"))
    assert p.returncode == 0, p.output
    trials = load(tmp_path, "t").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    trained = [t for t in trials if "duplicate_of" not in t.user_attrs]
    repeats = [t for t in trials if "duplicate_of" in t.user_attrs]
    assert len({t.params["train.lr"] for t in trained}) == len(trained) <= 2
    assert len(repeats) == 4 - len(trained) >= 2
    for t in repeats:
        twin = trials[t.user_attrs["duplicate_of"]]
        assert t.params == twin.params and t.values == twin.values
        assert t.user_attrs["dir"] == twin.user_attrs["dir"] and t.constraints == twin.constraints
    folders = sorted((tmp_path / "run").glob("trial_*"))
    assert [f.name for f in folders] == [f"trial_{t.number}" for t in trained]  # trained once
    assert p.output.count("its result reused, not trained again") == len(repeats)


def check_infeasible(study, took_under=0.5):
    """Every trial: infeasible, never trained, recorded in the study and in its own folder."""
    for t in study.trials:
        assert t.state == TrialState.COMPLETE and t.user_attrs["state"] == "infeasible"
        assert any(v > 0 for v in t.constraints.values())  # the sampler sees it infeasible
        folder = Path(t.user_attrs["dir"])
        m = metrics(folder)
        assert m["status"] == "infeasible" and m["error"] == t.user_attrs["reason"]
        assert (folder / "config.yaml").is_file() and not (folder / "model.pt").exists()
        if m["params"] is not None:
            assert sum(m["params_by_block"].values()) == m["params"] == t.user_attrs["params"]
    took = [(t.datetime_complete - t.datetime_start).total_seconds() for t in study.trials]
    assert statistics.median(took) < took_under, took  # a fraction of a second each


def test_over_budget_is_never_trained_and_recorded_infeasible(tmp_path):
    p = run(sweep_cmd(tmp_path, "sweeps=paper25k", "hydra.sweeper.n_trials=6",
                      "hydra.sweeper.max_params=1000"))
    assert p.returncode == 0, p.output
    study = load(tmp_path, "paper25k")
    assert len(study.trials) == 6
    check_infeasible(study)
    paper = study.trials[0]  # the paper's network: 21,614 parameters, 21x the budget
    assert paper.user_attrs["baseline"] and paper.user_attrs["params"] == 21614
    assert paper.user_attrs["reason"] == "over budget: 21,614 parameters > max_params 1,000"
    assert paper.constraints["over_budget"] == 21614 - 1000 and paper.values == [0.0]
    assert paper.system_attrs["constraints"] == [21614 - 1000]  # what optuna-dashboard reads
    assert all(t.user_attrs["params"] > 1000 for t in study.trials)
    assert "0 complete, 0 pruned, 0 failed, 6 infeasible (never trained)" in p.output
    assert "Launching" not in p.output  # nothing reached the launcher


def test_invalid_network_is_infeasible_in_a_journal_pareto_study(tmp_path):
    log = tmp_path / "study.log"  # an Optuna journal file instead of SQLite
    p = run(sweep_cmd(tmp_path, *OPTUNA, f"hydra.sweeper.storage={log}",
                      "hydra.sweeper.objectives=[val_acc,params]", "hydra.sweeper.n_trials=3",
                      "model.blocks.res2.layers.0.groups=choice(5,7)"))  # 5, 7 do not divide 12
    assert p.returncode == 0, p.output
    study = optuna.load_study(study_name="t", storage=open_storage(str(log)))
    assert len(study.trials) == 3
    check_infeasible(study)
    t = study.trials[0]
    assert t.user_attrs["reason"].startswith("invalid model: model.blocks.res2.layers.0.groups = ")
    assert t.user_attrs["params"] is None and t.constraints["invalid"] == 25000.0
    assert t.system_attrs["constraints"] == [25000.0]
    assert t.values == [0.0, 50000.0]  # dominated by any trained network under the budget
    assert study.best_trials == []  # and kept off the Pareto front by its constraint


def enqueue(tmp_path, name, *params, **create):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/optuna.db", study_name=name,
                                direction="maximize", **create)
    for p in params:
        study.enqueue_trial(p)


@pytest.fixture(scope="module")
def failing_then_hopeless(tmp_path_factory):
    """One sweep for the next two tests: trial 0 diverges (lr 1e30: the loss goes NaN), trial 1
    trains (lr 0.002), trial 2 learns nothing (lr 1e-7) and the median pruner stops it."""
    tmp_path = tmp_path_factory.mktemp("failing_then_hopeless")
    enqueue(tmp_path, "t", {"train.lr": 1e30}, {"train.lr": 0.002}, {"train.lr": 1e-7})
    p = run(sweep_cmd(tmp_path, *OPTUNA, "train.lr=tag(log,interval(1e-8,1e31))",
                      "hydra.sweeper.n_trials=3", "hydra.sweeper.pruner.name=median",
                      "hydra.sweeper.pruner.n_startup_trials=1"))
    return p, load(tmp_path, "t").trials


@pytest.mark.xdist_group("failing_then_hopeless")  # one worker: one sweep
def test_failing_trial_does_not_stop_the_sweep(failing_then_hopeless):
    p, trials = failing_then_hopeless
    assert p.returncode == 0, p.output
    failed, ok, _ = trials
    assert failed.state == TrialState.FAIL and failed.user_attrs["state"] == "failed"
    assert failed.user_attrs["reason"].startswith("Diverged: training diverged")
    assert metrics(failed.user_attrs["dir"])["status"] == "failed"
    assert ok.state == TrialState.COMPLETE


def test_broken_sweep_stops_at_max_failure_rate(tmp_path):
    p = run(sweep_cmd(tmp_path, *OPTUNA, "train.lr=choice(-1.0,-2.0)",  # rejected by each job
                      "hydra.sweeper.n_trials=8"))
    assert p.returncode == 1
    assert "sweep stopped: 3 of the 3 trials this run launched failed" in p.output
    assert "train.lr = -" in p.output and "Traceback" not in p.output
    trials = load(tmp_path, "t").trials
    assert len(trials) == 3 and all(t.state == TrialState.FAIL for t in trials)
    assert metrics(trials[0].user_attrs["dir"])["error"].startswith("ConfigError: train.lr")


@pytest.mark.xdist_group("failing_then_hopeless")  # one worker: one sweep
def test_pruning_stops_a_hopeless_trial(failing_then_hopeless):
    p, trials = failing_then_hopeless
    assert p.returncode == 0, p.output
    _, done, pruned = trials
    assert done.state == TrialState.COMPLETE and len(done.intermediate_values) == 2
    assert pruned.state == TrialState.PRUNED and pruned.user_attrs["state"] == "pruned"
    assert list(pruned.intermediate_values) == [min(done.intermediate_values)]  # first check
    m = metrics(pruned.user_attrs["dir"])
    assert m["status"] == "pruned" and len(m["history"]) == 1 and m["test_acc"] is None
    assert not (Path(pruned.user_attrs["dir"]) / "model.pt").exists()


def test_two_workers_share_one_study_without_duplicates(tmp_path):
    cmd = sweep_cmd(tmp_path, *OPTUNA, "train.lr=tag(log,interval(1e-4,1e-2))",
                    "model.blocks.res1.scale=range(0.0,4.01,0.5)", "hydra.sweeper.n_trials=5")
    workers = [subprocess.Popen(cmd, cwd=REPO, env=sub_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    trials = load(tmp_path, "t").trials
    real = [t for t in trials if not t.user_attrs.get("surplus")]
    assert len(real) == 5 and all(t.state == TrialState.COMPLETE for t in real)
    assert [t.number for t in real] == list(range(5))
    # Each trial was trained exactly once: one folder, whose record names that trial.
    folders = sorted((tmp_path / "run").glob("trial_*"))
    assert sorted(f.name for f in folders) == [f"trial_{n}" for n in range(5)]
    assert all(metrics(f)["trial"] == int(f.name[6:]) for f in folders)
    ran = [line.split()[3] for o in outputs for line in o.splitlines() if " complete " in line
           and "] trial " in line]
    assert sorted(ran, key=int) == [str(n) for n in range(5)]  # no trial launched twice


@pytest.mark.parametrize("args, says", [
    (["data.val_size=0"], "data.val_size = 0: a sweep selects networks by validation accuracy"),
    (["model.blocks.res3.scale=interval(0,1)"], "'model.blocks.res3.scale' is not a key"),
])
def test_bad_sweep_input_is_one_paragraph_without_traceback(tmp_path, args, says):
    p = run(sweep_cmd(tmp_path, *OPTUNA, "train.lr=interval(1e-3,1e-2)", *args))
    assert p.returncode == 1 and says in p.stderr
    assert "Traceback" not in p.output and not (tmp_path / "optuna.db").exists()


@pytest.mark.slow
def test_parallel_pareto_sweep_with_joblib(tmp_path):
    """Two trials at a time in joblib worker processes; objectives val_acc and params."""
    p = run(sweep_cmd(tmp_path, "sweeps=paper25k", "hydra/launcher=joblib",
                      "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2",
                      "hydra.sweeper.n_trials=6", "hydra.sweeper.objectives=[val_acc,params]",
                      "hydra.sweeper.pruner.name=none"), timeout=600)
    assert p.returncode == 0, p.output
    study = load(tmp_path, "paper25k")
    done = [t for t in study.trials if t.user_attrs["state"] == "complete"]
    assert done and all(t.values == [t.user_attrs["val_acc"], t.user_attrs["params"]]
                        for t in done)
    front = OmegaConf.load(tmp_path / "run" / "optimization_results.yaml").pareto_front
    assert front and {f.trial for f in front} <= {t.number for t in done}
