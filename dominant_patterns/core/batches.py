"""Any batch a loader yields (``x``, ``(x, y)`` or ``{"image": x, "label": y}``, uint8 or float) as float [0, 1]
images on the device: what every loop and evaluator iterates."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch


def to_float_batch(batch: Any, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Accept ``x``, ``(x, y)`` or ``{"image": x, "label": y}``; return float [0, 1] pixels on device."""
    labels = None
    if isinstance(batch, dict):
        x, labels = batch["image"], batch.get("label")
    elif isinstance(batch, (tuple, list)):
        x = batch[0]
        labels = batch[1] if len(batch) > 1 else None
    else:
        x = batch
    x = x.to(device, non_blocking=True)
    x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
    if labels is not None:
        labels = torch.as_tensor(labels).to(device, non_blocking=True)
    return x, labels


def iterate_images(loader: Iterable[Any],
                   device: torch.device | str) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Yield float [0, 1] batches (and labels) on ``device``, skipping empty batches."""
    for batch in loader:
        x, y = to_float_batch(batch, device)
        if x.shape[0]:
            yield x, y
