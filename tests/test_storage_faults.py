"""The study's storage and folders under hostile but fair use: a damaged SQLite file, a journal
cut mid-line (and its repair), a study that holds another sweep, a folder that holds another
study, a study name too long for its column, passwords the URL syntax reserves characters of,
read-only and full disks. Each answered with one line, and nothing lost or half-written."""

import json
import resource
import shutil
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from conftest import REPO, run_cmd as run, run_py, sweep_cmd
from hydra_plugins.tinycnn_plugins._errors import SweepError
from hydra_plugins.tinycnn_plugins._settings import read_settings
from tinycnn.journal import repair_journal
from tinycnn.storage import StorageError, open_storage

SPACE = ["hydra/sweeper=tinycnn_optuna", "hydra.sweeper.study_name=t", "threads=1",
         "train.lr=interval(1e-3,1e-2)", "train.batch_size=choice(32,64)"]


def one_line(p) -> str:
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.output
    return lines[0]


def trials(db, name="t"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{db}").get_trials()


@pytest.fixture(scope="module")
def one_study(tmp_path_factory) -> Path:
    """A finished one-trial study in DIR/optuna.db, its folder DIR/run."""
    tmp = tmp_path_factory.mktemp("study")
    p = run(sweep_cmd(tmp, *SPACE, "hydra.sweeper.n_trials=1"))
    assert p.returncode == 0, p.output
    return tmp


# --- a study knows what it holds ----------------------------------------------------------------

def test_a_study_refuses_another_sweep_before_any_trial(one_study, tmp_path):
    shutil.copy(one_study / "optuna.db", tmp_path / "optuna.db")
    before = len(trials(tmp_path / "optuna.db"))
    p = run(sweep_cmd(tmp_path, *SPACE, "train.epochs=2", "hydra.sweeper.n_trials=3"))
    line = one_line(p)
    assert p.returncode == 1 and "holds trials of another sweep: train.epochs: 1 -> 2" in line
    assert "hydra.sweeper.study_name" in line and "hydra.sweeper.accept_changes=true" in line
    after = trials(tmp_path / "optuna.db")
    assert len(after) == before and all(t.state == TrialState.COMPLETE for t in after)


@pytest.mark.slow
def test_an_edited_choice_list_is_refused_and_an_accepted_change_recorded(one_study, tmp_path):
    shutil.copy(one_study / "optuna.db", tmp_path / "optuna.db")
    before = len(trials(tmp_path / "optuna.db"))
    # a choice list edited: Optuna cannot mix both in one study, so no override helps
    edited = [a.replace("choice(32,64)", "choice(32,128)") for a in SPACE]
    p = run(sweep_cmd(tmp_path, *edited, "hydra.sweeper.accept_changes=true",
                      "hydra.sweeper.n_trials=3"))
    line = one_line(p)
    assert p.returncode == 1 and "cannot change the choices of train.batch_size" in line
    assert "choice(32,64) -> choice(32,128)" in line
    assert len(trials(tmp_path / "optuna.db")) == before

    # continued knowingly: trained, and the change recorded in the study
    p = run(sweep_cmd(tmp_path, *SPACE, "train.epochs=2", "hydra.sweeper.accept_changes=true",
                      "hydra.sweeper.n_trials=2"))
    assert p.returncode == 0, p.output
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert len(study.trials) == before + 1
    assert study.user_attrs["changes"][-1]["differences"] == ["train.epochs: 1 -> 2"]
    assert study.user_attrs["identity"]["fixed"]["train.epochs"] == 2


def test_two_sweep_files_on_one_study_name_are_refused(one_study, tmp_path):
    shutil.copy(one_study / "optuna.db", tmp_path / "optuna.db")
    p = run(sweep_cmd(tmp_path, "sweeps=stack5k", "hydra.sweeper.study_name=t",
                      "hydra.sweeper.n_trials=3"))
    line = one_line(p)
    assert p.returncode == 1 and "holds trials of another sweep" in line, line
    assert "searched model.activation: (none) -> choice(relu, leaky_relu, silu)" in line
    assert len(trials(tmp_path / "optuna.db")) == 1  # nothing asked, nothing enqueued


def test_a_folder_holding_another_study_is_refused_not_overwritten(one_study):
    trial0 = (one_study / "run" / "trial_0" / "metrics.json").read_bytes()
    p = run(sweep_cmd(one_study, *SPACE[:1], "hydra.sweeper.study_name=other", *SPACE[2:]))
    line = one_line(p)
    assert p.returncode == 1 and "the folder holds study 't'" in line, line
    assert (one_study / "run" / "trial_0" / "metrics.json").read_bytes() == trial0
    names = [s.study_name for s in optuna.get_all_study_summaries(
        f"sqlite:///{one_study}/optuna.db")]
    assert names == ["t"]


def test_a_study_name_too_long_for_its_column_is_one_short_line():
    with pytest.raises(SweepError) as err:
        read_settings({"study_name": "n" * 2000})
    text = str(err.value)
    assert "at most 512 characters in the column studies.study_name" in text
    assert "(2,000 characters)" in text and len(text) < 300


# --- a damaged SQLite file ----------------------------------------------------------------------

@pytest.mark.parametrize("at, says", [(0, "file is not a database"), (4096 * 3, "")])
def test_a_damaged_sqlite_file_is_named_with_the_recovery_advice(one_study, tmp_path, at, says):
    db = tmp_path / "optuna.db"
    shutil.copy(one_study / "optuna.db", db)
    with open(db, "r+b") as f:  # bytes written into the file: a page header overwritten
        f.seek(at)
        f.write(b"\xde\xad\xbe\xef" * 8)
    with pytest.raises(StorageError) as err:
        open_storage(f"sqlite:///{db}")
    text = str(err.value)
    assert f"the SQLite file {db} is damaged" in text and says in text
    assert f"sqlite3 {db} .recover | sqlite3 RECOVERED.db" in text
    if at:  # the sweep and compare say the same, in one line, before touching anything
        for cmd in (sweep_cmd(tmp_path, *SPACE, "hydra.sweeper.n_trials=3"),
                    [sys.executable, "-m", "tinycnn", "compare", "t", "--storage",
                     f"sqlite:///{db}"]):
            p = run(cmd)
            assert p.returncode == 1 and "is damaged" in one_line(p)


# --- a journal cut mid-line --------------------------------------------------------------------

def _journal(tmp_path) -> Path:
    path = tmp_path / "study.log"
    study = optuna.create_study(study_name="j", storage=open_storage(str(path)))
    for x in (1.0, 2.0, 3.0):
        study.enqueue_trial({"x": x})
        study.optimize(lambda t: t.suggest_float("x", 0, 4), n_trials=1)
    return path


def test_a_cut_journal_is_refused_never_appended_and_repaired(tmp_path):
    path = _journal(tmp_path)
    whole = path.read_bytes()
    lines = whole.split(b"\n")[:-1]
    path.write_bytes(whole[:-25])  # a writer stopped 25 bytes before its line's end
    for cmd in ([sys.executable, "-m", "tinycnn", "compare", "j", "--storage", str(path)],
                sweep_cmd(tmp_path, *SPACE, f"hydra.sweeper.storage={path}",
                          "hydra.sweeper.study_name=j")):
        p = run(cmd)
        line = one_line(p)
        assert p.returncode == 1, p.output
        assert f"line {len(lines)} of {len(lines)} is cut off" in line
        assert f"tinycnn repair {path}" in line
        assert path.read_bytes() == whole[:-25]  # nothing appended to the cut line

    # the old failure: a record appended to the cut line; repair gives that record back
    path.write_bytes(b"\n".join(lines[:-1]) + b"\n" + lines[-1][:30] + lines[-1] + b"\n")
    p = run([sys.executable, "-m", "tinycnn", "repair", str(path)])
    assert p.returncode == 0 and f"kept {len(lines)} complete records (1 recovered" in p.stdout
    assert path.read_bytes() == whole
    assert (tmp_path / "study.log.bad").read_bytes() == lines[-1][:30] + lines[-1] + b"\n"
    study = optuna.load_study(study_name="j", storage=open_storage(str(path)))
    assert [t.params["x"] for t in study.trials] == [1.0, 2.0, 3.0]
    assert "nothing to repair" in repair_journal(str(path))


# --- passwords ------------------------------------------------------------------------------------

# Each holds characters the URL syntax reserves; written as they are and escaped.
PASSWORDS = ["Zq7@Wx9", "Zq7:Wx9", "Zq7/Wx9", "Zq7%Wx9", "Zq7$Wx9", "Aa1@Bb2:Cc3/Dd4%Ee5$Ff6",
             "Zq7%40Wx9"]


def fragments(password: str):
    """Every 3-character piece of the password as written or decoded that holds a letter: none
    may appear in an error line (the escape hint itself quotes %40, %3A, ...)."""
    from urllib.parse import unquote
    forms = {password, unquote(password)}
    return {f[i:i + 3] for f in forms for i in range(len(f) - 2)
            if any(c.isalpha() for c in f[i:i + 3])}


@pytest.mark.parametrize("password", PASSWORDS)
def test_no_error_line_holds_any_part_of_a_password(password):
    from urllib.parse import quote
    for pw in (password, quote(password, safe="")):
        url = f"postgresql://me:{pw}@127.0.0.1:9/db"  # port 9: nothing listens
        with pytest.raises(StorageError) as err:
            open_storage(url, connect_timeout=2)
        text = str(err.value)
        assert "postgresql://me:***@127.0.0.1:9/db" in text
        assert not any(f in text for f in fragments(password)), text
        if "@" in pw:  # unreadable as user:password@host: the line says how to escape
            assert "escape them in the password: @ as %40" in text


# --- disks ---------------------------------------------------------------------------------------

@contextmanager
def tmpfs(folder: Path, options: str):
    """A small tmpfs at folder (root only); skips where mounting is not allowed."""
    folder.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                       capture_output=True, text=True)
    if p.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({p.stderr.strip()})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_a_read_only_folder_is_one_line_before_any_study(tmp_path):
    with tmpfs(tmp_path / "ro", "size=64k,ro") as ro:
        for args, key in ((("-m", *SPACE, f"hydra.sweeper.storage=sqlite:///{tmp_path}/o.db",
                            f"hydra.sweep.dir={ro}/sweep"), "hydra.sweep.dir"),
                          ((f"hydra.run.dir={ro}/run",), "hydra.run.dir")):
            p = run_py(*args)
            line = one_line(p)
            assert p.returncode == 1 and line.startswith(f"tinycnn: {key} = {ro}/")
            assert "cannot write there (Read-only file system)" in line
        assert not (tmp_path / "o.db").exists()  # no study was touched


