"""Turn a model config (conf/model/*.yaml) into an nn.Module, after checking every value.

The config is data: block types and field names, never Python class names. Everything is checked
and every shape worked out before a single layer is built, so a bad config fails in milliseconds
with one message naming the block, the field and the value.
"""

from collections.abc import Mapping

from omegaconf import DictConfig, OmegaConf
from torch import nn

from tinycnn.blocks import (ACTIVATIONS, Classifier, ConvBlock, ConvLayer, ResidualBlock, count,
                            norm2d)
from tinycnn.errors import ConfigError

MODEL_FIELDS = {"in_channels", "image_size", "num_classes", "activation", "negative_slope", "norm",
                "running_stats", "blocks", "classifier"}
BLOCK_FIELDS = {"conv": {"type", "layers", "pool", "repeat"},
                "residual": {"type", "layers", "pool", "repeat", "scale", "out_act", "projection"}}
LAYER_FIELDS = {"out", "kernel", "groups"}
CLASSIFIER_FIELDS = {"type", "hidden", "norm"}
NORMS = ("batch", "none")
HEAD_TYPES = ("flatten", "gap")
HEAD_NORMS = ("sample", "batch", "none")


def _fail(where: str, value, why: str):
    raise ConfigError(f"{where} = {value!r}: {why}")


def _int(where, value, low=1):
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        _fail(where, value, f"expected a whole number >= {low}")
    return value


def _choice(where, value, choices):
    if value not in choices:
        _fail(where, value, f"expected one of {', '.join(map(str, choices))}")
    return value


def _bool(where, value):
    if not isinstance(value, bool):
        _fail(where, value, "expected true or false")
    return value


