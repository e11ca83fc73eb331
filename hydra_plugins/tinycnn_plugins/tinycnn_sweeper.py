"""`hydra/sweeper=tinycnn_optuna`: an Optuna (>= 4) sweeper with a parameter budget.

Hydra imports this module whenever any app starts, so it stays light: the settings and a thin
class; the work (and the import of optuna and torch) is in the parts below, loaded only by a
sweep. Their names start with "_" because Hydra imports every other module of a plugin package
at each start. The parts: _settings (defaults, checked once), _start (space, study, baseline),
_loop (ask/tell), _candidate (one trial from ask to tell), _trials (what a trial records),
_workers (n_workers > 1: the pool), _report (the lines and the results file), _errors.
"""

import os
from typing import Any, List

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper

from tinycnn import pool, stops

from ._settings import TinycnnOptunaConf
from ._workers import WORKER_ENV

if os.environ.get(WORKER_ENV):
    # A pool's worker (see _workers.py): Hydra imports this module before it composes the config,
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

        from ._loop import OptunaSweep

        console.tidy = True  # one line per trial on the console; the rest in its run.log
        self.impl = OptunaSweep(self.settings)
        self.impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        import sys

        from ._errors import SweepError
        try:
            return self.impl.sweep(arguments)
        except SweepError as exc:  # its message is complete: no "HYDRA_FULL_ERROR" hint after it
            print(exc, file=sys.stderr)
            raise SystemExit(1) from None
        except KeyboardInterrupt:  # the trials it was running are recorded failed by then
            if not os.environ.get(WORKER_ENV):  # a pool's worker: its pool says it, once
                print(f"tinycnn: interrupted; {self.impl.interrupted_note()}", file=sys.stderr)
            raise SystemExit(130) from None
