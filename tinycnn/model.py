"""Turn a model config (conf/model/*.yaml) into an nn.Module, after checking every value.

The config is data: block types and field names, never Python class names. Everything is checked
and every shape, parameter count and cost (tinycnn/costs.py) worked out before a single layer is
built, so a bad config fails in milliseconds with one message naming the block, the field and
the value.
"""

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Dict, List, NamedTuple, Tuple

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError
from torch import nn

from tinycnn.blocks import (ACTIVATIONS, Classifier, ConvBlock, ConvLayer, ResidualBlock, count,
                            norm2d)
from tinycnn.checks import choice, fail, flag, known, number, whole
from tinycnn.costs import (Cost, Costs, block_cost, classifier_cost, conv_side, costs_of,
                           forward_floats)
from tinycnn.errors import ConfigError

MODEL_FIELDS = {"in_channels", "image_size", "num_classes", "activation", "negative_slope", "norm",
                "running_stats", "blocks", "classifier", "max_params", "max_macs",
                "max_peak_bytes", "max_flash_bytes"}
# A block lists its convs (layers), or describes a uniform stage: `convs` convs of `width`
# channels with one `kernel` and `groups` (its first conv, which changes the width, is dense
# and takes the stage's `stride`), or, with `separable: true`, `convs` depthwise-separable convs
# (a depthwise kxk conv, the first taking the stride, then a 1x1 conv to `width`).
_CONV = {"type", "layers", "width", "convs", "kernel", "groups", "stride", "pool", "repeat",
         "separable"}
BLOCK_FIELDS = {"conv": _CONV, "residual": _CONV | {"scale", "out_act", "projection"}}
LAYER_FIELDS = {"out", "kernel", "groups", "stride"}
CLASSIFIER_FIELDS = {"type", "hidden", "norm"}
NORMS = ("batch", "none")
HEAD_TYPES = ("flatten", "gap")
HEAD_NORMS = ("sample", "batch", "none")
# A plain run refuses a network above this before allocating anything: 1M parameters is 40
# times the paper's budget (and depth costs activation memory far beyond the weights), so only
# a typo such as out=1000000 or repeat=10000 gets there.
MAX_PARAMS = 1_000_000
_LIST_COPIES = 1000  # identical repeats beyond this are one row of the parameter table
DEPTHWISE = "depthwise"  # a separable stage's depthwise convs: groups = their input width


