"""Train and evaluate one tinycnn config: `python run.py model=paper` (see README)."""

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from tinycnn.errors import TinycnnError
from tinycnn.runner import run


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Returns the validation accuracy, the number any Hydra sweeper optimises."""
    hc = HydraConfig.get()
    try:
        # The sweeper's ++optuna.* bookkeeping is in the record's "trial", not a user's override.
        overrides = [o for o in hc.overrides.task if not o.lstrip("+~").startswith("optuna.")]
        metrics = run(cfg, Path(hc.runtime.output_dir), overrides=overrides)
    except TinycnnError as exc:
        if hc.mode == RunMode.MULTIRUN:
            raise  # the sweeper records it against the trial and goes on
        sys.exit(f"tinycnn: {exc}")
    return metrics["val_acc"]


if __name__ == "__main__":
    main()
