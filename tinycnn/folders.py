"""A Hydra callback (conf/config.yaml, hydra.callbacks): the run's or the sweep's folder is
checked writable before anything is trained or any study is touched, so a read-only or missing
disk is one line, not a traceback from the middle of a sweep. Imported at every start: light."""

import sys
from pathlib import Path

from hydra.experimental.callback import Callback


def check_writable(folder: Path, key: str) -> None:
    """Exit with one line (status 1) unless `folder` can be made and written to. SystemExit, as
    Hydra turns an exception from a callback into a warning and goes on."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".tinycnn-write-check"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        print(f"tinycnn: {key} = {folder}: cannot write there ({exc.strerror or exc}); choose "
              f"a writable folder ({key}=PATH)", file=sys.stderr)
        raise SystemExit(1) from None


class WritableFolders(Callback):
    def on_run_start(self, config, **kwargs) -> None:
        check_writable(Path(str(config.hydra.run.dir)), "hydra.run.dir")

    def on_multirun_start(self, config, **kwargs) -> None:
        check_writable(Path(str(config.hydra.sweep.dir)), "hydra.sweep.dir")
