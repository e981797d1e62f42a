"""Held-out validation for the baselines that select or stop on it: fixed images, clean predictions
computed once, the fooling rate of ``metrics.fooling_rate`` and patience-based early stopping."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from dominant_patterns.analysis.metrics import fooling_rate
from dominant_patterns.core.batches import iterate_images
from dominant_patterns.core.devices import autocast, to_memory_format
from dominant_patterns.core.errors import ConfigError
from dominant_patterns.core.loops import TrainerSettings
from dominant_patterns.models.classifier import ClassifierWrapper


def take_images(loader: Iterable[Any], device: torch.device, count: int) -> torch.Tensor:
    """The first ``count`` images of ``loader`` (fewer if it holds fewer), float [0, 1]."""
    parts, held = [], 0
    for x, _ in iterate_images(loader, device):
        parts.append(x[: count - held])
        held += parts[-1].shape[0]
        if held >= count:
            break
    if not parts:
        raise ConfigError("the fit loader yielded no images")
    return torch.cat(parts)


@torch.no_grad()
def predict(model: ClassifierWrapper, x: torch.Tensor, *, batch_size: int = 128, channels_last: bool = True,
            precision: str = "fp32") -> torch.Tensor:
    """Top-1 predictions for images in [0, 1], in chunks."""
    out = []
    for i in range(0, x.shape[0], batch_size):
        with autocast(x.device, precision):
            out.append(model(to_memory_format(x[i:i + batch_size], channels_last)).argmax(1))
    return torch.cat(out)


class Validator:
    """Fooling rate of a pattern on fixed held-out images, with patience-based early stopping.

    The clean predictions are computed once; the rate itself is ``metrics.fooling_rate``.
    """

    def __init__(self, model: ClassifierWrapper, images: torch.Tensor, *, patience: int,
                 channels_last: bool = True, precision: str = "fp32") -> None:
        self.model, self.images, self.patience = model, images, int(patience)
        self.kw = {"channels_last": channels_last, "precision": precision}
        self.clean = predict(model, images, **self.kw)
        self.best_rate, self.best_delta, self.bad_checks = -1.0, None, 0

    @classmethod
    def from_loader(cls, model: ClassifierWrapper, loader: Iterable[Any], device: torch.device, *, count: int,
                    patience: int, settings: TrainerSettings) -> Validator:
        """A validator on the first ``count`` images of ``loader``, run with the trainer's precision/layout."""
        return cls(model, take_images(loader, device, count), patience=patience,
                   channels_last=settings.channels_last, precision=settings.precision)

    def state_dict(self) -> dict[str, Any]:
        return {"best_rate": self.best_rate, "best_delta": self.best_delta, "bad_checks": self.bad_checks}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        best = state["best_delta"]
        self.best_rate, self.bad_checks = float(state["best_rate"]), int(state["bad_checks"])
        self.best_delta = None if best is None else best.to(self.images.device)

    def rate(self, delta: torch.Tensor) -> float:
        return fooling_rate(self.clean, predict(self.model, (self.images + delta).clamp(0, 1), **self.kw))

    def check(self, delta: torch.Tensor) -> bool:
        """Score ``delta``; keep it if best so far. True when patience is exhausted (stop)."""
        rate = self.rate(delta)
        if rate > self.best_rate:
            self.best_rate, self.best_delta, self.bad_checks = rate, delta.detach().clone(), 0
        else:
            self.bad_checks += 1
        return self.bad_checks >= self.patience

    def best(self, fallback: torch.Tensor) -> torch.Tensor:
        return fallback.detach() if self.best_delta is None else self.best_delta

    def final(self, delta: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Check the final ``delta`` too; return the best checked pattern and its fooling rate."""
        self.check(delta)
        return self.best(delta), self.best_rate
