"""`tinycnn` command line: read what sweeps found, keep the winner, check it holds.

  tinycnn compare [SOURCE ...]          table of runs / trials (default: the latest sweep)
  tinycnn confirm SOURCE [--top K]      retrain the top K configs over several seeds, rank them
  tinycnn export [SOURCE] --trial N --name NAME
                                        a trial's network as conf/model/NAME.yaml
  tinycnn reproduce RUN_DIR             rerun a recorded run and compare its numbers
  tinycnn evaluate MODEL_PT             test accuracy of saved weights
  tinycnn deploy RUN_DIR [--int8]       ONNX (norms folded), checked, int8, timed
"""

import logging
import os
import textwrap
import sys
from pathlib import Path

from tinycnn.arguments import build_parser
from tinycnn.errors import TinycnnError
from tinycnn.storage import StorageError
from tinycnn.results import display_path


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
        _warn(f"skipped {len(found.skipped)} damaged run(s) or trial(s):")
        for path, why in found.skipped:
            print(f"  {path}: {why}", file=sys.stderr)
    return found


def _named(sources: list[str], outputs: Path) -> list[str]:
    """The sources, or the latest sweep's folder when none was given: what confirm's folder is
    named after (outputs/confirm/<its last part>), so export --confirmed finds it again."""
    from tinycnn.results import latest_sweep
    return sources or [str(latest_sweep(outputs))]


def _limits(limits: dict, x: str) -> list:
    """The budget lines for the x axis: peak_kb from max_peak_bytes, and so on."""
    cost = {"peak_kb": "peak_bytes", "flash_kb": "flash_bytes"}.get(x, x)
    scale = 1000 if cost != x else 1
    return [v / scale for v in limits.get(cost, [])]


def cmd_compare(args) -> int:
    from tinycnn import compare as C
    from tinycnn import table as T
    found = _collect(args, args.sources)
    if not found.runs:
        where = ", ".join(args.sources) or "the latest sweep"
        raise TinycnnError(f"no readable runs in {where} (every run folder was damaged; see the "
                           "warnings above).")
    rows = C.group(found.runs, by_seed=not args.no_group)
    C.mark_pareto(rows, found.costs or ["params"])  # over all read, before --where/--top
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
        text, footnotes = T.fit_table(rows, settings, drop=args.settings is None)
        print(text)
    elif rows or args.format in ("json", "csv"):
        print(T.format_rows(rows, args.format, settings))
    else:
        _note("no rows left to show after --where/--top.")
    if args.format in ("table", "markdown") and rows:
        legend = ("val/test %: mean ± std over the seeds of a config (pruned: val at the stop); "
                  "pareto: no other complete config is at least as accurate with no more "
                  "parameters; paper: the paper's network and recipe; baseline: a search's "
                  "trial 0.")
        print()
        for line in [legend, *footnotes]:
            print(textwrap.fill(line, T.WIDTH, subsequent_indent="  "))
    if args.plot is not None:
        from tinycnn.plot import DEFAULT_MAX_PARAMS, plot_rows
        budgets = (args.max_params or found.budgets or [DEFAULT_MAX_PARAMS]) \
            if args.x == "params" else _limits(found.limits, args.x)
        title = ", ".join("/".join(Path(s).resolve().parts[-2:]) if Path(s).exists() else s
                          for s in args.sources) or "latest sweep"
        drawn = plot_rows(rows, args.plot, budgets=budgets, title=title, x=args.x)
        _note(f"wrote {args.plot}: {drawn['complete']} complete and {drawn['pruned']} pruned "
              f"config(s) plotted, budget line(s) at {', '.join(f'{b:,g}' for b in budgets)}")
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
        footnotes = []
        if args.format == "table" and not args.wide:
            from tinycnn.table import fit_table
            text, footnotes = fit_table(ranked, settings, drop=args.settings is None, ranked=True)
            print(text)
        else:
            print(F.format_table(ranked, settings, markdown=args.format == "markdown"))
        print("\nranked by mean validation accuracy over seeds (test: reported, never ranked on); "
              f"written to {display_path(saved)}")
        for line in footnotes:
            print(textwrap.fill(line, 120, subsequent_indent="  "))
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


def cmd_repair(args) -> int:
    from tinycnn.journal import repair_journal
    from tinycnn.storage import JOURNAL_SUFFIX, storage_url
    path = storage_url(args.journal)
    if "://" in path:
        raise TinycnnError(f"{args.journal}: repair rewrites journal files (a path ending in "
                           f"{JOURNAL_SUFFIX}); a damaged SQLite file is recovered with sqlite3's "
                           ".recover (see docs/faults.md)")
    if not os.path.isfile(path):
        raise TinycnnError(f"{args.journal}: no such journal file")
    print(repair_journal(path))
    return 0


COMMANDS = {"compare": cmd_compare, "confirm": cmd_confirm, "export": cmd_export,
            "reproduce": cmd_reproduce, "evaluate": cmd_evaluate, "deploy": cmd_deploy,
            "repair": cmd_repair}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (TinycnnError, OSError) as exc:  # OSError: a folder or file we may not read/write
        print(f"tinycnn {args.command}: error: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, StorageError) else 2
    except KeyboardInterrupt:
        print("tinycnn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
