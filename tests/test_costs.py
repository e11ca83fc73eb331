"""The cost model (tinycnn/costs.py): MACs, peak int8 activation bytes and flash bytes, checked
against arithmetic written out by hand and against the built network's own shapes; strided and
depthwise convolutions counted and built alike."""

import random
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tinycnn.presets import load_preset

from tinycnn.costs import conv_side
from tinycnn.errors import ConfigError
from tinycnn.model import build_model, count_costs, count_params

CONF = Path(__file__).resolve().parent.parent / "conf" / "model"


def preset(name):
    return load_preset(CONF.parent, "model", name)  # its shape from the default data set


def test_paper_by_hand():
    c = count_costs(preset("paper"))
    # MACs: out_h*out_w * c_out * c_in/groups * k*k per conv, in*out per linear layer
    initial = 28 * 28 * 8 * 1 * 5 * 5 + 28 * 28 * 8 * 8 * 3 * 3
    res1 = 14 * 14 * (6 * 8 * 1 + 6 * 6 * 3 * 3 + 8 * 6 * 1)  # identity shortcut: no MACs
    transition = 7 * 7 * 12 * 8
    res2 = 2 * 7 * 7 * 12 * (12 // 3) * 3 * 3
    classifier = 12 * 7 * 7 * 32 + 32 * 10
    assert c.macs_by_block == {"initial": initial, "res1": res1, "transition": transition,
                               "res2": res2, "classifier": classifier}
    assert c.macs == initial + res1 + transition + res2 + classifier == 756_880
    # Activation bytes (int8): input + output (+ the residual input x kept for the add) per op.
    assert c.peak_bytes_by_block == {
        "initial": max(1 * 28 * 28 + 8 * 28 * 28,          # conv 5x5
                       8 * 28 * 28 + 8 * 28 * 28,          # conv 3x3: the network's peak
                       8 * 28 * 28 + 8 * 14 * 14),         # max-pool
        "res1": max(8 * 196 + 6 * 196,                     # 1x1 conv; its input is x itself
                    6 * 196 + 6 * 196 + 8 * 196,           # 3x3 conv, x kept
                    6 * 196 + 8 * 196 + 8 * 196,           # 1x1 conv, x kept
                    8 * 196 * 3,                           # add: body + x in, sum out
                    8 * 196 + 8 * 49),                     # max-pool
        "transition": 8 * 49 + 12 * 49,
        "res2": max(588 + 588, 588 + 588 + 588, 588 * 3),
        "classifier": 588 + 10}
    assert c.peak_bytes == 8 * 28 * 28 * 2 == 12_544
    weights = (1 * 8 * 25 + 8 * 8 * 9) + (8 * 6 + 6 * 6 * 9 + 6 * 8) + 8 * 12 \
        + 2 * 12 * 4 * 9 + (588 * 32 + 32 * 10)
    out_channels = (8 + 8) + (6 + 6 + 8) + 12 + (12 + 12) + (32 + 10)
    assert c.flash_bytes == weights + 4 * out_channels == 21_748
    assert c.params == 21_614 and c.params_by_block == count_params(preset("paper"))[1]


def test_best5k_by_hand():
    c = count_costs(preset("best5k"))
    # s1: conv 1->16 5x5 at 28, pool 2; s2: 16->8 3x3, 8->8 3x3 groups 4 at 14, pool 2;
    # s3: 8->16 3x3 at 7, pool 2 (-> 3x3); s4: repeat 0; flatten 16*3*3 -> 10. scale 0: no adds.
    s1, s2, s3, head = (28 * 28 * 16 * 1 * 25, 14 * 14 * (8 * 16 * 9 + 8 * 2 * 9),
                        7 * 7 * 16 * 8 * 9, 16 * 3 * 3 * 10)
    assert c.macs_by_block == {"s1": s1, "s2": s2, "s3": s3, "classifier": head}
    assert c.macs == s1 + s2 + s3 + head == 625_504
    assert c.peak_bytes_by_block == {"s1": max(784 + 16 * 784, 16 * 784 + 16 * 196),
                                     "s2": max(16 * 196 + 8 * 196, 8 * 196 * 2, 8 * 196 + 8 * 49),
                                     "s3": max(8 * 49 + 16 * 49, 16 * 49 + 16 * 9),
                                     "classifier": 144 + 10}
    assert c.peak_bytes == 16 * 28 * 28 + 16 * 14 * 14 == 15_680  # s1's pooling
    assert c.flash_bytes == (16 * 25 + 4 * 16) + (16 * 8 * 9 + 4 * 8 + 8 * 2 * 9 + 4 * 8) \
        + (8 * 16 * 9 + 4 * 16) + (144 * 10 + 4 * 10) == 4_520
    assert c.params == 4_442


def resnet():
    """A strided stem, a strided residual block with a projection shortcut, and two inverted
    residual blocks (MobileNetV2's: 1x1 expand, depthwise 3x3, 1x1 back) with an identity
    shortcut, where the input kept for the add makes the peak."""
    return {"activation": "relu", "norm": "batch", "blocks": {
        "stem": {"type": "conv", "layers": [{"out": 8, "kernel": 3, "stride": 2}]},
        "down": {"type": "residual", "scale": 1.0, "projection": True, "layers": [
            {"out": 16, "kernel": 3, "stride": 2}, {"out": 16, "kernel": 3, "groups": 16},
            {"out": 16, "kernel": 1}]},
        "same": {"type": "residual", "scale": 0.5, "repeat": 2, "layers": [
            {"out": 32, "kernel": 1}, {"out": 32, "kernel": 3, "groups": 32},
            {"out": None, "kernel": 1}]}},
        "classifier": {"type": "gap", "hidden": 0, "norm": "none"}}


def test_a_strided_residual_network_by_hand():
    c = count_costs(resnet())
    # stem: 1x28x28 -> 8x14x14 (stride 2); down: 8x14x14 -> 16x7x7, shortcut a 1x1 stride-2 conv
    stem = 14 * 14 * 8 * 1 * 9
    down = 7 * 7 * (16 * 8 * 9 + 16 * 1 * 9 + 16 * 16) + 7 * 7 * 16 * 8  # + the projection
    same = 7 * 7 * (32 * 16 + 32 * 1 * 9 + 16 * 32)  # expand, depthwise 3x3, back
    assert c.macs_by_block == {"stem": stem, "down": down, "same": same, "same_2": same,
                               "classifier": 16 * 10}
    assert c.macs == 14_112 + 82_320 + 2 * 64_288 + 160
    x = 8 * 14 * 14  # down's input, kept until its add
    assert c.peak_bytes_by_block == {
        "stem": 784 + 8 * 196,
        "down": max(x + 16 * 49,                 # strided conv (its input is x)
                    16 * 49 + 16 * 49 + x,       # depthwise, x kept
                    16 * 49 + 16 * 49 + x,       # pointwise, x kept
                    x + 16 * 49 + 16 * 49,       # projection: x in, shortcut out, body kept
                    16 * 49 * 3),                # add
        "same": max(784 + 32 * 49,               # expand (its input is x)
                    32 * 49 + 32 * 49 + 784,     # depthwise, x kept: the network's peak
                    32 * 49 + 784 + 784,         # back to 16 channels, x kept
                    784 * 3),                    # add
        "same_2": 3_920, "classifier": 16 * 49 + 10}  # global average pool + linear, one op
    assert c.peak_bytes == 1568 + 1568 + 784 == 3_920
    assert c.flash_bytes_by_block == {
        "stem": 72 + 4 * 8,
        "down": (8 * 16 * 9 + 64) + (16 * 9 + 64) + (16 * 16 + 64) + (8 * 16 + 64),
        "same": (16 * 32 + 128) + (32 * 9 + 128) + (32 * 16 + 64), "same_2": 1_632,
        "classifier": 160 + 40}
    assert c.flash_bytes == 104 + 1_936 + 2 * 1_632 + 200
    bn = lambda ch: 2 * ch  # noqa: E731
    assert c.params_by_block == {
        "stem": 72 + 8 + bn(8),
        "down": (1152 + 16 + bn(16)) + (144 + 16 + bn(16)) + (256 + 16 + bn(16))
        + (128 + 16 + bn(16)),
        "same": (512 + 32 + bn(32)) + (288 + 32 + bn(32)) + (512 + 16 + bn(16)),
        "same_2": 1_552, "classifier": 170}


@pytest.mark.parametrize("name, macs", [("paper", 756_880), ("best25k", 1_342_176),
                                        ("best5k", 625_504), ("best5k_r2", 569_056)])
def test_preset_macs(name, macs):
    assert count_costs(preset(name)).macs == macs


def measured(model, image_size=28):
    """Per-image MACs and weight bytes of the built network, from torch's own shapes (hooks),
    and each block's output shape: an independent reference for the counted figures."""
    macs, shapes = [0], {}

    def conv(mod, inp, out):
        macs[0] += out[0].numel() * (mod.in_channels // mod.groups) * mod.kernel_size[0] ** 2

    def linear(mod, inp, out):
        macs[0] += mod.in_features * mod.out_features

    hooks = [mod.register_forward_hook(conv if isinstance(mod, torch.nn.Conv2d) else linear)
             for mod in model.modules() if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear))]
    hooks += [block.register_forward_hook(
        lambda mod, inp, out, name=name: shapes.__setitem__(name, tuple(out.shape[1:])))
        for name, block in model.blocks.items()]
    model.eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 1, image_size, image_size))
    for h in hooks:
        h.remove()
    flash = sum(mod.weight.numel() + 4 * mod.weight.shape[0] for mod in model.modules()
                if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)))
    return logits.shape, macs[0], flash, shapes


