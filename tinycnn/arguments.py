"""The `tinycnn` command line's arguments: one function per subcommand, every option with help."""

import argparse
from pathlib import Path

from tinycnn.results import DEFAULT_STORAGE
from tinycnn.storage import CONNECT_TIMEOUT
from tinycnn.table import FORMATS

SOURCE_HELP = ("a run folder (outputs/DATE/TIME), a sweep folder (outputs/multirun/DATE/TIME), an "
               "Optuna study name (looked up in --storage), or an Optuna storage URL / .db / .log "
               "file (all its studies)")


def _add_source_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", default=DEFAULT_STORAGE, metavar="URL",
                   help=f"Optuna storage that study names are looked up in (default: "
                        f"{DEFAULT_STORAGE}; a path ending in .log is a journal file)")
    p.add_argument("--connect-timeout", type=float, default=CONNECT_TIMEOUT, metavar="S",
                   help="seconds to wait for a database server (PostgreSQL, MySQL) to answer "
                        f"before giving up (default: {CONNECT_TIMEOUT:g})")
    p.add_argument("--outputs", type=Path, default=Path("outputs"), metavar="DIR",
                   help="where runs are written, for finding the latest sweep (default: outputs)")
    p.add_argument("--conf-dir", type=Path, default=None, metavar="DIR",
                   help="the config tree (default: ./conf, else the conf/ beside the package)")


def _add_table_options(p: argparse.ArgumentParser, json_help: str) -> None:
    """--format, --settings, --wide: how compare and confirm print their rows."""
    p.add_argument("--format", choices=FORMATS, default="table",
                   help=f"output format (default: table); {json_help}")
    p.add_argument("--settings", default=None, metavar="KEYS",
                   help="setting columns to show, comma-separated (e.g. res1.scale,train.lr), or "
                   "none (default: every setting that differs between the rows read)")
    p.add_argument("--wide", action="store_true",
                   help="every setting column, full notes and full run folders (the default "
                   "table fits 120 columns)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tinycnn", description="Compare, export, reproduce and evaluate tinycnn runs. "
        "Training and sweeps are `python run.py ...` (see README).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    for add in (_compare, _confirm, _export, _reproduce, _deploy, _evaluate, _repair):
        add(sub)
    return parser


def _compare(sub) -> None:
    p = sub.add_parser("compare", help="table of runs or trials: seeds grouped, Pareto marked",
                       description="Print a table of runs or Optuna trials: seeds of one config "
                       "grouped (mean ± std), Pareto-optimal rows (val accuracy up, parameters "
                       "down) and the paper preset marked, settings that differ as columns.")
    p.add_argument("sources", nargs="*", metavar="SOURCE",
                   help=SOURCE_HELP + "; several may be given; none: the latest sweep under "
                   "outputs/multirun")
    _add_source_options(p)
    _add_table_options(p, "json is a list of objects with trial, state, params, val_acc, "
                       "test_acc, seconds, dir, ...; accuracies as fractions")
    p.add_argument("--sort", default="state,val_acc", metavar="KEY[:asc|:desc][,KEY...]",
                   help="sort by columns or settings (default: state,val_acc: complete rows "
                   "first, then pruned, failed, infeasible; each by val accuracy). Accuracies "
                   "sort high first, everything else low first, unless :asc or :desc is given")
    p.add_argument("--top", type=int, default=None, metavar="N", help="show only the first N rows")
    p.add_argument("--where", action="append", default=[], metavar="EXPR",
                   help="keep rows where EXPR holds, e.g. 'params<20000', state=complete, "
                   "res1.scale>=2, val_acc>0.97 (or >97 for percent); repeat to combine (and)")
    p.add_argument("--no-group", action="store_true",
                   help="one row per run instead of one per config with mean ± std over seeds")
    p.add_argument("--plot", type=Path, default=None, metavar="PNG",
                   help="also write an accuracy-vs-parameters scatter of the complete and pruned "
                   "rows shown (after --where/--top) to this PNG file")
    p.add_argument("--x", choices=("params", "macs", "peak_kb", "flash_kb"), default="params",
                   help="what the plot's x axis shows (default: params); budget lines from the "
                   "studies' max_params, max_macs, max_peak_bytes, max_flash_bytes")
    p.add_argument("--max-params", type=_budgets, default=None, metavar="N[,N...]",
                   help="budget lines in the plot (default: the max_params of the studies read, "
                   "else the sweeper's default)")


def _confirm(sub) -> None:
    p = sub.add_parser("confirm", help="retrain the top configs over several seeds and rank them",
                       description="Take the top K distinct complete configs of a search by "
                       "validation accuracy, train each until it has S seeds (seeds already "
                       "trained count, and runs of an earlier confirm are reused), and rank them "
                       "by mean validation accuracy. Test accuracy is reported, never ranked on. "
                       "The ranking is saved for `tinycnn export --confirmed`.")
    p.add_argument("sources", nargs="*", metavar="SOURCE",
                   help=SOURCE_HELP + "; none: the latest sweep under outputs/multirun")
    _add_source_options(p)
    p.add_argument("--top", type=_positive, default=5, metavar="K",
                   help="how many configs to confirm (default: 5)")
    p.add_argument("--seeds", type=_positive, default=3, metavar="S",
                   help="seeds per config, the search's own run included (default: 3)")
    p.add_argument("--jobs", type=_positive, default=1, metavar="N",
                   help="runs trained side by side, each in its own process (default: 1; on a "
                   "machine of C cores, --jobs C --threads 1 is fastest)")
    p.add_argument("--threads", type=_positive, default=None, metavar="N",
                   help="torch CPU threads per run (default: the recorded setting with --jobs 1, "
                   "else cores // jobs)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="where the new runs and confirmed.json go (default: "
                   "outputs/confirm/<source>)")
    p.add_argument("--data-root", default=None, metavar="DIR",
                   help="data folder to use instead of the recorded data.root")
    _add_table_options(p, "json is a list of rows with rank, seeds, val_acc_mean, val_acc_std, "
                       "test_acc_mean, test_acc_std, params, dirs")
    p.add_argument("--deploy", action="store_true",
                   help="also run `tinycnn deploy --int8` on every confirmed seed run and report "
                   "int8 accuracy as mean ± std over the seeds (needs the deploy extra)")


def _export(sub) -> None:
    p = sub.add_parser("export", help="write a trial's network as a preset in conf/model/",
                       description="Write the trial's model config as conf/model/NAME.yaml (and "
                       "conf/train/NAME.yaml if its training recipe was not the default), then "
                       "check the preset builds the same network.")
    p.add_argument("--trial", type=int, default=None, metavar="N",
                   help="trial / job number to export (optional when the source is one run)")
    p.add_argument("--name", required=True, help="preset name: `python run.py model=NAME`")
    p.add_argument("source", nargs="?", default=None, metavar="SOURCE",
                   help=SOURCE_HELP + " (default: the latest sweep under outputs/multirun)")
    p.add_argument("--from", dest="from_source", default=None, metavar="SOURCE",
                   help="the same as SOURCE (kept for older scripts)")
    p.add_argument("--confirmed", action="store_true",
                   help="export the winner of `tinycnn confirm` on the same SOURCE (the config "
                   "ranked first by mean validation accuracy over seeds) instead of a trial")
    p.add_argument("--experiment", action="store_true",
                   help="also write conf/experiment/NAME.yaml, selecting the model and train "
                   "presets: `python run.py +experiment=NAME seed=N`")
    p.add_argument("--force", action="store_true", help="overwrite existing presets of that name")
    _add_source_options(p)


def _reproduce(sub) -> None:
    p = sub.add_parser("reproduce", help="rerun a recorded run and compare its numbers",
                       description="Train RUN_DIR/config.yaml again (outside any Optuna study) "
                       "and print recorded vs new metrics. Exit 0 when identical or within "
                       "--tolerance, 1 otherwise.")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                   help="a run folder holding config.yaml and metrics.json")
    p.add_argument("--tolerance", type=float, default=0.002, metavar="X",
                   help="largest accepted absolute difference in accuracies and loss (default "
                   "0.002 = 0.2 percentage points); the parameter count must always match")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="where the rerun is recorded (default: outputs/reproduce/DATE/TIME)")
    p.add_argument("--data-root", default=None, metavar="DIR",
                   help="MNIST folder to use instead of the recorded data.root")
    p.add_argument("--quiet", action="store_true", help="do not print the run's own output")


