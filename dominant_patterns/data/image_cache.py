"""Decode once, reuse everywhere: a uint8 image cache on disk, device-resident batch loading, and
cached clean predictions.

* :func:`build_image_cache` decodes and resizes the images of a file-backed dataset once into
  memory-mapped ``.npy`` shards under ``cache_dir/images/<key>/``. The key hashes the dataset name,
  split, stored size and the file list (path, byte size, mtime), so a changed list or size gets a
  new entry. The entry is written in a temporary folder and renamed into place, so concurrent sweep
  jobs never read half an entry (the first finished rename wins; the others use it).
* Fit splits are stored at the resize size ``round(S * 256 / 224)`` (the central square of the
  short-side resize) and cropped on the fly: :func:`random_crop_flip` draws a random SxS crop and
  random horizontal and vertical flips for a whole batch in one indexing op. Trade-off: the crop
  stays inside the central square, whereas the file pipeline can crop anywhere along the long side.
  Evaluation splits are stored at S, identical to the file pipeline's resize + center crop.
* :class:`DeviceLoader` iterates a tensor-backed dataset in seeded batches (the same order as
  :func:`dominant_patterns.data.datasets.make_loader` with the same seed), keeping the whole dataset on the
  accelerator when it fits, so no step waits on decoding, collation or host-to-device copies.
* :func:`cached_clean_predictions` stores the clean predictions of an evaluation set per model
  (keyed by a parameter fingerprint and the images), so every pattern scored later reuses them.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import socket
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from dominant_patterns.core.errors import StorageError
from dominant_patterns.core.hashing import digest
from dominant_patterns.data.datasets import (
    ImageFileDataset,
    SplitDataset,
    TensorImageDataset,
    open_rgb,
    readable_split,
    require_images,
    skip_none_collate,
)

log = logging.getLogger(__name__)

CACHE_VERSION = 1
SHARD_IMAGES = 4096


def stored_size(image_size: int, augment: bool) -> int:
    """Side of the cached square: the resize size for augmented (cropped on the fly) splits, else S."""
    return int(round(image_size * 256 / 224)) if augment else image_size


def image_cache_key(dataset: ImageFileDataset, size: int) -> str:
    """Hash of dataset name, split, stored size and the file list (path, byte size, mtime)."""
    files = []
    for p in dataset.paths:
        try:
            st = os.stat(p)
            files.append((str(p), st.st_size, st.st_mtime_ns))
        except OSError:
            files.append((str(p), -1, -1))
    return digest({"v": CACHE_VERSION, "name": dataset.name, "split": dataset.split, "size": size,
                    "labels": dataset.labels, "files": files})


class _DecodeSquare(torch.utils.data.Dataset):
    """The files of an :class:`ImageFileDataset`, resized on the short side and center-cropped to a square."""

    def __init__(self, dataset: ImageFileDataset, resize: int, size: int) -> None:
        from torchvision.transforms import v2

        self.dataset = dataset
        self.transform = v2.Compose([v2.PILToTensor(), v2.Resize(resize, antialias=True), v2.CenterCrop(size)])

    def __len__(self) -> int:
        return len(self.dataset.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int] | None:
        image = open_rgb(self.dataset.paths[i])
        if isinstance(image, str):
            warnings.warn(f"skipping unreadable image {self.dataset.paths[i]}: {image}", stacklevel=1)
            return None
        return self.transform(image), i


@dataclass
class CachedImages:
    """The shards of one cache entry: uint8 memmaps [n, 3, s, s] plus labels and source indices."""

    shards: list[torch.Tensor]
    labels: torch.Tensor
    sources: torch.Tensor
    meta: dict[str, Any]

    def __len__(self) -> int:
        return int(self.labels.numel())

    @property
    def nbytes(self) -> int:
        return sum(s.numel() for s in self.shards)

    def tensor(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """All images in one tensor on ``device`` (read shard by shard, no host-side concatenation)."""
        if len(self.shards) == 1 and torch.device(device).type == "cpu":
            return self.shards[0]
        size = self.shards[0].shape[-1] if self.shards else 1
        out = torch.empty(len(self), 3, size, size, dtype=torch.uint8, device=device)
        start = 0
        for shard in self.shards:
            out[start:start + shard.shape[0]].copy_(shard)
            start += shard.shape[0]
        return out

    def gather(self, index: torch.Tensor) -> torch.Tensor:
        """Rows ``index`` (any order) read from the memory-mapped shards."""
        bounds = torch.tensor([0] + [s.shape[0] for s in self.shards]).cumsum(0)
        shard_of = torch.searchsorted(bounds, index, right=True) - 1
        size = self.shards[0].shape[-1]
        out = torch.empty(index.numel(), 3, size, size, dtype=torch.uint8)
        for k in shard_of.unique().tolist():
            mask = shard_of == k
            out[mask] = self.shards[k][index[mask] - bounds[k]]
        return out


def _load_entry(folder: Path) -> CachedImages:
    meta = json.loads((folder / "meta.json").read_text())
    shards = []
    for name, count in zip(meta["shards"], meta["counts"], strict=True):
        array = np.load(folder / name, mmap_mode="c")  # copy-on-write: writable views, file untouched
        shards.append(torch.from_numpy(array[:count]))
    labels = torch.from_numpy(np.load(folder / "labels.npy"))
    sources = torch.from_numpy(np.load(folder / "sources.npy"))
    return CachedImages(shards, labels, sources, meta)


def check_free_space(root: Path, nbytes: int) -> None:
    """Refuse a cache build that cannot fit (a memory-mapped write to a full disk ends in SIGBUS, not an error)."""
    free = shutil.disk_usage(root).free
    if free < nbytes + (16 << 20):
        raise StorageError(f"the image cache needs {nbytes / 2**20:.0f} MiB under {root} but only {free / 2**20:.0f} "
                           "MiB are free")


def reserved_memmap(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """A uint8 ``.npy`` memmap whose blocks are allocated up front, so a full disk is an ``OSError`` here
    instead of a SIGBUS on a later write through the mapping."""
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    if hasattr(os, "posix_fallocate"):
        with open(path, "r+b") as f:
            try:
                os.posix_fallocate(f.fileno(), 0, os.path.getsize(path))
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    raise
    return array


def remove_dead_builds(root: Path) -> None:
    """Remove temporary entries of cache builds whose process (on this host) no longer runs."""
    host = socket.gethostname()
    for tmp in root.glob(".*.tmp"):
        parts = tmp.name.rsplit(".", 4)  # .<entry>.<host>.<pid>.<random>.tmp
        if len(parts) < 5 or parts[-4] != host or not parts[-3].isdigit():
            continue
        try:
            os.kill(int(parts[-3]), 0)
            continue
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        shutil.rmtree(tmp, ignore_errors=True)
        log.info("removed %s, left by a cache build that was killed", tmp)


def build_image_cache(dataset: ImageFileDataset, cache_dir: str | Path, *, augment: bool | None = None,
                      num_workers: int = 0) -> CachedImages:
    """Decode ``dataset`` once into shards under ``cache_dir`` (or load the existing entry).

    Unreadable files are skipped (and listed in the entry's ``meta.json``). ``meta["build_seconds"]``
    is the decode time of whoever built the entry; ``meta["reused"]`` says whether this call reused it.
    """
    augment = dataset.augment if augment is None else augment
    size = stored_size(dataset.image_size, augment)
    key = image_cache_key(dataset, size)
    root = Path(cache_dir).expanduser() / "images"
    folder = root / f"{dataset.name}-{dataset.split}-{size}-{key}"
    if (folder / "meta.json").is_file():
        entry = _load_entry(folder)
        entry.meta["reused"] = True
        return entry
    root.mkdir(parents=True, exist_ok=True)
    remove_dead_builds(root)
    check_free_space(root, len(dataset.paths) * 3 * size * size)
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{folder.name}.{socket.gethostname()}.{os.getpid()}.",
                                suffix=".tmp"))
    try:
        n = len(dataset.paths)
        resize = int(round(dataset.image_size * 256 / 224))
        loader = DataLoader(_DecodeSquare(dataset, resize, size), batch_size=64, num_workers=num_workers,
                            collate_fn=skip_none_collate)
        shard_names, counts, sources = [], [], []
        shard: np.ndarray | None = None
        filled = 0
        for images, index in loader:
            for image, i in zip(images, index.tolist(), strict=True):
                if shard is None or filled == shard.shape[0]:
                    if shard is not None:
                        shard.flush()
                        counts.append(filled)
                    shard_names.append(f"images-{len(shard_names):05d}.npy")
                    rows = min(SHARD_IMAGES, n - len(sources))
                    shard = reserved_memmap(tmp / shard_names[-1], (rows, 3, size, size))
                    filled = 0
                shard[filled] = image.numpy()
                filled += 1
                sources.append(i)
        if shard is not None:
            shard.flush()
            counts.append(filled)
            del shard
        skipped = sorted(set(range(n)) - set(sources))
        np.save(tmp / "labels.npy", np.asarray([dataset.labels[i] for i in sources], dtype=np.int64))
        np.save(tmp / "sources.npy", np.asarray(sources, dtype=np.int64))
        seconds = time.perf_counter() - start
        meta = {"version": CACHE_VERSION, "key": key, "name": dataset.name, "split": dataset.split,
                "size": size, "image_size": dataset.image_size, "augment": augment, "count": len(sources),
                "skipped": [str(dataset.paths[i]) for i in skipped], "shards": shard_names, "counts": counts,
                "build_seconds": seconds}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        try:
            os.rename(tmp, folder)  # atomic; fails when another job finished first
        except OSError:
            if not (folder / "meta.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("cached %d images of %s/%s at %dpx in %.1fs (%d unreadable skipped) -> %s", len(sources),
             dataset.name, dataset.split, size, seconds, len(skipped), folder)
    entry = _load_entry(folder)
    entry.meta.update(reused=False, build_seconds=seconds)
    return entry


class CachedImageDataset(TensorImageDataset):
    """A :class:`TensorImageDataset` whose images come from the cache (maybe larger than S, see ``crop``).

    ``crop`` is the model's input size S; when the stored side is larger, batches are randomly
    cropped and flipped by :class:`DeviceLoader` (``augment``), and ``__getitem__`` center-crops.
    """

    def __init__(self, entry: CachedImages, source: ImageFileDataset, *, augment: bool) -> None:
        record = dict(source.split_record)
        if entry.meta.get("skipped"):
            record["skipped"] = entry.meta["skipped"]
        self.entry, self.labels = entry, entry.labels
        self.name, self.split, self.label_space = source.name, source.split, source.label_space
        self.split_record = record
        self.crop = source.image_size
        self.augment = augment
        self._images: torch.Tensor | None = None

    @property
    def images(self) -> torch.Tensor:  # type: ignore[override]
        """All images in host memory (concatenated on first use; one shard is used in place)."""
        if self._images is None:
            self._images = self.entry.tensor("cpu")
        return self._images

    def __len__(self) -> int:
        return len(self.entry)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = self.entry.gather(torch.tensor([i]))[0]
        offset = (image.shape[-1] - self.crop) // 2
        return image[:, offset:offset + self.crop, offset:offset + self.crop], int(self.labels[i])


def cache_dataset(dataset: SplitDataset, cache_dir: str | Path, *, num_workers: int = 0) -> tuple[SplitDataset, float]:
    """The cached version of a file-backed dataset, and the seconds this call spent building its cache.

    Other datasets (already in memory) are returned unchanged with 0 seconds. A split with no readable image
    stops here (:class:`~dominant_patterns.core.errors.DataError`).
    """
    if not isinstance(dataset, ImageFileDataset):
        return dataset, 0.0
    entry = build_image_cache(dataset, cache_dir, num_workers=num_workers)
    seconds = 0.0 if entry.meta.get("reused") else float(entry.meta["build_seconds"])
    cached = CachedImageDataset(entry, dataset, augment=dataset.augment)
    require_images(cached, len(dataset.paths))
    return cached, seconds


# ---------------------------------------------------------------------------------------------
# Clean predictions, once per (model, evaluation set, precision)


def prepare_split(dataset: SplitDataset, dataset_cfg: Any, cache_dir: str | Path | None) -> tuple[SplitDataset, float]:
    """A split decoded once before any fit, and the seconds its cache build took.

    With ``dataset.cache`` and a cache dir, file-backed splits are decoded into the cache (:func:`cache_dataset`);
    otherwise each file is decoded once to find the unreadable ones (``data.readable_split``). Either way every
    unreadable file is named and left out (``split_record["skipped"]``) and an empty split stops the run. A cache
    that cannot be written (a full disk) is a warning: the run goes on from the files.
    """
    if not isinstance(dataset, ImageFileDataset):
        return dataset, 0.0
    workers = int(dataset_cfg.get("num_workers") or 0)
    if cache_dir and dataset_cfg.get("cache", False):
        try:
            return cache_dataset(dataset, cache_dir, num_workers=workers)
        except OSError as exc:
            log.warning("image cache under %s unavailable (%s); reading %s/%s from its files", cache_dir,
                        exc.strerror or exc, dataset.name, dataset.split)
    return readable_split(dataset, num_workers=workers), 0.0
