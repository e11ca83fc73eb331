"""`tinycnn` command line: read what sweeps found, keep the winner, check it holds.

  tinycnn compare [SOURCE ...]          table of runs / trials (default: the latest sweep)
  tinycnn confirm SOURCE [--top K]      retrain the top K configs over several seeds, rank them
  tinycnn export [SOURCE] --trial N --name NAME
                                        a trial's network as conf/model/NAME.yaml
  tinycnn reproduce RUN_DIR             rerun a recorded run and compare its numbers
  tinycnn evaluate MODEL_PT             test accuracy of saved weights
  tinycnn deploy RUN_DIR [--int8]       ONNX (norms folded), checked, int8, timed
"""

import argparse
import logging
import sys
from pathlib import Path

from tinycnn.compare import FORMATS
from tinycnn.errors import TinycnnError
from tinycnn.results import DEFAULT_STORAGE, display_path

SOURCE_HELP = ("a run folder (outputs/DATE/TIME), a sweep folder (outputs/multirun/DATE/TIME), an "
               "Optuna study name (looked up in --storage), or an Optuna storage URL / .db / .log "
               "file (all its studies)")


def _add_source_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", default=DEFAULT_STORAGE, metavar="URL",
                   help=f"Optuna storage that study names are looked up in (default: "
                        f"{DEFAULT_STORAGE}; a path ending in .log is a journal file)")
    p.add_argument("--connect-timeout", type=float, default=10, metavar="S",
                   help="seconds to wait for a database server (PostgreSQL, MySQL) to answer "
                        "before giving up (default: 10)")
    p.add_argument("--outputs", type=Path, default=Path("outputs"), metavar="DIR",
                   help="where runs are written, for finding the latest sweep (default: outputs)")
    p.add_argument("--conf-dir", type=Path, default=None, metavar="DIR",
                   help="the config tree (default: ./conf, else the conf/ beside the package)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tinycnn", description="Compare, export, reproduce and evaluate tinycnn runs. "
        "Training and sweeps are `python run.py ...` (see README).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("compare", help="table of runs or trials: seeds grouped, Pareto marked",
                       description="Print a table of runs or Optuna trials: seeds of one config "
                       "grouped (mean ± std), Pareto-optimal rows (val accuracy up, parameters "
                       "down) and the paper preset marked, settings that differ as columns.")
    p.add_argument("sources", nargs="*", metavar="SOURCE",
                   help=SOURCE_HELP + "; several may be given; none: the latest sweep under "
                   "outputs/multirun")
    _add_source_options(p)
    p.add_argument("--format", choices=FORMATS, default="table",
                   help="output format (default: table). json is a list of objects with trial, "
                   "state, params, val_acc, test_acc, seconds, dir, ...; accuracies as fractions")
    p.add_argument("--sort", default="state,val_acc", metavar="KEY[:asc|:desc][,KEY...]",
                   help="sort by columns or settings (default: state,val_acc: complete rows "
                   "first, then pruned, failed, infeasible; each by val accuracy). Accuracies "
                   "sort high first, everything else low first, unless :asc or :desc is given")
    p.add_argument("--top", type=int, default=None, metavar="N", help="show only the first N rows")
    p.add_argument("--where", action="append", default=[], metavar="EXPR",
                   help="keep rows where EXPR holds, e.g. 'params<20000', state=complete, "
                   "res1.scale>=2, val_acc>0.97 (or >97 for percent); repeat to combine (and)")
    p.add_argument("--settings", default=None, metavar="KEYS",
                   help="setting columns to show, comma-separated (e.g. res1.scale,train.lr), or "
                   "none (default: every setting that differs between the rows read)")
    p.add_argument("--wide", action="store_true",
                   help="every setting column, full notes and full run folders (the default "
                   "table fits 120 columns)")
    p.add_argument("--no-group", action="store_true",
                   help="one row per run instead of one per config with mean ± std over seeds")
    p.add_argument("--plot", type=Path, default=None, metavar="PNG",
                   help="also write an accuracy-vs-parameters scatter of the complete and pruned "
                   "rows shown (after --where/--top) to this PNG file")
    p.add_argument("--max-params", type=_budgets, default=None, metavar="N[,N...]",
                   help="budget lines in the plot (default: the max_params of the studies read, "
                   "else 25000)")

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
                   help="MNIST folder to use instead of the recorded data.root")
    p.add_argument("--format", choices=FORMATS, default="table",
                   help="output format (default: table); json: a list of rows with rank, "
                   "seeds, val_acc_mean, val_acc_std, test_acc_mean, test_acc_std, params, dirs")
    p.add_argument("--settings", default=None, metavar="KEYS",
                   help="setting columns, comma-separated, or none (default: those that differ)")
    p.add_argument("--deploy", action="store_true",
                   help="also run `tinycnn deploy --int8` on every confirmed seed run and report "
                   "int8 accuracy as mean ± std over the seeds (needs the deploy extra)")

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
    return parser


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


