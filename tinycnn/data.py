"""A data set as in-memory tensors: read once from its files, batches cut by index later.

What a data set is (its files, format, image size, channels, classes, normalisation) is data:
conf/data/NAME.yaml. This module only knows two on-disk formats: idx (MNIST and its kin, raw or
gzipped) and CIFAR's python batches. torchvision is imported only to download missing files
(importing it takes ~1.3 s, which every run, sweep worker and shell-loop step would pay)."""

import gzip
import io
import logging
import math
import os
import pickle
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from tinycnn.checks import fail, flag, number, whole
from tinycnn.errors import TinycnnError

log = logging.getLogger("tinycnn")
FORMATS = ("idx", "cifar")
# s of silence from the download servers, all mirrors together, before giving up (torchvision
# tries its mirrors one after another: each gets its share); TINYCNN_DOWNLOAD_TIMEOUT overrides
DOWNLOAD_TIMEOUT = 30
TIMEOUT_ENV = "TINYCNN_DOWNLOAD_TIMEOUT"
# data settings that only say how a batch is normalised, not which images are loaded
NOT_LOADED = ("mean", "std")


@dataclass
class Data:
    """Images stay uint8 (N, C, H, W): a quarter of float32's memory; normalise() per batch."""
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: float | list
    std: float | list

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.mean, (int, float)):  # one channel: as it has always been computed
            return (x.float() / 255 - self.mean) / self.std  # uint8 -> float, ~N(0, 1)
        mean = torch.tensor(self.mean, device=x.device).view(-1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(-1, 1, 1)
        return (x.float() / 255 - mean) / std


def root_here(recorded_root) -> str | None:
    """TINYCNN_DATA when a recorded data root (from another machine, or an unresolved
    ${oc.env:...}) does not exist here and the variable is set; else None (keep the root)."""
    root = None if recorded_root is None else str(recorded_root)
    missing = root is None or "${" in root or not Path(root).expanduser().exists()
    return os.environ.get("TINYCNN_DATA") if missing else None


def _per_channel(where: str, value, channels: int, low=None) -> None:
    values = [value] if isinstance(value, (int, float, str, bool)) or value is None \
        else list(value)
    if len(values) not in (1, channels):
        fail(where, value, f"expected one number, or one per channel ({channels})")
    for v in values:
        number(where, v, low, above_low=low is not None)


def check_data_cfg(d) -> None:
    """Fail before loading anything if the data set's description or the split cannot work."""
    if d.get("format") not in FORMATS:
        fail("data.format", d.get("format"), f"expected one of {', '.join(FORMATS)}")
    n = whole("data.train_size", d.get("train_size"), 2)
    channels = whole("data.channels", d.get("channels"), 1)
    whole("data.image_size", d.get("image_size"), 1)
    whole("data.classes", d.get("classes"), 2)
    flag("data.mirror_ok", d.get("mirror_ok"))
    val = d.val_size
    whole("data.val_size", val, 0, f" (0: train on all {n:,} images, as the paper did)")
    if val >= n:
        fail("data.val_size", val, f"expected a whole number from 0 to {n - 1:,}")
    for key in ("limit", "test_limit"):
        if d.get(key) is not None:
            whole(f"data.{key}", d.get(key), 1, " (images), or null for all of them")
    whole("data.split_seed", d.get("split_seed"), 0,
          " (it fixes which training images are held out for validation)")
    _per_channel("data.mean", d.mean, channels)
    _per_channel("data.std", d.std, channels, low=0)


def train_size(d) -> int:
    """How many images the training split holds: what is left after validation, cut to limit."""
    n = d.train_size - d.val_size
    return min(n, d.limit) if d.get("limit") else n


def data_bytes(d) -> int:
    """Memory the data set takes once loaded, at most: the training images as read and as
    split, and as many test images again (uint8 pixels, int64 labels)."""
    return 3 * d.train_size * (d.channels * d.image_size ** 2 + 8)


# --- finding the files --------------------------------------------------------------------------

def _places(d) -> list[Path]:
    """Where the files are looked for: root/FOLDER/raw (torchvision's layout for idx sets),
    root/FOLDER (CIFAR's), then a system-wide copy (Debian's dataset-fashion-mnist)."""
    root = Path(str(d.root)).expanduser().resolve()
    places = [root / d.folder / "raw", root / d.folder]
    if d.get("system_dir"):
        places.append(Path(str(d.system_dir)))
    return places


def find_files(d) -> list[Path] | None:
    """The data set's files (NAME or NAME.gz), all from one place; None when no place has any
    (a download may bring them); else one error naming what is missing where."""
    for place in _places(d):
        found = [_one(place, name) for name in d.files]
        if all(found):
            return found
        if any(found):
            missing = [n for n, f in zip(d.files, found) if f is None]
            raise TinycnnError(f"{d.name} in {place} is incomplete: {', '.join(missing)} missing "
                               "(or its .gz). Put the original files there, or remove the "
                               "folder's contents to have torchvision download them.")
    return None


def _one(place: Path, name: str) -> Path | None:
    for path in (place / name, place / f"{name}.gz"):
        if path.is_file():
            return path
    return None


def _bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise TinycnnError(f"data file {path} cannot be read ({exc}); replace it with the "
                           "original file.") from None


def download_timeout() -> float:
    """DOWNLOAD_TIMEOUT, or TINYCNN_DOWNLOAD_TIMEOUT (seconds) when set."""
    given = os.environ.get(TIMEOUT_ENV, "").strip()
    if not given:
        return DOWNLOAD_TIMEOUT
    try:
        seconds = float(given)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise TinycnnError(f"{TIMEOUT_ENV} = {given!r}: expected a number of seconds > 0 (the "
                           f"download's time limit; unset: {DOWNLOAD_TIMEOUT} s)")
    return seconds


def _download(d) -> None:
    """The files into root through torchvision (its mirrors, checksums, unpacking), with one
    line before it starts and an error once the servers have been silent for the time limit."""
    import socket

    import torchvision.datasets as tv
    root = Path(str(d.root)).expanduser().resolve()
    limit = download_timeout()
    kind = getattr(tv, str(d.download), None)
    if not isinstance(kind, type):
        fail("data.download", d.download, "expected the name of a torchvision.datasets class "
             "that downloads this data set (MNIST, FashionMNIST, KMNIST, EMNIST, CIFAR10)")
    # torchvision tries each mirror in turn (a class attribute, as CIFAR's single URL has none):
    # each attempt gets its share of the limit, so silence everywhere ends within the limit.
    mirrors = len(getattr(kind, "mirrors", None) or [None])
    log.info("%s: not in %s; downloading it with torchvision into %s (an error after %g s "
             "without an answer)", d.name, " or ".join(map(str, _places(d))), root / d.folder,
             limit)
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(limit / mirrors)  # per blocking socket call: connect, each read
    try:
        extra = {"split": d.download_split} if d.get("download_split") else {}
        for train in (True, False):
            kind(str(root), train=train, download=True, **extra)
    except Exception as exc:  # torchvision raises RuntimeError, URLError, TimeoutError offline
        why = " ".join(str(exc).split())[:300]
        raise TinycnnError(
            f"{d.name} is not in {' or '.join(map(str, _places(d)))} and could not be downloaded "
            f"({why}). Put its files {', '.join(d.files)} in {root / d.folder / 'raw'}, or point "
            "data.root (or the TINYCNN_DATA environment variable) at the folder that holds "
            f"{d.folder}/.") from None
    finally:
        socket.setdefaulttimeout(old)


# --- the two formats ----------------------------------------------------------------------------

def read_idx(path: Path, images: bool, what: str = "data") -> torch.Tensor:
    """One idx file, raw or gzipped, checked against its header: images (N, 1, H, W) uint8 or
    labels (N,) int64. Header: magic (0x803 images, 0x801 labels), count, then rows and
    columns for images; then one byte per pixel or label."""
    raw = _bytes(path)
    magic, dims = (0x803, 3) if images else (0x801, 1)
    header = 4 + 4 * dims
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)) \
        if len(raw) >= header else ()
    want = header + math.prod(shape) if shape else header
    if raw[:4] != magic.to_bytes(4, "big") or len(raw) != want:
        raise TinycnnError(f"{what} file {path} is damaged: {len(raw):,} bytes (unpacked) with "
                           f"header {raw[:header].hex() or '(none)'}; expected idx magic "
                           f"{magic.to_bytes(4, 'big').hex()} and {want:,} bytes. Replace it "
                           "with the original file.")
    values = torch.frombuffer(bytearray(raw), dtype=torch.uint8, offset=header).view(shape)
    return values.unsqueeze(1).clone() if images else values.long()