def test_a_strided_network_builds_as_counted():
    cfg = resnet()
    m = build_model(cfg)
    shape, macs, flash, shapes = measured(m)
    c = count_costs(cfg)
    assert shape == (1, 10)
    assert shapes == {"stem": (8, 14, 14), "down": (16, 7, 7), "same": (16, 7, 7),
                      "same_2": (16, 7, 7)} == {k: v for k, v in m.shapes.items() if k in shapes}
    assert (macs, flash) == (c.macs, c.flash_bytes)
    assert c.params == m.num_params == sum(p.numel() for p in m.parameters())
    down = m.blocks["down"]
    assert down.shortcut[0].stride == (2, 2) and down.body[0][0].stride == (2, 2)
    assert down.body[1][0].groups == 16  # groups == channels: a depthwise conv
    assert m.blocks["same"].body[1][0].weight.shape == (32, 1, 3, 3)
    assert m(torch.randn(3, 1, 28, 28)).shape == (3, 10)


def test_counted_costs_match_the_built_network():
    """Random configs with strides, groups and pooling: the count agrees with torch's shapes."""
    rng = random.Random(1)
    checked = 0
    for _ in range(80):
        blocks = {}
        for i in range(rng.randint(1, 4)):
            kind = rng.choice(["conv", "residual"])
            b = {"type": kind, "width": rng.choice([4, 8]), "convs": rng.randint(1, 3),
                 "kernel": rng.choice([1, 3, 5]), "groups": rng.choice([1, 2, 4]),
                 "stride": rng.choice([1, 1, 2, 3]), "pool": rng.choice([1, 2]),
                 "repeat": rng.randint(0, 2)}
            if kind == "residual":
                b.update(scale=rng.choice([0.0, 1.0]), projection=rng.choice([True, False]))
            if rng.random() < 0.3:  # depthwise-separable convs: a depthwise kxk, then a 1x1
                b.update(separable=True, groups=1)
            blocks[f"s{i}"] = b
        cfg = {"norm": rng.choice(["batch", "none"]), "blocks": blocks,
               "classifier": {"type": rng.choice(["gap", "flatten"]), "hidden": rng.choice([0, 8]),
                              "norm": rng.choice(["none", "sample"])}}
        try:
            c = count_costs(cfg)
        except ConfigError:
            continue
        m = build_model(cfg)
        shape, macs, flash, shapes = measured(m)
        assert (macs, flash, c.params) == (c.macs, c.flash_bytes, m.num_params), cfg
        assert shapes == {k: v for k, v in m.shapes.items() if k != "classifier"}, cfg
        checked += 1
    assert checked > 30


