"""SGD-UAP: stochastic-gradient universal perturbation (Shafahi et al., AAAI 2020, "Universal adversarial training").

Paper: https://arxiv.org/abs/1811.11304 ; public code read: kenny-co/sgd-uap-torch (``uap_sgd``).

Norm: l_inf (``xi``). Defaults: beta 12 (clamp of the per-image cross-entropy), signed-gradient
steps of ``step_size * xi`` (0.8 xi, as published), epochs/batch from the trainer group.

Objective: maximize mean_i min(CE(f(clamp(x_i + delta)), y_i), beta). ``y`` is the clean top-1
prediction (label-free) unless ``labels=true``, or ``labels=auto`` and the batch carries valid
labels in the model's class range.

Usage::

    attack = SGDUAP(model, xi=10 / 255, trainer=TrainerSettings(epochs=10))
    delta = attack.fit(loader)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from dominant_patterns.attacks.base import UniversalAttack
from dominant_patterns.data import iterate_images
from dominant_patterns.errors import ConfigError
from dominant_patterns.models import ClassifierWrapper
from dominant_patterns.trainer import autocast, to_memory_format

LABELS = ("auto", "true", "pred")


class SGDUAP(UniversalAttack):
    """Signed-gradient ascent on the clamped cross-entropy, projection after every batch.

    Args:
        beta: cap on the per-image cross-entropy (12).
        step_size: step as a fraction of ``xi`` (0.8).
        step_decay: factor applied to the step after each epoch (0.8). The public code passes
            ``step_decay=0.8`` but only ever uses it once (constant 0.8 xi); 1.0 reproduces that.
        labels: ``auto`` | ``true`` | ``pred`` (see module docstring).
    """

    name: ClassVar[str] = "sgd_uap"
    fit_state: ClassVar[tuple[str, ...]] = ("delta", "size", "used_labels")

    def __init__(self, model: ClassifierWrapper, xi: float, *, beta: float = 12.0, step_size: float = 0.8,
                 step_decay: float = 0.8, labels: str = "auto", **kwargs: Any) -> None:
        super().__init__(model, xi, **kwargs)
        if labels not in LABELS:
            raise ConfigError(f"attack.labels={labels} is not valid. Valid choices: {', '.join(LABELS)}")
        if not step_size > 0 or not 0 < step_decay <= 1 or not beta > 0:
            raise ConfigError("attack.step_size and attack.beta must be > 0 and attack.step_decay in (0, 1]")
        self.beta, self.step_size, self.step_decay = float(beta), float(step_size), float(step_decay)
        self.labels = labels
        self.used_labels = False
        self.delta = self.zeros()
        self.size = self.step_size * self.xi  # the current step (decayed after each epoch)

    def targets(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        valid = y is not None and bool(((y >= 0) & (y < self.model.num_classes)).all())
        if self.labels == "true" and not valid:
            raise ConfigError("attack.labels=true but the dataset has no labels in the model's class range")
        if self.labels != "pred" and valid:
            assert y is not None
            self.used_labels = True
            return y
        with torch.no_grad():
            return self.model(x).argmax(1)

    def fit(self, loader: Iterable[Any]) -> torch.Tensor:
        s, ck = self.trainer, self.checkpointer
        self.delta, self.size, self.used_labels = self.zeros(), self.step_size * self.xi, False
        bar = tqdm(desc=self.name, disable=not s.progress, unit="batch", leave=False)
        for epoch, batches in ck.epochs(self, loader, s.epochs):  # resumes mid-epoch after a restore
            bar.update(ck.step - bar.n)
            for x, y in iterate_images(batches, self.device):
                x = to_memory_format(x, s.channels_last)
                target = self.targets(x, y)
                d = self.delta.clone().requires_grad_(True)
                with autocast(self.device, s.precision):
                    logits = self.model(self.apply(x, d))
                ce = F.cross_entropy(logits.float(), target, reduction="none")
                loss = ce.clamp(max=self.beta).mean()
                (grad,) = torch.autograd.grad(loss, d)
                self.delta = self.project(self.delta + self.size * grad.sign())
                bar.update(1)
                if (ck.step + 1) % s.log_every == 0:
                    self.log({"train/loss": float(loss.detach()), "train/epoch": epoch}, ck.step + 1)
                ck.step_done()  # saves every N steps; stops cleanly on SIGTERM/SIGUSR1
            self.size *= self.step_decay
        bar.close()
        return self.delta.detach()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "beta": self.beta, "step_size": self.step_size, "step_decay": self.step_decay,
                "labels": self.labels, "used_labels": self.used_labels}
