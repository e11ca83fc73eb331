"""A plain run stopped mid-training, by Ctrl-C (SIGINT) or by kill / a scheduler's limit
(SIGTERM): one line, exit 130, and the run recorded as failed."""

import json
import signal
import subprocess
import sys

import pytest

from conftest import REPO, sub_env


@pytest.mark.parametrize("sig", [pytest.param(signal.SIGINT, marks=pytest.mark.slow),
                                 signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stopped_plain_run_is_recorded_failed(tmp_path, sig):
    out = tmp_path / "run"
    p = subprocess.Popen([sys.executable, str(REPO / "run.py"), "model=paper", "data.limit=6400",
                          "data.val_size=500", "train.evals_per_epoch=20", f"hydra.run.dir={out}"],
                         cwd=REPO, env=sub_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    for line in p.stdout:  # the first progress line: training has started
        if line.startswith("epoch 1/1  step "):
            break
    p.send_signal(sig)
    rest, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert err.strip().splitlines() == [
        f"tinycnn: interrupted; {out}/metrics.json records the run as failed ('KeyboardInterrupt"
        + (": SIGTERM')" if sig == signal.SIGTERM else "')")], err
    m = json.loads((out / "metrics.json").read_text())
    assert m["status"] == "failed" and m["error"].startswith("KeyboardInterrupt")
    assert m["history"] and m["seconds"] > 0 and not (out / "model.pt").exists()
