"""MNIST as in-memory tensors: read once from the four idx files, batches cut by index later.

torchvision is imported only to download the files when they are absent (importing it takes
~1.3 s, which every run, sweep worker and shell-loop step would otherwise pay)."""

import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from tinycnn.checks import fail, number, whole
from tinycnn.errors import TinycnnError

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
TRAIN_SIZE = 60_000
# The four idx files: (magic number, count) -> size in bytes. Header: magic (4 bytes, 0x803 for
# images, 0x801 for labels), count (4), and for images rows and columns (4 + 4); then one byte
# per pixel or label.
IDX = {"train-images-idx3-ubyte": (0x803, 60_000), "train-labels-idx1-ubyte": (0x801, 60_000),
       "t10k-images-idx3-ubyte": (0x803, 10_000), "t10k-labels-idx1-ubyte": (0x801, 10_000)}
DOWNLOAD_TIMEOUT = 30  # s without an answer from the download server before giving up
# data settings that only say how a batch is normalised, not which images are loaded
NOT_LOADED = ("mean", "std")


@dataclass
class Data:
    """Images stay uint8 (N, 1, 28, 28): a quarter of float32's memory; normalise() per batch."""
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: float
    std: float

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() / 255 - self.mean) / self.std  # uint8 -> float, ~N(0, 1)


def root_here(recorded_root) -> str | None:
    """TINYCNN_DATA when a recorded data root (from another machine, or an unresolved
    ${oc.env:...}) does not exist here and the variable is set; else None (keep the root)."""
    root = None if recorded_root is None else str(recorded_root)
    missing = root is None or "${" in root or not Path(root).expanduser().exists()
    return os.environ.get("TINYCNN_DATA") if missing else None


def check_data_cfg(data_cfg) -> None:
    """Fail before loading anything if the split cannot work."""
    val = data_cfg.val_size
    whole("data.val_size", val, 0, f" (0: train on all {TRAIN_SIZE:,} images, as the paper did)")
    if val >= TRAIN_SIZE:
        fail("data.val_size", val, f"expected a whole number from 0 to {TRAIN_SIZE - 1:,}")
    for key in ("limit", "test_limit"):
        if data_cfg.get(key) is not None:
            whole(f"data.{key}", data_cfg.get(key), 1, " (images), or null for all of them")
    whole("data.split_seed", data_cfg.get("split_seed"), 0,
          " (it fixes which training images are held out for validation)")
    number("data.mean", data_cfg.mean)
    number("data.std", data_cfg.std, 0, above_low=True)


def train_size(data_cfg) -> int:
    """How many images the training split holds: what is left of the 60,000 after validation,
    cut to data.limit."""
    n = TRAIN_SIZE - data_cfg.val_size
    return min(n, data_cfg.limit) if data_cfg.get("limit") else n


def _idx_layout(name: str) -> tuple[int, tuple]:
    """(header bytes, shape of the values) of one of the four idx files."""
    magic, count = IDX[name]
    return (16, (count, 28, 28)) if magic == 0x803 else (8, (count,))


def _idx_size(name: str) -> int:
    header, shape = _idx_layout(name)
    return header + math.prod(shape)


def check_mnist_files(root: Path) -> bool:
    """True when the four files are in root/MNIST/raw and whole (idx header and size checked);
    False when none is there (torchvision may download them); else one error naming the file."""
    raw = root / "MNIST" / "raw"
    present = [name for name in FILES if (raw / name).is_file()]
    if not present:
        return False
    missing = [name for name in FILES if name not in present]
    if missing:
        raise TinycnnError(f"MNIST in {raw} is incomplete: {', '.join(missing)} missing (found "
                           f"{', '.join(present)}). Put the four original files there, or "
                           "remove the folder's contents to have torchvision download them.")
    for name in FILES:
        magic, count = IDX[name]
        path, want = raw / name, _idx_size(name)
        with open(path, "rb") as f:
            head = f.read(8)
        size = path.stat().st_size
        if head[:4] != magic.to_bytes(4, "big") or head[4:8] != count.to_bytes(4, "big") \
                or size != want:
            raise TinycnnError(f"MNIST file {path} is damaged: {size:,} bytes with header "
                               f"{head.hex() or '(none)'}; expected {want:,} bytes starting "
                               f"{magic.to_bytes(4, 'big').hex()}{count.to_bytes(4, 'big').hex()} "
                               "(idx format, magic and count). Replace it with the original file.")
    return True


