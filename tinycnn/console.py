"""What a sweep shows on the console: the sweeper's one line per trial, not each trial's own output.

conf/config.yaml puts this filter on Hydra's console handlers. In a tinycnn sweep, a trial's own
lines (its parameter table, progress, result) and Hydra's per-job override dump go
to the trial's run.log only; warnings and errors still reach the console. A single run shows
everything, and so does a Hydra grid (`-m a=1,2`), whose jobs have no other line.
"""

import logging

LAUNCHER = "hydra._internal.core_plugins.basic_launcher"  # "Launching 1 jobs", "#0 : a=1 b=2 ..."
tidy = False  # set by the tinycnn sweeper (Hydra's own grid sweeps keep every line)


class SweepConsole(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not tidy or record.levelno >= logging.WARNING:
            return True
        return not (record.name == "tinycnn" or record.name.startswith("tinycnn.")
                    or record.name == LAUNCHER)