def _divisors(n: int) -> str:
    """The divisors of n, found up to sqrt(n) (a width of 10^12 answers at once)."""
    if n > 10 ** 12:
        return f"1, ..., {n} (too many to list)"
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    found = sorted(set(small + [n // d for d in small]))
    if len(found) > 16:
        return ", ".join(map(str, found[:12])) + f", ... ({len(found)} in all)"
    return ", ".join(map(str, found))


@dataclass
class Layer:
    """One same-padded conv -> norm -> activation (no activation: act False)."""
    c_in: int
    c_out: int
    kernel: int
    groups: int
    act: bool
    stride: int = 1
    size: int = 0         # output side: ceil(input side / stride)

    def params(self, norm: str) -> int:
        return self.c_out * (self.c_in // self.groups) * self.kernel ** 2 + self.c_out \
            + (2 * self.c_out if norm == "batch" else 0)


@dataclass
class BlockPlan:
    base: str             # the block's name in the config
    index: int            # which copy (repeat): 0 is named base, 1 base_2, ...
    kind: str
    layers: List[Layer]
    c_in: int
    c_out: int
    size: int             # image side after the block (after pooling)
    pool: int
    scale: float = 0.0
    projection: bool = False  # a 1x1 conv shortcut (built only when it is used)
    out_act: bool = False
    params: int = 0
    size_in: int = 0      # image side entering the block
    cost: Cost = Cost(0, 0, 0)

    @property
    def stride(self) -> int:
        """The body's total stride, which a projection shortcut takes to match its size."""
        return math.prod(layer.stride for layer in self.layers)

    def name(self, later: int = 0) -> str:
        """The name of this copy, or of the one `later` copies after it."""
        i = self.index + later
        return self.base if i == 0 else f"{self.base}_{i + 1}"


class Row(NamedTuple):
    """One line of the parameter table; repeated copies collapsed into one row are summed,
    except peak_bytes, which one copy at a time needs."""
    name: str
    shape: Tuple[int, ...]
    params: int
    macs: int
    peak_bytes: int
    flash_bytes: int


@dataclass
class Plan:
    """Every layer's shape, parameter count and cost, worked out from the config alone."""
    cfg: dict
    blocks: List[BlockPlan]           # the distinct blocks, in order
    copies: List[int]                 # how many identical copies of each (repeat)
    channels: int
    size: int
    head_features: int
    head_params: int
    head_cost: Cost = Cost(0, 0, 0)

    @property
    def total(self) -> int:
        return sum(b.params * k for b, k in zip(self.blocks, self.copies)) + self.head_params

    def rows(self) -> List[Row]:
        """Each block in model order (res2, res2_2, ...), then the classifier, with its output
        shape, parameters and costs; a run of more than 1,000 identical copies is one row."""
        out = []
        for b, k in zip(self.blocks, self.copies):
            shape, c = (b.c_out, b.size, b.size), b.cost
            if k <= _LIST_COPIES:
                out += [Row(b.name(i), shape, b.params, c.macs, c.peak_bytes, c.flash_bytes)
                        for i in range(k)]
            else:
                out.append(Row(f"{b.name()}..{b.name(k - 1)}", shape, b.params * k, c.macs * k,
                               c.peak_bytes, c.flash_bytes * k))
        c = self.head_cost
        out.append(Row("classifier", (self.cfg["num_classes"],), self.head_params, c.macs,
                       c.peak_bytes, c.flash_bytes))
        return out

    def table(self) -> Dict[str, int]:
        """Parameters per block, as rows() names them."""
        return {r.name: r.params for r in self.rows()}

    def costs(self) -> Costs:
        """Parameters, MACs, peak activation bytes and flash bytes (tinycnn/costs.py)."""
        return costs_of(self.rows())

    def forward_floats(self) -> int:
        """Float32 values a training step produces per image (tinycnn/costs.py): the
        normalised input, every block's maps, the classifier's features, hidden layer (its
        linear, norm and activation) and logits."""
        hidden = self.cfg["classifier"]["hidden"]
        image = self.cfg["in_channels"] * self.cfg["image_size"] ** 2
        return image + sum(forward_floats(b) * k for b, k in zip(self.blocks, self.copies)) \
            + self.head_features + 3 * hidden + self.cfg["num_classes"]


def _layers(where, block) -> list:
    """The block's layer specs: its `layers`, or the stage shorthand expanded."""
    if "layers" in block:
        if "width" in block or "convs" in block:
            fail(f"{where}.width", block.get("width"), "give either layers or width and convs, "
                  "not both")
        layers = block["layers"]
        if not isinstance(layers, list) or not layers:
            fail(f"{where}.layers", layers, "expected a non-empty list of {out, kernel, groups, "
                  "stride}")
        for field in ("kernel", "groups", "stride"):
            if field in block:
                fail(f"{where}.{field}", block[field], "a block with layers sets kernel, "
                      "groups and stride per layer")
        return layers
    if "width" not in block:
        fail(where, dict(block), "expected layers (a list of {out, kernel, groups, stride}) or "
              "a stage (width, convs, kernel, groups, stride)")
    width = whole(f"{where}.width", block["width"])
    convs = whole(f"{where}.convs", block.get("convs", 1))
    kernel, groups = block.get("kernel", 3), block.get("groups", 1)
    if flag(f"{where}.separable", block.get("separable", False)):
        if groups != 1:
            fail(f"{where}.groups", groups, "a separable stage's depthwise convs group by their "
                  "input width and its 1x1 convs are dense; expected 1 (or leave it out)")
        # out null: the depthwise conv keeps its input's width (groups "depthwise": all of it)
        specs = [[{"out": None, "kernel": kernel, "groups": DEPTHWISE},
                  {"out": width, "kernel": 1, "groups": 1}] for _ in range(convs)]
        if "stride" in block:
            specs[0][0]["stride"] = block["stride"]
        return [spec for pair in specs for spec in pair]
    first = {"out": width, "kernel": kernel, "groups": 1}
    if "stride" in block:
        first["stride"] = block["stride"]
    return [first] + [{"out": width, "kernel": kernel, "groups": groups}] * (convs - 1)


def _conv_layers(where, block, specs, residual: bool, c_in: int, size: int) -> List[Layer]:
    """One copy of a block's convs, checked, from c_in channels of size x size."""
    layers, c = [], c_in
    for i, layer in enumerate(specs):
        lw = f"{where}.layers.{i}" if "layers" in block else where
        if not isinstance(layer, Mapping):
            fail(lw, layer, "expected a mapping {out, kernel, groups, stride}")
        known(lw, layer, LAYER_FIELDS)
        # out null keeps the incoming width: a residual block's last layer returns to the
        # block's input width, so the shortcut stays an identity.
        last_residual = residual and i == len(specs) - 1
        out = layer.get("out")
        out = (c_in if last_residual else c) if out is None else whole(f"{lw}.out", out)
        kernel = whole(f"{lw}.kernel", layer.get("kernel", 3))
        if kernel % 2 == 0:
            fail(f"{lw}.kernel", kernel, "expected an odd kernel (1, 3, 5, 7, ...) so 'same' "
                  "padding keeps the image size")
        groups = layer.get("groups", 1)
        groups = c if groups == DEPTHWISE else whole(f"{lw}.groups", groups)
        if c % groups or out % groups:
            fits = f"divisors of {c}: {_divisors(c)}" + \
                (f"; of {out}: {_divisors(out)}" if out != c else "")
            fail(f"{lw}.groups", groups, f"groups must divide both the input ({c}) and output "
                  f"({out}) channels; {fits}")
        # a stage's stride is its first conv's: the error names the key that was set
        sw = f"{lw}.stride" if "layers" in block else f"{where}.stride"
        stride = whole(sw, layer.get("stride", 1))
        if stride > size:
            fail(sw, stride, f"the image is only {size}x{size} at this point")
        size = conv_side(size, stride)
        layers.append(Layer(c, out, kernel, groups, not last_residual, stride, size))
        c = out
    return layers


def plan(model_cfg) -> Plan:
    """Check a model config and work out every layer's shape, parameter count and cost,
    allocating nothing: the budget check, the parameter table, the cost model and the builder
    all read this one pass."""
    # a copy: the defaults filled in below must not change the caller's config
    try:
        cfg = OmegaConf.to_container(model_cfg, resolve=True) \
            if isinstance(model_cfg, DictConfig) else copy.deepcopy(dict(model_cfg))
    except InterpolationResolutionError as exc:  # ${data.channels} in a preset read alone
        raise ConfigError(f"model.{exc.full_key}: {exc.msg.split(chr(10))[0]}; a model preset "
                          "follows the data (${data.channels}); compose it with its data "
                          "(python run.py, or tinycnn.presets.load_preset)") from None
    known("model", cfg, MODEL_FIELDS)
    for field in ("blocks", "classifier"):
        if not isinstance(cfg.get(field), Mapping):
            fail(f"model.{field}", cfg.get(field), "expected a mapping (see conf/model/paper.yaml)")
    channels = whole("model.in_channels", cfg.setdefault("in_channels", 1))
    size = whole("model.image_size", cfg.setdefault("image_size", 28))
    classes = whole("model.num_classes", cfg.setdefault("num_classes", 10), low=2)
    choice("model.activation", cfg.setdefault("activation", "relu"), tuple(ACTIVATIONS))
    number("model.negative_slope", cfg.setdefault("negative_slope", 0.01))
    norm = choice("model.norm", cfg.setdefault("norm", "batch"), NORMS)
    flag("model.running_stats", cfg.setdefault("running_stats", True))
    whole("model.max_params", cfg.setdefault("max_params", MAX_PARAMS))
    for budget in ("max_macs", "max_peak_bytes", "max_flash_bytes"):  # a device's, when given
        if cfg.get(budget) is not None:
            whole(f"model.{budget}", cfg[budget])

    blocks, copies = [], []
    for name, block in cfg["blocks"].items():
        where = f"model.blocks.{name}"
        if not isinstance(block, Mapping):
            fail(where, block, "expected a mapping with type and layers")
        kind = choice(f"{where}.type", block.get("type"), tuple(BLOCK_FIELDS))
        known(where, block, BLOCK_FIELDS[kind])
        specs = _layers(where, block)
        pool = whole(f"{where}.pool", block.get("pool", 1))
        repeat = whole(f"{where}.repeat", block.get("repeat", 1), low=0)
        residual = kind == "residual"
        scale = number(f"{where}.scale", block.get("scale", 1.0)) if residual else 0.0
        projection = residual and flag(f"{where}.projection", block.get("projection", False))
        out_act = residual and flag(f"{where}.out_act", block.get("out_act", True))
        done = 0  # copies planned so far
        while done < repeat:
            c_in, size_in = channels, size
            layers = _conv_layers(where, block, specs, residual, c_in, size)
            c, body = layers[-1].c_out, layers[-1].size  # the body's output: c x body x body
            if residual and scale and c != c_in and not projection:
                fail(f"{where}.layers.{len(specs) - 1}.out" if "layers" in block
                      else f"{where}.width", c,
                      f"the residual block's output width ({c}) differs from its input width "
                      f"({c_in}), so x cannot be added; set it to {c_in}, set "
                      f"{where}.projection: true for a 1x1 conv shortcut, or scale: 0 for none")
            if residual and scale and body != size_in and not projection:
                fail(f"{where}.projection", projection,
                     f"the residual block's strides shrink the image from {size_in}x{size_in} "
                     f"to {body}x{body}, so x cannot be added; set {where}.projection: true "
                     "for a strided 1x1 conv shortcut, or scale: 0 for none")
            if pool > body:
                fail(f"{where}.pool", pool, f"the image is only {body}x{body} at this point")
            size = body // pool
            shortcut = residual and scale != 0 and (c != c_in or body != size_in)
            b = BlockPlan(name, done, kind, layers, c_in, c, size, pool, scale, shortcut, out_act,
                          size_in=size_in)
            b.params = sum(layer.params(norm) for layer in layers) + (
                c_in * c + c + (2 * c if norm == "batch" else 0) if shortcut else 0)
            b.cost = block_cost(b)
            channels = c
            # From here on every copy is this same block (same widths and size: no pooling, no
            # stride): count the rest at once, so repeat: 100000 is judged in microseconds.
            k = repeat - done if c == c_in and size == size_in else 1
            blocks.append(b)
            copies.append(k)
            done += k

    head = cfg["classifier"]
    known("model.classifier", head, CLASSIFIER_FIELDS)
    kind = choice("model.classifier.type", head.setdefault("type", "flatten"), HEAD_TYPES)
    hidden = whole("model.classifier.hidden", head.setdefault("hidden", 0), low=0)
    head_norm = choice("model.classifier.norm", head.setdefault("norm", "none"), HEAD_NORMS)
    names = [b.name(i) for b, k in zip(blocks, copies) for i in range(min(k, 2))]
    if len(set(names)) != len(names) or "classifier" in names:
        dup = next(n for n in names if names.count(n) > 1 or n == "classifier")
        fail("model.blocks", dup, "block names must be unique and not 'classifier'")
    features = channels if kind == "gap" else channels * size * size
    head_params = (features * hidden + hidden + (2 * hidden if head_norm != "none" else 0)
                   + hidden * classes + classes) if hidden else features * classes + classes
    head_cost = classifier_cost(channels, size, features, hidden, classes)
    return Plan(cfg, blocks, copies, channels, size, features, head_params, head_cost)


def count_params(model_cfg) -> Tuple[int, Dict[str, int]]:
    """(total, per block) of a model config, from the config alone: nothing is allocated."""
    p = plan(model_cfg)
    return p.total, p.table()


def count_costs(model_cfg) -> Costs:
    """Parameters, MACs per image, peak int8 activation bytes and int8 flash bytes of a model
    config, in total and per block, from the config alone (the convention: tinycnn/costs.py)."""
    return plan(model_cfg).costs()


class TinyCNN(nn.Module):
    """Named blocks in order, then the classifier: (N, C, H, W) -> (N, num_classes) logits."""

    def __init__(self, p: Plan):
        super().__init__()
        cfg = self.cfg = p.cfg
        slope = float(cfg["negative_slope"])
        act = lambda: ACTIVATIONS[cfg["activation"]](slope)  # noqa: E731
        norm, stats = cfg["norm"], cfg["running_stats"]
        self.blocks = nn.ModuleDict()
        for b, k in zip(p.blocks, p.copies):
            for i in range(k):
                name = b.name(i)
                layers = [ConvLayer(l.c_in, l.c_out, l.kernel, l.groups, norm, stats,
                                    act() if l.act else None, l.stride) for l in b.layers]
                if b.kind == "conv":
                    self.blocks[name] = ConvBlock(layers, b.pool)
                else:
                    shortcut = nn.Sequential(nn.Conv2d(b.c_in, b.c_out, 1, stride=b.stride),
                                             norm2d(norm, b.c_out, stats)) \
                        if b.projection else nn.Identity()
                    self.blocks[name] = ResidualBlock(layers, b.scale, shortcut,
                                                      act() if b.out_act else None, b.pool)
        head = cfg["classifier"]
        self.classifier = Classifier(head["type"], p.channels, p.size, head["hidden"],
                                     head["norm"], act(), cfg["num_classes"])
        self.rows = p.rows()
        self.costs = p.costs()
        self.shapes = {r.name: r.shape for r in self.rows}

    def forward(self, x):
        for block in self.blocks.values():
            x = block(x)
        return self.classifier(x)

    def param_table(self) -> dict:
        """Trainable parameters per block, in model order (worked out by plan())."""
        return {r.name: r.params for r in self.rows}

    @property
    def num_params(self) -> int:
        return count(self)


def build_model(model_cfg) -> TinyCNN:
    """Check model_cfg, count its parameters, and build it; raises ConfigError naming the bad
    field and value, or the parameter count when it exceeds model.max_params."""
    p = plan(model_cfg)
    if p.total > p.cfg["max_params"]:
        raise ConfigError(f"model.max_params = {p.cfg['max_params']:,}: this network has "
                          f"{p.total:,} parameters, refused before allocating them "
                          f"(+model.max_params={p.total} if you mean it)")
    costs = p.costs().totals()
    for cost in ("macs", "peak_bytes", "flash_bytes"):
        limit = p.cfg.get(f"max_{cost}")
        if limit is not None and costs[cost] > limit:
            raise ConfigError(f"model.max_{cost} = {limit:,}: this network needs "
                              f"{costs[cost]:,} {cost.replace('_', ' ')}, over the budget; "
                              "refused before it was built")
    return TinyCNN(p)


def format_param_table(model: TinyCNN) -> str:
    """Per block: output shape, parameters, MACs per image and peak int8 activation bytes
    (tinycnn/costs.py); the total row sums the MACs and takes the largest activation peak."""
    rows = [("block", "output", "params", "MACs", "act bytes")]
    rows += [(r.name, "x".join(map(str, r.shape)), f"{r.params:,}", f"{r.macs:,}",
              f"{r.peak_bytes:,}") for r in model.rows]
    rows.append(("total", "", f"{model.num_params:,}", f"{model.costs.macs:,}",
                 f"{model.costs.peak_bytes:,}"))
    w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join([f"{r[0]:<{w[0]}}"] + [f"{v:>{n}}" for v, n in zip(r[1:], w[1:])])
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(-1, "-" * len(lines[0]))
    return "\n".join(lines)
