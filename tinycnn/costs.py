"""What a planned network costs to run, counted from the plan (tinycnn.model.plan) alone: nothing
is built or allocated, so a 10^12-channel proposal is costed as fast as it is counted.

The convention (one image, the network as an int8 microcontroller would run it):

- macs: multiply-accumulates per image of every convolution (1x1 projection shortcuts included)
  and every linear layer: out_h * out_w * c_out * (c_in / groups) * k * k for a convolution
  (out_h = ceil(in_h / stride), the convs being same-padded) and in * out for a linear layer.
  Biases, norms, activations, pooling, the residual scale and add, and global average pooling
  are not counted.
- peak_bytes: peak activation memory at int8 (1 byte per element), batch 1, in the order the
  model runs (a residual block: its body's convs, then the projection shortcut, then the add).
  The operations are a convolution (its norm and activation fused), a max-pooling, a residual
  add (its scale and the activation after it fused) and the classifier (flatten or global
  average pool and its linear layers as one operation: the last feature map in, the logits
  out). While an operation runs, its input, its output and every tensor kept alive for a later
  add (a residual block's input x until its add; the body's output while the projection
  shortcut runs) are in memory, each distinct tensor counted once; peak_bytes is the largest
  such sum over all operations. The input image counts (it is the first operation's input).
  A block's activation bytes (the parameter table's "act bytes") are the largest sum over its
  own operations.
- flash_bytes: int8 weight bytes: 1 byte per convolution or linear weight plus 4 bytes (an int32
  bias) per output channel of every convolution and linear layer, norms folded into the weights
  and biases before them (so a norm costs nothing).

Training memory (`training_bytes`, the host's or the GPU's, not a device's) is a rough upper
estimate used only to refuse a run that cannot fit, before anything is allocated: float32
values, per image, of every map a training step keeps for backward (each conv's output, its
norm's and its activation's: three maps whatever the norm and activation; a projection
shortcut's conv and norm; a residual add's scaled input and sum; a pooled map; the classifier's
features, hidden layer and logits; the normalised input), doubled for their gradients, times
the batch; plus the same maps once for an evaluation batch (no gradients); plus the weights
five times (weights, gradients, Adam's two moments, an EMA) and the data in memory.
"""

from dataclasses import asdict, dataclass
from typing import Dict, List

BIAS_BYTES = 4  # an int32 bias per output channel, as int8 kernels accumulate in int32


@dataclass(frozen=True)
class Cost:
    """One block's (or the classifier's) share: MACs per image, its largest activation working
    set in bytes, its weight bytes."""
    macs: int
    peak_bytes: int
    flash_bytes: int


def _conv(c_in: int, c_out: int, kernel: int, groups: int, side: int) -> Cost:
    """A convolution producing a c_out x side x side map (peak_bytes: its output only)."""
    weights = c_out * (c_in // groups) * kernel * kernel
    return Cost(side * side * weights, c_out * side * side, weights + BIAS_BYTES * c_out)


def block_cost(b) -> Cost:
    """The cost of one copy of a planned block (tinycnn.model.BlockPlan)."""
    x = b.c_in * b.size_in ** 2      # the block's input, kept for the add when there is one
    keep = b.kind == "residual" and b.scale != 0
    macs = flash = 0
    peaks: List[int] = []
    cur = x
    for i, layer in enumerate(b.layers):
        c = _conv(layer.c_in, layer.c_out, layer.kernel, layer.groups, layer.size)
        macs, flash = macs + c.macs, flash + c.flash_bytes
        # x is counted once: it is the first conv's input as well as the tensor kept for the add
        peaks.append(cur + c.peak_bytes + (x if keep and i > 0 else 0))
        cur = c.peak_bytes
    side = b.layers[-1].size           # the body's output side (before pooling)
    if keep:
        y = cur                          # the body's output, kept while the shortcut runs
        if b.projection:
            p = _conv(b.c_in, b.c_out, 1, 1, side)
            macs, flash = macs + p.macs, flash + p.flash_bytes
            peaks.append(x + p.peak_bytes + y)
            shortcut = p.peak_bytes
        else:
            shortcut = x
        peaks.append(y + shortcut + y)   # the add: two inputs and the sum
    if b.pool > 1:
        peaks.append(cur + b.c_out * b.size ** 2)
    return Cost(macs, max(peaks), flash)


def classifier_cost(channels: int, side: int, features: int, hidden: int, classes: int) -> Cost:
    """The head as one operation: the last feature map in, the logits out."""
    linears = [(features, hidden), (hidden, classes)] if hidden else [(features, classes)]
    macs = sum(i * o for i, o in linears)
    flash = sum(i * o + BIAS_BYTES * o for i, o in linears)
    return Cost(macs, channels * side * side + classes, flash)


@dataclass
class Costs:
    """A network's size and cost, in total and per block (model order, the classifier last;
    the blocks are named as in the parameter table).

    params: trainable parameters; macs: multiply-accumulates per image; peak_bytes: peak int8
    activation memory at batch 1, in bytes (per block: the block's own peak; the total is the
    largest, not a sum); flash_bytes: int8 weights plus int32 biases, in bytes."""
    params: int
    macs: int
    peak_bytes: int
    flash_bytes: int
    params_by_block: Dict[str, int]
    macs_by_block: Dict[str, int]
    peak_bytes_by_block: Dict[str, int]
    flash_bytes_by_block: Dict[str, int]

    def totals(self) -> Dict[str, int]:
        """{params, macs, peak_bytes, flash_bytes}: the four figures a run record keeps."""
        return {k: v for k, v in asdict(self).items() if not k.endswith("_by_block")}


def costs_of(rows) -> Costs:
    """Costs from the plan's rows (tinycnn.model.Row: name, shape, params, macs, peak_bytes,
    flash_bytes; repeated copies already multiplied out)."""
    by = {f: {r.name: getattr(r, f) for r in rows}
          for f in ("params", "macs", "peak_bytes", "flash_bytes")}
    return Costs(sum(by["params"].values()), sum(by["macs"].values()),
                 max(by["peak_bytes"].values()), sum(by["flash_bytes"].values()),
                 by["params"], by["macs"], by["peak_bytes"], by["flash_bytes"])


def conv_side(side: int, stride: int) -> int:
    """A same-padded (padding = kernel // 2, odd kernel) conv's output side: ceil(side / stride),
    which is PyTorch's floor((side + 2 * (k // 2) - k) / stride) + 1; never 0."""
    return -(-side // stride)


FLOAT_BYTES = 4


def forward_floats(b) -> int:
    """Float32 values one copy of a planned block produces per image in training (see the
    module's docstring: three maps per conv, the shortcut's two, the add's two, the pool's)."""
    side = b.layers[-1].size
    n = sum(3 * layer.c_out * layer.size ** 2 for layer in b.layers)
    if b.kind == "residual" and b.scale != 0:
        n += (4 if b.projection else 2) * b.c_out * side ** 2
    if b.pool > 1:
        n += b.c_out * b.size ** 2
    return n


def training_bytes(image_floats: int, params: int, batch: int, eval_batch: int,
                   data_bytes: int) -> dict:
    """The estimate above, in bytes, by part: {train, eval, fixed}; image_floats is
    forward_floats summed over the network for one image (tinycnn.model.Plan.forward_floats)."""
    return {"train": 2 * FLOAT_BYTES * image_floats * batch,
            "eval": FLOAT_BYTES * image_floats * eval_batch,
            "fixed": 5 * FLOAT_BYTES * params + data_bytes}
