"""Train and evaluate one tinycnn config: `python run.py model=paper` (see README)."""

import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from tinycnn.errors import TinycnnError
from tinycnn.lazy import load_runner


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Returns the validation accuracy, the number any Hydra sweeper optimises."""
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:  # a sweep's stops are the sweeper's
        signal.signal(signal.SIGTERM, _terminate)
    try:
        run = load_runner()  # torch, only now: `--cfg job` and a sweep's pool need none
        # The sweeper's ++optuna.* bookkeeping is in the record's "trial", not a user's override.
        overrides = [o for o in hc.overrides.task if not o.lstrip("+~").startswith("optuna.")]
        metrics = run(cfg, Path(hc.runtime.output_dir), overrides=overrides)
    except TinycnnError as exc:
        if hc.mode == RunMode.MULTIRUN:
            raise  # the sweeper records it against the trial and goes on
        _remove_unfinished(Path(hc.runtime.output_dir))
        sys.exit(f"tinycnn: {exc}")
    except KeyboardInterrupt as exc:
        if hc.mode == RunMode.MULTIRUN:
            raise  # the sweeper marks the trial failed and says so
        out_dir = Path(hc.runtime.output_dir)
        if (out_dir / "metrics.json").exists():
            print(f"tinycnn: interrupted; {out_dir}/metrics.json records the run as failed "
                  f"('KeyboardInterrupt{': SIGTERM' if 'SIGTERM' in str(exc) else ''}')",
                  file=sys.stderr)
        else:
            _remove_unfinished(out_dir)
            print("tinycnn: interrupted before training started; nothing was recorded",
                  file=sys.stderr)
        sys.exit(130)
    return metrics["val_acc"]


def _terminate(signum, frame):
    """SIGTERM (kill, a scheduler's time limit) stops a run as Ctrl-C does: recorded failed."""
    raise KeyboardInterrupt("SIGTERM")


# What Hydra and the runner write before training; a folder holding nothing else is a run that
# was rejected before it trained, and is removed (tinycnn compare would list it as damaged).
_BEFORE_TRAINING = {".hydra", "run.log", "config.yaml"}


def _remove_unfinished(out_dir: Path) -> None:
    import shutil
    if out_dir.is_dir() and {p.name for p in out_dir.iterdir()} <= _BEFORE_TRAINING:
        shutil.rmtree(out_dir, ignore_errors=True)
        try:
            out_dir.parent.rmdir()  # outputs/DATE/, if this was its only run
        except OSError:
            pass


if __name__ == "__main__":
    main()
