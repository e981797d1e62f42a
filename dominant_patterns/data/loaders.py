"""Batches of images on the device: the file-decoding ``make_loader``, the tensor-backed :class:`DeviceLoader`
(whole dataset on the accelerator when it fits, random crops and flips per batch in one op) and the helpers that
turn any batch into float [0, 1] images."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from dominant_patterns.core.rng_state import loader_generators
from dominant_patterns.data.datasets import SplitDataset, TensorImageDataset, skip_none_collate
from dominant_patterns.data.image_cache import CachedImageDataset


def make_loader(dataset: Dataset, *, batch_size: int, shuffle: bool, seed: int = 0,
                num_workers: int = 0, drop_last: bool = False) -> DataLoader:
    """A DataLoader with a seeded shuffle order and corrupt-file-tolerant collation."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                      num_workers=num_workers, collate_fn=skip_none_collate, drop_last=drop_last,
                      persistent_workers=False, pin_memory=torch.cuda.is_available())


#: Keep a cached dataset on the accelerator only while it takes at most this share of free memory.
DEVICE_SHARE = 0.4


def random_crop_flip(images: torch.Tensor, size: int, generator: torch.Generator, *,
                     flips: bool = True) -> torch.Tensor:
    """A random ``size`` crop plus random horizontal/vertical flips per image, for a batch [B, C, H, W].

    One gather for the batch; the result is channels-last in memory (a permuted [B, S, S, C] view).
    Random numbers come from the CPU ``generator`` (reproducible on every device).
    """
    b, _, h, w = images.shape
    top = torch.randint(0, h - size + 1, (b, 1), generator=generator)
    left = torch.randint(0, w - size + 1, (b, 1), generator=generator)
    span = torch.arange(size)
    rows, cols = top + span, left + span
    if flips:
        flip = torch.rand(b, 2, generator=generator) < 0.5
        rows = torch.where(flip[:, :1], rows.flip(1), rows)
        cols = torch.where(flip[:, 1:], cols.flip(1), cols)
    device = images.device
    rows, cols = rows.to(device, non_blocking=True), cols.to(device, non_blocking=True)
    batch = torch.arange(b, device=device)[:, None, None]
    return images.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def fits_on_device(nbytes: int, device: torch.device) -> bool:
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= DEVICE_SHARE * free


class DeviceLoader:
    """Seeded batches of a tensor-backed dataset, on ``device`` (whole dataset there when it fits).

    Yields ``(uint8 images [B, 3, S, S], labels)``. With ``shuffle`` the order per epoch is the one
    :func:`dominant_patterns.data.datasets.make_loader` gives for the same seed.
    """

    def __init__(self, dataset: TensorImageDataset, *, batch_size: int, shuffle: bool, seed: int = 0,
                 device: torch.device | str = "cpu", drop_last: bool = False) -> None:
        self.device = torch.device(device)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.generator = torch.Generator().manual_seed(seed)
        self.crop_generator = torch.Generator().manual_seed(seed + 1)
        self.entry = dataset.entry if isinstance(dataset, CachedImageDataset) else None
        stored = self.entry.shards[0].shape[-1] if self.entry is not None else dataset.images.shape[-1]
        self.crop = getattr(dataset, "crop", stored)
        self.augment = bool(getattr(dataset, "augment", False)) and self.crop < stored
        self.n = len(dataset)
        nbytes = self.n * 3 * stored * stored
        self.resident = fits_on_device(nbytes, self.device)
        if self.resident:
            self.images = self.entry.tensor(self.device) if self.entry is not None else dataset.images.to(self.device)
        else:
            self.images = None if self.entry is not None else dataset.images
        self.labels = dataset.labels.to(self.device) if self.resident else dataset.labels

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def _order(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.n)
        # The draws DataLoader + RandomSampler make per epoch: a worker seed, the order, and an empty remainder.
        torch.empty((), dtype=torch.int64).random_(generator=self.generator)
        order = torch.randperm(self.n, generator=self.generator)
        torch.randperm(self.n, generator=self.generator)
        return order

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self._order()
        order_dev = order.to(self.device) if self.resident else order
        for b in range(len(self)):
            idx = order_dev[b * self.batch_size:(b + 1) * self.batch_size]
            x = self.images[idx] if self.images is not None else self.entry.gather(idx)  # type: ignore[union-attr]
            y = self.labels[idx]
            if not self.resident:
                if self.device.type == "cuda":
                    x = x.pin_memory()
                x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            if self.augment:
                x = random_crop_flip(x, self.crop, self.crop_generator)
            elif x.shape[-1] != self.crop:
                offset = (x.shape[-1] - self.crop) // 2
                x = x[..., offset:offset + self.crop, offset:offset + self.crop]
            yield x, y


def fast_loader(dataset: SplitDataset, *, batch_size: int, shuffle: bool, seed: int = 0, num_workers: int = 0,
                device: torch.device | str = "cpu") -> Any:
    """:class:`DeviceLoader` for tensor-backed datasets, else the file-decoding ``make_loader``."""

    if isinstance(dataset, TensorImageDataset):
        return DeviceLoader(dataset, batch_size=batch_size, shuffle=shuffle, seed=seed, device=device)
    return make_loader(dataset, batch_size=batch_size, shuffle=shuffle, seed=seed, num_workers=num_workers)


def images_of(batch: Any) -> torch.Tensor:
    """The image tensor of an ``x``, ``(x, y)`` or ``{"image": x}`` batch, unconverted."""
    if isinstance(batch, dict):
        return batch["image"]
    return batch[0] if isinstance(batch, (tuple, list)) else batch


class StackedLoader:
    """Zip K loaders into batches ``[K, B, 3, S, S]`` (each step cut to the smallest of the K batches)."""

    def __init__(self, loaders: Sequence[Iterable[Any]]) -> None:
        if not loaders:
            raise ValueError("StackedLoader needs at least one loader")
        self.loaders = list(loaders)

    def __len__(self) -> int:
        return min(len(loader) for loader in self.loaders)  # type: ignore[arg-type]

    def rng_generators(self) -> dict[str, torch.Generator]:
        """The K loaders' generators (checkpointed, so a resumed fit replays each one's order)."""
        return {f"{k}.{name}": g for k, loader in enumerate(self.loaders)
                for name, g in loader_generators(loader).items()}

    def __iter__(self) -> Iterator[tuple[torch.Tensor, None]]:
        for batches in zip(*self.loaders, strict=False):
            xs = [images_of(batch) for batch in batches]
            b = min(x.shape[0] for x in xs)
            if b:
                yield torch.stack([x[:b] for x in xs]), None
