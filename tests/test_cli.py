"""tinycnn compare / export / reproduce / evaluate on a small real sweep (MNIST subset).

One plain Hydra grid (2 learning rates x 2 seeds, conftest's small_grid) and one small Optuna
search (small_sweep) are run once per session in a subprocess; a real SQLite Optuna study is
written over the grid's job folders; every command then runs in-process
through tinycnn.cli.main, the way the console script calls it.
"""

import csv
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
from omegaconf import OmegaConf

from conftest import REPO, sub_env
from tinycnn import cli
from tinycnn.compare import Row, group, mark_pareto
from tinycnn.evaluate import evaluate_checkpoint
from tinycnn.model import build_model
from tinycnn.plot import plot_rows
from tinycnn.results import Run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def metrics(job: Path) -> dict:
    return json.loads((job / "metrics.json").read_text())


def tinycnn(capsys, *argv) -> tuple[int, str, str]:
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def compare_json(capsys, *argv) -> list[dict]:
    code, out, err = tinycnn(capsys, "compare", *argv, "--format", "json")
    assert code == 0, err
    return json.loads(out)


# --- compare on the grid -------------------------------------------------------------------------

def test_compare_groups_seeds_into_mean_and_std(small_grid, capsys):
    rows = compare_json(capsys, small_grid)
    assert len(rows) == 2  # 4 runs, 2 configs
    by_lr = {r["settings"]["train.lr"]: r for r in rows}
    assert set(by_lr) == {0.002, 0.004}
    for lr, row in by_lr.items():
        jobs = [small_grid / str(t) for t in row["trials"]]
        vals = [metrics(j)["val_acc"] for j in jobs]
        tests = [metrics(j)["test_acc"] for j in jobs]
        assert row["n"] == 2 and sorted(row["seeds"]) == [0, 1]
        assert {metrics(j)["seed"] for j in jobs} == {0, 1}
        assert all(OmegaConf.load(j / "config.yaml").train.lr == lr for j in jobs)
        assert row["val_acc"] == pytest.approx(statistics.mean(vals))
        assert row["val_acc_std"] == pytest.approx(statistics.stdev(vals))
        assert row["test_acc"] == pytest.approx(statistics.mean(tests))
        assert row["params"] == 21_614 and row["state"] == "complete"
        for key in ("trial", "state", "params", "val_acc", "test_acc", "seconds", "dir"):
            assert key in row
    assert [r["val_acc"] for r in rows] == sorted((r["val_acc"] for r in rows), reverse=True)
    # Same parameter count: only the more accurate config is Pareto-optimal.
    assert [r["pareto"] for r in rows] == [True, False]
    # The paper's network and recipe (lr 0.002) is the baseline; lr 0.004 is not.
    assert by_lr[0.002]["baseline"] and not by_lr[0.004]["baseline"]


def test_compare_without_grouping_has_one_row_per_run(small_grid, capsys):
    rows = compare_json(capsys, small_grid, "--no-group")
    assert sorted(r["trial"] for r in rows) == [0, 1, 2, 3]
    assert all(r["n"] == 1 and r["val_acc_std"] is None for r in rows)
    for r in rows:
        assert r["val_acc"] == metrics(Path(r["dir"]))["val_acc"]


def test_compare_table_and_markdown(small_grid, capsys):
    code, out, err = tinycnn(capsys, "compare", small_grid)
    assert code == 0
    header, rule, *body = out.splitlines()[:4]
    for col in ("trial", "state", "params", "val %", "test %", "sec", "seeds", "train.lr", "dir"):
        assert col in header
    assert set(rule.replace(" ", "")) == {"-"}
    assert " ± " in body[0] and "21,614" in body[0] and "pareto" in body[0]
    assert "paper" in out and "4 run(s): 4 complete" in err

    code, out, _ = tinycnn(capsys, "compare", small_grid, "--format", "markdown")
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("| trial | state |") and lines[1].startswith("|---")
    assert sum(line.startswith("| ") for line in lines) == 3  # header + 2 configs