def _download(root: Path) -> None:
    """The four files into root/MNIST/raw through torchvision (its mirrors, checksums, gunzip)."""
    import socket

    from torchvision.datasets import MNIST
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT)  # a server that never answers: an error, not a hang
    try:
        for train in (True, False):
            MNIST(str(root), train=train, download=True)
    except Exception as exc:  # torchvision raises RuntimeError, URLError etc. offline
        why = " ".join(str(exc).split())[:300]
        raise TinycnnError(
            f"MNIST is not in {root / 'MNIST' / 'raw'} and could not be downloaded ({why}). "
            f"Put the four files {', '.join(FILES)} there (torchvision's layout), or point "
            "data.root (or the TINYCNN_DATA environment variable) at the folder that holds "
            "MNIST/raw/.") from None
    finally:
        socket.setdefaulttimeout(old)


def _read_idx(raw: Path, name: str) -> torch.Tensor:
    """One idx file (checked by check_mnist_files) as uint8: images (N, 28, 28), labels (N,).
    The same tensors as torchvision's MNIST reader, in their own memory (not a view into the
    file's bytes past the header)."""
    header, shape = _idx_layout(name)
    values = torch.frombuffer(bytearray((raw / name).read_bytes()), dtype=torch.uint8,
                              offset=header)
    return values.view(shape).clone()


def load_mnist(data_cfg, device: torch.device | str = "cpu") -> Data:
    """Train/val/test tensors on `device`. The validation images are held out of the 60,000
    training images by a fixed split seed, so every run and trial is selected on the same images;
    the 10,000 test images are only ever used for reporting."""
    check_data_cfg(data_cfg)
    root = Path(str(data_cfg.root)).expanduser().resolve()
    if not check_mnist_files(root):
        _download(root)
        check_mnist_files(root)
    raw = root / "MNIST" / "raw"
    x, y = _read_idx(raw, FILES[0]).unsqueeze(1), _read_idx(raw, FILES[1]).long()
    g = torch.Generator().manual_seed(int(data_cfg.split_seed))
    perm = torch.randperm(len(x), generator=g)
    val_idx, train_idx = perm[:data_cfg.val_size], perm[data_cfg.val_size:].sort().values
    if data_cfg.get("limit"):
        train_idx = train_idx[:data_cfg.limit]
    tx, ty = _read_idx(raw, FILES[2]).unsqueeze(1), _read_idx(raw, FILES[3]).long()
    if data_cfg.get("test_limit"):
        tx, ty = tx[:data_cfg.test_limit], ty[:data_cfg.test_limit]
    to = lambda t: t.contiguous().to(device)  # noqa: E731
    return Data(to(x[train_idx]), to(y[train_idx]), to(x[val_idx]), to(y[val_idx]), to(tx), to(ty),
                float(data_cfg.mean), float(data_cfg.std))


# This process's data: (key, Data). A sweep worker trains many trials on the same images, so it
# reads and splits them once (~0.1 s), not once per trial. One entry: the trials of a sweep
# share their data settings, and a new key replaces the old tensors.
_loaded: dict = {}
loads = 0  # how many times this process read MNIST from disk (tests count them)


def _key(data_cfg, device) -> tuple:
    from omegaconf import OmegaConf
    items = OmegaConf.to_container(data_cfg, resolve=True) if not isinstance(data_cfg, dict) \
        else dict(data_cfg)
    items["root"] = str(Path(str(items["root"])).expanduser().resolve())
    return tuple(sorted((k, repr(v)) for k, v in items.items() if k not in NOT_LOADED)) + (
        ("device", str(torch.device(device))),)


def worker_data(data_cfg, device: torch.device | str = "cpu") -> tuple[Data, float | None]:
    """load_mnist, once per process: the same tensors for every later call whose data settings
    (all but mean and std) and device are the same. Returns (data, seconds spent loading, or
    None when the tensors were reused). Callers must not change the tensors in place."""
    global loads
    check_data_cfg(data_cfg)
    key = _key(data_cfg, device)
    if key in _loaded:
        data, seconds = _loaded[key], None
    else:
        _loaded.clear()  # free the old tensors before loading new ones
        start = time.perf_counter()
        data = load_mnist(data_cfg, device)
        seconds = time.perf_counter() - start
        _loaded[key] = data
        loads += 1
    return replace(data, mean=float(data_cfg["mean"]), std=float(data_cfg["std"])), seconds
