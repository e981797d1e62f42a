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

from dominant_patterns.attacks.base import UniversalAttack
from dominant_patterns.attacks.card import AttackCard
from dominant_patterns.core.checks import check_choice
from dominant_patterns.core.devices import autocast
from dominant_patterns.core.errors import ConfigError
from dominant_patterns.core.loops import signed_gradient_epochs
from dominant_patterns.models.classifier import ClassifierWrapper

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
    card: ClassVar[AttackCard] = AttackCard(
        "SGD-UAP", "Shafahi et al., AAAI 2020 (kenny-co/sgd-uap-torch)", 2020, "label-dependent",
        budget_unit="epochs", published_budget="sign steps of 0.8 xi over ImageNet batches (no fixed count published)")
    fit_state: ClassVar[tuple[str, ...]] = ("delta", "size", "used_labels")

    def __init__(self, model: ClassifierWrapper, xi: float, *, beta: float = 12.0, step_size: float = 0.8,
                 step_decay: float = 0.8, labels: str = "auto", **kwargs: Any) -> None:
        super().__init__(model, xi, **kwargs)
        check_choice("attack.labels", labels, LABELS)
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

    def loss(self, x: torch.Tensor, y: torch.Tensor | None, delta: torch.Tensor) -> torch.Tensor:
        """The clamped cross-entropy to ascend: mean_i min(CE(f(clamp(x_i + delta)), y_i), beta)."""
        target = self.targets(x, y)
        with autocast(self.device, self.trainer.precision):
            logits = self.model(self.apply(x, delta))
        return F.cross_entropy(logits.float(), target, reduction="none").clamp(max=self.beta).mean()

    def fit(self, loader: Iterable[Any]) -> torch.Tensor:
        self.delta, self.size, self.used_labels = self.zeros(), self.step_size * self.xi, False

        def step(delta: torch.Tensor, sign: torch.Tensor) -> None:
            self.delta = self.project(delta + self.size * sign)

        def decay(_epoch: int) -> None:
            self.size *= self.step_decay

        signed_gradient_epochs(self, loader, variable=lambda: self.delta, loss_fn=self.loss, update=step,
                               after_epoch=decay)
        return self.delta.detach()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "beta": self.beta, "step_size": self.step_size, "step_decay": self.step_decay,
                "labels": self.labels, "used_labels": self.used_labels}
