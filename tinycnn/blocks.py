"""The building blocks a model config is made of. Each is a small nn.Module."""

from torch import nn

ACTIVATIONS = {
    "leaky_relu": lambda slope: nn.LeakyReLU(slope),
    "relu": lambda slope: nn.ReLU(),
    "gelu": lambda slope: nn.GELU(),
    "silu": lambda slope: nn.SiLU(),
    "elu": lambda slope: nn.ELU(),
    "tanh": lambda slope: nn.Tanh(),
}


def norm2d(kind: str, channels: int, running_stats: bool) -> nn.Module:
    if kind == "batch":
        # running_stats=False (the paper's setting) normalises with batch statistics in eval too.
        return nn.BatchNorm2d(channels, track_running_stats=running_stats)
    return nn.Identity()


class SampleNorm(nn.LayerNorm):
    """The paper's classifier norm: "InstanceNorm1d(32)" on a (N, 32) tensor.

    Current PyTorch reads a 2-D input to InstanceNorm1d as one unbatched (C=N, L=32) sample and
    raises, because its 32-wide affine does not match C=N. The paper's 64 parameters and its intent
    ("normalise features without relying on batch statistics") are met by normalising each sample's
    32 features by their own mean and variance with a 32-wide affine: that is LayerNorm(32).
    """


class ConvLayer(nn.Sequential):
    """Same-padded conv -> norm -> activation (activation omitted when act is None).
    groups == c_in == c_out is a depthwise conv; follow it with a 1x1 for depthwise-separable."""

    def __init__(self, c_in, c_out, kernel, groups, norm, running_stats, act, stride=1):
        # (N, c_in, H, W) -> (N, c_out, ceil(H / stride), ceil(W / stride))
        layers = [nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, groups=groups),
                  norm2d(norm, c_out, running_stats)]
        if act is not None:
            layers.append(act)
        super().__init__(*layers)


class ConvBlock(nn.Module):
    """A stack of conv layers, then optional max-pooling."""

    def __init__(self, layers: list, pool: int):
        super().__init__()
        self.body = nn.Sequential(*layers)
        self.pool = nn.MaxPool2d(pool) if pool > 1 else nn.Identity()

    def forward(self, x):
        return self.pool(self.body(x))


class ResidualBlock(nn.Module):
    """body(x) + scale * shortcut(x): the paper's scaled residual connection.

    The last body layer has no activation; out_act applies one after the addition.
    scale 0 drops the shortcut entirely (a plain stack).
    """

    def __init__(self, layers: list, scale: float, shortcut: nn.Module, out_act, pool: int):
        super().__init__()
        self.body = nn.Sequential(*layers)
        self.scale = scale
        self.shortcut = shortcut
        self.out_act = out_act if out_act is not None else nn.Identity()
        self.pool = nn.MaxPool2d(pool) if pool > 1 else nn.Identity()

    def forward(self, x):
        y = self.body(x)
        if self.scale:
            y = y + self.scale * self.shortcut(x)
        return self.pool(self.out_act(y))


class Classifier(nn.Module):
    """flatten: Flatten -> Linear(C*H*W -> hidden) -> norm -> act -> Linear(hidden -> classes).
    gap: global average pool over H, W instead of Flatten (far fewer parameters).
    hidden 0 goes straight to the classes."""

    def __init__(self, kind, c_in, size, hidden, norm, act, num_classes):
        super().__init__()
        if kind == "gap":
            self.reduce = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())  # (N,C,H,W) -> (N,C)
            features = c_in
        else:
            self.reduce = nn.Flatten()  # (N,C,H,W) -> (N, C*H*W)
            features = c_in * size * size
        layers = []
        if hidden:
            layers.append(nn.Linear(features, hidden))
            if norm == "sample":
                layers.append(SampleNorm(hidden))
            elif norm == "batch":
                layers.append(nn.BatchNorm1d(hidden))
            layers.append(act)
            features = hidden
        layers.append(nn.Linear(features, num_classes))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x):
        return self.mlp(self.reduce(x))


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