def _number(where, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(where, value, "expected a number")
    return float(value)


def _known(where, cfg: Mapping, allowed: set):
    unknown = sorted(set(cfg) - allowed)
    if unknown:
        _fail(f"{where}.{unknown[0]}", cfg[unknown[0]],
              f"unknown field; the fields here are {', '.join(sorted(allowed))}")


def _divisors(n: int) -> str:
    return ", ".join(str(d) for d in range(1, n + 1) if n % d == 0)


def plan(model_cfg) -> dict:
    """Check a model config and work out every layer's shape, without building anything.

    Returns {"blocks": [(name, type, spec, c_in, c_out, size_out)], "classifier": ..., "cfg": dict}.
    """
    cfg = OmegaConf.to_container(model_cfg, resolve=True) if isinstance(model_cfg, DictConfig) \
        else dict(model_cfg)
    _known("model", cfg, MODEL_FIELDS)
    for field in ("blocks", "classifier"):
        if not isinstance(cfg.get(field), Mapping):
            _fail(f"model.{field}", cfg.get(field), "expected a mapping (see conf/model/paper.yaml)")
    channels = _int("model.in_channels", cfg.get("in_channels", 1))
    size = _int("model.image_size", cfg.get("image_size", 28))
    _int("model.num_classes", cfg.get("num_classes", 10), low=2)
    _choice("model.activation", cfg.get("activation", "relu"), tuple(ACTIVATIONS))
    _number("model.negative_slope", cfg.get("negative_slope", 0.01))
    _choice("model.norm", cfg.get("norm", "batch"), NORMS)
    _bool("model.running_stats", cfg.get("running_stats", True))

    blocks = []
    for name, block in cfg["blocks"].items():
        where = f"model.blocks.{name}"
        if not isinstance(block, Mapping):
            _fail(where, block, "expected a mapping with type and layers")
        kind = _choice(f"{where}.type", block.get("type"), tuple(BLOCK_FIELDS))
        _known(where, block, BLOCK_FIELDS[kind])
        layers = block.get("layers")
        if not isinstance(layers, list) or not layers:
            _fail(f"{where}.layers", layers, "expected a non-empty list of {out, kernel, groups}")
        pool = _int(f"{where}.pool", block.get("pool", 1))
        repeat = _int(f"{where}.repeat", block.get("repeat", 1), low=0)
        scale = _number(f"{where}.scale", block.get("scale", 1.0)) if kind == "residual" else 0.0
        projection = _bool(f"{where}.projection", block.get("projection", False)) \
            if kind == "residual" else False
        if kind == "residual":
            _bool(f"{where}.out_act", block.get("out_act", True))
        for copy in range(repeat):
            c_in, c = channels, channels
            for i, layer in enumerate(layers):
                lw = f"{where}.layers.{i}"
                if not isinstance(layer, Mapping):
                    _fail(lw, layer, "expected a mapping {out, kernel, groups}")
                _known(lw, layer, LAYER_FIELDS)
                # out null keeps the incoming width: a residual block's last layer returns to
                # the block's input width, so the shortcut stays an identity.
                last_residual = kind == "residual" and i == len(layers) - 1
                out = layer.get("out")
                out = (c_in if last_residual else c) if out is None else _int(f"{lw}.out", out)
                kernel = _int(f"{lw}.kernel", layer.get("kernel", 3))
                if kernel % 2 == 0:
                    _fail(f"{lw}.kernel", kernel, "expected an odd kernel (1, 3, 5, 7, ...) so "
                          "'same' padding keeps the image size")
                groups = _int(f"{lw}.groups", layer.get("groups", 1))
                if c % groups or out % groups:
                    fits = f"divisors of {c}: {_divisors(c)}" + \
                        (f"; of {out}: {_divisors(out)}" if out != c else "")
                    _fail(f"{lw}.groups", groups, f"groups must divide both the input ({c}) and "
                          f"output ({out}) channels; {fits}")
                c = out
            if kind == "residual" and scale and c != c_in and not projection:
                _fail(f"{where}.layers.{len(layers) - 1}.out", c,
                      f"the residual block's output width ({c}) differs from its input width "
                      f"({c_in}), so x cannot be added; set its out to {c_in} (or null), set "
                      f"{where}.projection: true for a 1x1 conv shortcut, or scale: 0 for none")
            if pool > size:
                _fail(f"{where}.pool", pool, f"the image is only {size}x{size} at this point")
            size //= pool
            copy_name = name if copy == 0 else f"{name}_{copy + 1}"
            blocks.append((copy_name, kind, block, channels, c, size))
            channels = c

    head = cfg["classifier"]
    _known("model.classifier", head, CLASSIFIER_FIELDS)
    _choice("model.classifier.type", head.get("type", "flatten"), HEAD_TYPES)
    _int("model.classifier.hidden", head.get("hidden", 0), low=0)
    _choice("model.classifier.norm", head.get("norm", "none"), HEAD_NORMS)
    names = [b[0] for b in blocks]
    if len(set(names)) != len(names) or "classifier" in names:
        dup = next(n for n in names if names.count(n) > 1 or n == "classifier")
        _fail("model.blocks", dup, "block names must be unique and not 'classifier'")
    return {"cfg": cfg, "blocks": blocks, "channels": channels, "size": size}


class TinyCNN(nn.Module):
    """Named blocks in order, then the classifier: (N, C, H, W) -> (N, num_classes) logits."""

    def __init__(self, model_cfg):
        super().__init__()
        p = plan(model_cfg)
        cfg = self.cfg = p["cfg"]
        slope = float(cfg.get("negative_slope", 0.01))
        act = lambda: ACTIVATIONS[cfg.get("activation", "relu")](slope)  # noqa: E731
        norm, stats = cfg.get("norm", "batch"), cfg.get("running_stats", True)
        self.blocks = nn.ModuleDict()
        self.shapes = {}
        for name, kind, block, c_in, c_out, size in p["blocks"]:
            layers, c = [], c_in
            specs = block["layers"]
            for i, spec in enumerate(specs):
                last_residual = kind == "residual" and i == len(specs) - 1
                out = spec.get("out")
                out = (c_in if last_residual else c) if out is None else out
                layers.append(ConvLayer(c, out, spec.get("kernel", 3), spec.get("groups", 1),
                                        norm, stats, None if last_residual else act()))
                c = out
            pool = block.get("pool", 1)
            if kind == "conv":
                self.blocks[name] = ConvBlock(layers, pool)
            else:
                shortcut = nn.Identity()
                if c_out != c_in and block.get("projection", False):
                    shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1), norm2d(norm, c_out, stats))
                self.blocks[name] = ResidualBlock(layers, float(block.get("scale", 1.0)), shortcut,
                                                  act() if block.get("out_act", True) else None, pool)
            self.shapes[name] = (c_out, size, size)
        head = cfg["classifier"]
        self.classifier = Classifier(head.get("type", "flatten"), p["channels"], p["size"],
                                     head.get("hidden", 0), head.get("norm", "none"), act(),
                                     cfg.get("num_classes", 10))
        self.shapes["classifier"] = (cfg.get("num_classes", 10),)

    def forward(self, x):
        for block in self.blocks.values():
            x = block(x)
        return self.classifier(x)

    def param_table(self) -> dict:
        """Trainable parameters per block, in model order."""
        table = {name: count(block) for name, block in self.blocks.items()}
        table["classifier"] = count(self.classifier)
        return table

    @property
    def num_params(self) -> int:
        return count(self)


def build_model(model_cfg) -> TinyCNN:
    """Check model_cfg and build it; raises ConfigError naming the bad field and value."""
    return TinyCNN(model_cfg)


def format_param_table(model: TinyCNN) -> str:
    rows = [("block", "output", "params")]
    for name, n in model.param_table().items():
        rows.append((name, "x".join(map(str, model.shapes[name])), f"{n:,}"))
    rows.append(("total", "", f"{model.num_params:,}"))
    w = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{a:<{w[0]}}  {b:>{w[1]}}  {c:>{w[2]}}" for a, b, c in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(-1, "-" * len(lines[0]))
    return "\n".join(lines)
