"""`hydra/sweeper=tinycnn_optuna`: an Optuna (>= 4) sweeper with a parameter budget.

Hydra imports this module whenever any app starts, so it stays light: the settings (settings.py)
and a thin class; the work (and the import of optuna and torch) is in loop.py, loaded only by a
sweep. The parts: settings.py (defaults, checked once), start.py (space, study, baseline),
loop.py (ask/tell), candidate.py (one trial from ask to tell), trials.py (what a trial records),
workers.py (n_workers > 1: the pool), report.py (the lines and the results file).
"""

import os
from typing import Any, List

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper

from tinycnn import pool, stops

from .settings import TinycnnOptunaConf
from .workers import WORKER_ENV

if os.environ.get(WORKER_ENV):
    # A pool's worker (see workers.py): Hydra imports this module before it composes the config,
    # and from here on a stop only requests one, which the sweep sees before its first trial. A
    # stop before this point finds the worker not ready, and the pool kills it outright: either
    # way no Hydra traceback, and no trial asked yet.
    stops.note_stops()
    pool.say_ready()


ConfigStore.instance().store(group="hydra/sweeper", name="tinycnn_optuna",
                             node=TinycnnOptunaConf, provider="tinycnn")


class TinycnnOptunaSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self.impl: Any = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        from tinycnn import console

        from .loop import OptunaSweep

        console.tidy = True  # one line per trial on the console; the rest in its run.log
        self.impl = OptunaSweep(self.settings)
        self.impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        import sys

        from .errors import SweepError
        try:
            return self.impl.sweep(arguments)
        except SweepError as exc:  # its message is complete: no "HYDRA_FULL_ERROR" hint after it
            print(exc, file=sys.stderr)
            raise SystemExit(1) from None
        except KeyboardInterrupt:  # the trials it was running are recorded failed by then
            print(f"tinycnn: interrupted; {self.impl.interrupted_note()}", file=sys.stderr)
            raise SystemExit(130) from None
