"""tinycnn confirm on a small real sweep (conftest's small_sweep): top configs retrained over
seeds, reused next time."""

import json
import subprocess
import sys
from pathlib import Path
from statistics import mean, stdev

import pytest
from omegaconf import OmegaConf

from conftest import REPO, stop_in_torch_env
from tinycnn import cli

def confirm(capsys, *argv):
    code = cli.main(["confirm", *map(str, argv)])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_confirm_ranks_by_mean_validation_and_reuses_its_runs(small_sweep, capsys, tmp_path):
    sweep = small_sweep.folder
    out_dir = tmp_path / "confirmed"
    args = [sweep, "--top", 2, "--seeds", 3, "--out", out_dir, "--jobs", 2,
            "--threads", 1, "--format", "json"]
    code, out, err = confirm(capsys, *args)
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == 2 and "4 run(s) to train" in err  # seed 0 came from the sweep
    for rank, row in enumerate(rows, 1):
        assert row["rank"] == rank and row["seeds"] == 3 and row["seed_list"] == [0, 1, 2]
        vals, tests = [], []
        for d in row["dirs"]:
            m = json.loads((Path(d) / "metrics.json").read_text())
            assert m["status"] == "complete" and m["params"] == row["params"]
            vals.append(m["val_acc"])
            tests.append(m["test_acc"])
        assert row["val_acc_mean"] == pytest.approx(mean(vals))
        assert row["val_acc_std"] == pytest.approx(stdev(vals))
        assert row["test_acc_mean"] == pytest.approx(mean(tests))
        assert row["test_acc_std"] == pytest.approx(stdev(tests))
        assert Path(row["dirs"][0]).parent == sweep  # the search's own seed-0 run
        assert all(Path(d).parent.parent == out_dir for d in row["dirs"][1:])
    assert rows[0]["val_acc_mean"] >= rows[1]["val_acc_mean"]  # by validation, never by test
    saved = json.loads((out_dir / "confirmed.json").read_text())
    assert saved["ranking"] == rows

    # again: nothing is trained, the same ranking comes back
    stamps = {d: (Path(d) / "metrics.json").stat().st_mtime_ns for r in rows for d in r["dirs"]}
    code, out, err = confirm(capsys, *args)
    assert code == 0 and "0 run(s) to train" in err
    assert json.loads(out) == rows
    assert stamps == {d: (Path(d) / "metrics.json").stat().st_mtime_ns for d in stamps}

    # more seeds: only the missing ones are trained
    code, out, err = confirm(capsys, *args[:3], "--seeds", 4, *args[5:])
    assert code == 0 and "2 run(s) to train" in err
    assert [r["seeds"] for r in json.loads(out)] == [4, 4]

    # the table, and export of the confirmed winner
    code, out, err = confirm(capsys, *args[:-2], "--seeds", 4, "--settings", "res1.scale")
    assert code == 0 and out.splitlines()[0].split()[:3] == ["rank", "trial", "state"]
    conf = tmp_path / "conf"
    import shutil
    shutil.copytree(REPO / "conf", conf)
    code = cli.main(["export", "--confirmed", "--from", str(sweep),
                     "--outputs", str(tmp_path / "none"), "--name", "x", "--conf-dir", str(conf)])
    assert code == 2 and "run `tinycnn confirm SOURCE` first" in capsys.readouterr().err
    shutil.copytree(out_dir, tmp_path / "outs" / "confirm" / "sweep")
    code = cli.main(["export", "--confirmed", "--from", str(sweep),
                     "--outputs", str(tmp_path / "outs"), "--name", "winner", "--experiment",
                     "--conf-dir", str(conf)])
    out, err = capsys.readouterr()
    assert code == 0, err
    header = (conf / "model" / "winner.yaml").read_text()
    assert "confirmed over 4 seeds" in header and f"trial {rows[0]['trial']}" in header
    assert "python run.py +experiment=winner" in out
    assert "  - override /data: mnist\n" in (conf / "experiment" / "winner.yaml").read_text()
    from hydra import compose, initialize_config_dir
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("config", overrides=["+experiment=winner", "seed=7"])
    winner = json.loads((Path(rows[0]["dirs"][0]) / "metrics.json").read_text())
    from tinycnn.model import count_params
    assert count_params(cfg.model) == (winner["params"], winner["params_by_block"])
    recorded = OmegaConf.load(Path(rows[0]["dirs"][0]) / "config.yaml")
    assert OmegaConf.to_container(cfg.train) == OmegaConf.to_container(recorded.train)


def test_a_ctrl_c_while_a_worker_loads_torch_is_a_clean_stop(small_sweep, tmp_path):
    """A confirm worker stopped while it imports torch: `tinycnn: interrupted`, exit 130, no
    broken pool and no half-made run folder. (The hook stops it at a point in Python; the
    window where it would abort, Python called from torch's C++, cannot be hit on cue; the
    hold that covers it is tested in test_faults.py.)"""
    out_dir = tmp_path / "confirmed"
    p = subprocess.run([sys.executable, "-m", "tinycnn", "confirm", str(small_sweep.folder),
                        "--top", "1", "--seeds", "2", "--jobs", "1", "--threads", "1",
                        "--out", str(out_dir)], cwd=tmp_path, env=stop_in_torch_env(tmp_path),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 130, p.stderr
    assert p.stderr.strip().splitlines()[-1] == "tinycnn: interrupted", p.stderr
    assert "terminate called" not in p.stderr and "abruptly" not in p.stderr, p.stderr
    assert not list(out_dir.glob("*/seed_1"))  # the one run to train never started


def test_confirm_bad_input(small_sweep, capsys, tmp_path):
    with pytest.raises(SystemExit):
        cli.main(["confirm", str(small_sweep.folder), "--top", "0"])
    assert "--top: '0': expected a whole number >= 1" in capsys.readouterr().err
    code, out, err = confirm(capsys, tmp_path / "nothing-here")
    assert code == 2 and "does not exist" in err