def _file_limit(limit: int):
    def cap():  # the disk "fills" at `limit` bytes a file: writes then fail with EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return cap


def test_a_full_disk_while_saving_fails_the_run_with_a_record_and_no_half_file(tmp_path):
    from conftest import SMALL, sub_env
    p = subprocess.run([sys.executable, str(REPO / "run.py"), *SMALL, "threads=1",
                        f"hydra.run.dir={tmp_path}/run"], cwd=REPO, env=sub_env(),
                       capture_output=True, text=True, preexec_fn=_file_limit(40_000))
    line = p.stderr.strip().splitlines()[-1]
    assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "could not be saved" in line and "metrics.json records the run as failed" in line
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "File too large" in metrics["error"]
    left = sorted(f.name for f in (tmp_path / "run").iterdir())
    assert left == [".hydra", "config.yaml", "metrics.json", "run.log"]  # no model.pt, no .tmp


@pytest.mark.slow
def test_a_full_disk_in_a_sweep_fails_the_trial_not_the_study(tmp_path):
    with tmpfs(tmp_path / "small", "size=1m") as small:
        # a 400k-parameter network's model.pt (~1.6 MB) cannot fit; the journal and records can
        p = run(sweep_cmd(small, *SPACE, "hydra.sweeper.max_params=1000000",
                          "model.classifier.hidden=1000", f"hydra.sweeper.storage={small}/s.log",
                          "hydra.sweeper.n_trials=2", "hydra.sweeper.max_failure_rate=1"))
        assert p.returncode == 0, p.output
        study = optuna.load_study(study_name="t", storage=open_storage(f"{small}/s.log"))
        assert [t.state for t in study.trials] == [TrialState.FAIL] * 2
        for t in study.trials:
            metrics = json.loads((small / "run" / f"trial_{t.number}" / "metrics.json")
                                 .read_text())
            assert metrics["status"] == "failed" and "No space left" in metrics["error"]
        assert not list(small.rglob("*.tmp")) and not list(small.rglob("model.pt"))