def _warn(msg: str) -> None:
    print(f"tinycnn: warning: {msg}", file=sys.stderr)


def _note(msg: str) -> None:
    print(f"tinycnn: {msg}", file=sys.stderr)


def _paper_presets(conf_dir):
    """The paper model and default recipe, for marking the baseline; (None, None) if not found."""
    from tinycnn.presets import default_preset, find_conf_dir, load_preset
    try:
        conf = find_conf_dir(conf_dir)
    except TinycnnError:
        if conf_dir is not None:
            raise
        return None, None
    train = default_preset(conf, "train")
    return load_preset(conf, "model", "paper"), load_preset(conf, "train", train) if train else None


def _collect(args, sources: list[str]):
    from tinycnn.results import collect
    found = collect(sources, storage=args.storage, outputs=args.outputs,
                    connect_timeout=args.connect_timeout)
    for line in found.described:
        _note(line)
    if found.skipped:
        _warn(f"skipped {len(found.skipped)} damaged run folder(s):")
        for path, why in found.skipped:
            print(f"  {path}: {why}", file=sys.stderr)
    return found


def _named(sources: list[str], outputs: Path) -> list[str]:
    """The sources, or the latest sweep's folder when none was given: what confirm's folder is
    named after (outputs/confirm/<its last part>), so export --confirmed finds it again."""
    from tinycnn.results import latest_sweep
    return sources or [str(latest_sweep(outputs))]


def cmd_compare(args) -> int:
    from tinycnn import compare as C
    found = _collect(args, args.sources)
    if not found.runs:
        where = ", ".join(args.sources) or "the latest sweep"
        raise TinycnnError(f"no readable runs in {where} (every run folder was damaged; see the "
                           "warnings above).")
    rows = C.group(found.runs, by_seed=not args.no_group)
    C.mark_pareto(rows)  # over everything read, before --where/--top narrow the view
    C.mark_baseline(rows, *_paper_presets(args.conf_dir))
    settings = C.pick_settings(rows, args.settings)  # chosen before filters narrow the rows
    for expr in args.where:
        keep = C.parse_where(expr, rows)
        rows = [r for r in rows if keep(r)]
    rows = C.sort_rows(rows, args.sort)
    if args.top is not None:
        rows = rows[:max(args.top, 0)]
    _note(C.summary(found.runs) + f"; {len(rows)} row(s) shown")
    footnotes = []
    if rows and args.format == "table" and not args.wide:
        text, footnotes = C.fit_table(rows, settings, drop=args.settings is None)
        print(text)
    elif rows or args.format in ("json", "csv"):
        print(C.format_rows(rows, args.format, settings))
    else:
        _note("no rows left to show after --where/--top.")
    if args.format in ("table", "markdown") and rows:
        import textwrap
        legend = ("val/test %: mean ± std over the seeds of a config (pruned: val at the stop); "
                  "pareto: no other complete config is at least as accurate with no more "
                  "parameters; paper: the paper's network and recipe; baseline: a search's "
                  "trial 0.")
        print()
        for line in [legend, *footnotes]:
            print(textwrap.fill(line, C.WIDTH, subsequent_indent="  "))
    if args.plot is not None:
        from tinycnn.plot import DEFAULT_MAX_PARAMS, plot_rows
        budgets = args.max_params or found.budgets or [DEFAULT_MAX_PARAMS]
        title = ", ".join("/".join(Path(s).resolve().parts[-2:]) if Path(s).exists() else s
                          for s in args.sources) or "latest sweep"
        drawn = plot_rows(rows, args.plot, budgets=budgets, title=title)
        _note(f"wrote {args.plot}: {drawn['complete']} complete and {drawn['pruned']} pruned "
              f"config(s) plotted, budget line(s) at {', '.join(f'{b:,}' for b in budgets)}")
    return 0


