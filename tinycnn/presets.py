"""Find the repo's conf/ folder and read or write presets in it (conf/<group>/<name>.yaml).

The command-line tools run from anywhere, so the config tree is looked up rather than assumed:
an explicit --conf-dir, else ./conf, else the conf/ beside the installed package (editable install).
"""

from pathlib import Path

import yaml
from omegaconf import OmegaConf

import tinycnn
from tinycnn.errors import TinycnnError


def find_conf_dir(conf_dir=None) -> Path:
    """The config tree to use: conf_dir if given, else ./conf, else the one beside the package."""
    if conf_dir is not None:
        path = Path(conf_dir)
        if not (path / "config.yaml").is_file():
            raise TinycnnError(f"{path} is not a tinycnn config folder (it has no config.yaml); "
                               "point --conf-dir at the repo's conf/ folder.")
        return path.resolve()
    for path in (Path.cwd() / "conf", Path(tinycnn.__file__).resolve().parent.parent / "conf"):
        if (path / "config.yaml").is_file():
            return path
    raise TinycnnError("cannot find the tinycnn config folder (conf/ with config.yaml) in the "
                       "current directory or beside the installed package; run from the repo root "
                       "or pass --conf-dir.")


def default_preset(conf_dir: Path, group: str) -> str | None:
    """The preset name conf/config.yaml selects for `group` (e.g. train -> 'paper')."""
    defaults = OmegaConf.load(conf_dir / "config.yaml").get("defaults", [])
    for entry in defaults:
        if isinstance(entry, str):
            continue
        for key, value in entry.items():
            if key.split("@")[0].removeprefix("override ").strip() == group:
                return value
    return None


def load_preset(conf_dir: Path, group: str, name: str) -> dict | None:
    """conf/<group>/<name>.yaml as a plain dict, or None when there is no such preset."""
    path = conf_dir / group / f"{name}.yaml"
    if not path.is_file():
        return None
    node = OmegaConf.load(path)
    if group == "model":  # its input and output follow the data (${data.channels}): the default
        data = load_preset(conf_dir, "data", default_preset(conf_dir, "data") or "mnist")
        return OmegaConf.to_container(OmegaConf.create({"model": node, "data": data}),
                                      resolve=True)["model"]
    return OmegaConf.to_container(node, resolve=True)


class _PresetDumper(yaml.SafeDumper):
    pass


class _Flow(dict):
    """A mapping written on one line, like the layers in conf/model/paper.yaml."""


_PresetDumper.add_representer(_Flow, lambda dumper, data: dumper.represent_mapping(
    "tag:yaml.org,2002:map", data.items(), flow_style=True))


def _flow_list_items(node):
    if isinstance(node, dict):
        return {k: _flow_list_items(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_Flow(v) if isinstance(v, dict) and not any(isinstance(x, (dict, list))
                                                             for x in v.values())
                else _flow_list_items(v) for v in node]
    return node


def preset_yaml(cfg: dict, header: str) -> str:
    """The text of a preset file: a comment header, then cfg in block style, key order kept."""
    comment = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines())
    body = yaml.dump(_flow_list_items(cfg), Dumper=_PresetDumper, sort_keys=False,
                     default_flow_style=False, indent=2, width=100)
    return comment + body
