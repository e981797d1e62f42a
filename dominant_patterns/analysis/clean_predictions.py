"""Clean predictions of an evaluation set, once per (model, images, precision): cached on disk, keyed by a
fingerprint of the model's parameters and of the images, so every pattern scored later reuses them."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from dominant_patterns.core.atomic import atomic_write
from dominant_patterns.core.batches import iterate_images
from dominant_patterns.core.devices import autocast, to_memory_format
from dominant_patterns.core.hashing import digest
from dominant_patterns.data.datasets import SplitDataset, TensorImageDataset
from dominant_patterns.data.image_cache import CachedImageDataset
from dominant_patterns.models.classifier import ClassifierWrapper, model_fingerprint


def dataset_fingerprint(dataset: SplitDataset) -> str:
    """Hash of the images themselves when in memory, else of the cache key or split record (file list)."""
    if isinstance(dataset, CachedImageDataset):
        return digest({"cache": dataset.entry.meta["key"], "crop": dataset.crop})
    if isinstance(dataset, TensorImageDataset):
        h = hashlib.sha256(dataset.images.contiguous().numpy().tobytes())
        h.update(dataset.labels.numpy().tobytes())
        return h.hexdigest()[:20]
    return digest({**dataset.describe(), **dataset.split_record})


def cached_clean_predictions(model: ClassifierWrapper, dataset: SplitDataset, loader: Any, *, precision: str = "fp32",
                             channels_last: bool = True, cache_dir: str | Path | None = None) -> torch.Tensor:
    """Clean top-1 predictions of ``loader`` (over ``dataset``, unshuffled), read from or written to the cache."""

    path = None
    if cache_dir is not None:
        key = digest({"model": model_fingerprint(model), "data": dataset_fingerprint(dataset),
                       "precision": precision, "channels_last": channels_last})
        path = Path(cache_dir).expanduser() / "clean_pred" / f"{model.name}-{dataset.name}-{dataset.split}-{key}.pt"
        if path.is_file():
            return torch.load(path, map_location="cpu", weights_only=True)
    model = model.freeze()
    parts = []
    with torch.no_grad(), autocast(model.device, precision):
        for x, _ in iterate_images(loader, model.device):
            parts.append(model(to_memory_format(x, channels_last)).argmax(1))
    pred = torch.cat(parts).cpu() if parts else torch.empty(0, dtype=torch.long)
    if path is not None:
        atomic_write(path, lambda f: torch.save(pred, f))
    return pred