def test_compare_csv(small_grid, capsys):
    code, out, _ = tinycnn(capsys, "compare", small_grid, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == 2
    assert {"trial", "state", "params", "val_acc", "val_acc_std", "test_acc", "seconds", "n",
            "train.lr", "dir"} <= set(rows[0])
    assert {r["train.lr"] for r in rows} == {"0.002", "0.004"}
    assert all(r["n"] == "2" and r["params"] == "21614" for r in rows)


def test_compare_where_sort_top(small_grid, capsys):
    assert [r["settings"]["train.lr"] for r in compare_json(capsys, small_grid, "--where",
                                                            "train.lr=0.004")] == [0.004]
    assert compare_json(capsys, small_grid, "--where", "params<20000") == []
    assert len(compare_json(capsys, small_grid, "--where", "seeds=2", "--where", "val_acc>5")) == 2
    assert len(compare_json(capsys, small_grid, "--where", "state=complete", "--where",
                            "params>=21614")) == 2
    rows = compare_json(capsys, small_grid, "--no-group", "--sort", "trial")
    assert [r["trial"] for r in rows] == [0, 1, 2, 3]
    rows = compare_json(capsys, small_grid, "--no-group", "--sort", "trial:desc", "--top", "3")
    assert [r["trial"] for r in rows] == [3, 2, 1]
    code, _, err = tinycnn(capsys, "compare", small_grid, "--where", "colour=red")
    assert code != 0 and "no column or setting named 'colour'" in err
    code, _, err = tinycnn(capsys, "compare", small_grid, "--where", "params")
    assert code != 0 and "KEY OP VALUE" in err
    for bad, says in (("peak_kb<<2", "< compares numbers, and '<2' is not one"),
                      ("val_acc>abc", "> compares numbers, and 'abc' is not one"),
                      ("params=many", "params holds numbers, and 'many' is not one")):
        code, _, err = tinycnn(capsys, "compare", small_grid, "--where", bad)
        assert code == 2 and says in err.strip().splitlines()[-1], err  # after the source line


def test_compare_defaults_to_the_latest_sweep(small_grid, tmp_path, capsys):
    outputs = tmp_path / "outputs"
    shutil.copytree(small_grid, outputs / "multirun" / "2030-01-02" / "09-00-00")
    older = outputs / "multirun" / "2030-01-01" / "23-00-00" / "0"
    shutil.copytree(small_grid / "0", older)
    os.utime(older.parent, (1e9, 1e9))  # the latest is the sweep that changed last
    code, out, err = tinycnn(capsys, "compare", "--outputs", outputs, "--format", "json")
    assert code == 0 and len(json.loads(out)) == 2
    assert "latest sweep" in err and "2030-01-02/09-00-00" in err
    code, _, err = tinycnn(capsys, "compare", "--outputs", tmp_path / "nothing")
    assert code != 0 and "no sweeps under" in err


def test_plot_is_a_png_with_one_point_per_config(small_grid, tmp_path, capsys):
    png = tmp_path / "plot.png"
    code, _, err = tinycnn(capsys, "compare", small_grid, "--plot", png)
    assert code == 0 and "2 complete and 0 pruned config(s) plotted" in err
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 10_000
    code, _, err = tinycnn(capsys, "compare", small_grid, "--no-group", "--plot", png)
    assert "4 complete and 0 pruned" in err


def _run(trial, params, val, state="complete", seed=0, key=None):
    return Run(trial=trial, state=state, params=params, val_acc=val, seed=seed,
               config_key=key or f"k{trial}")


def test_pareto_front_against_a_hand_worked_example():
    runs = [_run(0, 10_000, 0.95), _run(1, 20_000, 0.97), _run(2, 15_000, 0.94),
            _run(3, 20_000, 0.96), _run(4, 30_000, 0.97), _run(5, 5_000, 0.99, state="pruned"),
            _run(6, 8_000, 0.90, seed=0, key="same"), _run(7, 8_000, 0.96, seed=1, key="same")]
    rows = group(runs)
    mark_pareto(rows)
    front = sorted(r.trial for r in rows if r.pareto)
    # 4 ties 1 on accuracy with more parameters; 5 is pruned; 6+7 average to 0.93 at 8,000.
    assert front == [0, 1, 6]
    merged = next(r for r in rows if r.trial == 6)
    assert merged.n == 2 and merged.val_acc == pytest.approx(0.93)
    # Only complete runs are averaged: two pruned trials of one config stay two rows.
    pruned = group([_run(1, 9_000, 0.5, "pruned", key="p"), _run(2, 9_000, 0.6, "pruned", key="p")])
    assert [r.n for r in pruned] == [1, 1]


def test_plot_points_match_rows(tmp_path):
    rows = [Row([_run(i, 10_000 + i, 0.9)]) for i in range(3)] + \
        [Row([_run(9, 40_000, None, state="infeasible")])]
    mark_pareto(rows)
    rows.append(Row([_run(8, 12_000, 0.5, state="pruned")]))
    assert plot_rows(rows, tmp_path / "p.png", budgets=[25_000]) == {"complete": 3, "pruned": 1}
    assert (tmp_path / "p.png").read_bytes()[:8] == PNG_MAGIC


# --- Optuna study --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def study(small_grid, tmp_path_factory) -> str:
    """A real SQLite study whose trials point at the grid's job folders, as the sweeper records
    them; trial 2 is infeasible (over budget, never trained), trial 3 pruned on another machine."""
    url = f"sqlite:///{tmp_path_factory.mktemp('study') / 'optuna.db'}"
    s = optuna.create_study(study_name="grid", storage=url, direction="maximize")
    s.set_user_attr("max_params", 25_000)
    dist = {"train.lr": optuna.distributions.FloatDistribution(0.001, 0.01, log=True)}

    def add(trial_state, value, lr, **attrs):
        s.add_trial(optuna.trial.create_trial(state=trial_state, value=value, user_attrs=attrs,
                                              params={"train.lr": lr}, distributions=dist))

    for job in (0, 1):
        m = metrics(small_grid / str(job))
        add(optuna.trial.TrialState.COMPLETE, m["val_acc"], [0.002, 0.004][job], state="complete",
            params=m["params"], val_acc=m["val_acc"], test_acc=m["test_acc"],
            train_acc=m["train_acc"], seconds=m["seconds"], dir=str(small_grid / str(job)),
            overrides=m["overrides"], baseline=job == 0)
    add(optuna.trial.TrialState.COMPLETE, 0.0, 0.003, state="infeasible", params=31_000,
        reason="31,000 parameters > max_params 25,000", dir=None, overrides=["train.lr=0.003"])
    add(optuna.trial.TrialState.PRUNED, None, 0.001, state="pruned", params=21_614, val_acc=0.4,
        dir="/elsewhere/3", overrides=["train.lr=0.001", "model.blocks.res1.scale=2.0"])
    return url


def test_compare_reads_a_study(study, capsys, tmp_path):
    rows = compare_json(capsys, "grid", "--storage", study, "--sort", "trial")
    assert [(r["trial"], r["state"]) for r in rows] == \
        [(0, "complete"), (1, "complete"), (2, "infeasible"), (3, "pruned")]
    assert rows[0]["baseline"] and rows[2]["params"] == 31_000 and not rows[2]["pareto"]
    assert rows[2]["val_acc"] is None  # infeasible: Optuna's 0.0 is not an accuracy
    # Default order: trained rows first, by val accuracy; the pruned one's 0.4 is where it stopped.
    default = compare_json(capsys, "grid", "--storage", study)
    assert [r["state"] for r in default] == ["complete", "complete", "pruned", "infeasible"]
    assert default[0]["val_acc"] >= default[1]["val_acc"]
    by_size = compare_json(capsys, "grid", "--storage", study, "--sort", "params:desc,trial")
    assert [r["trial"] for r in by_size] == [2, 0, 1, 3]
    assert [r["pareto"] for r in rows] == [r["trial"] == max(rows[:2], key=lambda x: x["val_acc"])
                                           ["trial"] for r in rows]
    code, out, err = tinycnn(capsys, "compare", "grid", "--storage", study, "--where",
                             "state=infeasible", "--wide")
    assert code == 0 and "max_params 25,000" in out and "train.lr" in out.splitlines()[0]
    assert len(out.split("\n\n")[0].splitlines()) == 3  # header, rule, the infeasible trial
    code, out, err = tinycnn(capsys, "compare", "grid", "--storage", study, "--plot",
                             tmp_path / "s.png")
    assert code == 0 and "2 complete and 1 pruned config(s) plotted" in err


def test_compare_several_sources_counts_each_run_once(small_grid, study, capsys):
    rows = compare_json(capsys, small_grid, "grid", "--storage", study, "--no-group")
    # 4 job folders, plus the study's 2 trials without a folder here (its other 2 are jobs 0, 1)
    assert len(rows) == 6
    assert sorted(Path(r["dir"]).name for r in rows if r["dir"] and Path(r["dir"]).exists()) == \
        ["0", "1", "2", "3"]


def test_export_from_a_study_trial(study, tmp_path, capsys):
    conf = tmp_path / "conf"
    shutil.copytree(REPO / "conf", conf)
    code, out, err = tinycnn(capsys, "export", "--from", "grid", "--storage", study, "--trial", 1,
                             "--name", "fast", "--conf-dir", conf)
    assert code == 0, err
    assert OmegaConf.load(conf / "train" / "fast.yaml").lr == 0.004
    # Trial 3's folder is on another machine: the preset is rebuilt from its overrides.
    code, out, err = tinycnn(capsys, "export", "--from", "grid", "--storage", study, "--trial", 3,
                             "--name", "elsewhere", "--conf-dir", conf)
    assert code == 0, err
    assert "rebuilt the config from the trial's overrides" in err
    assert OmegaConf.load(conf / "model" / "elsewhere.yaml").blocks.res1.scale == 2.0


def test_compare_optuna_study_and_its_folder_agree(small_sweep, capsys, tmp_path):
    folder, url = small_sweep.folder, small_sweep.url
    by_study = compare_json(capsys, "small", "--storage", url, "--sort", "trial")
    by_folder = compare_json(capsys, folder, "--sort", "trial")
    assert [r["trial"] for r in by_study] == list(range(5))
    pick = lambda rows: [(r["trial"], r["state"], r["params"], r["val_acc"], r["test_acc"],  # noqa
                          r["pareto"], r["baseline"], Path(r["dir"]).name) for r in rows]
    assert pick(by_study) == pick(by_folder)
    assert by_study[0]["baseline"] and by_study[0]["state"] == "complete"
    assert by_study[0]["params"] == 21_614
    for r in by_study:
        assert r["state"] in ("complete", "pruned", "infeasible", "failed")
        if r["state"] == "infeasible":
            assert r["val_acc"] is None and not r["pareto"]
        if r["state"] == "complete":
            assert r["val_acc"] == metrics(Path(r["dir"]))["val_acc"]
    complete = [r for r in by_study if r["state"] == "complete"]
    best = max(complete, key=lambda r: (r["val_acc"], -r["params"]))
    assert best["pareto"]
    # The searched widths show as columns under short names, and filter like any column.
    code, out, _ = tinycnn(capsys, "compare", "small", "--storage", url, "--wide")
    assert code == 0 and "res1.scale" in out.splitlines()[0] and "initial.0.out" in out
    code, out, _ = tinycnn(capsys, "compare", "small", "--storage", url, "--settings",
                           "res1.scale,model.classifier.hidden")
    header = out.splitlines()[0].split()
    assert header[header.index("seeds") + 1:header.index("note")] == ["res1.scale",
                                                                     "classifier.hidden"]
    code, out, _ = tinycnn(capsys, "compare", "small", "--storage", url, "--settings", "none")
    assert out.splitlines()[0].split()[-3:] == ["seeds", "note", "dir"]
    code, _, err = tinycnn(capsys, "compare", "small", "--storage", url, "--settings", "nope")
    assert code != 0 and "no setting named 'nope'" in err
    rows = compare_json(capsys, "small", "--storage", url, "--where", "initial.0.out=8")
    assert 0 in [r["trial"] for r in rows]
    code, _, err = tinycnn(capsys, "compare", "small", "--storage", url, "--plot",
                           tmp_path / "o.png")
    pruned = [r for r in by_study if r["state"] == "pruned"]
    assert code == 0 and f"{len(complete)} complete and {len(pruned)} pruned" in err

    conf = tmp_path / "conf"
    shutil.copytree(REPO / "conf", conf)
    code, out, err = tinycnn(capsys, "export", "--from", "small", "--storage", url, "--trial",
                             best["trial"], "--name", "found", "--conf-dir", conf)
    assert code == 0, err
    from tinycnn.presets import load_preset
    net = build_model(load_preset(conf, "model", "found"))
    assert net.num_params == best["params"]
    assert net.param_table() == metrics(Path(best["dir"]))["params_by_block"]


# --- export / reproduce / evaluate ---------------------------------------------------------------

def test_export_round_trip(small_grid, tmp_path, capsys):
    conf = tmp_path / "conf"
    shutil.copytree(REPO / "conf", conf)
    args = ["export", "--from", small_grid, "--trial", 1, "--name", "best", "--conf-dir", conf]
    code, out, err = tinycnn(capsys, *args)
    assert code == 0, err
    preset = conf / "model" / "best.yaml"
    text = preset.read_text()
    assert text.startswith("# Exported by `tinycnn export` from trial 1")
    from tinycnn.presets import load_preset
    net = build_model(load_preset(conf, "model", "best"))
    recorded = metrics(small_grid / "1")
    assert net.num_params == recorded["params"] == 21_614
    assert net.param_table() == recorded["params_by_block"]
    # the preset follows the data: ${data.channels}
    assert OmegaConf.to_container(OmegaConf.load(preset))["in_channels"] == "${data.channels}"
    assert load_preset(conf, "model", "best") == \
        OmegaConf.to_container(OmegaConf.load(small_grid / "1" / "config.yaml").model)
    # lr 0.004 is not the default recipe: a matching train preset, and the command says so.
    assert OmegaConf.load(conf / "train" / "best.yaml").lr == 0.004
    assert "python run.py model=best train=best" in out

    before = preset.read_text()
    code, _, err = tinycnn(capsys, *args)
    assert code != 0 and "already exists" in err and "--force" in err
    assert preset.read_text() == before
    code, _, err = tinycnn(capsys, *args, "--force")
    assert code == 0, err

    # The paper recipe needs no train preset.
    code, out, _ = tinycnn(capsys, "export", "--from", small_grid, "--trial", 0, "--name", "p0",
                           "--conf-dir", conf)
    assert code == 0 and not (conf / "train" / "p0.yaml").exists()
    assert "train it: python run.py model=p0\n" in out


def test_export_unknown_trial(small_grid, tmp_path, capsys):
    conf = tmp_path / "conf"
    shutil.copytree(REPO / "conf", conf)
    code, _, err = tinycnn(capsys, "export", "--from", small_grid, "--trial", 17, "--name", "x",
                           "--conf-dir", conf)
    assert code != 0 and "no trial 17" in err and "0-3" in err
    assert not (conf / "model" / "x.yaml").exists()


def test_reproduce_reports_identical_numbers(small_grid, tmp_path, capsys):
    out_dir = tmp_path / "again"
    code, out, err = tinycnn(capsys, "reproduce", small_grid / "2", "--out", out_dir, "--quiet")
    assert code == 0, err
    assert "identical" in out
    old, new = metrics(small_grid / "2"), metrics(out_dir)
    for key in ("params", "params_by_block", "train_acc", "val_acc", "test_acc", "train_loss"):
        assert new[key] == old[key], key
    assert "optuna" not in OmegaConf.load(out_dir / "config.yaml")
    assert f"{old['val_acc']:.6f}" in out
    assert new["machine"]["cpu_kernels"] == torch.backends.cpu.get_cpu_capability()
    assert "note:" not in out  # same machine, nothing to explain


def test_reproduce_names_a_machine_with_other_kernels(small_grid, tmp_path, capsys):
    """Numbers recorded on another kind of CPU: the verdict comes with where each run was."""
    copy = tmp_path / "run"
    shutil.copytree(small_grid / "2", copy)
    m = metrics(copy)
    m["machine"] = {"cpu": "Some Other CPU", "cpu_kernels": "ZVECTOR"}
    (copy / "metrics.json").write_text(json.dumps(m))
    code, out, err = tinycnn(capsys, "reproduce", copy, "--out", tmp_path / "again", "--quiet")
    assert code == 0, err
    here = metrics(tmp_path / "again")["machine"]
    note = [line for line in out.splitlines() if line.startswith("note: recorded on")]
    assert note == [f"note: recorded on Some Other CPU (ZVECTOR kernels), rerun on {here['cpu']} "
                    f"({here['cpu_kernels']} kernels); other CPU kernels give other last bits, "
                    "and an epoch of training turns them into different numbers"]


def test_evaluate_matches_recorded_test_accuracy(small_grid, capsys):
    m = metrics(small_grid / "0")
    result = evaluate_checkpoint(small_grid / "0" / "model.pt")
    assert result.test_acc == m["test_acc"] and result.n_test == 500
    code, out, _ = tinycnn(capsys, "evaluate", small_grid / "0" / "model.pt")
    assert code == 0 and f"{m['test_acc']:.6f}" in out and "the same" in out


# --- bad input -----------------------------------------------------------------------------------

def test_folder_with_no_runs(tmp_path, capsys):
    code, out, err = tinycnn(capsys, "compare", tmp_path)
    assert code != 0 and "no runs in" in err and out == ""


def test_missing_study_and_missing_storage(study, tmp_path, capsys):
    code, _, err = tinycnn(capsys, "compare", "nosuch", "--storage", study)
    assert code != 0 and "no study named 'nosuch'" in err and "grid" in err
    missing = tmp_path / "none.db"
    code, _, err = tinycnn(capsys, "compare", "grid", "--storage", f"sqlite:///{missing}")
    assert code != 0 and "does not exist" in err
    assert not missing.exists()  # reading never creates an empty database


def test_damaged_run_is_skipped_and_named(small_grid, tmp_path, capsys):
    copy = tmp_path / "sweep"
    shutil.copytree(small_grid, copy)
    (copy / "1" / "metrics.json").write_text('{"status": "complete", "val_acc": 0.9')  # cut off
    (copy / "3" / "metrics.json").unlink()
    code, out, err = tinycnn(capsys, "compare", copy, "--no-group", "--format", "json")
    assert code == 0
    assert sorted(r["trial"] for r in json.loads(out)) == [0, 2]
    assert "skipped 2 damaged" in err and str(copy / "1") in err and str(copy / "3") in err
    assert "corrupt metrics.json" in err and "no metrics.json" in err
    code, _, err = tinycnn(capsys, "reproduce", copy / "1")
    assert code != 0 and "corrupt metrics.json" in err


def test_corrupt_or_foreign_checkpoint(small_grid, tmp_path, capsys):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint" * 10)
    truncated = tmp_path / "truncated.pt"
    whole = (small_grid / "0" / "model.pt").read_bytes()
    truncated.write_bytes(whole[:len(whole) // 2])
    foreign = tmp_path / "foreign.pt"
    torch.save({"weight": torch.zeros(3)}, foreign)
    for path in (garbage, truncated, foreign):
        code, out, err = tinycnn(capsys, "evaluate", path)
        assert code != 0 and "not a tinycnn checkpoint" in err and out == "", path
    code, out, err = tinycnn(capsys, "evaluate", tmp_path / "missing.pt")
    assert code != 0 and "no such file" in err and out == ""


def test_every_option_has_help():
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict))
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings or action.dest}"


def test_python_dash_m(small_grid):
    proc = subprocess.run([sys.executable, "-m", "tinycnn", "compare", str(small_grid), "--top",
                           "1"], env=sub_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) >= 3
    proc = subprocess.run([sys.executable, "-m", "tinycnn", "compare", "/no/such/folder"],
                          env=sub_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and "does not exist" in \
        proc.stderr


def test_same_seed_repeats_are_not_counted_as_seeds():
    from tinycnn.compare import group
    from tinycnn.table import format_table
    from tinycnn.results import Run
    runs = [Run(trial=t, state="complete", params=100, val_acc=v, test_acc=v, seed=s,
                config_key="k") for t, v, s in ((10, 0.9, 0), (11, 0.9, 0), (12, 0.8, 1))]
    (row,) = group(runs)
    assert row.n == 2 and row.repeats == 1  # seeds 0 and 1; trial 11 repeats seed 0
    assert row.val_acc == pytest.approx(0.85)  # mean of 0.9 and 0.8, not of 0.9, 0.9, 0.8
    assert row.stats["val_acc"][1] == pytest.approx(statistics.stdev([0.9, 0.8]))
    assert "1 same-seed repeat" in format_table([row], [])
