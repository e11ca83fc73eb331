"""Confirm before you crown: retrain the best configurations of a search over several seeds.

A search ranks networks by one seed's validation accuracy, and seed noise (0.1-0.2 points) is as
large as the gaps between good finalists. `tinycnn confirm` takes the top K distinct configs by
validation accuracy, trains each until it has S seeds (the seeds already trained count), and
ranks them by their mean validation accuracy. The test set is reported, never used to rank.

Each new run is an ordinary run folder, OUT/<config_key>/seed_<s>/, made by the same training
code (tinycnn.runner.run), so a second `confirm` finds and reuses it. The ranking is written to
OUT/confirmed.json, which `tinycnn export --confirmed` reads.
"""

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from tinycnn.compare import Row, group
from tinycnn.table import csv_text
from tinycnn.errors import TinycnnError
from tinycnn.record import record_config, write_json_atomic
from tinycnn.record import DamagedRun, Run, read_run
from tinycnn.results import Sources, display_path

RESULTS = "confirmed.json"


def confirm_dir(sources: list[str], outputs: Path = Path("outputs")) -> Path:
    """outputs/confirm/<source>: the study's name, or the sweep folder's last part."""
    names = [re.sub(r"[^\w.-]+", "_", Path(s.rstrip("/")).name or s) for s in sources] or ["latest"]
    return Path(outputs) / "confirm" / "+".join(names)


@dataclass
class Job:
    rank: int          # the config's place in the search's ranking (1 = best single run)
    seed: int
    config: dict
    out_dir: Path


def _by_validation(row: Row) -> tuple:
    """Highest (mean) validation accuracy first, then fewer parameters; never test accuracy."""
    return -row.val_acc, row.params if row.params is not None else 0


def finalists(found: Sources, top: int) -> list[Row]:
    """The top `top` distinct complete configs by (mean) validation accuracy."""
    rows = [r for r in group(found.runs) if r.state == "complete" and r.val_acc is not None]
    return sorted(rows, key=_by_validation)[:top]


def _seed_runs(folder: Path) -> list[Run]:
    """The complete runs already recorded under a config's confirm folder."""
    runs = []
    for d in sorted(folder.glob("seed_*")) if folder.is_dir() else []:
        try:
            run = read_run(d, source=str(folder))
        except DamagedRun:
            continue  # a run killed before it finished: trained again below
        if run.state == "complete":
            runs.append(run)
    return runs


def plan_jobs(rows: list[Row], seeds: int, out: Path, data_root=None,
              threads: int | None = None) -> tuple[list[Job], list[Path]]:
    """The runs still missing for `seeds` seeds per row (the search's own runs and those already
    in the row's confirm folder count), and each row's confirm folder."""
    from tinycnn.data import root_here
    jobs, folders = [], []
    for rank, row in enumerate(rows, 1):
        base = next((r for r in row.seed_runs if r.config), None)
        if base is None:
            raise TinycnnError(f"trial {row.trial}: its run folder ({display_path(row.dir)}) with "
                               "config.yaml is not here, so it cannot be trained again.")
        folder = out / (row.runs[0].config_key or f"trial_{row.trial}")
        folders.append(folder)
        have = {r.seed for r in row.runs + _seed_runs(folder)}
        need = max(seeds - len(have), 0)
        new_seeds, s = [], 0
        while len(new_seeds) < need:
            if s not in have:
                new_seeds.append(s)
            s += 1
        for seed in new_seeds:
            cfg = record_config(base.config)  # a fresh copy, without the sweeper's nodes
            cfg["seed"] = seed
            if threads is not None:
                cfg["threads"] = threads
            root = (cfg.get("data") or {}).get("root")
            cfg.setdefault("data", {})["root"] = str(data_root or root_here(root) or root)
            jobs.append(Job(rank, seed, cfg, folder / f"seed_{seed}"))
    return jobs, folders


def _train(config: dict, out_dir: str) -> dict:
    """One run in a worker process (a fresh interpreter: its own torch threads)."""
    import os
    os.environ["TQDM_DISABLE"] = "1"  # one progress bar, the parent's, not one per worker
    from tinycnn.lazy import load_runner
    run = load_runner()  # a Ctrl-C while torch loads is held, then stops this run
    return run(OmegaConf.create(config), out_dir)