def cmd_confirm(args) -> int:
    from tinycnn import compare as C
    from tinycnn import confirm as F
    found = _collect(args, args.sources)
    where = ", ".join(args.sources) or "the latest sweep"
    rows = F.finalists(found, args.top)
    if not rows:
        raise TinycnnError(f"no complete runs in {where}: nothing to confirm.")
    out = args.out or F.confirm_dir(_named(args.sources, args.outputs), args.outputs)
    threads = args.threads
    if threads is None and args.jobs > 1:  # side by side, each its share of the cores
        from tinycnn.threads import cores
        threads = max(1, cores() // args.jobs)
    jobs, folders = F.plan_jobs(rows, args.seeds, out, args.data_root, threads)
    _note(f"top {len(rows)} config(s) of {where} by validation accuracy, {args.seeds} seed(s) "
          f"each: {len(jobs)} run(s) to train, the rest already recorded; new runs in "
          f"{display_path(out)}")
    F.run_jobs(jobs, args.jobs)
    ranked = F.ranking(rows, folders)
    if args.deploy:
        from tinycnn.deploy import need_extra
        need_extra()
        n = F.deploy_all(ranked, args.data_root)
        _note(f"deployed {n} run(s) to ONNX and int8 (the others had deploy.json already)")
        ranked = F.ranking(rows, folders)  # read again, with their deploy.json
    settings = C.pick_settings(ranked, args.settings)
    recs = F.records(ranked, settings)
    saved = F.save(out, recs, args.sources, args.seeds)
    short = [r for r in ranked if r.n < args.seeds]
    if short:
        _warn(f"{len(short)} config(s) have fewer than {args.seeds} seeds (a run failed: see "
              "above); they are ranked on the seeds they have.")
    if args.format in ("json", "csv"):
        print(F.format_records(recs, args.format, settings))
    else:
        print(F.format_table(ranked, settings, markdown=args.format == "markdown"))
        print("\nranked by mean validation accuracy over seeds (test: reported, never ranked on); "
              f"written to {display_path(saved)}")
    return 0


def cmd_export(args) -> int:
    from tinycnn.export import export_trial, pick_trial
    from tinycnn.presets import find_conf_dir
    if args.from_source is not None:
        if args.source is not None and args.source != args.from_source:
            raise TinycnnError(f"two sources, {args.source} and --from {args.from_source}: "
                               "give one (SOURCE and --from are the same option).")
        args.source = args.from_source
    conf_dir = find_conf_dir(args.conf_dir)
    where = args.source or "the latest sweep"
    confirmed = None
    if args.confirmed:
        from tinycnn.confirm import confirm_dir, load_winner
        from tinycnn.record import read_run
        if args.trial is not None:
            raise TinycnnError("--confirmed exports the confirmed winner: leave out --trial.")
        confirmed = load_winner(confirm_dir(_named([args.source] if args.source else [],
                                                   args.outputs), args.outputs))
        run = read_run(Path(confirmed["dirs"][0]), source=where)
    else:
        found = _collect(args, [args.source] if args.source else [])
        run = pick_trial(found, args.trial, where)
    result = export_trial(run, args.name, conf_dir, force=args.force, where=where,
                          confirmed=confirmed, experiment=args.experiment)
    for note in result.notes:
        _note(note)
    print(result.table)
    print("wrote " + " and ".join(str(p) for p in (result.model_path, result.train_path,
                                                   result.experiment_path) if p is not None))
    print(f"checked: model={args.name} builds the trial's network ({result.params:,} params, same "
          "per-block table).")
    if result.train_path and not result.experiment_path:
        print(f"the trial's training recipe differs from the default, so select both: "
              f"{result.command}")
    else:
        print(f"train it: {result.command}")
    return 0


def cmd_reproduce(args) -> int:
    from tinycnn.reproduce import report, reproduce
    if args.tolerance < 0:
        raise TinycnnError("--tolerance must be 0 or more.")
    if not args.quiet:  # the run reports through the "tinycnn" logger, as under Hydra
        log = logging.getLogger("tinycnn")
        if not log.handlers:
            handler = logging.StreamHandler(sys.stdout)
            handler.setFormatter(logging.Formatter("%(message)s"))
            log.addHandler(handler)
        log.setLevel(logging.INFO)
    result = reproduce(args.run_dir, out_dir=args.out, tolerance=args.tolerance,
                       data_root=args.data_root)
    print(report(result, args.tolerance))
    return 0 if result.within else 1


def cmd_deploy(args) -> int:
    from tinycnn.deploy import deploy, report
    out = deploy(args.run_dir, int8=args.int8, data_root=args.data_root,
                 calibration=args.calibration)
    print(report(out, args.run_dir))
    return 0


def cmd_evaluate(args) -> int:
    from tinycnn.evaluate import evaluate_checkpoint, report
    result = evaluate_checkpoint(args.checkpoint, data_root=args.data_root,
                                 test_limit=args.test_limit, batch_size=args.batch_size,
                                 device=args.device, conf_dir=args.conf_dir)
    print(report(result, args.checkpoint))
    return 0


COMMANDS = {"compare": cmd_compare, "confirm": cmd_confirm, "export": cmd_export, "reproduce": cmd_reproduce,
            "evaluate": cmd_evaluate, "deploy": cmd_deploy}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (TinycnnError, OSError) as exc:  # OSError: a folder or file we may not read/write
        print(f"tinycnn {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tinycnn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