def test_mcu_start_separable_by_hand():
    """conf/model/mcu_start.yaml: a strided first conv, then depthwise-separable stages."""
    s1 = dict(macs=14 * 14 * 8 * 9, flash=8 * 9 + 4 * 8, peak=784 + 8 * 14 * 14)
    # a 3x3 depthwise conv (8 -> 8, stride 2, 14 -> 7), then a 1x1 conv 8 -> 16
    s2 = dict(macs=49 * 8 * 9 + 49 * 16 * 8, flash=(72 + 32) + (128 + 64),
              peak=8 * 14 * 14 + 8 * 7 * 7)
    s3 = dict(macs=49 * 16 * 9 + 49 * 24 * 16, flash=(144 + 64) + (384 + 96),
              peak=16 * 49 + 24 * 49)
    s4 = dict(macs=16 * 24 * 9 + 16 * 32 * 24, flash=(216 + 96) + (768 + 128),
              peak=24 * 49 + 24 * 16)
    head = dict(macs=32 * 10, flash=320 + 40, peak=32 * 16 + 10)
    c = count_costs(preset("mcu_start"))
    parts = [s1, s2, s3, s4, head]
    assert c.macs == sum(p["macs"] for p in parts) == 65_848
    assert c.flash_bytes == sum(p["flash"] for p in parts) == 2_656
    assert c.peak_bytes == max(p["peak"] for p in parts) == 2_352
    m = build_model(preset("mcu_start"))
    dw, pw = m.blocks["s2"].body[0][0], m.blocks["s2"].body[1][0]
    assert (dw.groups, dw.stride, dw.kernel_size, pw.kernel_size) == (8, (2, 2), (3, 3), (1, 1))
    assert c.params == m.num_params == 2_498