class _Arrays(pickle.Unpickler):
    """CIFAR's batches are pickled dicts of numpy arrays: nothing else may be unpickled."""
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not part of a CIFAR batch")
        return super().find_class(module, name)


def read_cifar(path: Path, size: int, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One CIFAR python batch: images (N, C, H, W) uint8 and labels (N,) int64."""
    try:
        batch = _Arrays(io.BytesIO(_bytes(path)), encoding="bytes").load()
        data, labels = batch[b"data"], batch.get(b"labels", batch.get(b"fine_labels"))
        x = torch.as_tensor(data, dtype=torch.uint8).reshape(-1, channels, size, size)
        y = torch.as_tensor(list(labels), dtype=torch.long)
    except TinycnnError:
        raise
    except Exception as exc:
        raise TinycnnError(f"data file {path} is not a CIFAR batch ({type(exc).__name__}: "
                           f"{exc}); replace it with the original file.") from None
    if len(x) != len(y):
        raise TinycnnError(f"data file {path} is damaged: {len(x)} images, {len(y)} labels.")
    return x, y


def _read(d, files: list[Path]) -> tuple:
    """(train images, train labels, test images, test labels) as the format stores them."""
    if d.format == "idx":
        tx, ty, sx, sy = (read_idx(f, i % 2 == 0, d.name) for i, f in enumerate(files))
    else:  # cifar: the training batches, then the test batch
        parts = [read_cifar(f, d.image_size, d.channels) for f in files]
        tx, ty = torch.cat([p[0] for p in parts[:-1]]), torch.cat([p[1] for p in parts[:-1]])
        sx, sy = parts[-1]
    for x, y, split in ((tx, ty, "training"), (sx, sy, "test")):
        if tuple(x.shape[1:]) != (d.channels, d.image_size, d.image_size) or len(x) != len(y):
            raise TinycnnError(f"{d.name}'s {split} files hold {len(x):,} images of shape "
                               f"{tuple(x.shape[1:])} and {len(y):,} labels; data.{d.name} says "
                               f"{d.channels}x{d.image_size}x{d.image_size}.")
    if len(tx) != d.train_size:
        raise TinycnnError(f"{d.name}'s training files hold {len(tx):,} images; "
                           f"data.train_size says {d.train_size:,}.")
    if int(ty.max()) >= d.classes or int(sy.max()) >= d.classes:
        raise TinycnnError(f"{d.name}'s labels go up to {int(max(ty.max(), sy.max()))}; "
                           f"data.classes says {d.classes}.")
    return tx, ty, sx, sy


def load_data(d, device: torch.device | str = "cpu") -> Data:
    """Train/val/test tensors on `device`. The validation images are held out of the training
    images by a fixed split seed, so every run and trial is selected on the same images; the
    test images are only ever used for reporting."""
    check_data_cfg(d)
    files = find_files(d)
    if files is None:
        _download(d)
        files = find_files(d)
        if files is None:
            raise TinycnnError(f"{d.name}: torchvision's download left no files in "
                               f"{_places(d)[0]}.")
    x, y, tx, ty = _read(d, files)
    g = torch.Generator().manual_seed(int(d.split_seed))
    perm = torch.randperm(len(x), generator=g)
    val_idx, train_idx = perm[:d.val_size], perm[d.val_size:].sort().values
    if d.get("limit"):
        train_idx = train_idx[:d.limit]
    if d.get("test_limit"):
        tx, ty = tx[:d.test_limit], ty[:d.test_limit]
    to = lambda t: t.contiguous().to(device)  # noqa: E731
    return Data(to(x[train_idx]), to(y[train_idx]), to(x[val_idx]), to(y[val_idx]), to(tx), to(ty),
                _stat(d.mean), _stat(d.std))


def _stat(v):
    """A normalisation constant: a float, or a list of one per channel."""
    if isinstance(v, (int, float)):
        return float(v)
    values = [float(x) for x in v]
    return values[0] if len(values) == 1 else values


# This process's data: (key, Data). A sweep worker trains many trials on the same images, so it
# reads and splits them once, not once per trial. One entry: the trials of a sweep share their
# data settings, and a new key replaces the old tensors.
_loaded: dict = {}
loads = 0  # how many times this process read a data set from disk (tests count them)


def _key(d, device) -> tuple:
    from omegaconf import OmegaConf
    items = OmegaConf.to_container(d, resolve=True) if not isinstance(d, dict) else dict(d)
    items["root"] = str(Path(str(items["root"])).expanduser().resolve())
    return tuple(sorted((k, repr(v)) for k, v in items.items() if k not in NOT_LOADED)) + (
        ("device", str(torch.device(device))),)


def worker_data(d, device: torch.device | str = "cpu") -> tuple[Data, float | None]:
    """load_data, once per process: the same tensors for every later call whose data settings
    (all but mean and std) and device are the same. Returns (data, seconds spent loading, or
    None when the tensors were reused). Callers must not change the tensors in place."""
    global loads
    check_data_cfg(d)
    key = _key(d, device)
    if key in _loaded:
        data, seconds = _loaded[key], None
    else:
        _loaded.clear()  # free the old tensors before loading new ones
        start = time.perf_counter()
        data = load_data(d, device)
        seconds = time.perf_counter() - start
        _loaded[key] = data
        loads += 1
    return replace(data, mean=_stat(d["mean"]), std=_stat(d["std"])), seconds
