"""tinycnn deploy on a small trained run: ONNX that matches torch, int8 calibrated on training
images, accuracies, sizes and latency in deploy.json; and one line without the extra."""

import json
import sys
from pathlib import Path

import pytest

from conftest import REPO, compose_cfg, run_cmd, sub_env
from tinycnn import cli
from tinycnn.runner import run

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("deploy") / "run"
    run(compose_cfg("model=paper", "data.limit=1024", "threads=1"), out)
    return out


def test_deploy_writes_a_checked_onnx_and_an_int8_model(trained, capsys):
    code = cli.main(["deploy", str(trained), "--int8", "--calibration", "256"])
    out, err = capsys.readouterr()
    assert code == 0, err
    d = json.loads((trained / "deploy.json").read_text())
    assert (trained / "model.onnx").is_file() and (trained / "model.int8.onnx").is_file()
    assert d["parity"]["max_abs_logit_diff"] <= 1e-4 and d["parity"]["images"] == 500
    # the paper normalises with batch statistics: re-estimated on training images first
    r = d["running_stats"]
    assert r["estimated_on_train_images"] == 1024 and 0 <= r["val_acc_batch1_before"] <= 1
    assert d["int8"]["calibration_train_images"] == 256
    for kind in ("float", "int8"):
        assert 0.5 < d[kind]["val_acc"] <= 1 and 0.5 < d[kind]["test_acc"] <= 1
        assert d[kind]["latency_us"]["runs"] == 200
        assert d[kind]["latency_us"]["median"] <= d[kind]["latency_us"]["p90"]
    assert abs(d["int8"]["test_acc"] - d["float"]["test_acc"]) < 0.05
    # numbers: 21,614 float32 parameters folded into fewer tensors; int8 stores about a quarter
    assert d["float"]["stored_bytes"] > 4 * 20_000 > 2 * d["int8"]["stored_bytes"]
    assert "onnxruntime's logits within" in out and "int8:  val" in out
    assert "WARNING" not in err
    # compare reads deploy.json: int8 accuracy and latency columns
    code = cli.main(["compare", str(trained), "--format", "json"])
    row = json.loads(capsys.readouterr()[0])[0]
    assert row["int8_test_acc"] == d["int8"]["test_acc"] and row["int8_seeds"] == 1
    assert row["int8_us"] == d["int8"]["latency_us"]["median"]
    cli.main(["compare", str(trained)])
    assert "int8 test %  int8 µs" in capsys.readouterr()[0]


def test_deploy_without_the_extra_is_one_line(trained, tmp_path):
    blocker = tmp_path / "no_onnxruntime" / "onnxruntime"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError(name='onnxruntime')\n")
    env = sub_env()
    env["PYTHONPATH"] = f"{blocker.parent}:{env['PYTHONPATH']}"
    p = run_cmd([sys.executable, "-m", "tinycnn.cli", "deploy", str(trained)], cwd=REPO, env=env)
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [
        "tinycnn deploy: error: tinycnn deploy needs onnx and onnxruntime (onnxruntime is not "
        "installed): pip install -e \".[deploy]\""], p.stderr


def test_confirm_deploy_reports_int8_over_the_seeds(trained, tmp_path, capsys):
    code = cli.main(["confirm", str(trained), "--top", "1", "--seeds", "2", "--deploy",
                     "--out", str(tmp_path / "confirm"), "--format", "json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    [row] = json.loads(out)
    assert row["seeds"] == 2 and row["int8_seeds"] == 2
    runs = [json.loads((Path(d) / "deploy.json").read_text())["int8"]
            for d in row["dirs"]]
    accs = [r["test_acc"] for r in runs]
    assert row["int8_test_acc_mean"] == pytest.approx(sum(accs) / 2)
    assert row["int8_test_acc_std"] == pytest.approx(abs(accs[0] - accs[1]) / 2 ** 0.5)
