"""Make the repository's top-level sweeps/ folder Hydra's config group `sweeps`, so that
`python run.py -m sweeps=paper25k` loads sweeps/paper25k.yaml without a copy under conf/.

Adding the repository root itself to the search path would also do that, but it would expose
every YAML file in the repository (outputs/ holds thousands) as config groups. So the search path
gets a small config source that shows exactly one group, `sweeps`, backed by the folder.
"""

import os
from pathlib import Path
from typing import List, Optional

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import OmegaConf

GROUP = "sweeps"
SCHEME = "tinycnn-sweeps"


def find_sweeps_dir(search_path: ConfigSearchPath) -> Optional[Path]:
    """sweeps/ beside the app's primary config folder (conf/ of a tinycnn checkout), else beside
    this plugin's own checkout. None outside tinycnn, so other Hydra apps are left alone."""
    candidates = []
    for element in search_path.get_path():
        if element.provider == "main" and element.path.startswith("file://"):
            candidates.append(Path(element.path[len("file://"):]).parent)
    candidates.append(Path(__file__).resolve().parents[2])
    for root in candidates:
        if (root / GROUP).is_dir() and (root / "tinycnn").is_dir():
            return (root / GROUP).resolve()
    return None


class TinycnnSweepsSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        folder = find_sweeps_dir(search_path)
        if folder is not None:
            search_path.append(provider="tinycnn-sweeps", path=f"{SCHEME}://{folder}")


class SweepsConfigSource(ConfigSource):
    """A config root holding the single group `sweeps`, whose files are those of one folder."""

    @staticmethod
    def scheme() -> str:
        return SCHEME

    def _file(self, config_path: str) -> Optional[str]:
        """The folder path for `sweeps/...`, or None for anything outside the group."""
        parts = config_path.strip("/").split("/", 1)
        if parts[0] != GROUP:
            return None
        return os.path.join(self.path, parts[1]) if len(parts) > 1 else self.path

    def load_config(self, config_path: str) -> ConfigResult:
        path = self._file(self._normalize_file_name(config_path))
        if path is None or not os.path.isfile(path):
            raise ConfigLoadError(f"Config not found : {config_path}")
        with open(path, encoding="utf-8") as f:
            header = ConfigSource._get_header_dict(f.read(512))
            f.seek(0)
            return ConfigResult(config=OmegaConf.load(f), path=self.full_path(),
                                provider=self.provider, header=header)

    def available(self) -> bool:
        return os.path.isdir(self.path)

    def is_group(self, config_path: str) -> bool:
        if config_path.strip("/") == "":
            return True
        path = self._file(config_path)
        return path is not None and os.path.isdir(path)

    def is_config(self, config_path: str) -> bool:
        path = self._file(self._normalize_file_name(config_path))
        return path is not None and os.path.isfile(path)

    def list(self, config_path: str, results_filter: Optional[ObjectType]) -> List[str]:
        if config_path.strip("/") == "":
            return [GROUP] if results_filter in (None, ObjectType.GROUP) else []
        folder = self._file(config_path)
        if folder is None or not os.path.isdir(folder):
            return []
        files: List[str] = []
        for name in os.listdir(folder):
            self._list_add_result(files=files, file_path=f"{config_path}/{name}", file_name=name,
                                  results_filter=results_filter)
        return sorted(set(files))
