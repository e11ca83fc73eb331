"""The data group: each format read from files written here in its exact on-disk layout, the real
Fashion-MNIST from Debian's package, the model following the data's shape, augmentation on known
tensors, and multi-epoch schedules."""

import gzip
import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SMALL, compose_cfg, run_py
from tinycnn.augment import erase, flip, translate
from tinycnn.data import load_data
from tinycnn.errors import ConfigError, TinycnnError
from tinycnn.model import build_model, count_costs
from tinycnn.recipe import lr_at
from tinycnn.runner import run


def idx_bytes(values: np.ndarray) -> bytes:
    """The idx format: magic (0x803 images, 0x801 labels), the sizes, then the bytes."""
    magic = 0x803 if values.ndim == 3 else 0x801
    head = magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in values.shape)
    return head + values.astype(np.uint8).tobytes()


def write_idx_set(folder: Path, n_train: int, n_test: int, gz: bool, classes: int = 10):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    parts = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
             "train-labels-idx1-ubyte": np.arange(n_train) % classes,
             "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
             "t10k-labels-idx1-ubyte": np.arange(n_test) % classes}
    for name, values in parts.items():
        raw = idx_bytes(values)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)
    return parts


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzipped"])
def test_idx_files_raw_or_gzipped_are_read_exactly(tmp_path, gz):
    parts = write_idx_set(tmp_path / "KMNIST" / "raw", 120, 30, gz)
    d = compose_cfg("data=kmnist", f"data.root={tmp_path}", "data.train_size=120",
                    "data.val_size=20", small=False).data
    data = load_data(d)
    assert data.train_x.shape == (100, 1, 28, 28) and data.val_x.shape == (20, 1, 28, 28)
    assert data.test_x.shape == (30, 1, 28, 28) and data.train_x.dtype == torch.uint8
    assert torch.equal(data.test_x[:, 0], torch.as_tensor(parts["t10k-images-idx3-ubyte"],
                                                          dtype=torch.uint8))
    both = torch.cat([data.train_y, data.val_y]).sort().values
    assert torch.equal(both, torch.as_tensor(np.sort(parts["train-labels-idx1-ubyte"])))


def write_cifar(folder: Path, per_batch: int, n_test: int):
    """CIFAR-10's python batches: pickled dicts, data (N, 3072) uint8 rows R, G, B planes."""
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    out = {}
    for name in names:
        n = n_test if name == "test_batch" else per_batch
        batch = {b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8),
                 b"labels": [int(v) for v in rng.integers(0, 10, n)], b"batch_label": b"x"}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        out[name] = batch
    return out


def test_cifar_batches_are_read_and_the_model_follows_the_data(tmp_path):
    batches = write_cifar(tmp_path / "cifar-10-batches-py", 20, 10)
    cfg = compose_cfg("data=cifar10", f"data.root={tmp_path}", "data.train_size=100",
                      "data.val_size=10", small=False)
    data = load_data(cfg.data)
    assert data.train_x.shape == (90, 3, 32, 32) and data.test_x.shape == (10, 3, 32, 32)
    first = torch.as_tensor(batches["test_batch"][b"data"][0]).view(3, 32, 32)
    assert torch.equal(data.test_x[0], first)  # channel planes as CIFAR stores them
    assert data.test_y.tolist() == batches["test_batch"][b"labels"]
    # the paper's network on 3x32x32 images: its shape comes from the data, and counts right
    assert (cfg.model.in_channels, cfg.model.image_size, cfg.model.num_classes) == (3, 32, 10)
    model = build_model(cfg.model)
    costs = count_costs(cfg.model)
    assert model.num_params == costs.params
    # against MNIST: the first 5x5 conv sees 3 channels, not 1 (2 x 8 x 5 x 5 more weights),
    # and the classifier's first linear layer sees 12x8x8 features, not 12x7x7 (x 32 outputs)
    mnist = count_costs(compose_cfg(small=False).model)
    assert costs.params - mnist.params == 2 * 8 * 5 * 5 + (12 * 8 * 8 - 12 * 7 * 7) * 32
    logits = model(data.normalise(data.test_x[:4]))
    assert logits.shape == (4, 10)
    cfg.train.epochs = 1
    m = run(cfg, tmp_path / "run")  # trains end to end on the colour images
    assert m["status"] == "complete" and m["data"] == "cifar10"


def test_a_foreign_pickle_is_refused(tmp_path):
    write_cifar(tmp_path / "cifar-10-batches-py", 20, 10)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(os.getcwd))
    d = compose_cfg("data=cifar10", f"data.root={tmp_path}", "data.train_size=100",
                    "data.val_size=10", small=False).data
    with pytest.raises(TinycnnError, match=r"test_batch is not a CIFAR batch \(UnpicklingError: "
                                           r"posix\.getcwd is not part of a CIFAR batch\)"):
        load_data(d)


