"""How the CLI finds and shows what a user made: the latest sweep at any depth under
outputs/multirun, one way to name a source, and a default compare table that fits 120 columns."""

import os
import re
import shutil
import time
from pathlib import Path

import pytest

from tinycnn import cli


@pytest.fixture
def sweep(small_sweep) -> Path:
    """The shared 5-trial paper25k search (tests/conftest.py: trials 0, 3, 4 trained, 1 and 2
    over budget): settings that vary, floats with many digits."""
    return small_sweep.folder


def tinycnn(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def place(sweep: Path, outputs: Path, rel: str, age_s: float) -> Path:
    """A copy of the sweep at outputs/multirun/REL, last changed age_s seconds ago."""
    dest = outputs / "multirun" / rel
    shutil.copytree(sweep, dest)
    t = time.time() - age_s
    os.utime(dest, (t, t))
    return dest


def test_compare_without_a_source_finds_the_latest_sweep_at_any_depth(sweep, tmp_path, capsys):
    outputs = tmp_path / "outputs"
    place(sweep, outputs, "2026-11-01/10-00-00", 300)  # a dated sweep
    named = place(sweep, outputs, "project/quick", 60)  # hydra.sweep.dir=.../project/quick
    place(sweep, outputs, "2026-11-02/09-00-00", 120)
    code, out, err = tinycnn(capsys, "compare", "--outputs", outputs, "--format", "json")
    assert code == 0, err
    assert f"reading the latest sweep, {named}" in err
    os.utime(outputs / "multirun" / "2026-11-01" / "10-00-00")  # a new trial there: now latest
    code, _, err = tinycnn(capsys, "compare", "--outputs", outputs, "--format", "json")
    assert code == 0 and "latest sweep, " + str(outputs / "multirun/2026-11-01/10-00-00") in err


def test_no_sweep_anywhere_is_one_line(tmp_path, capsys):
    (tmp_path / "outputs" / "multirun" / "empty" / "folder").mkdir(parents=True)
    code, _, err = tinycnn(capsys, "compare", "--outputs", tmp_path / "outputs")
    assert code == 2 and err.count("\n") == 1
    assert "no sweeps under" in err and "searched every folder in it" in err


def test_the_default_table_fits_120_columns_and_wide_shows_everything(sweep, capsys):
    code, out, err = tinycnn(capsys, "compare", sweep)
    assert code == 0, err
    assert max(len(line) for line in out.splitlines()) <= 120, out
    assert "setting column(s) not shown to fit 120 columns" in out and "--wide" in out
    assert f"dir: under {sweep}" in out and re.search(r"  trial_0$", out, re.M)
    code, wide, _ = tinycnn(capsys, "compare", sweep, "--wide")
    assert max(len(line) for line in wide.splitlines()) > 120
    assert "not shown" not in wide and "train.lr" in wide.splitlines()[0]
    # floats shown to 4 significant digits in tables; json keeps them whole
    lrs = [r["settings"]["train.lr"] for r in cli_json(capsys, sweep)]
    assert any(len(repr(v)) > 8 for v in lrs)
    code, table, _ = tinycnn(capsys, "compare", sweep, "--settings", "train.lr")
    at = table.splitlines()[0].index("train.lr")
    cells = [line[at:].split()[0] for line in table.split("\n\n")[0].splitlines()[2:]][:4]
    assert cells and all(re.fullmatch(r"0\.0*\d{1,4}", c) for c in cells), cells


def cli_json(capsys, source):
    import json
    code, out, err = tinycnn(capsys, "compare", source, "--format", "json", "--settings",
                             "train.lr")
    assert code == 0, err
    return json.loads(out)


def test_export_takes_its_source_as_compare_does(sweep, tmp_path, capsys):
    conf = tmp_path / "conf"
    shutil.copytree(Path(__file__).resolve().parent.parent / "conf", conf)
    code, out, err = tinycnn(capsys, "export", sweep, "--trial", 0, "--name", "a",
                             "--conf-dir", conf)
    assert code == 0, err
    assert (conf / "model" / "a.yaml").is_file()
    code, out, err = tinycnn(capsys, "export", "--from", sweep, "--trial", 0, "--name", "b",
                             "--conf-dir", conf)
    assert code == 0 and (conf / "model" / "b.yaml").is_file(), err
    code, _, err = tinycnn(capsys, "export", sweep, "--from", tmp_path, "--trial", 0,
                           "--name", "c", "--conf-dir", conf)
    assert code == 2 and "give one (SOURCE and --from are the same option)" in err


def test_one_bad_record_is_skipped_and_counted_not_fatal(sweep, tmp_path, capsys):
    """A metrics.json with a string where a number belongs breaks nothing but its own row."""
    import json
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    bad = copy / "trial_3" / "metrics.json"
    m = json.loads(bad.read_text())
    m["val_acc"] = "high"
    bad.write_text(json.dumps(m))
    says = "metrics.json field 'val_acc' = 'high': expected an accuracy from 0 to 1"
    code, out, err = tinycnn(capsys, "compare", copy, "--format", "json")
    assert code == 0, err
    assert "skipped 1 damaged run(s) or trial(s)" in err and says in err
    assert 3 not in [r["trial"] for r in json.loads(out)] and len(json.loads(out)) == 4
    code, out, err = tinycnn(capsys, "confirm", copy, "--top", "1", "--seeds", "1", "--out",
                             tmp_path / "confirm")
    assert code == 0 and says in err, err
    conf = tmp_path / "conf"
    shutil.copytree(Path(__file__).resolve().parent.parent / "conf", conf)
    code, _, err = tinycnn(capsys, "export", copy, "--trial", 0, "--name", "ok", "--conf-dir",
                           conf)
    assert code == 0 and says in err, err


def test_compare_shows_filters_and_sorts_on_device_costs(sweep, capsys):
    """Every run records its MACs and int8 bytes; compare shows them, filters and sorts on them."""
    import json

    from omegaconf import OmegaConf

    from tinycnn.model import count_costs
    for trial in sweep.glob("trial_*"):
        m = json.loads((trial / "metrics.json").read_text())
        if m["status"] in ("complete", "pruned"):
            model = OmegaConf.load(trial / "config.yaml").model
            assert {k: m[k] for k in ("params", "macs", "peak_bytes", "flash_bytes")} == \
                count_costs(model).totals()
    code, out, err = tinycnn(capsys, "compare", sweep)
    assert code == 0 and "MACs  peak KB  flash KB" in out.splitlines()[0]
    assert re.search(r"21,614\s+757k\s+12\.5\s+21\.7\s", out)  # the paper: 756,880 MACs
    rows = cli_json_all(capsys, sweep, "--where", "peak_kb<=12.544", "--sort", "macs:desc")
    assert rows and all(r["peak_kb"] <= 12.544 for r in rows)
    macs = [r["macs"] for r in rows]
    assert macs == sorted(macs, reverse=True)


def cli_json_all(capsys, source, *args):
    import json
    code, out, err = tinycnn(capsys, "compare", source, "--format", "json", *args)
    assert code == 0, err
    return json.loads(out)
