"""End to end: a run on a small real MNIST subset leaves a complete, repeatable record."""

import json
import os

import pytest
import torch
from omegaconf import OmegaConf

from conftest import compose_cfg, run_py
from tinycnn.data import load_data
from tinycnn.errors import ConfigError, Diverged, TinycnnError
from tinycnn.model import build_model
from tinycnn.record import load_checkpoint
from tinycnn.runner import pick_device, run
from tinycnn.train import evaluate

NUMBERS = ("params", "params_by_block", "train_acc", "val_acc", "test_acc", "train_loss",
           "history", "seed", "config_key")


def test_run_writes_a_complete_record(tmp_path):
    m = run(compose_cfg(), tmp_path)
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk == m
    assert m["status"] == "complete" and m["params"] == 21_614
    assert list(m["params_by_block"]) == ["initial", "res1", "transition", "res2", "classifier"]
    for key in ("train_acc", "val_acc", "test_acc"):
        assert 0.2 < m[key] <= 1.0, key  # 512 images: clearly learning, far from chance
    assert m["seconds"] > 0 and m["seed"] == 0 and m["device"] == "cpu"
    assert {"torch", "torchvision", "hydra-core", "optuna", "python"} <= set(m["versions"])
    assert [h["step"] for h in m["history"]] == [4, 8]  # 8 batches, 2 evals, the last at the end
    assert m["val_acc"] == m["history"][-1]["val_acc"]
    assert not list(tmp_path.glob(".*.tmp"))

    cfg = OmegaConf.load(tmp_path / "config.yaml")  # resolved: no interpolation left
    assert cfg.model.blocks.res1.scale == 2.5 and "hydra" not in cfg
    ckpt = torch.load(tmp_path / "model.pt", weights_only=True)
    assert ckpt["params"] == 21_614 and ckpt["model"] == OmegaConf.to_container(cfg.model)
    model = build_model(ckpt["model"])
    model.load_state_dict(ckpt["state_dict"])
    data = load_data(cfg.data)
    assert evaluate(model, data, data.test_x, data.test_y) == m["test_acc"]


def test_same_seed_same_numbers_other_seed_other_numbers(tmp_path):
    a = run(compose_cfg("seed=3"), tmp_path / "a")
    b = run(compose_cfg("seed=3"), tmp_path / "b")
    c = run(compose_cfg("seed=4"), tmp_path / "c")
    assert {k: a[k] for k in NUMBERS} == {k: b[k] for k in NUMBERS}
    assert a["train_loss"] != c["train_loss"]
    assert a["config_key"] == c["config_key"]  # seed repeats are one config
    assert torch.equal(torch.load(tmp_path / "a/model.pt", weights_only=True)["state_dict"]
                       ["classifier.mlp.0.weight"],
                       torch.load(tmp_path / "b/model.pt", weights_only=True)["state_dict"]
                       ["classifier.mlp.0.weight"])


def test_validation_split_is_fixed_and_disjoint(mnist_root):
    a = load_data(compose_cfg("data.limit=null", "seed=1").data)
    b = load_data(compose_cfg("data.limit=null", "seed=2").data)
    assert torch.equal(a.val_x, b.val_x)  # the split does not follow the training seed
    assert len(a.train_x) == 60_000 - 256 and len(a.val_x) == 256 and len(a.test_x) == 500
    every = load_data(compose_cfg("data.limit=null", "data.val_size=0").data)
    assert len(every.train_x) == 60_000 and len(every.val_x) == 0


def test_diverging_run_is_recorded_as_failed(tmp_path):
    with pytest.raises(Diverged, match="lower train.lr"):
        run(compose_cfg("train.lr=1e12", "data.limit=3200"), tmp_path)
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["status"] == "failed" and "Diverged" in m["error"] and m["test_acc"] is None
    assert not (tmp_path / "model.pt").exists()


def test_interrupted_write_leaves_no_half_file(trained_run, tmp_path, monkeypatch):
    import shutil

    import tinycnn.record as record
    folder = shutil.copytree(trained_run, tmp_path / "run")
    before = (folder / "metrics.json").read_text()

    def crash(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(record.json, "dumps", crash)
    with pytest.raises(KeyboardInterrupt):
        record.write_json_atomic(folder / "metrics.json", {"half": True})
    assert (folder / "metrics.json").read_text() == before
    assert not list(folder.glob(".*.tmp"))


def test_config_errors_come_before_data(tmp_path):
    with pytest.raises(ConfigError, match="data.val_size = 70000"):
        run(compose_cfg("data.val_size=70000"), tmp_path)
    with pytest.raises(ConfigError, match="train.lr = -1"):
        run(compose_cfg("train.lr=-1"), tmp_path)
    with pytest.raises(ConfigError, match="device = 'tpu'"):
        pick_device("tpu")
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else
                                        "mps" if torch.backends.mps.is_available() else "cpu")


