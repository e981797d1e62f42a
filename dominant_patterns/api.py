"""The Python API: find and evaluate a dominant pattern on any classifier and any image batches."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from dominant_patterns.analysis.metrics import evaluate_patterns, noise_floors
from dominant_patterns.attacks.dominant import DominantPattern
from dominant_patterns.core.loops import TrainerSettings
from dominant_patterns.models.classifier import ClassifierWrapper, ModelInfo


def wrap_classifier(net: nn.Module, *, input_size: int, mean: Sequence[float], std: Sequence[float],
                    class_names: Sequence[str] | None = None, head: str | None = None,
                    name: str = "custom") -> ClassifierWrapper:
    """Wrap any ``nn.Module`` classifier so it takes [0, 1] pixels (normalization inside).

    ``head`` names the classifier-head submodule (e.g. ``"fc"``) to enable backbone-feature metrics.
    """
    if isinstance(net, ClassifierWrapper):
        return net
    if class_names is None:
        with torch.no_grad():
            num_classes = net.eval()(torch.zeros(1, 3, input_size, input_size)).shape[1]
        class_names = [f"class_{i}" for i in range(num_classes)]
    info = ModelInfo(name=name, input_size=input_size, mean=tuple(mean), std=tuple(std),
                     class_names=tuple(class_names), head=head, label_space=None)
    return ClassifierWrapper(net, info).freeze()


def find_dominant_pattern(model: ClassifierWrapper, images: Iterable[Any], *, xi: float = 10 / 255,
                          epochs: int = 10, lr: float = 0.01, loss: str = "cos", layer: str = "logits",
                          precision: str = "fp32", progress: bool = False, **attack_kwargs: Any) -> torch.Tensor:
    """Algorithm 1: return delta [3, S, S] with ``||delta||_inf <= xi``.

    ``images`` is any re-iterable of batches in [0, 1] (tensors, ``(x, y)`` pairs or uint8).
    """
    settings = TrainerSettings(epochs=epochs, precision=precision, progress=progress,
                               channels_last=model.device.type == "cpu")
    attack = DominantPattern(model, xi, loss={"name": loss, "layer": layer}, lr=lr, trainer=settings, **attack_kwargs)
    return attack.fit(images)


def evaluate_pattern(model: ClassifierWrapper, delta: torch.Tensor, images: Iterable[Any], *,
                     with_floors: bool = True, xi: float | None = None, seed: int = 0,
                     progress: bool = False) -> dict[str, dict[str, Any]]:
    """Metrics of ``delta`` (and of random-noise/random-sign floors of the same xi) on ``images``."""
    patterns = {"pattern": delta}
    if with_floors:
        budget = xi if xi is not None else float(delta.abs().max())
        patterns.update(noise_floors(tuple(delta.shape), budget, seed))
    return evaluate_patterns(model, patterns, images, progress=progress).patterns