def test_a_missing_database_driver_is_one_line(tmp_path):
    from conftest import sub_env
    blocker = tmp_path / "no_psycopg" / "psycopg"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError(name='psycopg')\n")
    env = sub_env()
    env["PYTHONPATH"] = f"{blocker.parent}:{env['PYTHONPATH']}"
    p = run([sys.executable, "-m", "tinycnn", "compare", "t", "--storage",
             "postgresql://me:Zq7Wx9@127.0.0.1:9/db"], env=env)
    line = one_line(p)
    assert p.returncode == 1 and "pip install 'tinycnn[postgres]'" in line, line
    assert "postgresql://me:***@127.0.0.1:9/db" in line and "Zq7Wx9" not in p.output


def test_a_trial_attribute_of_the_wrong_kind_is_skipped_and_counted(tmp_path):
    url = f"sqlite:///{tmp_path}/o.db"
    study = optuna.create_study(study_name="s", storage=url, direction="maximize")
    for i in range(3):
        t = study.ask()
        t.set_user_attr("val_acc", "high" if i == 1 else 0.9)
        t.set_user_attr("params", 100 + i)
        study.tell(t, 0.9)
    p = run([sys.executable, "-m", "tinycnn", "compare", "s", "--storage", url, "--format",
             "json"])
    assert p.returncode == 0, p.output
    assert "2 run(s): 2 complete" in p.stderr and json.loads(p.stdout)
    assert "skipped 1 damaged run(s) or trial(s)" in p.stderr
    assert "s/trial_1: user attribute 'val_acc' = 'high': expected an accuracy" in p.stderr
