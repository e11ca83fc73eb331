"""The model builder: the paper preset to the parameter, every preset's output, clear errors."""

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tinycnn.presets import load_preset

from conftest import compose_cfg
from tinycnn.errors import ConfigError
import random

from tinycnn.model import build_model, count_params, format_param_table

CONF = Path(__file__).resolve().parent.parent / "conf" / "model"


def paper():
    return load_preset(CONF.parent, "model", "paper")  # its shape from the default data set


def test_paper_preset_matches_the_papers_table():
    m = build_model(paper())
    # The paper's own breakdown ("CNN Model for MNIST Classification"), block by block.
    assert m.param_table() == {"initial": 824, "res1": 480, "transition": 132, "res2": 936,
                               "classifier": 19_242}
    assert m.num_params == 21_614
    assert sum(p.numel() for p in m.parameters()) == 21_614  # nothing frozen or hidden
    # MACs per image and peak int8 activation bytes per block (tinycnn/costs.py; worked out by
    # hand in tests/test_costs.py); the total row sums the MACs and takes the largest peak.
    assert format_param_table(m) == "\n".join([
        "block        output  params     MACs  act bytes",
        "-----------------------------------------------",
        "initial     8x14x14     824  608,384     12,544",
        "res1          8x7x7     480   82,320      4,704",
        "transition   12x7x7     132    4,704        980",
        "res2         12x7x7     936   42,336      1,764",
        "classifier       10  19,242   19,136        598",
        "-----------------------------------------------",
        "total                21,614  756,880     12,544"])


def test_paper_counts_from_first_principles():
    # conv k*k*cin/g*cout + cout bias, BatchNorm 2*c, Linear in*out + out.
    conv = lambda cin, cout, k, g=1: k * k * cin // g * cout + cout  # noqa: E731
    bn = lambda c: 2 * c  # noqa: E731
    t = build_model(paper()).param_table()
    assert t["initial"] == conv(1, 8, 5) + bn(8) + conv(8, 8, 3) + bn(8)
    assert t["res1"] == conv(8, 6, 1) + bn(6) + conv(6, 6, 3) + bn(6) + conv(6, 8, 1) + bn(8)
    assert t["transition"] == conv(8, 12, 1) + bn(12)
    assert t["res2"] == 2 * (conv(12, 12, 3, 3) + bn(12))
    assert t["classifier"] == (12 * 7 * 7 * 32 + 32) + 2 * 32 + (32 * 10 + 10)


def test_paper_batchnorm_uses_batch_statistics_in_eval():
    m = build_model(paper())
    bns = [mod for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm2d)]
    assert len(bns) == 8 and not any(b.track_running_stats for b in bns)
    cfg = paper() | {"running_stats": True}
    assert all(b.track_running_stats for b in build_model(cfg).modules()
               if isinstance(b, torch.nn.BatchNorm2d))


def test_instance_norm_trap_and_the_per_sample_reading():
    # The paper's InstanceNorm1d(32) with affine weights raises on a (N, 32) tensor today...
    with pytest.raises(Exception):
        torch.nn.InstanceNorm1d(32, affine=True)(torch.randn(5, 32))
    # ...so the classifier normalises each sample's 32 features itself, with a 32-wide affine.
    norm = build_model(paper()).classifier.mlp[1]
    assert sum(p.numel() for p in norm.parameters()) == 64
    y = norm(torch.randn(5, 32) * 7 + 3)
    assert torch.allclose(y.mean(1), torch.zeros(5), atol=1e-5)
    assert torch.allclose(y.std(1, unbiased=False), torch.ones(5), atol=1e-3)
    one = norm(torch.randn(1, 32))  # no batch statistics involved: works on a single sample
    assert one.shape == (1, 32)


@pytest.mark.parametrize("preset", sorted(p.stem for p in CONF.glob("*.yaml")))
def test_every_preset_gives_logits(preset):
    m = build_model(compose_cfg(f"model={preset}").model)  # composed: presets may inherit
    assert m(torch.randn(4, 1, 28, 28)).shape == (4, 10)
    assert m(torch.randn(1, 1, 28, 28)).shape == (1, 10)


def test_gap_preset():
    assert build_model(compose_cfg("model=paper_gap").model).num_params == 3_182


