"""What a user sees while a run trains: plain lines where no bar can be drawn, and in a sweep one
line per trial on the console with the trial's own output in its run.log."""

import re
import sys

from conftest import REPO, SMALL, run_cmd, run_py, sweep_cmd

LINE = re.compile(r"^epoch 1/1  step (\d+)/(\d+) \((\d+)%\)  [\d.]+ s  loss [\d.]+  "
                  r"train [\d.]+%  val [\d.]+%$", re.M)


def test_a_run_through_a_pipe_prints_a_line_at_each_validation_check(tmp_path):
    p = run_py("model=paper", *SMALL, "train.evals_per_epoch=4", f"hydra.run.dir={tmp_path}/run")
    assert p.returncode == 0, p.output
    lines = LINE.findall(p.stdout)
    assert len(lines) == 4, p.stdout  # 512 images, batch 64: 8 steps, a check every 2
    assert [int(step) for step, _, _ in lines] == [2, 4, 6, 8]
    assert {total for _, total, _ in lines} == {"8"} and lines[-1][2] == "100"
    assert "evaluating: 500 test images" in p.stdout  # the last check gave val: test only
    assert "\r" not in p.output  # no progress bar drawn into a pipe
    log = (tmp_path / "run" / "run.log").read_text()
    assert len(LINE.findall(log)) == 4


def test_without_checks_a_run_still_says_where_it_is(tmp_path):
    p = run_py("model=paper", *SMALL, "train.evals_per_epoch=0", f"hydra.run.dir={tmp_path}/run")
    assert p.returncode == 0, p.output
    assert re.search(r"^epoch 1/1  step 8/8 \(100%\)  [\d.]+ s  loss [\d.]+  train [\d.]+%$",
                     p.stdout, re.M), p.stdout
    assert "evaluating: 256 validation and 500 test images" in p.stdout


def test_a_sweep_prints_one_line_per_trial_and_keeps_the_rest_in_its_log(tmp_path):
    p = run_cmd(sweep_cmd(tmp_path, "sweeps=paper25k", "hydra.sweeper.n_trials=2",
                          "hydra.sweeper.study_name=tidy", "train.evals_per_epoch=2"))
    assert p.returncode == 0, p.output
    assert "trial 0 complete" in p.output and "trial 1 " in p.output
    for noise in ("#0 :", "Launching 1 jobs", "block        output", "epoch 1/1", "evaluating:",
                  "data: MNIST loaded"):
        assert noise not in p.output, noise
    log = (tmp_path / "run" / "trial_0" / "run.log").read_text()
    assert log.startswith("threads: ")
    assert re.search(r"^overrides: .*sweeps=paper25k .*model\.blocks\.", log, re.M)
    assert "block        output" in log and len(LINE.findall(log)) == 2
    assert "evaluating: 500 test images" in log


def test_a_hydra_grid_keeps_every_jobs_lines(tmp_path):
    p = run_cmd([sys.executable, str(REPO / "run.py"), "-m", *SMALL, "train.lr=0.001,0.002",
                 f"hydra.sweep.dir={tmp_path}/grid"])
    assert p.returncode == 0, p.output
    assert "#0 : " in p.output and "#1 : " in p.output  # Hydra's own sweeper: its job lines
    assert p.stdout.count("block        output") == 2 and len(LINE.findall(p.stdout)) == 4
