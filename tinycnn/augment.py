"""Augmentation of training batches (train.augment.*): on the in-memory uint8 images, batch by
batch, from a generator of its own (seeded by the run's seed), so turning it on leaves the batch
order as it was and turning it off leaves a run bit-for-bit as it was."""

import torch

from tinycnn.checks import fail, flag, whole

SEED_OFFSET = 7919  # the augmentation generator's seed is the run's seed plus this


def check_augment(aug, data_cfg) -> None:
    """Fail before any data is loaded if the augmentation cannot apply to this data set."""
    if aug is None:
        return
    size = data_cfg.image_size
    for key in ("translate", "erase"):
        v = whole(f"train.augment.{key}", aug.get(key, 0), 0)
        if v >= size:
            fail(f"train.augment.{key}", v, f"expected fewer pixels than the images' {size}")
    if flag("train.augment.flip", aug.get("flip", False)) and not data_cfg.mirror_ok:
        fail("train.augment.flip", True, f"mirroring changes what a {data_cfg.name} image means "
             "(data.mirror_ok is false); use translate or erase instead")


def active(aug) -> bool:
    return bool(aug) and bool(aug.get("translate") or aug.get("erase") or aug.get("flip"))


def translate(x: torch.Tensor, k: int, g: torch.Generator) -> torch.Tensor:
    """Each image (B, C, H, W) shifted by its own (dy, dx) in [-k, k], the edge filled with 0."""
    b, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (k, k, k, k))
    dy, dx = (torch.randint(0, 2 * k + 1, (b,), generator=g) for _ in range(2))
    rows = (dy[:, None] + torch.arange(h))[:, :, None]  # (B, H, 1)
    cols = (dx[:, None] + torch.arange(w))[:, None, :]  # (B, 1, W)
    return padded[torch.arange(b)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)


def erase(x: torch.Tensor, s: int, g: torch.Generator, fill: torch.Tensor) -> torch.Tensor:
    """Cutout: one s x s square per image, at a random place (partly outside the image is fine),
    set to `fill` (the data set's mean pixel, per channel: zero once normalised)."""
    b, c, h, w = x.shape
    cy, cx = torch.randint(0, h, (b,), generator=g), torch.randint(0, w, (b,), generator=g)
    ys, xs = torch.arange(h)[None, :], torch.arange(w)[None, :]
    inside_y = ((ys >= (cy - s // 2)[:, None]) & (ys < (cy - s // 2 + s)[:, None]))  # (B, H)
    inside_x = ((xs >= (cx - s // 2)[:, None]) & (xs < (cx - s // 2 + s)[:, None]))  # (B, W)
    mask = (inside_y[:, :, None] & inside_x[:, None, :])[:, None]  # (B, 1, H, W)
    return torch.where(mask, fill.view(1, -1, 1, 1).to(x.dtype), x)


def flip(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Half the images (each a coin toss) mirrored left-right."""
    mirrored = torch.rand(len(x), generator=g) < 0.5
    return torch.where(mirrored[:, None, None, None], x.flip(-1), x)


def augment(x: torch.Tensor, aug, g: torch.Generator, mean) -> torch.Tensor:
    """A uint8 batch (B, C, H, W) through the augmentations that are on, on the CPU generator's
    draws (the batch may live on another device)."""
    device = x.device
    x = x.cpu()
    if aug.get("translate"):
        x = translate(x, int(aug.translate), g)
    if aug.get("erase"):
        means = mean if isinstance(mean, list) else [mean] * x.shape[1]
        x = erase(x, int(aug.erase), g, torch.tensor([round(255 * m) for m in means]))
    if aug.get("flip"):
        x = flip(x, g)
    return x.to(device)