def test_a_separable_stage_refuses_groups():
    cfg = preset("mcu_start")
    cfg["blocks"]["s3"]["groups"] = 4
    with pytest.raises(ConfigError, match=r"model\.blocks\.s3\.groups = 4: a separable stage"):
        count_costs(cfg)


def test_same_padded_strided_output_side_is_ceil():
    for side in range(1, 40):
        for stride in range(1, 9):
            for k in (1, 3, 5, 7):  # PyTorch: floor((side + 2 * (k // 2) - k) / stride) + 1
                assert conv_side(side, stride) == (side + 2 * (k // 2) - k) // stride + 1 \
                    == -(-side // stride)


def test_huge_networks_are_costed_at_once():
    cfg = preset("paper")
    cfg["blocks"]["transition"]["layers"][0]["out"] = 10 ** 12
    cfg["blocks"]["res2"]["layers"] = [{"out": None, "kernel": 3, "groups": 1, "stride": 1}]
    cfg["blocks"]["res2"]["repeat"] = 100_000
    start = time.perf_counter()
    c = count_costs(cfg)
    assert time.perf_counter() - start < 0.5  # milliseconds when the machine is idle
    assert c.macs > 7 * 7 * 10 ** 24 * 9 * 100_000 and c.peak_bytes == 3 * 49 * 10 ** 12
    assert "res2..res2_100000" in c.macs_by_block


@pytest.mark.parametrize("layer, value, words", [
    ({"out": 8, "stride": 0}, 0, ["model.blocks.a.layers.0.stride", "0", ">= 1"]),
    ({"out": 8, "stride": 1.5}, 1.5, ["model.blocks.a.layers.0.stride", "1.5", "whole"]),
    ({"out": 8, "stride": True}, True, ["model.blocks.a.layers.0.stride", "True"]),
    ({"out": 8, "stride": 29}, 29, ["model.blocks.a.layers.0.stride", "29", "28x28"]),
])
def test_bad_strides_name_the_layer(layer, value, words):
    cfg = {"blocks": {"a": {"type": "conv", "layers": [layer]}}, "classifier": {"type": "gap"}}
    with pytest.raises(ConfigError) as err:
        count_costs(cfg)
    assert len(str(err.value).splitlines()) == 1
    for w in words:
        assert w in str(err.value), (w, str(err.value))


def test_stride_errors_in_stages_and_residual_blocks():
    head = {"type": "gap"}
    # a stage's stride is its first conv's; the last block shrinks the image to 1x1 first
    cfg = {"blocks": {"a": {"type": "conv", "width": 4, "stride": 28},
                      "b": {"type": "conv", "width": 4, "stride": 2}}, "classifier": head}
    with pytest.raises(ConfigError, match=r"model.blocks.b.stride = 2: the image is only 1x1"):
        count_costs(cfg)
    cfg = {"blocks": {"a": {"type": "conv", "stride": 2, "layers": [{"out": 4}]}},
           "classifier": head}
    with pytest.raises(ConfigError, match=r"model.blocks.a.stride = 2: .*per layer"):
        count_costs(cfg)
    cfg = {"blocks": {"r": {"type": "residual", "scale": 1.0, "layers": [
        {"out": None, "stride": 2}]}}, "classifier": head}
    with pytest.raises(ConfigError, match=r"model.blocks.r.projection = False: .*28x28 to 14x14"):
        count_costs(cfg)
    cfg["blocks"]["r"]["projection"] = True  # same width, smaller image: a strided 1x1 shortcut
    assert count_costs(cfg).macs_by_block["r"] == 14 * 14 * 1 * 9 + 14 * 14 * 1 * 1
    cfg["blocks"]["r"]["scale"] = 0.0  # or no shortcut at all
    assert count_costs(cfg).macs_by_block["r"] == 14 * 14 * 9


def test_stride_one_is_the_old_network():
    """stride: 1 written out changes nothing: same parameters, same costs."""
    cfg = preset("paper")
    with_stride = preset("paper")
    for block in with_stride["blocks"].values():
        for layer in block["layers"]:
            layer["stride"] = 1
    assert count_costs(cfg) == count_costs(with_stride)


def test_the_kept_input_counts_when_a_body_tensor_has_its_size():
    # 4x5x5 input x (100 bytes); the body's first output also has 100 bytes, and x is still kept
    layers = [{"out": 4, "kernel": 1}, {"out": 16, "kernel": 1}, {"out": 1, "kernel": 1},
              {"out": None, "kernel": 1}]
    cfg = {"in_channels": 4, "image_size": 5, "classifier": {"type": "gap"},
           "blocks": {"r": {"type": "residual", "scale": 1.0, "layers": layers}}}
    assert count_costs(cfg).peak_bytes_by_block["r"] == max(
        100 + 100, 100 + 400 + 100, 400 + 25 + 100, 25 + 100 + 100, 100 * 3) == 600


@pytest.mark.parametrize("name", ["paper", "best25k", "stack5k", "mcu", "tiny1k"])
def test_the_training_memory_estimate_bounds_what_torch_keeps_for_backward(name):
    """forward_floats (the memory check's per-image figure) against an independent reference:
    the float tensors autograd really saves in a forward pass of the built network, counted
    through torch's saved-tensor hooks. The estimate must not be below them (a run it lets
    through could still run out), nor far above (a run that fits would be refused)."""
    from tinycnn.model import plan
    cfg = preset(name)
    net, batch, saved = build_model(cfg), 4, {}

    def pack(t):
        if t.is_floating_point():
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t
    weights = {p.untyped_storage().data_ptr() for p in net.parameters()}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        net(torch.randn(batch, 1, 28, 28))
    kept = sum(n for ptr, n in saved.items() if ptr not in weights) / 4 / batch
    assert kept <= plan(cfg).forward_floats() <= 2 * kept
