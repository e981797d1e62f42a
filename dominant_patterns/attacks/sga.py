"""SGA: stochastic gradient aggregation (Liu et al., ICCV 2023, "Enhancing Generalization of Universal
Adversarial Perturbation through Gradient Aggregation"); newer than the dominant-pattern paper.

Paper: https://arxiv.org/abs/2308.06015 ; public code read: liuxuannan/Stochastic-Gradient-Aggregation
(``attacks_sga.py``, ``imagenet_attack.py``, ``gen_sga.sh``).

Norm: l_inf (``xi``), projection by clipping. Objective: maximise the clamped cross-entropy
mean_i min(CE(f(clamp(x_i + delta, 0, 1)), y_i), beta), y the clean top-1 prediction (no labels).
Per outer batch of ``batch_size`` images (the loader's batches re-batched; the last, smaller one of
each epoch is used as it is, like the code's DataLoader), ``inner_iterations * batch_size //
minibatch`` inner steps each draw ``minibatch`` of its images without replacement, take a sign step
of ``step_size * xi`` on a copy of delta (clipped to +-xi) and record the gradient there; delta
then moves by one step of the same size along the sign of the mean of those inner gradients, and
is projected. Defaults (``gen_sga.sh``, the code's defaults): outer batch 250, minibatch 10, K = 4
inner iterations, step 0.1 xi (the code's ``step_decay``, a constant), beta 9, delta from zero, no
momentum, 20 epochs over 10k ImageNet train images.

Departures: none in the update. The code evaluates a loss on a held-out loader after each epoch only
for its log; we log the training loss. ``max_epochs`` and ``max_iterations`` (outer updates; also
``trainer.max_iterations``) cap the budget for CPU runs.

Usage::

    attack = SGA(model, xi=10 / 255, max_epochs=1)
    delta = attack.fit(loader)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from dominant_patterns.attacks.base import UniversalAttack, capped_epochs
from dominant_patterns.attacks.card import AttackCard
from dominant_patterns.core.checks import check_at_least, check_positive
from dominant_patterns.core.devices import autocast, to_memory_format
from dominant_patterns.core.loops import Feed, run_steps
from dominant_patterns.models.classifier import ClassifierWrapper


class SGA(UniversalAttack):
    """Inner-minibatch sign steps aggregated into one signed update per outer batch."""

    name: ClassVar[str] = "sga"
    card: ClassVar[AttackCard] = AttackCard(
        "SGA", "Liu et al., ICCV 2023 (liuxuannan/Stochastic-Gradient-Aggregation)", 2023, "label-dependent",
        budget_unit="epochs", published_budget="20 epochs over 10k images, outer batch 250, K = 4 inner steps of 10",
        published_passes=20 * 10000 * 4,
        published_fooling={"alexnet": 97.43, "googlenet": 92.12, "vgg16": 98.36, "vgg19": 97.69, "resnet152": 94.04},
        published_source="SGA paper, Table 1 (white-box, ImageNet val, 10/255), as quoted in baselines.md")
    fit_state: ClassVar[tuple[str, ...]] = ("delta", "updates", "inner_steps", "images_seen")

    def __init__(self, model: ClassifierWrapper, xi: float, *, epochs: int = 20, max_epochs: int | None = None,
                 max_iterations: int | None = None, batch_size: int = 250, minibatch: int = 10,
                 inner_iterations: int = 4, step_size: float = 0.1, beta: float = 9.0, **kwargs: Any) -> None:
        super().__init__(model, xi, **kwargs)
        self.epochs, self.max_epochs = int(epochs), max_epochs
        self.run_epochs = capped_epochs(epochs, max_epochs)
        self.max_iterations = max_iterations
        caps = {"attack.max_iterations": max_iterations, "trainer.max_iterations": self.trainer.max_iterations}
        caps = {k: check_at_least(k, v, 1) for k, v in caps.items() if v is not None}
        self.max_updates = min(caps.values()) if caps else None
        self.batch_size = check_at_least("attack.batch_size", batch_size, 1)
        self.minibatch = check_at_least("attack.minibatch", minibatch, 1)
        self.inner_iterations = check_at_least("attack.inner_iterations", inner_iterations, 1)
        self.step_size, self.beta = check_positive("attack.step_size", step_size), check_positive("attack.beta", beta)
        self.delta = self.zeros()
        self.updates = self.inner_steps = self.images_seen = 0

    def loss(self, x: torch.Tensor, y: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """mean_i min(CE(f(clamp(x_i + delta)), y_i), beta), to ascend."""
        s = self.trainer
        with autocast(self.device, s.precision):
            logits = self.model(to_memory_format(self.apply(x, delta), s.channels_last))
        return F.cross_entropy(logits.float(), y, reduction="none").clamp(max=self.beta).mean()

    def outer_update(self, x: torch.Tensor) -> float:
        """One aggregated update of ``self.delta`` on the outer batch ``x``; returns the last inner loss."""
        s, n = self.trainer, x.shape[0]
        with torch.no_grad(), autocast(self.device, s.precision):
            y = self.model(to_memory_format(x, s.channels_last)).argmax(1)
        step, m = self.step_size * self.xi, min(self.minibatch, n)
        inner = self.delta.clone()
        total = torch.zeros_like(self.delta)
        count = max(1, self.inner_iterations * n // self.minibatch)
        loss = torch.zeros(())
        for _ in range(count):
            idx = torch.randperm(n, generator=self.generator)[:m].to(self.device)
            v = inner.clone().requires_grad_(True)
            loss = self.loss(x[idx], y[idx], v)
            (grad,) = torch.autograd.grad(loss, v)
            inner = self.project(inner + step * grad.sign())
            total += grad
        self.delta = self.project(self.delta + step * (total / count).sign())
        self.updates += 1
        self.inner_steps += count
        self.images_seen += n
        return float(loss.detach())

    def step(self, x: torch.Tensor) -> None:
        """The loop's step: one aggregated update on the outer batch ``x``, logged every ``log_every``."""
        loss = self.outer_update(x)
        if self.updates % self.trainer.log_every == 0:
            self.log({"train/loss": loss, "train/epoch": self.checkpointer.epoch}, self.updates)

    def fit(self, loader: Iterable[Any]) -> torch.Tensor:
        self.delta = self.zeros()
        self.updates = self.inner_steps = self.images_seen = 0
        # each pass in outer batches of batch_size, then its remainder; one step per outer batch
        run_steps(self, self.step, Feed(loader, self.device, batch_size=self.batch_size, flush=True),
                  epochs=self.run_epochs, max_steps=self.max_updates, pattern=lambda: self.delta, unit="update")
        return self.delta.detach()

    def budget_note(self) -> str:
        return f"{self.updates} updates x {self.batch_size} img, K={self.inner_iterations}"

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "epochs": self.epochs, "max_epochs": self.max_epochs,
                "run_epochs": self.run_epochs, "max_iterations": self.max_iterations, "batch_size": self.batch_size,
                "minibatch": self.minibatch, "inner_iterations": self.inner_iterations, "step_size": self.step_size,
                "beta": self.beta, "updates": self.updates, "inner_steps": self.inner_steps,
                "images_seen": self.images_seen}