def run_jobs(jobs: list[Job], workers: int = 1) -> None:
    """Train the jobs, `workers` at a time (tinycnn.pool: one fresh process each), with a
    progress bar; a failed run is reported and the others go on. Ctrl-C stops them all."""
    import os

    from tqdm import tqdm

    from tinycnn.pool import Pool, call_command, exit_note
    from tinycnn.record import read_metrics
    if not jobs:
        return
    bar = tqdm(total=len(jobs), desc="confirm", unit="run", disable=None, dynamic_ncols=True)
    named = {f"config #{j.rank} seed {j.seed}": j for j in jobs}

    def ended(child) -> None:
        if child.code == 130:  # the run was stopped (a Ctrl-C that reached it): stop them all
            raise KeyboardInterrupt("a run was stopped")
        j, m = named[child.name], read_metrics(named[child.name].out_dir)
        bar.update(1)
        if child.code == 0 and m.get("val_acc") is not None:
            line = (f"{child.name}: val {100 * m['val_acc']:.2f}%, test "
                    f"{100 * m['test_acc']:.2f}% ({m['seconds']:.1f} s) -> "
                    f"{display_path(j.out_dir)}")
        else:  # recorded in its folder; the ranking skips it
            why = m.get("error") or f"its process {exit_note(child.code)}"
            line = f"{child.name}: failed: {' '.join(str(why).split())[:200]}"
        tqdm.write(f"tinycnn: {line}", file=sys.stderr)

    pool = Pool(env={**os.environ, "TQDM_DISABLE": "1"})  # one progress bar: this one
    pool.run([(name, call_command("tinycnn.confirm:_train", j.config, str(j.out_dir)))
              for name, j in named.items()], workers, ended)
    bar.close()


def ranking(rows: list[Row], folders: list[Path]) -> list[Row]:
    """Each finalist with all its runs, ranked by mean validation accuracy (then fewer params)."""
    out = []
    for row, folder in zip(rows, folders):
        runs, seen = [], set()
        for r in row.runs + _seed_runs(folder):
            if r.dir not in seen:
                seen.add(r.dir)
                runs.append(r)
        out.append(Row(runs))
    return sorted(out, key=_by_validation)


def records(rows: list[Row], settings: list[str]) -> list[dict]:
    """json/csv rows: mean and std over seeds as fractions, with every run folder."""
    recs = []
    for rank, r in enumerate(rows, 1):
        (vm, vs), (tm, ts), (sm, _) = (r.stats[k] for k in ("val_acc", "test_acc", "seconds"))
        recs.append({
            "rank": rank, "trial": r.trial, "params": r.params, "seeds": r.n,
            "seed_list": [x.seed for x in r.seed_runs],
            "val_acc_mean": vm, "val_acc_std": vs, "test_acc_mean": tm, "test_acc_std": ts,
            "seconds_mean": sm, "config_key": r.runs[0].config_key,
            **({"int8_seeds": r.int8_n,
                "int8_val_acc_mean": r.int8_stats["val_acc"][0],
                "int8_val_acc_std": r.int8_stats["val_acc"][1],
                "int8_test_acc_mean": r.int8_stats["test_acc"][0],
                "int8_test_acc_std": r.int8_stats["test_acc"][1]} if r.int8_n else {}),
            "source": r.runs[0].source,
            "settings": {k: r.settings.get(k) for k in settings},
            "dirs": [display_path(x.dir) for x in r.seed_runs],
        })
    return recs


def deploy_all(rows: list[Row], data_root=None) -> int:
    """tinycnn deploy --int8 on every seed run of the rows that has no int8 figures yet; returns
    how many were deployed."""
    from tinycnn.deploy import deploy
    done = 0
    for row in rows:
        for run in row.seed_runs:
            if "int8" not in run.deploy and run.dir is not None:
                run.deploy = deploy(run.dir, int8=True, data_root=data_root)  # the row sees it
                done += 1
    return done


def format_table(rows: list[Row], settings: list[str], markdown: bool = False) -> str:
    """compare's table (or markdown) with a rank column in front."""
    from tinycnn.table import format_markdown, format_table as compare_table
    return (format_markdown if markdown else compare_table)(rows, settings, ranked=True)


def format_records(recs: list[dict], fmt: str, settings: list[str]) -> str:
    if fmt == "json":
        return json.dumps(recs, indent=2, default=str)
    return csv_text(recs, settings, lists=("seed_list", "dirs"), empty=("rank",))


def save(out: Path, recs: list[dict], sources: list[str], seeds: int) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / RESULTS
    write_json_atomic(path, {"sources": sources, "seeds": seeds, "ranking": recs})
    return path


def load_winner(path: Path) -> dict:
    """The first row of a confirmed.json (for `tinycnn export --confirmed`)."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS
    if not path.is_file():
        raise TinycnnError(f"{path}: no such file; run `tinycnn confirm SOURCE` first (it writes "
                           f"outputs/confirm/<source>/{RESULTS}).")
    try:
        ranking_ = json.loads(path.read_text())["ranking"]
        return ranking_[0]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise TinycnnError(f"{path} is not a confirm ranking ({type(exc).__name__}); run "
                           "`tinycnn confirm` again to rewrite it.") from None