def _deploy(sub) -> None:
    p = sub.add_parser("deploy", help="the run as ONNX (norms folded), checked, int8, timed",
                       description="Write RUN_DIR/model.onnx with norms folded and check "
                       "onnxruntime's logits against torch's; with --int8 also "
                       "model.int8.onnx (static QDQ quantisation calibrated on training images) "
                       "with its accuracy; latency and sizes of both; all in deploy.json. Needs "
                       "the deploy extra: pip install -e \".[deploy]\".")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a finished run folder")
    p.add_argument("--int8", action="store_true", help="also quantise to int8 and measure it")
    p.add_argument("--calibration", type=_positive, default=1000, metavar="N",
                   help="training images to calibrate the int8 ranges on (default: 1000)")
    p.add_argument("--data-root", default=None, metavar="DIR",
                   help="data folder to use instead of the recorded data.root")


def _evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="test accuracy of saved weights (model.pt)",
                       description="Load a tinycnn model.pt safely (weights_only=True), rebuild "
                       "the network from the config stored with it and report test accuracy.")
    p.add_argument("checkpoint", type=Path, metavar="MODEL_PT", help="a model.pt from a run folder")
    p.add_argument("--data-root", default=None, metavar="DIR",
                   help="MNIST folder (default: the run's data.root, else $TINYCNN_DATA)")
    p.add_argument("--test-limit", type=int, default=None, metavar="N",
                   help="first N test images only (default: as the run did; 0 = all 10,000)")
    p.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help="evaluation batch (default: the run's train.eval_batch_size); it matters, "
                   "since BatchNorm without running stats normalises each batch by itself")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--conf-dir", type=Path, default=None, metavar="DIR",
                   help="the config tree, for defaults when no config.yaml sits beside the weights")


def _repair(sub) -> None:
    p = sub.add_parser("repair", help="rewrite a journal storage with its complete records only",
                       description="A journal file (hydra.sweeper.storage=PATH.log) whose last "
                       "line was cut by a writer that stopped mid-line is refused by every "
                       "sweep and compare, and never appended to. This rewrites it with every "
                       "complete record (a whole record appended to a cut line is kept too) "
                       "and moves the bad lines to PATH.log.bad. Run it with no sweep running.")
    p.add_argument("journal", metavar="JOURNAL", help="the journal file, e.g. outputs/study.log")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number >= 1")
    return value


def _budgets(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected parameter counts >= 1, "
                                         "comma-separated (e.g. 25000,5000)")
    return values