def test_missing_data_names_the_folder_and_files(tmp_path):
    with pytest.raises(TinycnnError) as err:
        load_data(compose_cfg(f"data.root={tmp_path}/nowhere").data)
    msg = str(err.value)
    assert f"{tmp_path}/nowhere/MNIST/raw" in msg and "t10k-labels-idx1-ubyte" in msg
    assert "TINYCNN_DATA" in msg


def test_run_py_end_to_end(tmp_path):
    p = run_py("data.limit=256", "data.val_size=256", "data.test_limit=500",
               f"hydra.run.dir={tmp_path}/run")
    assert p.returncode == 0, p.stderr
    assert "21,614" in p.stdout and "train " in p.stdout and " val " in p.stdout
    assert "test " in p.stdout
    assert "loss=" not in p.stdout + p.stderr  # in a pipe: no progress bar (see the next test)
    m = json.loads((tmp_path / "run/metrics.json").read_text())
    assert m["overrides"][0] == "data.limit=256"
    assert (tmp_path / "run/.hydra/config.yaml").exists()
    assert "21,614" in (tmp_path / "run/run.log").read_text()
    load_checkpoint(tmp_path / "run/model.pt")


@pytest.mark.parametrize("override, words", [
    ("model.blocks.res2.layers.1.groups=5", ["model.blocks.res2.layers.1.groups = 5", "divide"]),
    ("model.activation=swish", ["model.activation = 'swish'", "leaky_relu"]),
])
def test_run_py_bad_config_is_one_clear_error(tmp_path, override, words):
    # A data root that does not exist: the config error must come first.
    env = dict(os.environ, TINYCNN_DATA=str(tmp_path / "no-data"))
    p = run_py(override, f"hydra.run.dir={tmp_path}/run", env=env)
    assert p.returncode != 0
    assert "Traceback" not in p.stderr and "MNIST" not in p.stderr
    for w in words:
        assert w in p.stderr


@pytest.mark.slow
def test_full_paper_run_beats_97_percent(tmp_path):
    """The paper's recipe on all data (55,000 train after the 5,000 validation images)."""
    m = run(compose_cfg(small=False), tmp_path)
    assert m["params"] == 21_614
    assert m["test_acc"] >= 0.97, m


def test_progress_bar_on_a_terminal_only(tmp_path):
    """tqdm draws batches, running loss and accuracy on a terminal (and stays quiet in a pipe:
    test_run_py_end_to_end)."""
    import fcntl
    import pty
    import struct
    import subprocess
    import sys
    import termios

    from conftest import REPO, sub_env
    args = [sys.executable, str(REPO / "run.py"), "data.limit=640", "data.val_size=256",
            "data.test_limit=500"]
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # 120 columns
    p = subprocess.Popen([*args, f"hydra.run.dir={tmp_path}/tty"], cwd=REPO, stdout=slave,
                         stderr=slave, env=sub_env())
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert p.wait(timeout=300) == 0
    screen = b"".join(chunks).decode(errors="replace")
    assert "epoch 1/1" in screen and "batch" in screen and "loss=" in screen and "acc=" in screen


def test_epoch_benchmark_repeats_and_reports_medians(capsys):
    """python -m tinycnn.bench on 512 images, twice: each pair printed, then the medians (its
    main() in-process, as the module runs it)."""
    from tinycnn import bench
    bench.main(["--limit", "512", "--repeat", "2", "--skip-memory"])
    output = capsys.readouterr().out
    pairs = [line for line in output.splitlines() if line.strip().startswith(("1/2:", "2/2:"))]
    assert len(pairs) == 2 and "median of 2" in output
    paper = float(output.split("paper's pipeline   :")[1].split("s")[0])
    ours = float(output.split("tinycnn's pipeline :")[1].split("s")[0])
    ratio = float(output.split("ratio tinycnn/paper:")[1].split()[0])
    # the ratio of the medians: printed times are rounded to 0.01 s and the ratio to 0.01
    lo, hi = (ours - 0.005) / (paper + 0.005), (ours + 0.005) / (paper - 0.005)
    assert lo - 0.005 <= ratio <= hi + 0.005, (ratio, ours, paper)
    with pytest.raises(SystemExit) as stop:
        bench.main(["--repeat", "0"])
    assert stop.value.code == 2
    assert "--repeat 0: expected a whole number >= 1" in capsys.readouterr().err