def test_missing_and_damaged_files_say_which_where_and_how(tmp_path):
    write_idx_set(tmp_path / "KMNIST" / "raw", 120, 30, gz=True)
    d = compose_cfg("data=kmnist", f"data.root={tmp_path}", "data.train_size=120",
                    "data.val_size=20", small=False).data
    (tmp_path / "KMNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(TinycnnError, match=r"^kmnist in .*KMNIST/raw is incomplete: "
                                           r"t10k-labels-idx1-ubyte missing \(or its \.gz\)\. "
                                           "Put the original files there"):
        load_data(d)
    (tmp_path / "KMNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b not gzip")
    with pytest.raises(TinycnnError, match=r"t10k-labels-idx1-ubyte\.gz cannot be read"):
        load_data(d)
    d.train_size = 200
    (tmp_path / "KMNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(np.arange(30) % 10)))
    with pytest.raises(TinycnnError, match="training files hold 120 images; data.train_size "
                                           "says 200"):
        load_data(d)


FASHION = Path("/usr/share/datasets/fashion-mnist")


def test_the_real_fashion_mnist_from_debians_package(tmp_path):
    if not FASHION.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{FASHION} is missing: CI installs dataset-fashion-mnist")
        pytest.skip("apt-get install dataset-fashion-mnist")
    d = compose_cfg("data=fashion_mnist", f"data.root={tmp_path}", small=False).data
    data = load_data(d)  # nothing under the root: the system copy, gzipped
    assert data.train_x.shape == (55_000, 1, 28, 28) and data.test_x.shape == (10_000, 1, 28, 28)
    assert data.test_y.bincount().tolist() == [1000] * 10
    mean = torch.cat([data.train_x, data.val_x]).float().div(255).mean().item()
    assert abs(mean - d.mean) < 5e-4  # the preset's normalisation is this data set's


def test_run_py_trains_a_preset_on_fashion_mnist(tmp_path):
    if not FASHION.is_dir() and not os.environ.get("CI"):
        pytest.skip("apt-get install dataset-fashion-mnist")
    p = run_py("data=fashion_mnist", "+experiment=best5k", *SMALL, f"hydra.run.dir={tmp_path}/r",
               "data.root=" + str(tmp_path))
    assert p.returncode == 0, p.output
    assert "fashion_mnist loaded in" in p.stdout and "4,442" in p.stdout


def test_translate_erase_and_flip_on_a_known_image():
    x = torch.arange(1, 10, dtype=torch.uint8).view(1, 1, 3, 3)  # [[1,2,3],[4,5,6],[7,8,9]]
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(50):
        y = translate(x, 1, g)
        assert y.shape == x.shape
        rows = y[0, 0]
        seen.add(tuple(rows.flatten().tolist()))
        # a shift: the nonzero part is a window of the original, the rest zeros
        kept = rows[rows > 0]
        assert len(kept) in (4, 6, 9) and set(kept.tolist()) <= set(range(1, 10))
    assert (1, 2, 3, 4, 5, 6, 7, 8, 9) in seen and (0, 0, 0, 0, 1, 2, 0, 4, 5) in seen
    assert len(seen) == 9  # every (dy, dx) in [-1, 1]^2
    big = torch.full((200, 1, 8, 8), 200, dtype=torch.uint8)
    cut = erase(big, 2, g, torch.tensor([7]))
    assert set(cut.unique().tolist()) == {7, 200}
    assert ((cut == 7).sum(dim=(1, 2, 3)) <= 4).all() and (cut == 7).any()
    flipped = flip(x.repeat(400, 1, 1, 1), g)
    mirrored = (flipped[:, 0, 0, 0] == 3)
    assert torch.equal(flipped[mirrored][0, 0, 0], torch.tensor([3, 2, 1], dtype=torch.uint8))
    assert 150 < mirrored.sum() < 250  # about half


def test_augmentation_is_seeded_and_off_changes_nothing(tmp_path):
    base = ["model=paper", "threads=1"]
    a = run(compose_cfg(*base), tmp_path / "a")
    b = run(compose_cfg(*base, "train.augment.translate=0"), tmp_path / "b")
    assert a["train_loss"] == b["train_loss"]  # off: bit for bit
    c = run(compose_cfg(*base, "train.augment.translate=2", "train.augment.erase=6"),
            tmp_path / "c")
    d = run(compose_cfg(*base, "train.augment.translate=2", "train.augment.erase=6"),
            tmp_path / "d")
    assert c["train_loss"] == d["train_loss"] != a["train_loss"]  # seeded, and it does something


def test_flip_is_refused_for_digits_and_too_big_a_shift_for_the_image(tmp_path):
    with pytest.raises(ConfigError, match=r"^train\.augment\.flip = True: mirroring changes what "
                                          r"a mnist image means \(data\.mirror_ok is false\)"):
        run(compose_cfg("train.augment.flip=true", "data.root=/nonexistent"), tmp_path / "r")
    with pytest.raises(ConfigError, match=r"^train\.augment\.translate = 28: expected fewer "
                                          "pixels than the images' 28"):
        run(compose_cfg("train.augment.translate=28", "data.root=/nonexistent"), tmp_path / "r")


def test_a_multi_epoch_schedule_spans_every_epoch():
    t = compose_cfg("train.schedule=warmup_cosine", "train.warmup=0.1", "train.epochs=3",
                    "train.lr=0.01", "train.final_lr=0.0").train
    per_epoch, total = 100, 300
    lrs = [lr_at(t, s, total, per_epoch) for s in range(total)]
    assert lrs[0] < 0.001 and max(lrs) == pytest.approx(0.01, rel=1e-3)
    assert lrs.index(max(lrs)) == pytest.approx(30, abs=1)  # the peak at 10% of all 3 epochs
    middle = 30 + (total - 30) // 2  # half-way through the decay: (1 + cos(pi/2)) / 2 of the peak
    assert lrs[middle] == pytest.approx(0.005, rel=0.02)
    assert lrs[-1] < 1e-5 and all(a >= b for a, b in zip(lrs[30:], lrs[31:]))
    assert lrs[per_epoch] > lrs[2 * per_epoch] > lrs[-1]  # epoch 2 and 3 keep decaying
    assert math.isclose(lr_at(t, per_epoch - 1, total, per_epoch),
                        lr_at(t, per_epoch - 1, total, per_epoch))