def test_variations_of_the_paper():
    cfg = paper()
    cfg["blocks"]["res1"]["scale"] = 0  # no shortcut
    cfg["blocks"]["res2"]["repeat"] = 3
    cfg["blocks"]["transition"]["repeat"] = 0
    res2 = cfg["blocks"]["res2"]["layers"]
    res2[0].update(out=None, kernel=7, groups=2)  # null: keep the incoming 8 channels
    res2[1].update(groups=2)
    cfg["classifier"] = {"type": "gap", "hidden": 0, "norm": "none"}
    cfg["activation"] = "relu"
    m = build_model(cfg)
    assert list(m.param_table()) == ["initial", "res1", "res2", "res2_2", "res2_3", "classifier"]
    assert m.param_table()["classifier"] == 8 * 10 + 10  # transition removed: res2 works on 8 ch
    assert m(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    cfg["blocks"]["res1"]["layers"][2]["out"] = 16  # widen through a projection shortcut
    cfg["blocks"]["res1"]["projection"] = True
    cfg["blocks"]["res2"]["layers"][0]["groups"] = 4
    cfg["blocks"]["res2"]["layers"][1]["groups"] = 4
    m = build_model(cfg)
    assert m.shapes["res1"] == (16, 7, 7)
    assert m(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def bad(path: str, value):
    cfg = paper()
    *keys, last = path.split(".")
    node = cfg
    for k in keys:
        node = node[int(k)] if isinstance(node, list) else node[k]
    node[last] = value
    return cfg


@pytest.mark.parametrize("path, value, words", [
    ("blocks.res2.layers.0.groups", 5, ["model.blocks.res2.layers.0.groups", "5", "divide", "12"]),
    ("blocks.res1.layers.2.out", 10, ["model.blocks.res1", "10", "8", "projection"]),
    ("blocks.initial.layers.0.out", 0, ["model.blocks.initial.layers.0.out", "0", ">= 1"]),
    ("blocks.transition.layers.0.out", -4, ["model.blocks.transition.layers.0.out", "-4"]),
    ("blocks.res1.type", "dense", ["model.blocks.res1.type", "'dense'", "conv, residual"]),
    ("activation", "swish", ["model.activation", "'swish'", "leaky_relu"]),
    ("blocks.initial.layers.1.kernel", 4, ["model.blocks.initial.layers.1.kernel", "4", "odd"]),
    ("blocks.res1.scael", 2.0, ["model.blocks.res1.scael", "unknown field", "scale"]),
    ("classifier.type", "attention", ["model.classifier.type", "flatten, gap"]),
    ("blocks.initial.pool", 64, ["model.blocks.initial.pool", "28x28"]),
    ("blocks.res1.scale", float("nan"), ["model.blocks.res1.scale", "nan", "finite"]),
    ("negative_slope", float("inf"), ["model.negative_slope", "inf", "finite"]),
    ("blocks.res2.layers.0.out", 1_000_000_000_001,
     ["model.blocks.res2.layers.0.groups", "1000000000001", "too many to list"]),
    ("blocks.res2.repeat", 10_000, ["model.max_params", "9,380,678", "before allocating"]),
])
def test_bad_configs_name_block_field_and_value(path, value, words):
    with pytest.raises(ConfigError) as err:
        build_model(bad(path, value))
    for w in words:
        assert w in str(err.value), (w, str(err.value))


def stage(**fields):
    return {"type": "residual", "kernel": 3, "groups": 1, "scale": 0.0, "projection": True,
            "out_act": True, "pool": 1, "repeat": 1, **fields}


def test_a_stage_is_convs_of_one_width():
    cfg = {"activation": "relu", "norm": "batch",
           "blocks": {"s1": stage(width=8, convs=2, groups=2, pool=2),
                      "s2": stage(width=16, convs=2, groups=4, scale=1.0)},
           "classifier": {"type": "gap", "hidden": 0}}
    m = build_model(cfg)
    s1, s2 = m.blocks["s1"].body, m.blocks["s2"].body
    # the first conv changes the width and is dense; the others are grouped
    assert [(c[0].in_channels, c[0].out_channels, c[0].groups) for c in s1] == [(1, 8, 1), (8, 8, 2)]
    assert [(c[0].in_channels, c[0].out_channels, c[0].groups) for c in s2] == [(8, 16, 1),
                                                                               (16, 16, 4)]
    assert isinstance(m.blocks["s2"].shortcut[0], torch.nn.Conv2d)  # 8 -> 16: a 1x1 projection
    assert not list(m.blocks["s1"].shortcut.parameters())  # scale 0: no shortcut, no weights
    # by hand: s1 (1*8*9+8 + 16) + (8*4*9+8 + 16); s2 (8*16*9+16 + 32) + (16*4*9+16 + 32)
    # + projection (8*16+16 + 32); head 16*10+10
    assert m.param_table() == {"s1": 96 + 312, "s2": 1200 + 624 + 176, "classifier": 170}
    assert m.num_params == sum(m.param_table().values())
    assert m(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_counted_parameters_match_the_built_network():
    """count_params works from the config alone; it must agree with torch on random configs."""
    rng = random.Random(0)
    checked = 0
    for _ in range(200):
        blocks = {}
        for i in range(rng.randint(1, 4)):
            kind = rng.choice(["conv", "residual"])
            b = {"type": kind, "width": rng.choice([4, 8, 12]), "convs": rng.randint(1, 3),
                 "kernel": rng.choice([1, 3, 5]), "groups": rng.choice([1, 2, 4]),
                 "pool": rng.choice([1, 2]), "repeat": rng.randint(0, 3)}
            if kind == "residual":
                b.update(scale=rng.choice([0.0, 1.0]), projection=rng.choice([True, False]))
            blocks[f"s{i}"] = b
        cfg = {"norm": rng.choice(["batch", "none"]), "blocks": blocks,
               "classifier": {"type": rng.choice(["gap", "flatten"]), "hidden": rng.choice([0, 8]),
                              "norm": rng.choice(["none", "sample", "batch"])}}
        try:
            total, table = count_params(cfg)
        except ConfigError:
            continue
        m = build_model(cfg)
        assert (total, table) == (sum(p.numel() for p in m.parameters()), m.param_table()), cfg
        checked += 1
    assert checked > 100


def test_huge_networks_are_counted_without_allocating():
    cfg = paper()
    cfg["blocks"]["transition"]["layers"][0]["out"] = 10 ** 12
    cfg["blocks"]["res2"]["layers"] = [{"out": None, "kernel": 3, "groups": 1}]
    cfg["blocks"]["res2"]["repeat"] = 100_000
    total, table = count_params(cfg)  # (building it would need terabytes)
    assert total > 10 ** 27
    assert "res2..res2_100000" in table  # identical repeats collapse into one row
    with pytest.raises(ConfigError, match="model.max_params"):
        build_model(cfg)
